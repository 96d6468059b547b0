"""A segmentation task made in code (chapter 12): Fashion-MNIST items pasted on a canvas.

Every sample is a grayscale canvas with a few items (28x28 Fashion-MNIST images) pasted at
random positions and sizes, later items covering earlier ones, over faint noise. Its mask
gives every pixel a class, from each item's *silhouette*:

* the silhouette is the item's shape at its native size: the pixels at least
  ``threshold`` bright, with the holes enclosed by them filled (a dark stripe or a dark
  garment is still the garment) and specks of fewer than :data:`SPECK` pixels dropped;
* resized to the item's size on the canvas (bilinear), it becomes a *coverage* in [0, 1];
  the item is alpha-composited over the canvas with it;
* ``1 + item class`` where the coverage is at least ``band[1]``; ``255``
  (:data:`~fastervit.dense.metrics.IGNORE_INDEX`) on the thin band where it lies in
  ``[band[0], band[1])``, about one pixel wide along the outline, where a pixel is partly
  item and partly what lies below: it is neither trained on nor scored; what lay below
  elsewhere (``0``, background, where no item is).

A sample is a function of ``(seed, split, index)`` only: the same in every run, worker and
order. ``train`` pastes items from Fashion-MNIST's training set, ``val`` from its test set.
Fashion-MNIST must be present (:mod:`fastervit.data.datasets` says where it is looked for
and how to get it); ``source="digits"`` pastes scikit-learn's 8x8 digits instead, for a
quick test without it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from fastervit.data.datasets import SPLITS, Digits, FashionMNIST
from fastervit.dense.metrics import IGNORE_INDEX

SOURCES = ("fashion_mnist", "digits")
SPECK = 3  # silhouette components of fewer pixels than this (at the item's native size) are noise


@dataclass(frozen=True)
class SceneConfig:
    """How canvases are drawn.

    Attributes:
        size: canvas ``(H, W)``; the model needs sides divisible by 32.
        items: fewest and most items per canvas (inclusive).
        scale: smallest and largest item side, as a fraction of the canvas' shorter side.
        threshold: item intensity (0-1) from which a pixel starts the item's silhouette
            (before its holes are filled).
        band: coverage ``[low, high)`` of the ignored band along an item's outline; a
            pixel covered at least ``high`` takes the item's class. ``low == high``: no band.
        noise: background intensities are uniform in ``[0, noise]``.
    """

    size: tuple[int, int] = (64, 64)
    items: tuple[int, int] = (1, 3)
    scale: tuple[float, float] = (0.4, 0.8)
    threshold: float = 0.05
    band: tuple[float, float] = (0.25, 0.75)
    noise: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ValueError(f"expected 0 < threshold <= 1, got threshold={self.threshold}")
        if not 0 < self.band[0] <= self.band[1] <= 1:
            raise ValueError(f"expected 0 < band[0] <= band[1] <= 1, got band={self.band}")
        if not 1 <= self.items[0] <= self.items[1]:
            raise ValueError(f"expected 1 <= items[0] <= items[1], got items={self.items}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"expected 0 < scale[0] <= scale[1] <= 1, got scale={self.scale}")
        if not 0 <= self.noise <= 1:
            raise ValueError(f"expected 0 <= noise <= 1, got noise={self.noise}")


def load_items(
    split: str, source: str = "fashion_mnist", data_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The items to paste: ``(images (N, h, w) uint8, labels (N,) int64, class names)``.

    Raises the dataset's own error, which says how to get the files, where Fashion-MNIST is
    missing: the task never silently changes its items.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown item source {source!r}; expected one of {SOURCES}")
    items = FashionMNIST(split, data_dir) if source == "fashion_mnist" else Digits(split)
    return items.images, items.labels, items.classes


def silhouette(item: np.ndarray, threshold: float) -> np.ndarray:
    """An item's filled silhouette at its native size.

    Shapes: ``(h, w)`` uint8 ``-> (h, w)`` bool: pixels at least ``threshold`` (0-1)
    bright, enclosed holes filled, components of fewer than :data:`SPECK` pixels dropped.
    """
    shape = ndimage.binary_fill_holes(item >= threshold * 255)
    labels, count = ndimage.label(shape)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    return (sizes >= SPECK)[labels] & shape


def render_item(item: np.ndarray, side: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """An item resized to ``side x side``: ``(intensity in [0, 1], coverage in [0, 1])``, float32."""
    value = Image.fromarray(item).resize((side, side), Image.Resampling.BILINEAR)
    shape = Image.fromarray(silhouette(item, threshold).astype(np.float32))
    coverage = shape.resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(value, dtype=np.float32) / 255.0, np.clip(np.asarray(coverage), 0.0, 1.0)


class PastedScenes(torch.utils.data.Dataset):
    """``length`` canvases of pasted items: ``dataset[i] -> (image (1, H, W) float in [0, 1],
    mask (H, W) int64)``, classes ``0`` (background), ``1..10`` (items) and 255 (ignored).

    Args:
        split: ``train`` or ``val``.
        length: number of canvases.
        config: canvas size, item count and scale, thresholds.
        seed: the canvases derive from ``(seed, split, index)``.
        source: ``fashion_mnist`` or ``digits``.
        data_dir: where the Fashion-MNIST files are (default: looked up, see
            :mod:`fastervit.data.datasets`).
    """

    def __init__(
        self,
        split: str,
        length: int,
        config: SceneConfig = SceneConfig(),
        seed: int = 0,
        source: str = "fashion_mnist",
        data_dir: Path | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"expected split to be one of {SPLITS}, got {split!r}")
        self.split, self.length, self.config, self.seed = split, length, config, seed
        self.source = source
        self.items, self.item_labels, item_classes = load_items(split, source, data_dir)
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
            value, coverage = render_item(self.items[k], side, cfg.threshold)  # each (side, side)
            region = (slice(top, top + side), slice(left, left + side))
            image[region] = coverage * value + (1 - coverage) * image[region]
            low, high = cfg.band
            label = np.where(coverage >= high, 1 + int(self.item_labels[k]), IGNORE_INDEX)
            mask[region] = np.where(coverage >= low, label, mask[region])
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
