"""Random erasing: timm's rectangles (area, aspect, count), fill modes, probability."""

import math

import pytest
import torch

from fastervit.data.random_erasing import RandomErasing


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _erased(out, value=1.0):
    """(H, W) mask of pixels that no longer hold ``value`` in every channel."""
    return (out != value).any(dim=0)


def test_probability_zero_changes_nothing():
    image = torch.randn(3, 32, 32)
    gen = _gen()
    assert all(torch.equal(RandomErasing(0.0)(image, gen), image) for _ in range(20))


def test_one_const_rectangle_inside_the_image():
    erase = RandomErasing(1.0, "const")
    gen = _gen(1)
    for _ in range(200):
        out = erase(torch.ones(3, 48, 64), gen)
        mask = _erased(out)
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(mask.sum()) == h * w  # one filled rectangle
        assert torch.all(out[:, mask] == 0)
        assert h < 48 and w < 64  # strictly inside, as timm requires
        assert 0.02 * 0.9 <= h * w / (48 * 64) <= 1 / 3 * 1.1  # area range, up to rounding
        assert 0.3 * 0.8 <= h / w <= 1 / 0.3 * 1.25  # aspect range, up to rounding


def test_erasing_probability():
    erase, gen = RandomErasing(0.25, "const"), _gen(2)
    erased = sum(bool(_erased(erase(torch.ones(1, 32, 32), gen)).any()) for _ in range(2000))
    assert abs(erased / 2000 - 0.25) < 0.04


def test_pixel_mode_fills_standard_normal_noise():
    erase, gen = RandomErasing(1.0, "pixel", min_area=0.3, max_area=0.3), _gen(3)
    values = torch.cat([erase(torch.full((3, 64, 64), 100.0), gen).flatten() for _ in range(20)])
    noise = values[values != 100.0]
    assert noise.numel() > 20 * 3 * 0.25 * 64 * 64
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1) < 0.02


def test_rand_mode_fills_one_value_per_channel():
    out = RandomErasing(1.0, "rand", min_area=0.2, max_area=0.2)(torch.full((3, 40, 40), 100.0), _gen(4))
    mask = _erased(out, 100.0)
    per_channel = [out[c][mask] for c in range(3)]
    assert all(torch.all(v == v[0]) for v in per_channel)
    assert len({float(v[0]) for v in per_channel}) == 3


def test_count_between_one_and_max_count():
    erase, gen = RandomErasing(1.0, "const", max_count=3), _gen(5)
    counts = set()
    for _ in range(300):
        boxes = erase.boxes(64, 64, gen)
        counts.add(len(boxes))
        # the drawn fraction is shared among the rectangles: together at most a third
        assert sum(h * w for _, _, h, w in boxes) <= 64 * 64 / 3 * 1.15
    assert counts == {1, 2, 3}


def test_input_is_not_modified_and_draws_are_reproducible():
    image = torch.randn(3, 32, 32)
    copy = image.clone()
    erase = RandomErasing(1.0, "pixel")
    a, b = erase(image, _gen(6)), erase(image, _gen(6))
    assert torch.equal(image, copy) and torch.equal(a, b) and not torch.equal(a, image)


def test_aspect_ratio_is_log_uniform():
    erase, gen = RandomErasing(1.0, min_area=0.01, max_area=0.01), _gen(7)
    logs = [math.log(h / w) for _ in range(3000) for _, _, h, w in erase.boxes(400, 400, gen)]
    # log-uniform on [log 0.3, -log 0.3]: symmetric around 0, variance (2 log(1/0.3))^2 / 12
    assert abs(sum(logs) / len(logs)) < 0.05
    variance = sum(x * x for x in logs) / len(logs)
    assert abs(variance - (2 * math.log(1 / 0.3)) ** 2 / 12) < 0.05


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"probability": 1.5}, "probability"),
        ({"mode": "noise"}, "mode must be one of"),
        ({"min_count": 3, "max_count": 2}, "min_count <= max_count"),
        ({"min_area": 0.5, "max_area": 0.1}, "min_area <= max_area"),
        ({"min_aspect": 2.0}, "min_aspect"),
    ],
)
def test_bad_settings_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomErasing(**kwargs)


def test_batches_are_refused():
    with pytest.raises(ValueError, match=r"one \(C, H, W\) image"):
        RandomErasing(1.0)(torch.zeros(2, 3, 8, 8), _gen())
