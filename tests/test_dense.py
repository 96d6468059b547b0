"""fastervit.dense: FPN and UperNet shapes, the pasted-scenes generator, mIoU, training."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastervit import FasterViT
from fastervit.commands.cli import main
from fastervit.dense import (
    FPN,
    IGNORE_INDEX,
    PastedScenes,
    PyramidPooling,
    SceneConfig,
    SegmentationModel,
    UperNetHead,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from fastervit.dense import train as dense_train
from fastervit.dense.scenes import render_item, silhouette

WIDTHS = (16, 32, 64, 128)
SIZES = [(64, 64), (64, 96), (96, 64), (128, 160)]


def tiny_backbone(size=(64, 64), in_chans=1):
    return FasterViT(
        **{**dense_train.TINY_BACKBONE, "resolution": size, "in_chans": in_chans, "num_classes": 0}
    )


def pyramid(size, batch=2, widths=WIDTHS):
    H, W = size
    return [torch.randn(batch, c, H // 2 ** (i + 2), W // 2 ** (i + 2)) for i, c in enumerate(widths)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("norm", [False, True])
def test_fpn_keeps_every_stride_at_one_width(size, norm):
    features = pyramid(size)
    outputs = FPN(WIDTHS, 24, norm=norm).eval()(features)
    assert [tuple(o.shape) for o in outputs] == [(2, 24, *f.shape[-2:]) for f in features]


def test_fpn_top_down_reaches_the_finest_level():
    fpn = FPN(WIDTHS, 8)
    features = [f.requires_grad_() for f in pyramid((64, 96))]
    fpn(features)[0].sum().backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in features)


def test_fpn_rejects_wrong_number_of_levels():
    with pytest.raises(ValueError, match="4 levels"):
        FPN(WIDTHS, 8)(pyramid((64, 64))[:3])


def test_pyramid_pooling_and_head_shapes():
    ppm = PyramidPooling(128, 16).eval()
    assert ppm(torch.randn(2, 128, 3, 5)).shape == (2, 16, 3, 5)
    head = UperNetHead(WIDTHS, 16, num_classes=7).eval()
    assert head(pyramid((96, 128))).shape == (2, 7, 24, 32)


@pytest.mark.parametrize("size", SIZES)
def test_segmentation_model_returns_logits_at_input_size(size):
    model = SegmentationModel(tiny_backbone(size), num_classes=11, channels=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *size)).shape == (2, 11, *size)


def test_segmentation_model_trains_end_to_end():
    model = SegmentationModel(tiny_backbone(), num_classes=5, channels=16)
    logits = model(torch.randn(2, 1, 64, 64))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 5, (2, 64, 64))).backward()
    for prefix in ("backbone.patch_embed", "backbone.levels.2", "backbone.levels.3", "decode_head.ppm"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix
    assert "cpb_mlp" in model.no_weight_decay_keywords()


def test_segmentation_model_rejects_sides_not_divisible_by_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        SegmentationModel(tiny_backbone(), num_classes=3, channels=8)(torch.randn(1, 1, 64, 80))


# --- the pasted-scenes generator ---------------------------------------------------------------


def test_scenes_are_a_function_of_seed_split_and_index():
    a = PastedScenes("train", 8, seed=3)
    b = PastedScenes("train", 8, seed=3)
    image, mask = a[5]
    for i in (7, 2):  # another order first
        b[i]
    assert torch.equal(b[5][0], image) and torch.equal(b[5][1], mask)
    assert not torch.equal(a[4][0], image)
    assert not torch.equal(PastedScenes("train", 8, seed=4)[5][0], image)
    assert not torch.equal(PastedScenes("val", 8, seed=3)[5][0], image)
    images, masks = a.tensors()
    assert torch.equal(images[5], image) and torch.equal(masks[5], mask)


def test_scene_contents():
    scenes = PastedScenes("val", 16, SceneConfig(size=(64, 96), items=(2, 3)))
    images, masks = scenes.tensors()
    assert images.shape == (16, 1, 64, 96) and images.dtype == torch.float32
    assert masks.shape == (16, 64, 96) and masks.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    values = set(masks.unique().tolist())
    assert 0 in values and IGNORE_INDEX in values and values <= set(range(11)) | {IGNORE_INDEX}
    assert scenes.num_classes == 11 and scenes.classes[0] == "background"
    # the background is noise, away from the items' outlines (where it is faintly blended)
    item = (masks != 0).float()[:, None]
    open_background = F.max_pool2d(item, 3, stride=1, padding=1)[:, 0] == 0
    assert images[:, 0][open_background].max() <= scenes.config.noise
    # the ignored band is thin: every ignored pixel touches a pixel of another label
    ignored = masks == IGNORE_INDEX
    assert ignored.float().mean() < 0.1
    neighbours = F.max_pool2d((~ignored).float()[:, None], 3, stride=1, padding=1)[:, 0]
    assert bool(neighbours[ignored].all())


def _dark_coat():
    """A 28x28 item: a dark garment (intensity 20/255, below the old 0.25 cut) with a bright
    outline and a black stripe across its inside (0, darker than the canvas' noise)."""
    item = np.zeros((28, 28), np.uint8)
    item[4:24, 6:22] = 20
    item[4:24, [6, 21]] = item[[4, 23], 6:22] = 200
    item[12:14, 8:20] = 0  # the stripe, enclosed by the garment
    return item


def test_the_mask_is_the_filled_silhouette():
    item = _dark_coat()
    shape = silhouette(item, threshold=0.05)
    assert shape[4:24, 6:22].all() and shape.sum() == 20 * 16  # stripe filled, nothing outside
    speck = item.copy()
    speck[0, 0] = 255  # one stray bright pixel is noise, not part of the item
    assert np.array_equal(silhouette(speck, threshold=0.05), shape)
    value, coverage = render_item(item, 56, threshold=0.05)
    assert value.shape == coverage.shape == (56, 56)
    inside, outside = coverage[12:44, 16:40], coverage[:4]
    assert (inside > 0.999).all() and (outside == 0).all()  # the dark stripe (rows 24-27) is inside


def test_dark_items_and_their_stripes_are_labelled_not_ignored(monkeypatch):
    """One dark item per canvas: its whole silhouette takes its class but for a thin band."""
    config = SceneConfig(size=(64, 64), items=(1, 1), scale=(0.8, 0.8))
    scenes = PastedScenes("val", 4, config, source="digits")
    scenes.items = np.stack([_dark_coat()] * 4)
    scenes.item_labels = np.array([4, 4, 4, 4])  # "Coat" among the digits' labels: class 5
    _, masks = scenes.tensors()
    labelled, ignored = (masks == 5).sum(dim=(1, 2)), (masks == IGNORE_INDEX).sum(dim=(1, 2))
    side = round(0.8 * 64)  # 51 px: the 20x16 silhouette becomes about 36x29
    area = (20 / 28 * side) * (16 / 28 * side)
    assert (labelled > 0.85 * area).all() and (ignored < 0.2 * area).all()


def test_missing_fashion_mnist_is_an_error_not_a_fallback(no_datasets):
    with pytest.raises(FileNotFoundError, match="FASTERVIT_DATA"):
        PastedScenes("train", 4)
    with pytest.raises(ValueError, match="unknown item source 'auto'"):
        PastedScenes("train", 4, source="auto")
    scenes = PastedScenes("train", 4, source="digits")  # asked for explicitly, still fine
    assert scenes.source == "digits" and scenes.classes[1:] == tuple("0123456789")


def test_scene_config_is_checked():
    with pytest.raises(ValueError, match="band"):
        SceneConfig(band=(0.8, 0.2))
    with pytest.raises(ValueError, match="items"):
        SceneConfig(items=(3, 2))
    with pytest.raises(ValueError, match="threshold"):
        SceneConfig(threshold=0.0)


# --- metrics -------------------------------------------------------------------------------


def test_miou_against_a_hand_computed_case():
    target = torch.tensor([[0, 0, 1], [1, 2, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    confusion = confusion_matrix(pred, target, num_classes=4)
    # rows: true class, columns: predicted; the ignored pixel is not counted
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    ious = iou_per_class(confusion)
    # class 0: 1 / (2 + 1 - 1); class 1: 2 / (2 + 3 - 2); class 2: 1 / 1; class 3: absent
    assert ious[:3].tolist() == pytest.approx([1 / 2, 2 / 3, 1.0]) and math.isnan(ious[3])
    assert mean_iou(confusion) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert pixel_accuracy(confusion) == pytest.approx(4 / 5)


def test_confusion_matrix_rejects_unknown_classes():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(4), num_classes=3)


# --- training -------------------------------------------------------------------------------


def small_config(**overrides):
    settings = {
        "steps": 4,
        "warmup_steps": 1,
        "batch_size": 4,
        "train_samples": 16,
        "val_samples": 8,
        "log_every": 2,
        "eval_every": 2,
        "channels": 8,
    }
    return dense_train.DenseTrainConfig(**{**settings, **overrides})


def test_a_batch_larger_than_the_training_set_is_refused_not_an_endless_loop():
    with pytest.raises(ValueError, match=r"train_samples \(4\) must be at least batch_size \(8\)"):
        dense_train.DenseTrainConfig(batch_size=8, train_samples=4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"size": (64, 80)}, "multiples of 32"),
        ({"val_samples": 0}, "val_samples"),
        ({"warmup_steps": 400}, "warmup_steps"),
        ({"min_lr": 1.0}, "min_lr"),
        ({"source": "auto"}, "unknown item source"),
        ({"scale": (0.5, 1.5)}, "scale"),
    ],
)
def test_inconsistent_settings_are_refused_before_any_work(overrides, message):
    with pytest.raises(ValueError, match=message):
        dense_train.DenseTrainConfig(**overrides)


def test_scores_of_nothing_are_null_not_nan():
    """A validation set whose pixels are all ignored has no mIoU: JSON null, not NaN."""

    class AllIgnored(PastedScenes):
        def __getitem__(self, index):
            image, mask = super().__getitem__(index)
            return image, torch.full_like(mask, IGNORE_INDEX)

    scenes = AllIgnored("val", 2, source="digits")
    model = SegmentationModel(tiny_backbone(), scenes.num_classes, channels=8)
    scores = dense_train.evaluate(model, scenes)
    assert scores["miou"] is None and scores["pixel_accuracy"] is None
    assert set(scores["iou_per_class"].values()) == {None}
    json.dumps(scores, allow_nan=False)  # strict JSON


def test_training_runs_and_is_reproducible():
    model, record = dense_train.train_segmentation(small_config())
    assert isinstance(model, SegmentationModel)
    assert [s for s, _ in record["loss_curve"]] == [2, 4] and all(
        math.isfinite(v) for _, v in record["loss_curve"]
    )
    assert [s for s, _ in record["miou_curve"]] == [2, 4]
    assert 0.0 <= record["miou"] <= 1.0 and 0.0 <= record["pixel_accuracy"] <= 1.0
    assert list(record["iou_per_class"]) == record["classes"] and len(record["classes"]) == 11
    _, again = dense_train.train_segmentation(small_config())
    assert again["loss_curve"] == record["loss_curve"] and again["miou"] == record["miou"]


@pytest.mark.parametrize("amp", ["bfloat16", "float16"])
def test_mixed_precision_training(amp):
    """Autocast in either type (float16 with loss scaling) trains to finite losses and scores."""
    _, record = dense_train.train_segmentation(small_config(amp=amp, source="digits", eval_every=0))
    assert record["config"]["amp"] == amp
    assert all(math.isfinite(v) for _, v in record["loss_curve"]) and 0.0 <= record["miou"] <= 1.0


def test_training_command_writes_json_and_checkpoint(tmp_path, capsys):
    out, ckpt = tmp_path / "res" / "dense.json", tmp_path / "model.pt"
    argv = ["--steps", "2", "--warmup-steps", "1", "--batch-size", "4", "--train-samples", "8", "--val-samples",
            "4", "--channels", "8", "--resolution", "64", "96", "--device", "cpu", "--output", str(out),
            "--checkpoint", str(ckpt)]  # fmt: skip
    assert main(["segment", *argv]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["status"] == "ok" and last["config"]["size"] == [64, 96]
    assert json.loads(out.read_text())["miou"] == last["miou"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["dense.json"]  # no temporary left
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    model = dense_train.build_model(small_config(size=(64, 96)), 11)
    model.load_state_dict(state)
