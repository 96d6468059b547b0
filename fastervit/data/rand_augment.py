"""RandAugment with timm's policy strings, in Pillow and torch (chapter 10).

RandAugment (Cubuk et al., 2020) replaces AutoAugment's learned policies by two numbers: apply
``n`` operations drawn at random from a fixed list, all at one global magnitude ``m``. The
release trains every FasterViT with timm's variant of it, written ``rand-m9-mstd0.5-inc1``.
This module gives that string timm's meaning, operation for operation:

* ``m<int>``: magnitude on a 0-10 scale (default 10);
* ``n<int>``: operations per image, drawn uniformly *with* replacement (default 2);
* ``p<float>``: probability that a drawn operation is applied (default 0.5);
* ``mstd<float>``: each application draws its magnitude from ``N(m, mstd)`` instead of using
  ``m`` (default 0, no noise); above 100 the draw is uniform in ``[0, m]``;
* ``mmax<int>``: the magnitude is clipped to ``[0, mmax]`` after the noise (default 10);
* ``inc<0|1>``: use the "increasing" operations, whose severity grows with the magnitude
  (default 0);
* ``w0``: draw the operations *without* replacement, with timm's fixed weights
  (:data:`CHOICE_WEIGHTS`) instead of uniformly (newer timm replaced ``w`` by named sets,
  ``t...``, which are not supported here).

The fifteen operations and how a magnitude ``m`` maps to each one's argument, with the value
at ``m = 9`` (``s`` is a random sign, + or - with probability 1/2 each):

* AutoContrast, Equalize, Invert: no argument;
* Rotate: ``s * 30 * m/10`` degrees (27);
* Posterize: keep ``int(4 * m/10)`` bits (3); PosterizeIncreasing: ``4 - int(4 * m/10)`` (1);
* Solarize: invert pixels >= ``int(256 * m/10)`` (230); SolarizeIncreasing: pixels >=
  ``256 - int(256 * m/10)`` (26);
* SolarizeAdd: add ``int(110 * m/10)`` to pixels below 128 (99);
* Color, Contrast, Brightness, Sharpness: enhance by ``1.8 * m/10 + 0.1`` (1.72; 1 is the
  identity); their Increasing versions by ``max(0.1, 1 + s * 0.9 * m/10)`` (0.19 or 1.81);
* ShearX, ShearY: shear factor ``s * 0.3 * m/10`` (0.27);
* TranslateXRel, TranslateYRel: shift by ``s * 0.45 * m/10`` of the width or height (40.5 %).

Geometric operations resample bilinearly or bicubically at random (timm's choice when the
training interpolation is ``random``, as in the release) and fill uncovered pixels with the
dataset's mean colour. Where this module differs from timm: every draw comes from the
``torch.Generator`` the transform is given (so a sample is reproducible from its seed), a
malformed policy is an error rather than a skipped section, ``inc0`` means off (timm tests
the text ``"0"`` for truth, which is always true), and posterize's bit count is clipped to
``[0, 8]`` when ``mmax`` lets the magnitude pass 10 (0 bits, a black image, is what
Pillow gave before it began refusing 0).
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image, ImageEnhance, ImageOps

from fastervit.data.draw import randint, uniform

LEVEL_DENOM = 10.0  # magnitude m corresponds to the fraction m / 10 of each op's range
INTERPOLATIONS = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)

# timm's two operation lists, in timm's order (the weights of `w0` follow this order).
STANDARD_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
INCREASING_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
# timm's weight set 0 (`w0`), by position in the lists above: geometry dominates, and
# Posterize and Invert are never drawn.
CHOICE_WEIGHTS = (0.025, 0.005, 0.0, 0.3, 0.0, 0.005, 0.005, 0.025, 0.005, 0.005, 0.025, 0.2, 0.2, 0.1, 0.1)

Fill = int | tuple[int, ...]
Op = Callable[[Image.Image, float, torch.Generator, Fill], Image.Image]


def _random_sign(value: float, generator: torch.Generator) -> float:
    """``-value`` or ``value`` with probability 1/2 each."""
    return -value if uniform(generator) > 0.5 else value


def _interpolation(generator: torch.Generator) -> Image.Resampling:
    return INTERPOLATIONS[randint(generator, len(INTERPOLATIONS))]


def _fill_for(image: Image.Image, fill: Fill) -> Fill:
    """``fill`` in the image's mode: one value for ``L``, one per band otherwise."""
    values = (fill,) if isinstance(fill, int) else tuple(fill)
    bands = len(image.getbands())
    if bands == 1:
        return values[0]
    return values if len(values) == bands else (values[0],) * bands


def _affine(
    image: Image.Image, coeffs: tuple[float, ...], generator: torch.Generator, fill: Fill
) -> Image.Image:
    """Pillow's inverse affine map: output pixel (x, y) reads input (a x + b y + c, d x + e y + f)."""
    return image.transform(
        image.size,
        Image.Transform.AFFINE,
        coeffs,
        resample=_interpolation(generator),
        fillcolor=_fill_for(image, fill),
    )


def _rotate(image: Image.Image, m: float, generator: torch.Generator, fill: Fill) -> Image.Image:
    degrees = _random_sign((m / LEVEL_DENOM) * 30.0, generator)
    return image.rotate(degrees, resample=_interpolation(generator), fillcolor=_fill_for(image, fill))


def _posterize(bits: int, image: Image.Image) -> Image.Image:
    """Keep the ``bits`` most significant bits of every value; 0 bits gives a black image
    (what Pillow did before it started refusing 0)."""
    bits = min(max(bits, 0), 8)
    if bits == 0:
        return image.point([0] * 256 * len(image.getbands()))
    return image if bits == 8 else ImageOps.posterize(image, bits)


def _solarize_add(image: Image.Image, add: int, threshold: int = 128) -> Image.Image:
    """Add ``add`` (saturating at 255) to every pixel below ``threshold``."""
    table = [min(255, i + add) if i < threshold else i for i in range(256)]
    return image.point(table * len(image.getbands()))


def _enhance(kind: type) -> tuple[Op, Op]:
    """The standard and the increasing operation of one ``ImageEnhance`` class."""

    def standard(image: Image.Image, m: float, generator: torch.Generator, fill: Fill) -> Image.Image:
        return kind(image).enhance((m / LEVEL_DENOM) * 1.8 + 0.1)

    def increasing(image: Image.Image, m: float, generator: torch.Generator, fill: Fill) -> Image.Image:
        factor = max(0.1, 1.0 + _random_sign((m / LEVEL_DENOM) * 0.9, generator))
        return kind(image).enhance(factor)

    return standard, increasing


def _shear(axis: str) -> Op:
    def op(image: Image.Image, m: float, generator: torch.Generator, fill: Fill) -> Image.Image:
        factor = _random_sign((m / LEVEL_DENOM) * 0.3, generator)
        coeffs = (1, factor, 0, 0, 1, 0) if axis == "x" else (1, 0, 0, factor, 1, 0)
        return _affine(image, coeffs, generator, fill)

    return op


def _translate(axis: str) -> Op:
    def op(image: Image.Image, m: float, generator: torch.Generator, fill: Fill) -> Image.Image:
        fraction = _random_sign((m / LEVEL_DENOM) * 0.45, generator)
        if axis == "x":
            coeffs = (1, 0, fraction * image.size[0], 0, 1, 0)
        else:
            coeffs = (1, 0, 0, 0, 1, fraction * image.size[1])
        return _affine(image, coeffs, generator, fill)

    return op


def _solarize_threshold(m: float) -> int:
    return min(256, int((m / LEVEL_DENOM) * 256))


def _posterize_bits(m: float) -> int:
    return int((m / LEVEL_DENOM) * 4)


_color, _color_inc = _enhance(ImageEnhance.Color)
_contrast, _contrast_inc = _enhance(ImageEnhance.Contrast)
_brightness, _brightness_inc = _enhance(ImageEnhance.Brightness)
_sharpness, _sharpness_inc = _enhance(ImageEnhance.Sharpness)

# Every operation: (image, magnitude in [0, mmax], generator, fill) -> image of the same
# size and mode.
OPS: dict[str, Op] = {
    "AutoContrast": lambda image, m, generator, fill: ImageOps.autocontrast(image),
    "Equalize": lambda image, m, generator, fill: ImageOps.equalize(image),
    "Invert": lambda image, m, generator, fill: ImageOps.invert(image),
    "Rotate": _rotate,
    "Posterize": lambda image, m, generator, fill: _posterize(_posterize_bits(m), image),
    "PosterizeIncreasing": lambda image, m, generator, fill: _posterize(4 - _posterize_bits(m), image),
    "Solarize": lambda image, m, generator, fill: ImageOps.solarize(image, _solarize_threshold(m)),
    "SolarizeIncreasing": lambda image, m, generator, fill: ImageOps.solarize(
        image, 256 - _solarize_threshold(m)
    ),
    "SolarizeAdd": lambda image, m, generator, fill: _solarize_add(
        image, min(128, int((m / LEVEL_DENOM) * 110))
    ),
    "Color": _color,
    "ColorIncreasing": _color_inc,
    "Contrast": _contrast,
    "ContrastIncreasing": _contrast_inc,
    "Brightness": _brightness,
    "BrightnessIncreasing": _brightness_inc,
    "Sharpness": _sharpness,
    "SharpnessIncreasing": _sharpness_inc,
    "ShearX": _shear("x"),
    "ShearY": _shear("y"),
    "TranslateXRel": _translate("x"),
    "TranslateYRel": _translate("y"),
}


@dataclass(frozen=True)
class RandAugment:
    """Apply ``num_ops`` randomly drawn operations, each with probability ``prob``.

    Args:
        magnitude: the global magnitude ``m`` (0-10 scale; values above ``magnitude_max``
            act as ``magnitude_max``).
        num_ops: operations drawn per image.
        prob: probability that each drawn operation is applied.
        magnitude_std: standard deviation of the Gaussian noise added to ``m`` at each
            application; ``math.inf`` draws ``m`` uniformly from ``[0, magnitude]``.
        magnitude_max: upper clip of the (noisy) magnitude.
        increasing: use :data:`INCREASING_OPS` instead of :data:`STANDARD_OPS`.
        weighted: draw without replacement with :data:`CHOICE_WEIGHTS` (timm's ``w0``).
        fill: pixel value for areas uncovered by geometric operations (0-255, one value or
            one per band); timm uses the dataset's mean colour.
    """

    magnitude: float = 10.0
    num_ops: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False
    weighted: bool = False
    fill: Fill = 128

    def __post_init__(self) -> None:
        if self.weighted and self.num_ops > sum(w > 0 for w in CHOICE_WEIGHTS):
            raise ValueError(
                f"RandAugment: weighted choice (w0) draws without replacement from "
                f"{sum(w > 0 for w in CHOICE_WEIGHTS)} operations, got n={self.num_ops}; lower n."
            )

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of the operations drawn from, in timm's order."""
        return INCREASING_OPS if self.increasing else STANDARD_OPS

    def sample_magnitude(self, generator: torch.Generator) -> float:
        """The magnitude of one application: ``m``, noisy when ``magnitude_std > 0``, clipped."""
        m = self.magnitude
        if math.isinf(self.magnitude_std):
            m = m * uniform(generator)
        elif self.magnitude_std > 0:
            m = m + self.magnitude_std * float(torch.randn((), generator=generator))
        return min(max(m, 0.0), self.magnitude_max)

    def choose(self, generator: torch.Generator) -> list[str]:
        """The ``num_ops`` operation names for one image, in the order they are applied."""
        if self.weighted:
            picks = torch.multinomial(torch.tensor(CHOICE_WEIGHTS), self.num_ops, generator=generator)
        else:
            picks = torch.randint(len(self.ops), (self.num_ops,), generator=generator)
        return [self.ops[int(i)] for i in picks]

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        for name in self.choose(generator):
            if uniform(generator) > self.prob:
                continue
            image = OPS[name](image, self.sample_magnitude(generator), generator, self.fill)
        return image


_POLICY_KEYS = {"m": int, "n": int, "p": float, "mstd": float, "mmax": int, "inc": int, "w": int}


def parse_rand_augment(policy: str, fill: Fill = 128) -> RandAugment:
    """A :class:`RandAugment` from a timm policy string such as ``"rand-m9-mstd0.5-inc1"``.

    Args:
        policy: ``"rand"`` followed by dash-separated sections (see the module docstring).
        fill: see :class:`RandAugment`.

    Raises:
        ValueError: naming the section that is not understood and what would be.
    """
    example = "e.g. 'rand-m9-mstd0.5-inc1' (sections m, n, p, mstd, mmax, inc, w)"
    name, *sections = policy.split("-")
    if name != "rand":
        raise ValueError(f"RandAugment policy must start with 'rand', got {policy!r}; {example}.")
    values: dict[str, float] = {}
    for section in sections:
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", section)
        if match is None or match.group(1) not in _POLICY_KEYS:
            raise ValueError(f"RandAugment policy {policy!r}: cannot read section {section!r}; {example}.")
        key, text = match.groups()
        if key in values:
            raise ValueError(f"RandAugment policy {policy!r}: section {key!r} is given twice.")
        try:
            values[key] = _POLICY_KEYS[key](text)
        except ValueError:
            raise ValueError(
                f"RandAugment policy {policy!r}: {key} takes a whole number, got {text!r}."
            ) from None
    checks = [
        (values.get("n", 2) >= 1, "n (operations per image) must be >= 1"),
        (0 <= values.get("p", 0.5) <= 1, "p (probability per operation) must be in [0, 1]"),
        (values.get("mmax", 10) >= 1, "mmax (largest magnitude) must be >= 1"),
        (values.get("inc", 0) in (0, 1), "inc must be 0 or 1"),
        (values.get("w", 0) == 0, "w: only the weight set w0 exists"),
    ]
    errors = [message for ok, message in checks if not ok]
    if errors:
        raise ValueError(f"RandAugment policy {policy!r}: {'; '.join(errors)}.")
    std = values.get("mstd", 0.0)
    return RandAugment(
        magnitude=float(values.get("m", LEVEL_DENOM)),
        num_ops=int(values.get("n", 2)),
        prob=float(values.get("p", 0.5)),
        magnitude_std=math.inf if std > 100 else float(std),
        magnitude_max=float(values.get("mmax", LEVEL_DENOM)),
        increasing=bool(values.get("inc", 0)),
        weighted="w" in values,
        fill=fill,
    )
