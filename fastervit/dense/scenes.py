"""A segmentation task made in code (chapter 12): Fashion-MNIST items pasted on a canvas.

Every sample is a grayscale canvas with a few items (28x28 Fashion-MNIST images) pasted at
random positions and sizes, later items covering earlier ones, over faint noise. Its mask
gives every pixel a class:

* ``0`` (background) where no item is;
* ``1 + item class`` where an item's intensity is at least ``threshold``;
* ``255`` (:data:`~fastervit.dense.metrics.IGNORE_INDEX`) on the faint rim of an item,
  intensities in ``[ignore_below, threshold)``: whether such a pixel belongs to the item is
  a matter of taste, so it is neither trained on nor scored.

A sample is a function of ``(seed, split, index)`` only: the same in every run, worker and
order. ``train`` pastes items from Fashion-MNIST's training set, ``val`` from its test set.
Without the Debian package ``dataset-fashion-mnist`` (see :mod:`fastervit.data.datasets`),
``source="auto"`` warns and pastes scikit-learn's 8x8 digits instead.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastervit.data.datasets import SPLITS, Digits, FashionMNIST
from fastervit.dense.metrics import IGNORE_INDEX

SOURCES = ("auto", "fashion_mnist", "digits")


@dataclass(frozen=True)
class SceneConfig:
    """How canvases are drawn.

    Attributes:
        size: canvas ``(H, W)``; the model needs sides divisible by 32.
        items: fewest and most items per canvas (inclusive).
        scale: smallest and largest item side, as a fraction of the canvas' shorter side.
        threshold: item intensity (0-1) from which a pixel takes the item's class.
        ignore_below: intensity from which a pixel belongs to the item's rim (ignored) and
            covers what lies below; ``ignore_below = threshold`` means no ignored rim.
        noise: background intensities are uniform in ``[0, noise]``.
    """

    size: tuple[int, int] = (64, 64)
    items: tuple[int, int] = (1, 3)
    scale: tuple[float, float] = (0.4, 0.8)
    threshold: float = 0.25
    ignore_below: float = 0.1
    noise: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.ignore_below <= self.threshold <= 1:
            raise ValueError(
                f"expected 0 < ignore_below <= threshold <= 1, got ignore_below={self.ignore_below}, "
                f"threshold={self.threshold}"
            )
        if not 1 <= self.items[0] <= self.items[1]:
            raise ValueError(f"expected 1 <= items[0] <= items[1], got items={self.items}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"expected 0 < scale[0] <= scale[1] <= 1, got scale={self.scale}")


def load_items(
    split: str, source: str = "auto", data_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], str]:
    """The items to paste: ``(images (N, h, w) uint8, labels (N,) int64, class names, source name)``."""
    if source not in SOURCES:
        raise ValueError(f"unknown item source {source!r}; expected one of {SOURCES}")
    if source in ("auto", "fashion_mnist"):
        try:
            items = FashionMNIST(split, data_dir)
            return items.images, items.labels, items.classes, "fashion_mnist"
        except FileNotFoundError as error:
            if source == "fashion_mnist":
                raise
            warnings.warn(
                f"{error}\nFalling back to scikit-learn's 8x8 digits as the pasted items: the task "
                "is the same, the classes are the digits 0-9 and the numbers differ from the book's.",
                stacklevel=3,
            )
    items = Digits(split)
    return items.images, items.labels, items.classes, "digits"


class PastedScenes(torch.utils.data.Dataset):
    """``length`` canvases of pasted items: ``dataset[i] -> (image (1, H, W) float in [0, 1],
    mask (H, W) int64)``, classes ``0`` (background), ``1..10`` (items) and 255 (ignored).

    Args:
        split: ``train`` or ``val``.
        length: number of canvases.
        config: canvas size, item count and scale, thresholds.
        seed: the canvases derive from ``(seed, split, index)``.
        source: ``fashion_mnist``, ``digits``, or ``auto`` (Fashion-MNIST if installed).
        data_dir: where the Fashion-MNIST files are (default: the Debian package's folder).
    """

    def __init__(
        self,
        split: str,
        length: int,
        config: SceneConfig = SceneConfig(),
        seed: int = 0,
        source: str = "auto",
        data_dir: Path | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"expected split to be one of {SPLITS}, got {split!r}")
        self.split, self.length, self.config, self.seed = split, length, config, seed
        self.items, self.item_labels, item_classes, self.source = load_items(split, source, data_dir)
        self.classes = ("background", *item_classes)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return self.length

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas ``index`` as ``(image (H, W) float32 in [0, 1], mask (H, W) uint8)``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} canvases")
        cfg = self.config
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        H, W = cfg.size
        image = rng.uniform(0.0, cfg.noise, size=(H, W)).astype(np.float32)
        mask = np.zeros((H, W), dtype=np.uint8)
        for _ in range(rng.integers(cfg.items[0], cfg.items[1] + 1)):
            k = int(rng.integers(len(self.items)))
            side = max(2, round(rng.uniform(*cfg.scale) * min(H, W)))
            top, left = int(rng.integers(H - side + 1)), int(rng.integers(W - side + 1))
            item = Image.fromarray(self.items[k]).resize((side, side), Image.Resampling.BILINEAR)
            value = np.asarray(item, dtype=np.float32) / 255.0  # (side, side)
            covered = value >= cfg.ignore_below
            label = np.where(value >= cfg.threshold, 1 + int(self.item_labels[k]), IGNORE_INDEX)
            region = (slice(top, top + side), slice(left, left + side))
            image[region] = np.where(covered, value, image[region])
            mask[region] = np.where(covered, label, mask[region])
        return image, mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.generate(index)
        return torch.from_numpy(image).unsqueeze(0), torch.from_numpy(mask).long()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every canvas at once: ``(images (N, 1, H, W) float, masks (N, H, W) int64)``."""
        pairs = [self.generate(i) for i in range(self.length)]
        images = torch.from_numpy(np.stack([image for image, _ in pairs])).unsqueeze(1)
        masks = torch.from_numpy(np.stack([mask for _, mask in pairs])).long()
        return images, masks
