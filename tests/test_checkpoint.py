"""Checkpoints: the safe reader, strict loading, the reports, the wrappers it recognises."""

import fractions
import random
import struct
import zipfile
from pathlib import Path

import pytest
import torch

import fastervit
from fastervit import (
    CheckpointMismatchError,
    FasterViT,
    UnreadableCheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from fastervit.checkpoint import MAX_LISTED, read_state_dict

RUN_HINT = "the run's best.pt or an earlier copy may be intact"


@pytest.fixture
def model(tiny_kwargs) -> FasterViT:
    return FasterViT(**tiny_kwargs()).eval()


@pytest.fixture
def saved(model, tmp_path) -> Path:
    path = tmp_path / "ckpt.pth.tar"
    save_checkpoint(model, path, epoch=3)
    return path


def _entry_data_offset(path: Path, suffix: str) -> tuple[int, int]:
    """Where the bytes of the zip entry ending in ``suffix`` start, and how many there are."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    with path.open("rb") as file:
        file.seek(info.header_offset)
        header = file.read(30)  # the local file header; its name and extra field follow
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _unreadable(path: Path, *fragments: str) -> str:
    """Read ``path``, expecting the one error; check the parts every such message has."""
    with pytest.raises(UnreadableCheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path} is not a readable checkpoint: ")
    assert RUN_HINT in message and "weights_only" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------------------------------
# the reader
# ------------------------------------------------------------------------------------------


def test_reader_returns_the_dict_and_the_error_is_a_value_error(saved):
    assert set(read_checkpoint(saved)) == {"state_dict", "epoch"}
    assert issubclass(UnreadableCheckpointError, ValueError)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "last.pt"
    path.touch()
    _unreadable(path, "empty (0 bytes)")


def test_text_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\n")
    _unreadable(path, "not a PyTorch file", "text 'version https")


def test_random_bytes(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x13" + random.Random(0).randbytes(4095))  # not a zip, not a pickle
    _unreadable(path, "not a PyTorch file", "bytes 13 ")


def test_random_bytes_after_a_pickle_header(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"\x80\x02" + random.Random(1).randbytes(4094))  # looks like torch's legacy format
    _unreadable(path, "truncated or corrupted")


@pytest.mark.parametrize("entry", ["data.pkl", "data/0"])
def test_flipped_byte_in_a_real_checkpoint(saved, entry):
    """torch.load itself accepts these files (it checks no checksum) and returns other values."""
    start, size = _entry_data_offset(saved, entry)
    _flip_byte(saved, start + size // 2)
    _unreadable(saved, "corrupted", "CRC", entry)


def test_truncated_checkpoint(saved):
    saved.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    _unreadable(saved, "truncated or corrupted")


def test_pickle_holding_a_disallowed_object(model, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "extra": fractions.Fraction(1, 3)}, path)
    _unreadable(path, "objects other than tensors", "fractions.Fraction", "re-save the weights alone")


def test_file_holding_no_dict(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    _unreadable(path, "holds a Tensor, not a dict")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="it is a directory"):
        read_checkpoint(tmp_path)


def test_files_without_checksums_and_legacy_files_still_load(model, tmp_path):
    state = {"state_dict": model.state_dict()}
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(state, tmp_path / "no_crc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("no_crc.pt", "legacy.pt"):
        loaded = read_checkpoint(tmp_path / name)["state_dict"]
        assert torch.equal(loaded["head.weight"], model.head.weight)


def test_every_loader_uses_the_reader(tmp_path):
    path = tmp_path / "last.pt"
    path.touch()
    for load in (
        lambda: read_state_dict(path),
        lambda: fastervit.create_model("faster_vit_0_224", pretrained=path),
    ):
        with pytest.raises(UnreadableCheckpointError, match="empty"):
            load()


# ------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------


def test_roundtrip_release_format(tiny_kwargs, model, saved):
    other = FasterViT(**tiny_kwargs()).eval()
    report = load_checkpoint(other, saved)
    assert report.weights == "state_dict" and report.recomputed == [] and report.skipped == []
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_wrapper_prefixes_are_removed(tiny_kwargs, model, prefix):
    state = {prefix + k: v for k, v in model.state_dict().items()}
    other = FasterViT(**tiny_kwargs())
    report = load_checkpoint(other, state)
    assert torch.equal(other.head.weight, model.head.weight)
    assert report.stripped == sorted(p for p in ("module.", "_orig_mod.") if p in prefix)


def test_torch_compile_state_dict_loads(tiny_kwargs, model):
    compiled_state = torch.compile(model).state_dict()  # keys start with _orig_mod.
    assert next(iter(compiled_state)).startswith("_orig_mod.")
    other = FasterViT(**tiny_kwargs())
    assert load_checkpoint(other, compiled_state).stripped == ["_orig_mod."]
    assert torch.equal(other.head.weight, model.head.weight)


@pytest.mark.parametrize(("live", "ema"), [("state_dict", "state_dict_ema"), ("model", "model_ema")])
def test_ema_wrappers_are_preferred(tiny_kwargs, model, live, ema):
    averaged = FasterViT(**tiny_kwargs())
    other = FasterViT(**tiny_kwargs())
    report = load_checkpoint(other, {live: model.state_dict(), ema: averaged.state_dict(), "epoch": 5})
    assert report.weights == ema and "EMA" in str(report)
    assert torch.equal(other.head.weight, averaged.head.weight)
    load_checkpoint(other, {live: model.state_dict()})
    assert torch.equal(other.head.weight, model.head.weight)


def test_checkpoint_from_another_resolution_recomputes_grid_buffers(tiny_kwargs, model, saved):
    other = FasterViT(**tiny_kwargs(resolution=(320, 256)))
    report = load_checkpoint(other, saved)
    assert report.recomputed and all(
        key.endswith(("relative_coords_table", "relative_position_index", "relative_bias"))
        for key in report.recomputed
    )
    assert "recomputed" in str(report)
    assert torch.equal(other.head.weight, model.head.weight)
    other.load_state_dict(model.state_dict(), strict=True)  # plain strict loading works too


def test_mismatch_lists_keys_and_shapes(tiny_kwargs, model):
    state = model.state_dict()
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(1)
    state["levels.0.blocks.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(FasterViT(**tiny_kwargs()), state)
    message = str(err.value)
    assert "norm.weight" in message and "extra.weight" in message
    assert "levels.0.blocks.0.conv1.weight: checkpoint [1, 1, 3, 3], model [16, 16, 3, 3]" in message


def test_mismatch_report_is_capped_and_the_error_keeps_everything(tiny_kwargs, model):
    own = model.state_dict()
    state = {f"renamed.{key}": value for key, value in own.items()}  # every key differs
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(FasterViT(**tiny_kwargs()), state)
    error = err.value
    assert error.missing == list(own) and error.unexpected == list(state)
    assert len(own) > MAX_LISTED + 5
    message = str(error)
    assert f"... and {len(own) - MAX_LISTED} more" in message
    assert list(own)[MAX_LISTED - 1] in message and list(own)[MAX_LISTED] + "," not in message
    assert len(message) < 6000


def test_mismatched_shapes_are_capped(tiny_kwargs, model):
    state = {key: torch.zeros(1) if value.ndim else value for key, value in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(FasterViT(**tiny_kwargs()), state)
    assert len(err.value.mismatched) > MAX_LISTED
    assert str(err.value).count("shape of ") == MAX_LISTED
    assert f"... and {len(err.value.mismatched) - MAX_LISTED} more shapes" in str(err.value)


def test_other_num_classes_suggests_skip_head(tiny_kwargs, model, saved):
    with pytest.raises(CheckpointMismatchError, match="skip_head=True"):
        load_checkpoint(FasterViT(**tiny_kwargs(num_classes=5)), saved)
    other = FasterViT(**tiny_kwargs(num_classes=5))
    report = load_checkpoint(other, saved, skip_head=True)
    assert report.skipped == ["head.bias", "head.weight"]
    assert torch.equal(other.norm.weight, model.norm.weight)


def test_a_state_dict_is_needed(model):
    with pytest.raises(ValueError, match="holds no state dict.*epoch"):
        load_checkpoint(model, {"epoch": 3, "arch": "faster_vit_0_224"})
