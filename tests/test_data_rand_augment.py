"""RandAugment: timm's policy strings, its operations' magnitude mappings, the draws.

The expected arguments below are timm's documented ranges (rotate +-30 degrees, shear +-0.3,
translate +-45 %, enhance factors 0.1-1.9, posterize 0-4 bits, solarize thresholds 0-256,
solarize-add 0-110) at magnitude 9, applied here with Pillow directly.
"""

import collections
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from fastervit.data.rand_augment import (
    CHOICE_WEIGHTS,
    INCREASING_OPS,
    OPS,
    STANDARD_OPS,
    RandAugment,
    parse_rand_augment,
)

BILINEAR, BICUBIC = Image.Resampling.BILINEAR, Image.Resampling.BICUBIC


def _image(mode="RGB", size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _same(a, b):
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_parse_the_release_policy():
    ra = parse_rand_augment("rand-m9-mstd0.5-inc1")
    # timm's defaults fill what the string leaves out: 2 ops, each applied with probability 0.5.
    assert (ra.magnitude, ra.num_ops, ra.prob) == (9.0, 2, 0.5)
    assert (ra.magnitude_std, ra.magnitude_max, ra.increasing, ra.weighted) == (0.5, 10.0, True, False)
    assert ra.ops == INCREASING_OPS


def test_parse_every_section():
    ra = parse_rand_augment("rand-m7-n3-p0.8-mstd1-mmax15-inc0-w0", fill=(1, 2, 3))
    assert (ra.magnitude, ra.num_ops, ra.prob, ra.magnitude_std) == (7.0, 3, 0.8, 1.0)
    assert (ra.magnitude_max, ra.increasing, ra.weighted, ra.fill) == (15.0, False, True, (1, 2, 3))
    assert ra.ops == STANDARD_OPS
    assert parse_rand_augment("rand").magnitude == 10.0  # timm's default magnitude


def test_the_two_op_lists():
    assert len(STANDARD_OPS) == len(INCREASING_OPS) == len(CHOICE_WEIGHTS) == 15
    assert set(STANDARD_OPS) | set(INCREASING_OPS) == set(OPS)
    changed = [(a, b) for a, b in zip(STANDARD_OPS, INCREASING_OPS, strict=True) if a != b]
    assert changed == [
        (name, name + "Increasing")
        for name in ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")
    ]
    assert sum(CHOICE_WEIGHTS) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "policy,message",
    [
        ("augmix-m5", "start with 'rand'"),
        ("rand-m9-x3", "cannot read section 'x3'"),
        ("rand-mstd", "cannot read section 'mstd'"),
        ("rand-m9.5", "whole number"),
        ("rand-m9-m8", "given twice"),
        ("rand-n0", "n .* >= 1"),
        ("rand-p1.5", r"p .* \[0, 1\]"),
        ("rand-inc2", "inc must be 0 or 1"),
        ("rand-mmax0", "mmax"),
        ("rand-w1", "w0"),
        ("rand-n14-w0", "lower n"),
    ],
)
def test_bad_policies_are_explained(policy, message):
    with pytest.raises(ValueError, match=message):
        parse_rand_augment(policy)


def test_magnitude_noise_and_clipping():
    assert RandAugment(magnitude=9).sample_magnitude(_gen()) == 9.0
    assert RandAugment(magnitude=15).sample_magnitude(_gen()) == 10.0  # clipped to mmax 10
    assert RandAugment(magnitude=15, magnitude_max=20).sample_magnitude(_gen()) == 15.0
    gen = _gen(1)
    noisy = np.array([RandAugment(magnitude=5, magnitude_std=0.5).sample_magnitude(gen) for _ in range(4000)])
    assert abs(noisy.mean() - 5) < 0.05 and abs(noisy.std() - 0.5) < 0.05
    clipped = np.array([RandAugment(magnitude=9, magnitude_std=2).sample_magnitude(gen) for _ in range(4000)])
    assert clipped.max() == 10.0 and 0 <= clipped.min()
    assert abs((clipped == 10).mean() - 0.3085) < 0.03  # P(N(9, 2) > 10)
    uniform = parse_rand_augment("rand-m8-mstd101")
    assert math.isinf(uniform.magnitude_std)
    draws = np.array([uniform.sample_magnitude(gen) for _ in range(4000)])
    assert 0 <= draws.min() and draws.max() <= 8 and abs(draws.mean() - 4) < 0.15


def _outcomes(name, m, seeds=range(12)):
    image = _image()
    return image, [OPS[name](image, m, _gen(s), 128) for s in seeds]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("AutoContrast", ImageOps.autocontrast),
        ("Equalize", ImageOps.equalize),
        ("Invert", ImageOps.invert),
        ("Posterize", lambda im: ImageOps.posterize(im, 3)),
        ("PosterizeIncreasing", lambda im: ImageOps.posterize(im, 1)),
        ("Solarize", lambda im: ImageOps.solarize(im, 230)),
        ("SolarizeIncreasing", lambda im: ImageOps.solarize(im, 26)),
        ("Color", lambda im: ImageEnhance.Color(im).enhance((9 / 10) * 1.8 + 0.1)),
        ("Contrast", lambda im: ImageEnhance.Contrast(im).enhance((9 / 10) * 1.8 + 0.1)),
        ("Brightness", lambda im: ImageEnhance.Brightness(im).enhance((9 / 10) * 1.8 + 0.1)),
        ("Sharpness", lambda im: ImageEnhance.Sharpness(im).enhance((9 / 10) * 1.8 + 0.1)),
    ],
)
def test_unsigned_ops_at_magnitude_9(name, expected):
    image, outs = _outcomes(name, 9)
    assert all(_same(out, expected(image)) for out in outs)


def test_solarize_add_at_magnitude_9():
    image, outs = _outcomes("SolarizeAdd", 9)
    pixels = np.asarray(image).astype(int)
    expected = np.where(pixels < 128, np.minimum(pixels + 99, 255), pixels)
    assert all(np.array_equal(np.asarray(out), expected) for out in outs)


def _affine(image, coeffs, resample):
    return image.transform(
        image.size, Image.Transform.AFFINE, coeffs, resample=resample, fillcolor=(128,) * 3
    )


@pytest.mark.parametrize(
    "name,candidates",
    [
        (
            "Rotate",
            lambda im, s, r: im.rotate(s * (9 / 10) * 30.0, resample=r, fillcolor=(128,) * 3),
        ),
        ("ShearX", lambda im, s, r: _affine(im, (1, s * (9 / 10) * 0.3, 0, 0, 1, 0), r)),
        ("ShearY", lambda im, s, r: _affine(im, (1, 0, 0, s * (9 / 10) * 0.3, 1, 0), r)),
        ("TranslateXRel", lambda im, s, r: _affine(im, (1, 0, s * (9 / 10) * 0.45 * 40, 0, 1, 0), r)),
        ("TranslateYRel", lambda im, s, r: _affine(im, (1, 0, 0, 0, 1, s * (9 / 10) * 0.45 * 30), r)),
        ("ColorIncreasing", lambda im, s, r: ImageEnhance.Color(im).enhance(1 + s * (9 / 10) * 0.9)),
        ("ContrastIncreasing", lambda im, s, r: ImageEnhance.Contrast(im).enhance(1 + s * (9 / 10) * 0.9)),
        (
            "BrightnessIncreasing",
            lambda im, s, r: ImageEnhance.Brightness(im).enhance(1 + s * (9 / 10) * 0.9),
        ),
        ("SharpnessIncreasing", lambda im, s, r: ImageEnhance.Sharpness(im).enhance(1 + s * (9 / 10) * 0.9)),
    ],
)
def test_signed_ops_at_magnitude_9_take_both_signs(name, candidates):
    image, outs = _outcomes(name, 9, seeds=range(16))
    options = {(s, r): candidates(image, s, r) for s in (1, -1) for r in (BILINEAR, BICUBIC)}
    seen = set()
    for out in outs:
        matches = [key for key, candidate in options.items() if _same(out, candidate)]
        assert matches, f"{name}: output matches no sign / interpolation of the documented argument"
        seen.update(sign for sign, _ in matches)
    assert seen == {1, -1}


@pytest.mark.parametrize("name", [n for n in INCREASING_OPS if "Increasing" in n and "Posterize" not in n])
def test_increasing_ops_do_nothing_at_magnitude_0(name):
    image, outs = _outcomes(name, 0)
    assert all(_same(out, image) for out in outs)


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_every_op_keeps_size_and_mode(name, mode):
    image = _image(mode)
    for m in (0.0, 5.0, 10.0, 20.0):  # 20: a magnitude allowed by mmax > 10
        out = OPS[name](image, m, _gen(), 128)
        assert out.size == image.size and out.mode == mode


def test_geometric_ops_fill_with_the_given_colour():
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    out = OPS["Rotate"](white, 10.0, _gen(), (10, 20, 30))  # 30 degrees: the corners are uncovered
    assert out.getpixel((0, 0)) == (10, 20, 30)
    gray = OPS["ShearX"](Image.new("L", (32, 32), 255), 10.0, _gen(), (77, 88, 99))
    assert 77 in np.asarray(gray)  # single-channel images take the first value


def test_uniform_choice_with_replacement():
    ra, gen = RandAugment(num_ops=2), _gen(3)
    counts, repeats = collections.Counter(), 0
    for _ in range(3000):
        names = ra.choose(gen)
        counts.update(names)
        repeats += names[0] == names[1]
    assert set(counts) == set(STANDARD_OPS)
    assert all(abs(c / 6000 - 1 / 15) < 0.015 for c in counts.values())
    assert abs(repeats / 3000 - 1 / 15) < 0.02  # with replacement: a repeat 1 time in 15


def test_weighted_choice_follows_the_weights_without_replacement():
    gen = _gen(4)
    first = collections.Counter(RandAugment(num_ops=1, weighted=True).choose(gen)[0] for _ in range(6000))
    for name, weight in zip(STANDARD_OPS, CHOICE_WEIGHTS, strict=True):
        assert abs(first[name] / 6000 - weight) < 0.02
    assert first["Posterize"] == first["Invert"] == 0
    pairs = [RandAugment(num_ops=2, weighted=True).choose(gen) for _ in range(500)]
    assert all(a != b for a, b in pairs)


def test_each_drawn_op_is_applied_with_probability_p(monkeypatch):
    calls = []
    for name in OPS:
        monkeypatch.setitem(
            OPS, name, lambda image, m, generator, fill, name=name: calls.append(name) or image
        )
    ra, gen, image = RandAugment(magnitude=9, num_ops=2, prob=0.3), _gen(5), _image()
    for _ in range(2000):
        ra(image, gen)
    assert abs(len(calls) / 4000 - 0.3) < 0.03
    calls.clear()
    for _ in range(50):
        RandAugment(prob=0.0)(image, gen)
    assert not calls


def test_randaugment_is_a_function_of_the_generator():
    ra, image = parse_rand_augment("rand-m9-mstd0.5-inc1"), _image(size=(48, 48))
    assert _same(ra(image, _gen(7)), ra(image, _gen(7)))
    outs = [np.asarray(ra(image, _gen(s))) for s in range(8)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_module_draws_nothing_from_global_random_state():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    parse_rand_augment("rand-m9-mstd0.5-inc1")(_image(), _gen())
    assert torch.equal(before, torch.get_rng_state())
    assert np.array_equal(np_before, np.random.get_state()[1])


def test_posterize_keeping_no_bit_gives_black():
    image, outs = _outcomes("Posterize", 2)  # int(4 * 2 / 10) = 0 bits kept
    assert all(not np.asarray(out).any() for out in outs)
