"""Datasets that need no download: Fashion-MNIST, scikit-learn's digits, image folders.

Each *source* returns ``(PIL image, label)`` and describes itself with a :class:`DatasetInfo`
(classes, channels, native size, normalisation, the default model input size).
:func:`build_dataset` wraps a source with a transform into an :class:`ImageDataset`, which
returns ``(image tensor (C, H, W), label)``.

Where the files are:

* ``fashion_mnist``: the four gzipped IDX files of Debian's ``dataset-fashion-mnist`` package,
  in ``data_dir`` if given, else in the first of these folders that holds all four
  (:func:`find_fashion_mnist`): ``$FASTERVIT_DATA/fashion-mnist``, the checkout's
  ``.data/fashion-mnist`` (where ``make data`` puts them), ``/usr/share/datasets/fashion-mnist``
  (where ``apt-get install dataset-fashion-mnist`` puts them).
* ``imagefolder``: ``data_dir/train/<class>/.../<image>`` and ``data_dir/val/<class>/...``,
  each split read by :class:`ClassFolders`.
* ``digits``: bundled with scikit-learn (8x8 images, 1797 of them); 80 % train, 20 % val.
"""

import gzip
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastervit.data.sampler import derive_seed
from fastervit.data.transforms import Transform, TransformConfig, build_transform
from fastervit.variants import IMAGENET_MEAN, IMAGENET_STD

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Where datasets are looked for (see data_roots): the variable, the checkout's data folder
# (None when the package is installed rather than used from a checkout), Debian's path.
DATA_VARIABLE = "FASTERVIT_DATA"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
CHECKOUT_DATA_DIR: Path | None = (
    _PACKAGE_ROOT / ".data" if (_PACKAGE_ROOT / "pyproject.toml").is_file() else None
)
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


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


def data_roots() -> list[tuple[Path, str]]:
    """The folders searched for datasets, in order, each with where it comes from.

    ``$FASTERVIT_DATA`` when set, then the checkout's ``.data`` (when the package runs from a
    checkout), then ``/usr/share/datasets``. A dataset ``name`` is looked for in
    ``root/name`` of each.
    """
    roots = []
    if os.environ.get(DATA_VARIABLE):
        roots.append((Path(os.environ[DATA_VARIABLE]), f"${DATA_VARIABLE}"))
    if CHECKOUT_DATA_DIR is not None:
        roots.append((CHECKOUT_DATA_DIR, "this checkout's data folder, filled by `make data`"))
    roots.append((SYSTEM_DATA_DIR, "Debian's path, where its dataset-* packages install"))
    return roots


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


FASHION_MNIST_FILES = {
    split: tuple(f"{prefix}-{kind}-idx{n}-ubyte.gz" for kind, n in (("images", 3), ("labels", 1)))
    for split, prefix in (("train", "train"), ("val", "t10k"))
}

# How to get Fashion-MNIST, for the error that says it is missing.
_GET_FASHION_MNIST = f"""To get it:
  * in a checkout of this project: `make data` (no root needed; it fills .data/fashion-mnist);
  * elsewhere, on Debian or Ubuntu, as any user:
        apt-get download dataset-fashion-mnist
        dpkg-deb -x dataset-fashion-mnist_*.deb DIR
    then set {DATA_VARIABLE}=DIR/usr/share/datasets;
  * as root: `apt-get install dataset-fashion-mnist` (into {SYSTEM_DATA_DIR}/fashion-mnist);
  * or set {DATA_VARIABLE} to any folder that holds fashion-mnist/ with the four files."""


def find_fashion_mnist() -> Path:
    """The first folder ``root/fashion-mnist`` holding all four files, ``root`` from :func:`data_roots`.

    Raises:
        FileNotFoundError: none has them; the message lists every folder looked at and the
            commands that get the files.
    """
    names = [name for files in FASHION_MNIST_FILES.values() for name in files]
    looked = [] if os.environ.get(DATA_VARIABLE) else [f"  - ${DATA_VARIABLE}: not set"]
    for root, origin in data_roots():
        folder = root / "fashion-mnist"
        missing = [name for name in names if not (folder / name).is_file()]
        if not missing:
            return folder
        found = "no such folder" if not folder.is_dir() else f"missing {', '.join(missing)}"
        looked.append(f"  - {folder} ({origin}): {found}")
    raise FileNotFoundError(
        "Fashion-MNIST not found (the four *-ubyte.gz files). Looked in, in this order:\n"
        + "\n".join(looked)
        + "\n"
        + _GET_FASHION_MNIST
    )


class FashionMNIST:
    """Zalando's Fashion-MNIST: 28x28 grayscale clothes in 10 classes; 60k train, 10k val.

    Read from Debian's ``dataset-fashion-mnist`` files (found by :func:`find_fashion_mnist`
    unless ``data_dir`` names their folder); ``val`` is the official test set.
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
        directory = Path(data_dir) if data_dir is not None else find_fashion_mnist()
        paths = [directory / name for name in FASHION_MNIST_FILES[split]]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Fashion-MNIST's {split} files are not in {directory}: missing {', '.join(missing)}. "
                "--data-dir names the folder that holds the *-ubyte.gz files; leave it out to "
                f"find them in ${DATA_VARIABLE}, the checkout's .data or {SYSTEM_DATA_DIR}.\n"
                + _GET_FASHION_MNIST
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


# Pillow's modes for 16-bit grayscale PNGs ("I", 32-bit integers, in older Pillow versions;
# none of IMAGE_EXTENSIONS holds wider integers).
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, 16-bit grayscale scaled rather than clipped."""
    if image.mode in _GRAY16_MODES:
        # convert("RGB") would clip every value above 255 to white; scale 0-65535 to 0-255
        # instead, rounding to nearest (v * 255 / 65535 = v / 257).
        wide = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def read_image(path: Path) -> Image.Image:
    """Read an image file as 8-bit RGB; a file that cannot be read is an error naming it.

    16-bit grayscale is scaled to 8 bits (``v / 257``), not clipped. Images with more pixels
    than ``PIL.Image.MAX_IMAGE_PIXELS`` are refused before they are decoded: a small file can
    decompress to gigabytes (a decompression bomb), and Pillow alone only warns up to twice
    that limit.

    Raises:
        ValueError: truncated or damaged files, files that are not images, bombs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return _rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(
            f"{path}: refused as a possible decompression bomb ({error}). If the image is genuine, "
            "raise PIL.Image.MAX_IMAGE_PIXELS before reading it."
        ) from error
    except (OSError, SyntaxError, EOFError) as error:  # Pillow's ways of saying "damaged"
        raise ValueError(f"{path}: not a readable image (truncated or damaged?): {error}") from error


def read_class_map(path: Path) -> tuple[str, ...]:
    """Class-folder names from a text file, one per line: line ``i`` (from 0) is class ``i``.

    The format of timm's ``--class-map``: it fixes the label of each folder, so that a folder
    holding only some of a model's classes is scored against the model's class indices.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no class map at {path} (a text file, one class-folder name per line)")
    names = [line.strip() for line in path.read_text().splitlines()]
    if not names:
        raise ValueError(f"{path}: the class map is empty; it needs one class-folder name per line.")
    first_line: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if not name:
            raise ValueError(f"{path}: line {number} is empty; every line names one class folder.")
        if name in first_line:
            raise ValueError(
                f"{path}: {name!r} is on lines {first_line[name]} and {number}; each class appears once."
            )
        first_line[name] = number
    return tuple(names)


def _image_files(folder: Path) -> list[Path]:
    """Image files anywhere under ``folder``, sorted, following links (as torchvision does)."""
    return sorted(
        Path(parent) / name
        for parent, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


class ClassFolders:
    """Images sorted into a folder per class, ``root/<class>/.../<image>``, read as RGB.

    Images in nested folders under a class folder belong to that class (as in torchvision's
    ImageFolder). Labels are the classes' positions in ``classes``: by default the class
    folders' names, sorted; given a list (a class map, or another split's classes), every
    folder must be in it, and classes without a folder are simply absent.

    Raises:
        FileNotFoundError: ``root`` is missing or has no class folder, or a class folder holds
            no image.
        ValueError: a folder whose name is not in ``classes``.
    """

    info = DatasetInfo(
        name="imagefolder",
        num_classes=0,
        channels=3,
        native_size=None,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_img_size=224,
        default_crop_pct=0.875,
    )

    def __init__(self, root: Path, classes: Sequence[str] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Expected a folder of class folders at {root} (root/<class>/<image>).")
        folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
        if not folders:
            raise FileNotFoundError(f"{root} has no class folders (expected root/<class>/<image>).")
        self.root = root
        self.classes = tuple(folders if classes is None else classes)
        index_of = {name: i for i, name in enumerate(self.classes)}
        unknown = [name for name in folders if name not in index_of]
        if unknown:
            raise ValueError(
                f"{root} has {len(unknown)} folders that are not among the {len(self.classes)} "
                f"classes: {_listing(unknown)}; rename or remove them, or use a class list that names them."
            )
        self.samples: list[tuple[Path, int]] = []
        for name in folders:
            files = _image_files(root / name)
            if not files:
                raise FileNotFoundError(
                    f"{root / name} is an empty class folder: no image ({', '.join(IMAGE_EXTENSIONS)}) "
                    "in it or below it. Add its images or remove the folder."
                )
            self.samples += [(path, index_of[name]) for path in files]
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)
        self.info = DatasetInfo(**{**vars(ClassFolders.info), "num_classes": len(self.classes)})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return read_image(path), label


class ImageFolder(ClassFolders):
    """An ImageNet-style tree with splits: ``root/{train,val}/<class>/.../<image>``.

    Classes are the folders of ``root/train``, sorted; label ``i`` is ``classes[i]`` in both
    splits, so ``val`` may hold fewer classes than ``train`` but no others.
    """

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
        classes = sorted(entry.name for entry in (root / "train").iterdir() if entry.is_dir())
        if not classes:
            raise FileNotFoundError(f"{root / 'train'} has no class sub-directories.")
        try:
            super().__init__(root / split, classes)
        except ValueError as error:
            raise ValueError(f"{error} Every split must use the classes of {root / 'train'}.") from error


Source = FashionMNIST | Digits | ClassFolders
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
