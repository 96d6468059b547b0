"""``fastervit eval --pretrained``: a release-format file scored on an image folder, end to end.

The expected numbers come from the model's own forward on images prepared here by hand,
following timm's evaluation rules (resize the shorter side to floor(size / crop_pct), the
longer one truncated, centre crop with offsets rounded half to even, ImageNet normalisation).
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fastervit
from fastervit.commands.cli import main

TINY = {
    "dim": 16,
    "in_dim": 8,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 2, 2, 4],
    "mlp_ratio": 2,
    "window_size": [2, 2, 2, 1],
}
SIZE = 64
CLASSES = [f"n0{i}" for i in range(8)]  # the class map: line i names class i
# A folder with three of the eight classes, images of several shapes, some in nested folders.
IMAGES = {
    "n02/a.png": (90, 70),
    "n02/deeper/b.jpg": (64, 100),
    "n02/deeper/still/c.png": (75, 75),
    "n05/d.png": (131, 97),
    "n05/e.jpg": (80, 120),
    "n07/f.png": (120, 92),  # 95x73 after resizing: the crop starts at 15.5, rounded to 16
    "n07/x/g.png": (200, 65),
}


def _run(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as usage_error:  # argparse's exit, after the JSON record
        code = usage_error.code
    lines = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(lines[-1])


def _write_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name, (width, height) in IMAGES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # Smooth colour ramps plus noise: enough structure for the logits to differ between images.
        ramp = np.linspace(0, 255, width)[None, :, None] * rng.uniform(0.2, 1.0, 3)
        noise = rng.normal(0, 30, (height, width, 3))
        Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8)).save(path, quality=95)


def _model(num_classes: int = len(CLASSES)) -> fastervit.FasterViT:
    torch.manual_seed(0)
    return fastervit.create_model("faster_vit_0_224", num_classes=num_classes, resolution=SIZE, **TINY).eval()


def _prepared(path: Path) -> torch.Tensor:
    """FasterViT-0's pretrained_cfg (bicubic, crop_pct 0.875, centre) at 64 px, by hand: (3, 64, 64)."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    short = math.floor(SIZE / 0.875)  # 73
    size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = round((size[0] - SIZE) / 2), round((size[1] - SIZE) / 2)
    pixels = np.asarray(image.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32) / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (torch.from_numpy(pixels).permute(2, 0, 1) - mean.view(3, 1, 1)) / std.view(3, 1, 1)


def _argv(tmp_path: Path, weights: Path, *extra: str) -> list[str]:
    return [
        "eval", "--model", "faster_vit_0_224", "--pretrained", str(weights), "--data-dir", str(tmp_path / "val"),
        "--resolution", str(SIZE), "--model-kwargs", json.dumps(TINY), "--workers", "0", "--batch-size", "3",
        "--device", "cpu", *extra,
    ]  # fmt: skip


@pytest.fixture
def class_map(tmp_path) -> Path:
    _write_folder(tmp_path / "val")
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n")
    return path


def test_eval_of_a_release_file_matches_the_models_own_forward(tmp_path, capsys, class_map):
    model = _model()
    weights = tmp_path / "fastervit_tiny.pth.tar"
    fastervit.save_checkpoint(model, weights)
    assert list(torch.load(weights, weights_only=True)) == ["state_dict"]  # the release's layout

    code, result = _run(capsys, _argv(tmp_path, weights, "--class-map", str(class_map)))
    assert code == 0 and result["status"] == "ok", result

    images = torch.stack([_prepared(tmp_path / "val" / name) for name in IMAGES])
    labels = torch.tensor([CLASSES.index(name.split("/")[0]) for name in IMAGES])
    with torch.no_grad():
        logits = model(images)  # (7, 8)
    top5 = logits.topk(5, dim=-1).indices
    assert 0 < (top5 == labels[:, None]).any(-1).sum() < len(IMAGES)  # a score that can be wrong
    assert result["images"] == len(IMAGES) and result["images_per_s"] > 0
    assert result["top1"] == pytest.approx(100 * (logits.argmax(-1) == labels).float().mean().item())
    assert result["top5"] == pytest.approx(100 * (top5 == labels[:, None]).any(-1).float().mean().item())
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert result["resolution"] == [SIZE, SIZE] and result["model"] == "faster_vit_0_224"
    assert (result["crop_pct"], result["crop_mode"], result["interpolation"]) == (0.875, "center", "bicubic")
    assert result["checkpoint"] == str(weights) and result["class_map"] == str(class_map)
    assert result["weights"] == "state_dict"


def test_the_class_map_gives_the_labels(tmp_path, capsys, class_map):
    # A classifier that ranks the classes 5 > 7 > 0 > 1 > 3 > ... whatever the image: top-1 is
    # the share of n05's images (2 of 7), top-5 that of n05 and n07 (4 of 7). Labelled by the
    # sorted folders (0, 1, 2) instead of the map (2, 5, 7), top-1 would be 0.
    model = _model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([6.0, 5.0, 0.0, 4.0, 0.0, 8.0, 0.0, 7.0]))
    fastervit.save_checkpoint(model, tmp_path / "w.pth")
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "w.pth", "--class-map", str(class_map)))
    assert code == 0, result
    assert result["top1"] == pytest.approx(100 * 2 / 7) and result["top5"] == pytest.approx(100 * 4 / 7)


def test_without_a_class_map_the_folders_must_be_every_class(tmp_path, capsys, class_map):
    fastervit.save_checkpoint(_model(), tmp_path / "w.pth")
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "w.pth"))
    assert code == 1 and "has 3 class folders and the model 8 classes" in result["error"]
    assert "--class-map" in result["error"]

    # With exactly as many folders as classes, the sorted folders are the labels.
    fastervit.save_checkpoint(_model(num_classes=3), tmp_path / "three.pth")
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "three.pth"))
    assert code == 0 and result["images"] == len(IMAGES) and result["class_map"] is None


def test_folders_outside_the_class_map_are_named_before_the_weights_are_read(tmp_path, capsys, class_map):
    (tmp_path / "val" / "stray").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "val" / "stray" / "x.png")
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "never_read.pth", "--class-map", str(class_map)))
    assert code == 1 and "not among the 8 classes: stray" in result["error"]


def test_files_that_are_not_release_weights_are_refused(tmp_path, capsys, class_map):
    (tmp_path / "empty.pth").touch()
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "empty.pth", "--class-map", str(class_map)))
    assert code == 1 and result["error_type"] == "UnreadableCheckpointError" and "empty" in result["error"]
    model = _model()
    run = {"model": model.state_dict(), "model_kwargs": {}, "ema": None}  # the layout of a training run's
    torch.save(run, tmp_path / "best.pt")
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "best.pt", "--class-map", str(class_map)))
    assert code == 1 and f"eval --checkpoint {tmp_path / 'best.pt'}" in result["error"]


def test_a_class_map_longer_than_the_classifier_is_refused(tmp_path, capsys, class_map):
    fastervit.save_checkpoint(_model(num_classes=5), tmp_path / "five.pth")
    code, result = _run(capsys, _argv(tmp_path, tmp_path / "five.pth", "--class-map", str(class_map)))
    assert code == 1 and "names 8 classes, but the model has only 5" in result["error"]


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["--pretrained", "w.pth", "--data-dir", "d"], 1, "--pretrained needs --model"),
        (["--pretrained", "w.pth", "--model", "faster_vit_0_224"], 1, "--pretrained needs --data-dir"),
        (
            ["--pretrained", "w.pth", "--model", "m", "--data-dir", "d", "--no-ema"],
            1,
            "--no-ema cannot be used",
        ),
        (
            ["--checkpoint", "best.pt", "--class-map", "c.txt"],
            1,
            "--class-map cannot be used with --checkpoint",
        ),
        (
            ["--checkpoint", "best.pt", "--resolution", "64"],
            1,
            "--resolution cannot be used with --checkpoint",
        ),
        (["--checkpoint", "best.pt", "--pretrained", "w.pth"], 2, "not allowed with argument"),
        (["--model", "faster_vit_0_224"], 2, "one of the arguments --checkpoint --pretrained is required"),
    ],
)
def test_flags_of_the_other_mode_are_refused(capsys, argv, code, message):
    returned, result = _run(capsys, ["eval", *argv])
    assert returned == code and message in result["error"]
