"""Transforms: shapes, value ranges, reproducibility from the generator, crop geometry, and the
evaluation pipeline of released weights (timm's rules, worked out by hand below)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from fastervit.data.rand_augment import RandAugment
from fastervit.data.random_erasing import RandomErasing
from fastervit.data.transforms import (
    CenterCrop,
    Normalize,
    RandomResizedCrop,
    ResizeShorter,
    TransformConfig,
    build_transform,
    eval_transform,
    pretrained_eval_transform,
    to_tensor,
)
from fastervit.variants import VARIANTS


def _image(mode, size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _config(channels, **kw):
    kw = {"mean": (0.5,) * channels, "std": (0.25,) * channels, **kw}
    return TransformConfig(img_size=32, **kw)


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
@pytest.mark.parametrize("train", [True, False])
def test_pipelines_give_normalised_tensors(mode, channels, train):
    transform = build_transform(_config(channels, rand_augment="rand-m9-n2"), train)
    out = transform(_image(mode), _gen())
    assert out.shape == (channels, 32, 32) and out.dtype == torch.float32
    assert out.min() >= (0 - 0.5) / 0.25 - 1e-6 and out.max() <= (1 - 0.5) / 0.25 + 1e-6


def test_train_pipeline_is_a_function_of_the_generator_seed():
    transform = build_transform(_config(3, rand_augment="rand-m9-n2"), train=True)
    image = _image("RGB")
    assert torch.equal(transform(image, _gen(5)), transform(image, _gen(5)))
    outs = [transform(image, _gen(s)) for s in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_eval_pipeline_is_deterministic_and_centred():
    transform = build_transform(_config(1, crop_pct=1.0), train=False)
    image = _image("L", size=(64, 32))  # wide: resize to 64x32, crop the middle 32 columns
    out = transform(image, _gen(0))
    assert torch.equal(out, transform(image, _gen(1)))
    expected = (to_tensor(image.crop((16, 0, 48, 32))) - 0.5) / 0.25
    torch.testing.assert_close(out, expected)


def test_to_tensor_layout_and_range():
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    t = to_tensor(Image.fromarray(array, mode="RGB"))
    assert t.shape == (3, 2, 3)
    assert t[1, 0, 2].item() == pytest.approx(array[0, 2, 1] / 255)


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    rrc = RandomResizedCrop(32, scale=(0.25, 0.5), ratio=(0.5, 2.0))
    gen = _gen(0)
    for _ in range(100):
        left, top, right, bottom = rrc.box(200, 100, gen)
        assert 0 <= left < right <= 200 and 0 <= top < bottom <= 100
        area = (right - left) * (bottom - top) / (200 * 100)
        assert 0.23 <= area <= 0.52  # rounding to whole pixels
        assert 0.45 <= (right - left) / (bottom - top) <= 2.1


def test_random_resized_crop_falls_back_to_a_centre_crop():
    # No crop of area >= 2x the image exists: the fallback is the full image, clamped ratio.
    left, top, right, bottom = RandomResizedCrop(8, scale=(2.0, 3.0), ratio=(1.0, 1.0)).box(60, 40, _gen())
    assert (left, top, right, bottom) == (10, 0, 50, 40)


def test_resize_shorter_and_center_crop():
    image = _image("RGB", size=(90, 60))
    resized = ResizeShorter(30)(image, _gen())
    assert resized.size == (45, 30)
    assert CenterCrop(20)(resized, _gen()).size == (20, 20)


def test_resize_shorter_truncates_the_longer_side_as_torchvision_does():
    # torchvision's Resize(4) on a 5x3 image: shorter side 4, longer int(4 * 5 / 3) = int(6.67) = 6.
    assert ResizeShorter(4).output_size(5, 3) == (6, 4)
    assert ResizeShorter(4).output_size(3, 5) == (4, 6)
    assert ResizeShorter(4)(_image("RGB", size=(5, 3)), _gen()).size == (6, 4)


def test_resize_shorter_covers_a_non_square_target():
    # (H, W) = (64, 96) from 320x160: the height limits (160 / 64 = 2.5 < 320 / 96), both sides / 2.5.
    assert ResizeShorter((64, 96)).output_size(320, 160) == (128, 64)
    assert ResizeShorter((64, 96)).output_size(100, 400) == (96, 384)


def test_center_crop_rounds_half_offsets_to_even_as_torchvision_does():
    image = _image("RGB", size=(235, 9))
    # (235 - 224) / 2 = 5.5 -> 6 and (9 - 4) / 2 = 2.5 -> 2, as Python's round() in torchvision's CenterCrop.
    out = CenterCrop((4, 224))(image, _gen())
    assert out.size == (224, 4)
    assert np.array_equal(np.asarray(out), np.asarray(image.crop((6, 2, 230, 6))))
    with pytest.raises(ValueError, match="smaller than"):
        CenterCrop(300)(image, _gen())


def _expected(image, resized_size, box, cfg, interpolation=Image.Resampling.BICUBIC):
    """Resize, crop, to [0, 1], normalise: the pipeline written out with Pillow and torch."""
    pixels = np.asarray(image.resize(resized_size, interpolation).crop(box), dtype=np.float32) / 255
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)
    return (tensor - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)


def test_pretrained_eval_transform_of_faster_vit_0():
    # crop_pct 0.875, centre: floor(224 / 0.875) = 256; the 300x200 image becomes
    # int(256 * 300 / 200) x 256 = 384x256; the crop starts at ((384 - 224) / 2, (256 - 224) / 2).
    cfg = VARIANTS["faster_vit_0_224"].pretrained_cfg
    assert (cfg.crop_pct, cfg.crop_mode, cfg.interpolation) == (0.875, "center", "bicubic")
    image = _image("RGB", size=(300, 200))
    out = pretrained_eval_transform(cfg)(image, _gen())
    assert out.shape == (3, 224, 224)
    torch.testing.assert_close(out, _expected(image, (384, 256), (80, 16, 304, 240), cfg))


def test_pretrained_eval_transform_squashes_for_the_21k_models():
    # crop_pct 0.95, squash: both sides to floor(224 / 0.95) = 235, aspect ratio lost; crop at 5.5 -> 6.
    cfg = VARIANTS["faster_vit_4_21k_224"].pretrained_cfg
    assert (cfg.crop_pct, cfg.crop_mode) == (0.95, "squash")
    image = _image("RGB", size=(300, 200))
    out = pretrained_eval_transform(cfg)(image, _gen())
    torch.testing.assert_close(out, _expected(image, (235, 235), (6, 6, 230, 230), cfg))


def test_pretrained_eval_transform_at_another_size_keeps_the_cfgs_preparation():
    # (H, W) = (64, 96) with crop_pct 1 and bilinear: 320x160 -> 128x64 (see above), crop x from 16.
    cfg = replace(VARIANTS["faster_vit_1_224"].pretrained_cfg, interpolation="bilinear")
    image = _image("RGB", size=(320, 160))
    out = pretrained_eval_transform(cfg, (64, 96))(image, _gen())
    assert out.shape == (3, 64, 96)
    expected = _expected(image, (128, 64), (16, 0, 112, 64), cfg, Image.Resampling.BILINEAR)
    torch.testing.assert_close(out, expected)
    bicubic = pretrained_eval_transform(replace(cfg, interpolation="bicubic"), (64, 96))(image, _gen())
    assert not torch.allclose(out, bicubic)  # the interpolation is the cfg's, not a fixed one


@pytest.mark.parametrize(
    "options,error",
    [
        ({"crop_mode": "border"}, "crop_mode must be one of"),
        ({"interpolation": "cubic"}, "interpolation must be one of"),
        ({"crop_pct": 0.0}, r"crop_pct must be in \(0, 1\]"),
        ({"crop_pct": 1.2}, r"crop_pct must be in \(0, 1\]"),
    ],
)
def test_eval_transform_refuses_unknown_settings(options, error):
    with pytest.raises(ValueError, match=error):
        eval_transform(224, (0.5,) * 3, (0.25,) * 3, **options)


def test_rand_augment_takes_timm_policies_and_the_dataset_mean_as_fill():
    config = _config(3, rand_augment="rand-m9-mstd0.5-inc1", mean=(0.5, 0.0, 1.0))
    (ra,) = [t for t in build_transform(config, train=True).transforms if isinstance(t, RandAugment)]
    assert (ra.magnitude, ra.magnitude_std, ra.increasing) == (9.0, 0.5, True)
    assert ra.fill == (128, 0, 255)  # timm: round(255 * mean) per channel
    with pytest.raises(ValueError, match="cannot read section"):
        build_transform(_config(3, rand_augment="rand-m9-q2"), train=True)


def test_random_erasing_runs_last_and_only_in_training():
    config = _config(3, re_prob=0.25, re_mode="rand", re_count=3)
    steps = build_transform(config, train=True).transforms
    assert isinstance(steps[-2], Normalize)
    assert steps[-1] == RandomErasing(0.25, "rand", min_count=1, max_count=3)
    assert not any(isinstance(t, RandomErasing) for t in build_transform(config, train=False).transforms)
    assert not any(isinstance(t, RandomErasing) for t in build_transform(_config(3), train=True).transforms)


def test_normalize_rejects_wrong_channel_count():
    transform = build_transform(_config(3), train=False)
    with pytest.raises(ValueError, match="expected 3 channels"):
        transform(_image("L"), _gen())
