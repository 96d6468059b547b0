"""Datasets: digits, a written image-folder tree, Fashion-MNIST files, the factory's errors."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastervit.data.datasets import FashionMNIST, build_dataset, read_idx
from fastervit.data.sampler import ResumableSampler

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fake_fashion_mnist(directory: Path, n_train=12, n_val=5) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        _write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_digits_splits_shapes_and_info():
    train, val = build_dataset("digits", "train"), build_dataset("digits", "val")
    assert len(train) + len(val) == 1797 and len(val) == 360
    image, label = val[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    assert (train.info.num_classes, train.info.channels, train.info.native_size) == (10, 1, 8)
    assert sorted(set(train.source.labels.tolist())) == list(range(10))


def test_augmented_samples_depend_on_seed_epoch_and_index_only():
    ds = build_dataset("digits", "train", seed=3)
    first = ds[5][0]
    assert torch.equal(first, build_dataset("digits", "train", seed=3)[5][0])
    ds.set_epoch(1)
    assert not torch.equal(first, ds[5][0])
    ds.set_epoch(0)
    assert torch.equal(first, ds[5][0])
    assert not torch.equal(first, build_dataset("digits", "train", seed=4)[5][0])


def test_val_split_is_not_augmented_by_default():
    ds = build_dataset("digits", "val")
    a = ds[0][0]
    ds.set_epoch(3)
    assert torch.equal(a, ds[0][0])


def test_image_folder_tree(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                array = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
                Image.fromarray(array).save(tmp_path / split / cls / f"{i}.{'jpg' if i % 2 else 'png'}")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    train = build_dataset("imagefolder", "train", tmp_path, img_size=32)
    val = build_dataset("imagefolder", "val", tmp_path, img_size=32)
    assert (len(train), len(val)) == (6, 4)
    assert train.source.classes == ("cat", "dog") and train.info.num_classes == 2
    assert val.source.labels.tolist() == [0, 0, 1, 1]
    image, label = val[3]
    assert image.shape == (3, 32, 32) and label == 1


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="--data-dir"):
        build_dataset("imagefolder", "train")
    with pytest.raises(FileNotFoundError, match="train"):
        build_dataset("imagefolder", "train", tmp_path)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "bird").mkdir(parents=True)
    with pytest.raises(ValueError, match="bird"):
        build_dataset("imagefolder", "val", tmp_path)
    with pytest.raises(FileNotFoundError, match="No images"):
        build_dataset("imagefolder", "train", tmp_path)


def test_fashion_mnist_from_written_files_and_env_var(tmp_path, monkeypatch):
    _write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("FASTERVIT_DATA", str(tmp_path))
    train, val = build_dataset("fashion_mnist", "train"), build_dataset("fashion_mnist", "val")
    assert (len(train), len(val)) == (12, 5)
    assert val.source.labels.tolist() == [0, 1, 2, 3, 4]
    assert val[0][0].shape == (1, 32, 32)
    explicit = build_dataset("fashion_mnist", "val", tmp_path / "fashion-mnist")
    assert torch.equal(explicit[1][0], val[1][0])


def test_missing_fashion_mnist_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST("train", tmp_path)


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist is not installed")
def test_installed_fashion_mnist():
    train, val = FashionMNIST("train"), FashionMNIST("val")
    assert (len(train), len(val)) == (60000, 10000)
    image, label = val[0]
    assert image.size == (28, 28) and image.mode == "L" and label == 9  # the first test image: an ankle boot
    assert np.bincount(train.labels).tolist() == [6000] * 10


def test_read_idx_rejects_damaged_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(ValueError, match="unsigned bytes"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match="digits, fashion_mnist, imagefolder"):
        build_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="split"):
        build_dataset("digits", "test")


def test_sampler_shards_are_disjoint_equal_and_cover_the_epoch():
    shards = [list(ResumableSampler(103, True, seed=1, rank=r, world_size=4)) for r in range(4)]
    assert all(len(s) == 25 for s in shards)
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == 100
    eval_shards = [
        list(ResumableSampler(103, False, rank=r, world_size=4, drop_last=False)) for r in range(4)
    ]
    assert sorted(i for s in eval_shards for i in s) == list(range(103))


def test_sampler_order_depends_on_epoch_and_skip_resumes_it():
    sampler = ResumableSampler(50, True, seed=0)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert sorted(epoch0) == sorted(epoch1) == list(range(50)) and epoch0 != epoch1
    sampler.set_epoch(1, skip=20)
    assert list(sampler) == epoch1[20:] and len(sampler) == 30
