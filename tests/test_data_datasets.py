"""Datasets: digits, image folders and class maps, where Fashion-MNIST is found, the errors."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastervit.data import datasets
from fastervit.data.datasets import (
    ClassFolders,
    FashionMNIST,
    build_dataset,
    find_fashion_mnist,
    read_class_map,
    read_idx,
)
from fastervit.data.sampler import ResumableSampler

REPO = Path(__file__).resolve().parents[1]


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


def _write_images(folder: Path, names, size=(30, 20), seed=0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


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
    with pytest.raises(ValueError, match="bird.*Every split must use the classes of"):
        build_dataset("imagefolder", "val", tmp_path)


def test_images_in_nested_folders_belong_to_their_class_folder(tmp_path):
    # As torchvision's ImageFolder: every image below root/<class>/, at any depth.
    _write_images(tmp_path, ["a/top.png", "a/sub/one.png", "a/sub/deeper/two.jpg", "b/x/y/z.png"])
    (tmp_path / "a" / "sub" / "readme.txt").write_text("not an image")
    folders = ClassFolders(tmp_path)
    found = [(path.relative_to(tmp_path).as_posix(), label) for path, label in folders.samples]
    assert found == [("a/sub/deeper/two.jpg", 0), ("a/sub/one.png", 0), ("a/top.png", 0), ("b/x/y/z.png", 1)]
    assert folders[3][0].size == (30, 20) and folders[3][0].mode == "RGB"


@pytest.mark.parametrize("content", ["nothing", "a text file", "an empty sub-folder"])
def test_an_empty_class_folder_is_an_error_naming_it(tmp_path, content):
    _write_images(tmp_path, ["full/0.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    if content == "a text file":
        (empty / "notes.txt").write_text("no image here")
    elif content == "an empty sub-folder":
        (empty / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty} is an empty class folder"):
        ClassFolders(tmp_path)


def test_an_empty_class_folder_in_a_split_tree_is_an_error(tmp_path):
    _write_images(tmp_path, ["train/cat/0.png", "train/dog/0.png", "val/cat/0.png"])
    (tmp_path / "val" / "dog").mkdir()
    with pytest.raises(FileNotFoundError, match="val/dog is an empty class folder"):
        build_dataset("imagefolder", "val", tmp_path)


def test_a_class_map_sets_the_labels_of_a_folder_with_some_classes(tmp_path):
    _write_images(tmp_path / "data", ["n03/a.png", "n03/b.png", "n01/c.png"])
    class_map = tmp_path / "classes.txt"
    class_map.write_text("n00\nn01\nn02\nn03\nn04\n")
    classes = read_class_map(class_map)
    assert classes == ("n00", "n01", "n02", "n03", "n04")
    folders = ClassFolders(tmp_path / "data", classes)
    assert folders.labels.tolist() == [1, 3, 3] and folders.info.num_classes == 5
    assert ClassFolders(tmp_path / "data").labels.tolist() == [0, 1, 1]  # without the map: sorted folders


def test_folders_missing_from_the_class_map_are_named(tmp_path):
    _write_images(tmp_path, ["n01/a.png", "stray/b.png", "zz/c.png"])
    with pytest.raises(ValueError, match=r"2 folders that are not among the 2 classes: stray, zz"):
        ClassFolders(tmp_path, ("n00", "n01"))


@pytest.mark.parametrize(
    "text,error",
    [
        ("", "empty"),
        ("n00\n\nn02\n", "line 2 is empty"),
        ("n00\nn01\nn00\n", "'n00' is on lines 1 and 3"),
    ],
)
def test_bad_class_maps(tmp_path, text, error):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=error):
        read_class_map(path)
    with pytest.raises(FileNotFoundError, match="no class map"):
        read_class_map(tmp_path / "missing.txt")


def test_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    (tmp_path / "gray").mkdir()
    Image.fromarray(ramp).save(tmp_path / "gray" / "ramp.png")
    with Image.open(tmp_path / "gray" / "ramp.png") as raw:
        assert raw.mode.startswith("I")  # Pillow reads it as 16-bit integers ...
        assert (np.asarray(raw.convert("RGB")) == 255).mean() > 0.99  # ... which convert() clips
    image, _ = ClassFolders(tmp_path)[0]
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (64, 64, 3)
    expected = np.floor(ramp / 257 + 0.5)  # 0..65535 onto 0..255, to nearest
    assert np.array_equal(pixels[..., 0], expected) and np.array_equal(pixels[..., 2], expected)
    assert (pixels == 255).mean() < 0.01


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_truncated_image_is_reported_with_its_path(tmp_path, suffix):
    _write_images(tmp_path, [f"a/whole{suffix}", f"a/cut{suffix}"], size=(64, 64))
    cut = tmp_path / "a" / f"cut{suffix}"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    folders = ClassFolders(tmp_path)
    folders[folders.samples.index((tmp_path / "a" / f"whole{suffix}", 0))]  # the intact one reads
    with pytest.raises(ValueError, match=f"{cut}: not a readable image"):
        folders[folders.samples.index((cut, 0))]


def test_a_file_that_is_not_an_image_is_reported_with_its_path(tmp_path):
    (tmp_path / "a").mkdir()
    fake = tmp_path / "a" / "photo.jpg"
    fake.write_text("a text file with an image's name")
    with pytest.raises(ValueError, match=f"{fake}: not a readable image"):
        ClassFolders(tmp_path)[0]


@pytest.mark.parametrize("side", [12, 20])  # 144 pixels: Pillow warns; 400: Pillow refuses
def test_decompression_bombs_are_reported_with_their_path(tmp_path, monkeypatch, side):
    _write_images(tmp_path, ["a/bomb.png"], size=(side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(
        ValueError, match=f"{tmp_path / 'a' / 'bomb.png'}: refused as a possible decompression bomb"
    ):
        ClassFolders(tmp_path)[0]


def test_fashion_mnist_from_written_files_and_env_var(tmp_path, monkeypatch):
    _write_fake_fashion_mnist(tmp_path / "fashion-mnist")
    monkeypatch.setenv("FASTERVIT_DATA", str(tmp_path))
    train, val = build_dataset("fashion_mnist", "train"), build_dataset("fashion_mnist", "val")
    assert (len(train), len(val)) == (12, 5)
    assert val.source.labels.tolist() == [0, 1, 2, 3, 4]
    assert val[0][0].shape == (1, 32, 32)
    explicit = build_dataset("fashion_mnist", "val", tmp_path / "fashion-mnist")
    assert torch.equal(explicit[1][0], val[1][0])


def test_fashion_mnist_lookup_order(tmp_path, monkeypatch):
    # Three copies told apart by their size: $FASTERVIT_DATA, the checkout's, the system's.
    places = {"variable": tmp_path / "var", "checkout": tmp_path / "co", "system": tmp_path / "sys"}
    for n_val, root in enumerate(places.values(), start=1):
        _write_fake_fashion_mnist(root / "fashion-mnist", n_val=n_val)
    monkeypatch.setattr(datasets, "CHECKOUT_DATA_DIR", places["checkout"])
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", places["system"])
    monkeypatch.setenv("FASTERVIT_DATA", str(places["variable"]))
    assert len(FashionMNIST("val")) == 1 and find_fashion_mnist() == places["variable"] / "fashion-mnist"
    monkeypatch.delenv("FASTERVIT_DATA")
    assert len(FashionMNIST("val")) == 2
    (places["checkout"] / "fashion-mnist" / "train-labels-idx1-ubyte.gz").unlink()  # an incomplete copy
    assert len(FashionMNIST("val")) == 3
    monkeypatch.setenv("FASTERVIT_DATA", str(tmp_path / "nowhere"))  # a variable without the data
    assert find_fashion_mnist() == places["system"] / "fashion-mnist"
    monkeypatch.setattr(datasets, "CHECKOUT_DATA_DIR", None)  # an installed package: no checkout
    monkeypatch.delenv("FASTERVIT_DATA")
    assert find_fashion_mnist() == places["system"] / "fashion-mnist"


def test_missing_fashion_mnist_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "CHECKOUT_DATA_DIR", tmp_path / "checkout" / ".data")
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", tmp_path / "usr")
    monkeypatch.delenv("FASTERVIT_DATA", raising=False)
    (tmp_path / "usr" / "fashion-mnist").mkdir(parents=True)
    (tmp_path / "usr" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").touch()
    with pytest.raises(FileNotFoundError) as error:
        FashionMNIST("train")
    message = str(error.value)
    for expected in (
        "$FASTERVIT_DATA: not set",
        f"{tmp_path / 'checkout' / '.data' / 'fashion-mnist'} (this checkout's data folder",
        "no such folder",
        "missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-labels-idx1-ubyte.gz",
        "`make data`",
        "apt-get download dataset-fashion-mnist",
        "dpkg-deb -x dataset-fashion-mnist_*.deb DIR",
        "FASTERVIT_DATA=DIR/usr/share/datasets",
    ):
        assert expected in message, expected
    monkeypatch.setenv("FASTERVIT_DATA", str(tmp_path / "mine"))
    with pytest.raises(FileNotFoundError, match=r"mine/fashion-mnist \(\$FASTERVIT_DATA\): no such folder"):
        FashionMNIST("val")


def test_the_checkout_data_folder_is_this_checkouts():
    assert datasets.CHECKOUT_DATA_DIR == REPO / ".data"


def test_missing_files_in_an_explicit_folder_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing t10k-images-idx3-ubyte.gz, t10k-labels-idx1"):
        FashionMNIST("val", tmp_path)


def test_fashion_mnist():
    # Not skipped when the files are missing: `make test` gets them (`make data`), and a test
    # run without them should fail with the message that says how to get them.
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
