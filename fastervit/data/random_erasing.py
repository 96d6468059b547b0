"""Random erasing, as timm does it (chapter 10).

Zhong et al., "Random Erasing Data Augmentation" (AAAI 2020): with some probability, replace
a random rectangle of a training image by noise, so that the network cannot rely on any one
part of an object. timm's version, which the release trains with (``--reprob 0.25 --remode
pixel --recount 1``):

* with probability ``probability`` an image is erased at all;
* it then gets ``count`` rectangles, ``count`` drawn uniformly from ``[min_count, max_count]``
  (timm's ``--recount`` is ``max_count``, with ``min_count`` 1);
* each rectangle covers a fraction of the image drawn uniformly from ``[min_area, max_area]``
  (0.02 to 1/3), divided by ``count``, with an aspect ratio drawn log-uniformly from
  ``[min_aspect, 1 / min_aspect]`` (0.3 to 3.3); up to ten draws until it fits strictly inside
  the image, else that rectangle is skipped;
* it is filled according to ``mode``: ``pixel``, an independent standard normal value per
  pixel and channel; ``rand``, one standard normal value per channel; ``const``, zeros.

The fill values are those of a *normalised* image (zero is the mean colour, one is one
standard deviation), which is why random erasing runs after normalisation, on the
``(C, H, W)`` tensor. Every draw comes from the ``torch.Generator`` the transform is given.
"""

import math
from dataclasses import dataclass

import torch

from fastervit.data.draw import randint, uniform

MODES = ("pixel", "rand", "const")


@dataclass(frozen=True)
class RandomErasing:
    """Erase random rectangles of a normalised ``(C, H, W)`` image.

    Args:
        probability: probability that an image is erased at all.
        mode: ``pixel``, ``rand`` or ``const`` (see the module docstring).
        min_count, max_count: range of the number of rectangles per erased image.
        min_area, max_area: range of the erased fraction of the image (over all rectangles).
        min_aspect: smallest height / width of a rectangle; the largest is its inverse.
    """

    probability: float = 0.25
    mode: str = "pixel"
    min_count: int = 1
    max_count: int = 1
    min_area: float = 0.02
    max_area: float = 1 / 3
    min_aspect: float = 0.3

    def __post_init__(self) -> None:
        checks = [
            (0.0 <= self.probability <= 1.0, f"probability must be in [0, 1], got {self.probability}"),
            (self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}"),
            (
                1 <= self.min_count <= self.max_count,
                f"expected 1 <= min_count <= max_count, got {self.min_count} and {self.max_count}",
            ),
            (
                0.0 < self.min_area <= self.max_area <= 1.0,
                f"expected 0 < min_area <= max_area <= 1, got {self.min_area} and {self.max_area}",
            ),
            (0.0 < self.min_aspect <= 1.0, f"min_aspect must be in (0, 1], got {self.min_aspect}"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("RandomErasing: " + "; ".join(errors) + ".")

    def boxes(self, height: int, width: int, generator: torch.Generator) -> list[tuple[int, int, int, int]]:
        """The ``(top, left, h, w)`` rectangles for one image (empty when it is not erased)."""
        if uniform(generator) > self.probability:
            return []
        count = self.min_count
        if self.max_count > self.min_count:
            count += randint(generator, self.max_count - self.min_count + 1)
        log_aspect = (math.log(self.min_aspect), math.log(1 / self.min_aspect))
        found = []
        for _ in range(count):
            for _attempt in range(10):
                target = uniform(generator, self.min_area, self.max_area) * height * width / count
                aspect = math.exp(uniform(generator, *log_aspect))
                h = round(math.sqrt(target * aspect))
                w = round(math.sqrt(target / aspect))
                if w < width and h < height:
                    top = randint(generator, height - h + 1)
                    left = randint(generator, width - w + 1)
                    found.append((top, left, h, w))
                    break
        return found

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``(C, H, W) -> (C, H, W)``: a copy of ``image`` with the rectangles filled."""
        if image.ndim != 3:
            raise ValueError(
                f"RandomErasing expects one (C, H, W) image tensor, got shape {tuple(image.shape)}; "
                "apply it per sample, after normalisation."
            )
        C, H, W = image.shape
        boxes = self.boxes(H, W, generator)
        if not boxes:
            return image
        image = image.clone()
        for top, left, h, w in boxes:
            shape = (C, h, w) if self.mode == "pixel" else (C, 1, 1)
            if self.mode == "const":
                values = torch.zeros(shape, dtype=image.dtype)
            else:
                values = torch.randn(shape, generator=generator).to(image.dtype)
            image[:, top : top + h, left : left + w] = values
        return image
