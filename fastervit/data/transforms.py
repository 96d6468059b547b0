"""Image transforms for training and evaluation, in Pillow and torch (chapter 10).

Every transform is called as ``transform(image, generator)``: all of its randomness is drawn
from the ``torch.Generator`` it is given, so an augmented sample is reproducible from the
generator's seed alone (the datasets seed it from the run seed, the epoch and the index).
Deterministic transforms ignore the generator.

Training: random resized crop -> horizontal flip -> RandAugment (timm's policy strings,
:mod:`~fastervit.data.rand_augment`), or colour jitter when RandAugment is off -> tensor ->
normalise -> random erasing (:mod:`~fastervit.data.random_erasing`). Evaluation
(:func:`eval_transform`, timm's rules): resize to ``img_size / crop_pct`` -> centre crop
``img_size`` -> tensor -> normalise; :func:`pretrained_eval_transform` builds it from a
released model's ``pretrained_cfg``.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from fastervit.data.draw import randint, uniform
from fastervit.data.rand_augment import parse_rand_augment
from fastervit.data.random_erasing import RandomErasing
from fastervit.variants import PretrainedCfg

Transform = Callable[[Image.Image | torch.Tensor, torch.Generator], Image.Image | torch.Tensor]
BICUBIC = Image.Resampling.BICUBIC
# The interpolations a pretrained_cfg may name (timm's names), as Pillow filters.
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
# How evaluation fits an image to the input: keep the aspect ratio and crop the centre, or
# resize each side on its own ("squash"). timm's third mode, "border", no variant uses.
CROP_MODES = ("center", "squash")
Size = int | tuple[int, int]  # a square's side, or (height, width)


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image | torch.Tensor:
        for transform in self.transforms:
            image = transform(image, generator)
        return image

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


@dataclass
class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to a square.

    Ten tries at a crop that fits; if none does, the largest centred crop with the aspect
    ratio clamped to ``ratio``.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the crop in an image of ``width x height``."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * uniform(generator, *self.scale)
            aspect = math.exp(uniform(generator, *log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = randint(generator, height - h + 1)
                left = randint(generator, width - w + 1)
                return left, top, left + w, top + h
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        w, h = (
            (width, round(width / aspect)) if width / height <= aspect else (round(height * aspect), height)
        )
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        return image.resize((self.size, self.size), BICUBIC, box=self.box(*image.size, generator))


@dataclass
class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        if float(torch.rand((), generator=generator)) < self.p:
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


@dataclass
class ColorJitter:
    """Scale brightness, contrast and saturation (in that order) by factors in ``[1-s, 1+s]``.

    Saturation leaves single-channel images unchanged.
    """

    strength: float = 0.4

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        low, high = max(0.0, 1.0 - self.strength), 1.0 + self.strength
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(uniform(generator, low, high))
        return image


@dataclass
class ResizeShorter:
    """Resize keeping the aspect ratio, to the smallest size that covers ``size``.

    ``size`` is a side or ``(height, width)``. For a square target the shorter side becomes
    ``size`` and the longer one ``int(size * long / short)``, truncated, as torchvision's
    ``Resize(int)`` (what timm uses) does; for a non-square target both sides are divided by
    the smaller of the two ratios image/target and rounded, as timm's ``ResizeKeepRatio``.
    """

    size: Size
    interpolation: Image.Resampling = BICUBIC

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` after resizing an image of ``width x height``."""
        target_h, target_w = _pair(self.size)
        if target_h == target_w:
            long = int(target_h * max(width, height) / min(width, height))
            return (target_h, long) if width <= height else (long, target_h)
        ratio = min(height / target_h, width / target_w)
        return round(width / ratio), round(height / ratio)

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        return image.resize(self.output_size(*image.size), self.interpolation)


@dataclass
class Resize:
    """Resize to exactly ``size`` (a side or ``(height, width)``), whatever the aspect ratio."""

    size: Size
    interpolation: Image.Resampling = BICUBIC

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        height, width = _pair(self.size)
        return image.resize((width, height), self.interpolation)


@dataclass
class CenterCrop:
    """Crop the central ``size`` (a side or ``(height, width)``).

    Offsets are rounded half to even, ``round((W - w) / 2)``, as in torchvision's
    ``CenterCrop``, so that the pixels kept are the ones timm's evaluation keeps.
    """

    size: Size

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        height, width = _pair(self.size)
        if image.width < width or image.height < height:
            raise ValueError(
                f"CenterCrop: a {image.width}x{image.height} image is smaller than the "
                f"{width}x{height} crop; resize it first."
            )
        left, top = round((image.width - width) / 2), round((image.height - height) / 2)
        return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pillow image (``L`` or ``RGB``, 8-bit) -> float tensor in ``[0, 1]``, shape ``(C, H, W)``."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


@dataclass
class Normalize:
    """``(x - mean) / std`` per channel; ``(C, H, W) -> (C, H, W)``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if tensor.shape[0] != len(self.mean):
            raise ValueError(
                f"Normalize: expected {len(self.mean)} channels (mean={self.mean}), got a "
                f"tensor of shape {tuple(tensor.shape)}; check the dataset's mean and std."
            )
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (tensor - mean) / std


@dataclass
class TransformConfig:
    """Everything the train and eval pipelines depend on.

    Args:
        img_size: side of the square the model sees (a multiple of 32 for FasterViT).
        mean, std: per-channel normalisation (as many entries as image channels).
        scale, ratio: random resized crop's area fraction and aspect-ratio ranges.
        hflip: probability of a horizontal flip.
        color_jitter: colour-jitter strength, used when ``rand_augment`` is None; 0 disables.
        rand_augment: a timm RandAugment policy such as ``"rand-m9-mstd0.5-inc1"``, or None.
        re_prob, re_mode, re_count: random erasing's probability (0 disables), fill mode
            and largest number of rectangles (timm's ``--reprob``, ``--remode``, ``--recount``).
        crop_pct: evaluation crops ``img_size`` out of a ``img_size / crop_pct`` resize
            (see :func:`eval_transform`).
    """

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    color_jitter: float = 0.4
    rand_augment: str | None = None
    re_prob: float = 0.0
    re_mode: str = "pixel"
    re_count: int = 1
    crop_pct: float = 0.875


def eval_transform(
    img_size: Size,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    crop_pct: float = 0.875,
    crop_mode: str = "center",
    interpolation: str = "bicubic",
) -> Compose:
    """The evaluation pipeline, Pillow image -> ``(C, H, W)`` tensor, by timm's rules.

    timm's ``transforms_imagenet_eval`` (what its validate.py runs): each side of ``img_size``
    (a side or ``(H, W)``) is divided by ``crop_pct`` and rounded down; the image is resized to
    that, keeping its aspect ratio (``crop_mode="center"``, :class:`ResizeShorter`) or not
    (``"squash"``, :class:`Resize`); the centre ``img_size`` is cropped, converted and
    normalised. Pillow resizes as torchvision does on Pillow images, so the tensors match
    timm's. One difference: for a non-square ``img_size`` timm's centre mode resizes with
    bilinear interpolation whatever it is told; this uses ``interpolation`` throughout.
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode must be one of {CROP_MODES}, got {crop_mode!r}.")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {interpolation!r}.")
    height, width = _pair(img_size)
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    resize = Resize if crop_mode == "squash" else ResizeShorter
    return Compose(
        [
            resize(scaled, INTERPOLATIONS[interpolation]),
            CenterCrop((height, width)),
            to_tensor,
            Normalize(mean, std),
        ]
    )


def pretrained_eval_transform(cfg: PretrainedCfg, img_size: Size | None = None) -> Compose:
    """The evaluation pipeline a released checkpoint was scored with, from its ``pretrained_cfg``.

    ``img_size`` (a side or ``(H, W)``) replaces the cfg's input size; crop_pct, crop mode,
    interpolation, mean and std stay the cfg's, as timm's ``resolve_data_config`` does for
    ``validate.py --img-size``.
    """
    size = img_size if img_size is not None else tuple(cfg.input_size[1:])
    return eval_transform(size, cfg.mean, cfg.std, cfg.crop_pct, cfg.crop_mode, cfg.interpolation)


def build_transform(config: TransformConfig, train: bool) -> Compose:
    """The training (augmenting) or evaluation pipeline: Pillow image -> ``(C, H, W)`` tensor."""
    if train:
        steps: list[Transform] = [RandomResizedCrop(config.img_size, config.scale, config.ratio)]
        if config.hflip > 0:
            steps.append(RandomHorizontalFlip(config.hflip))
        if config.rand_augment is not None:
            # timm fills uncovered pixels with the dataset's mean colour
            fill = tuple(min(255, round(255 * m)) for m in config.mean)
            steps.append(parse_rand_augment(config.rand_augment, fill=fill))
        elif config.color_jitter > 0:
            steps.append(ColorJitter(config.color_jitter))
    else:
        return eval_transform(config.img_size, config.mean, config.std, config.crop_pct)
    steps += [to_tensor, Normalize(config.mean, config.std)]
    if train and config.re_prob > 0:
        steps.append(RandomErasing(config.re_prob, config.re_mode, max_count=config.re_count))
    return Compose(steps)
