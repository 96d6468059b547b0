"""Image transforms for training and evaluation, in Pillow and torch (chapter 10).

Every transform is called as ``transform(image, generator)``: all of its randomness is drawn
from the ``torch.Generator`` it is given, so an augmented sample is reproducible from the
generator's seed alone (the datasets seed it from the run seed, the epoch and the index).
Deterministic transforms ignore the generator.

Training: random resized crop -> horizontal flip -> RandAugment (timm's policy strings,
:mod:`~fastervit.data.rand_augment`), or colour jitter when RandAugment is off -> tensor ->
normalise -> random erasing (:mod:`~fastervit.data.random_erasing`). Evaluation: resize the
shorter side to ``img_size / crop_pct`` -> centre crop ``img_size`` -> tensor -> normalise.
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

Transform = Callable[[Image.Image | torch.Tensor, torch.Generator], Image.Image | torch.Tensor]
BICUBIC = Image.Resampling.BICUBIC


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
    """Resize so that the shorter side is ``size``, keeping the aspect ratio."""

    size: int

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        width, height = image.size
        scale = self.size / min(width, height)
        return image.resize(
            (max(round(width * scale), self.size), max(round(height * scale), self.size)), BICUBIC
        )


@dataclass
class CenterCrop:
    """Crop the central ``size x size`` square."""

    size: int

    def __call__(self, image: Image.Image, generator: torch.Generator) -> Image.Image:
        width, height = image.size
        left, top = (width - self.size) // 2, (height - self.size) // 2
        return image.crop((left, top, left + self.size, top + self.size))


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
        crop_pct: evaluation crops ``img_size`` out of a ``img_size / crop_pct`` resize.
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
        if not 0 < config.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {config.crop_pct}.")
        steps = [ResizeShorter(round(config.img_size / config.crop_pct)), CenterCrop(config.img_size)]
    steps += [to_tensor, Normalize(config.mean, config.std)]
    if train and config.re_prob > 0:
        steps.append(RandomErasing(config.re_prob, config.re_mode, max_count=config.re_count))
    return Compose(steps)
