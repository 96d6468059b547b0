"""Transforms: shapes, value ranges, reproducibility from the generator, crop geometry."""

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
    to_tensor,
)


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
