"""Datasets that need no download: packaged Fashion-MNIST, scikit-learn's digits, image folders.

Each *source* returns ``(PIL image, label)`` and describes itself with a :class:`DatasetInfo`
(classes, channels, native size, normalisation, the default model input size).
:func:`build_dataset` wraps a source with a transform into an :class:`ImageDataset`, which
returns ``(image tensor (C, H, W), label)``.

Where the files are:

* ``fashion_mnist``: the four gzipped IDX files of Debian's ``dataset-fashion-mnist`` package,
  in ``data_dir`` if given, else in ``$FASTERVIT_DATA/fashion-mnist``, ``FASTERVIT_DATA``
  defaulting to ``/usr/share/datasets`` (where the package installs them).
* ``imagefolder``: ``data_dir/train/<class>/*.jpg`` and ``data_dir/val/<class>/*.jpg``.
* ``digits``: bundled with scikit-learn (8x8 images, 1797 of them); 80 % train, 20 % val.
"""

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastervit.data.sampler import derive_seed
from fastervit.data.transforms import Transform, TransformConfig, build_transform

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and its transforms need to know about a dataset.

    ``native_size`` is the stored image side (None when images vary); ``default_img_size`` is
    the input side used unless told otherwise, a multiple of 32 as FasterViT requires.
    """

    name: str
    num_classes: int
    channels: int
    native_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_img_size: int
    default_crop_pct: float


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Expected split to be one of {SPLITS}, got {split!r}.")


def data_root() -> Path:
    """Directory holding datasets: ``$FASTERVIT_DATA``, or ``/usr/share/datasets``."""
    return Path(os.environ.get("FASTERVIT_DATA", "/usr/share/datasets"))


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) of unsigned bytes into an array.

    Layout: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then each
    dimension as a big-endian uint32, then the data.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(
            f"{path}: expected an IDX file of unsigned bytes (magic 0x0000 08 nn), got header "
            f"{data[:4].hex()}; the file is damaged or not an MNIST-style file."
        )
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header promises shape {shape} ({int(np.prod(shape))} bytes), found "
            f"{array.size} bytes; the file is truncated."
        )
    return array.reshape(shape)


class FashionMNIST:
    """Zalando's Fashion-MNIST: 28x28 grayscale clothes in 10 classes; 60k train, 10k val.

    Read from Debian's ``dataset-fashion-mnist`` files; ``val`` is the official test set.
    """

    info = DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        channels=1,
        native_size=28,
        mean=(0.2860,),
        std=(0.3530,),
        default_img_size=32,
        default_crop_pct=1.0,
    )
    classes = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )

    def __init__(self, split: str, data_dir: Path | None = None) -> None:
        _check_split(split)
        directory = Path(data_dir) if data_dir is not None else data_root() / "fashion-mnist"
        prefix = "train" if split == "train" else "t10k"
        paths = [directory / f"{prefix}-{kind}-idx{n}-ubyte.gz" for kind, n in (("images", 3), ("labels", 1))]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST files not found: {', '.join(missing)}. Install them with "
                "'apt-get install dataset-fashion-mnist' (they go to /usr/share/datasets/"
                "fashion-mnist), or point --data-dir (or $FASTERVIT_DATA/fashion-mnist) at a "
                "directory holding the four *-ubyte.gz files."
            )
        self.images = read_idx(paths[0])  # (N, 28, 28) uint8
        self.labels = read_idx(paths[1]).astype(np.int64)  # (N,)
        if len(self.images) != len(self.labels):
            raise ValueError(
                f"{directory}: {len(self.images)} images but {len(self.labels)} labels for "
                f"split {split!r}; the files do not belong together."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])


class Digits:
    """scikit-learn's handwritten digits: 8x8 grayscale, 10 classes, 1797 images.

    A fixed shuffle (seed 0) puts the first 80 % in ``train`` and the rest in ``val``.
    Pixel values 0-16 are stretched to 0-255.
    """

    info = DatasetInfo(
        name="digits",
        num_classes=10,
        channels=1,
        native_size=8,
        mean=(0.3053,),
        std=(0.3760,),
        default_img_size=32,
        default_crop_pct=1.0,
    )
    classes = tuple(str(d) for d in range(10))

    def __init__(self, split: str, data_dir: Path | None = None) -> None:
        from sklearn.datasets import load_digits

        _check_split(split)
        if data_dir is not None:
            raise ValueError(
                f"The digits dataset ships with scikit-learn and takes no data directory, "
                f"got {data_dir}; leave --data-dir out."
            )
        bunch = load_digits()
        order = np.random.default_rng(0).permutation(len(bunch.target))
        n_train = int(0.8 * len(order))
        chosen = order[:n_train] if split == "train" else order[n_train:]
        self.images = np.round(bunch.images[chosen] * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8)
        self.labels = bunch.target[chosen].astype(np.int64)  # (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index]), int(self.labels[index])


class ImageFolder:
    """An ImageNet-style tree: ``root/{train,val}/<class name>/<image file>``, read as RGB.

    Classes are the sub-directories of ``root/train``, sorted; label ``i`` is ``classes[i]``
    in both splits.
    """

    info = DatasetInfo(
        name="imagefolder",
        num_classes=0,
        channels=3,
        native_size=None,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        default_img_size=224,
        default_crop_pct=0.875,
    )

    def __init__(self, split: str, data_dir: Path | None = None) -> None:
        _check_split(split)
        if data_dir is None:
            raise ValueError(
                "The imagefolder dataset needs a root directory: pass --data-dir ROOT with "
                "ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg."
            )
        root = Path(data_dir)
        for needed in (root / "train", root / split):
            if not needed.is_dir():
                raise FileNotFoundError(
                    f"Expected the directory {needed} (layout ROOT/train/<class>/*.jpg, "
                    f"ROOT/val/<class>/*.jpg), found nothing there."
                )
        self.classes = tuple(sorted(d.name for d in (root / "train").iterdir() if d.is_dir()))
        if not self.classes:
            raise FileNotFoundError(f"{root / 'train'} has no class sub-directories.")
        index_of = {name: i for i, name in enumerate(self.classes)}
        unknown = sorted(d.name for d in (root / split).iterdir() if d.is_dir() and d.name not in index_of)
        if unknown:
            raise ValueError(
                f"{root / split} has classes missing from {root / 'train'}: {unknown}; every "
                "split must use the training classes."
            )
        self.samples = [
            (path, index_of[path.parent.name])
            for path in sorted((root / split).glob("*/*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.parent.name in index_of
        ]
        if not self.samples:
            raise FileNotFoundError(
                f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root / split}/<class>/."
            )
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)
        self.info = DatasetInfo(**{**vars(ImageFolder.info), "num_classes": len(self.classes)})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        with Image.open(path) as image:
            return image.convert("RGB"), label


Source = FashionMNIST | Digits | ImageFolder
SOURCES: dict[str, type[Source]] = {
    "fashion_mnist": FashionMNIST,
    "digits": Digits,
    "imagefolder": ImageFolder,
}


class ImageDataset(torch.utils.data.Dataset):
    """A source with a transform: ``dataset[i] -> (image (C, H, W) float, label int)``.

    The transform's generator is seeded from ``(seed, epoch, index)``, so a sample looks the
    same whichever worker loads it and whether or not training was interrupted. Call
    :meth:`set_epoch` before each epoch; loaders must not keep persistent workers, which
    would not see the new epoch.
    """

    def __init__(self, source: Source, transform: Transform, seed: int = 0) -> None:
        self.source = source
        self.transform = transform
        self.seed = seed
        self.epoch = 0

    @property
    def info(self) -> DatasetInfo:
        return self.source.info

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch`` from now on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[index]
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index))
        return self.transform(image, generator), label


def build_source(name: str, split: str, data_dir: Path | None = None) -> Source:
    """The raw dataset ``name`` (one of :data:`SOURCES`) for ``split`` ('train' or 'val')."""
    if name not in SOURCES:
        raise ValueError(f"Unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}.")
    return SOURCES[name](split, data_dir)


def build_dataset(
    name: str,
    split: str,
    data_dir: Path | None = None,
    augment: bool | None = None,
    seed: int = 0,
    **transform_options: object,
) -> ImageDataset:
    """Dataset ``name`` for ``split``, returning ``(image (C, H, W), label)``.

    Args:
        name: one of ``fashion_mnist``, ``digits``, ``imagefolder``.
        split: ``train`` or ``val``.
        data_dir: where the files are (see the module docstring).
        augment: use the training pipeline; by default only for the ``train`` split.
        seed: run seed the augmentations derive from.
        transform_options: :class:`~fastervit.data.transforms.TransformConfig` fields
            overriding the dataset's defaults (``img_size``, ``crop_pct``, ``hflip`` ...).
    """
    source = build_source(name, split, data_dir)
    info = source.info
    defaults = {
        "img_size": info.default_img_size,
        "crop_pct": info.default_crop_pct,
        "mean": info.mean,
        "std": info.std,
    }
    config = TransformConfig(**{**defaults, **transform_options})
    train = split == "train" if augment is None else augment
    return ImageDataset(source, build_transform(config, train), seed)
