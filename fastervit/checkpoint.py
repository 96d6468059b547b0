"""Reading checkpoints safely and loading them strictly, with reports that say what differs.

:func:`read_checkpoint` is the one reader of checkpoint files: ``torch.load(weights_only=True)``
(tensors and plain containers only, so opening a file runs no code from it), after checking
that the file is a complete PyTorch archive; a file it cannot read raises
:class:`UnreadableCheckpointError` saying why.

The release format is ``{"state_dict": ...}`` (training runs add more entries); a bare state
dict works too, as do timm's and this package's training checkpoints (their EMA weights
first, as timm's loader does). Loading is strict: every key must be present with the right
shape, except that the position-bias buffers, which follow from the resolution alone, are
recomputed for the model's own resolution instead of loaded. Saving is atomic: a checkpoint
on disk is always complete.
"""

import argparse
import contextlib
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastervit.layers.position import GridBuffers

StateDict = Mapping[str, torch.Tensor]
HEAD_PREFIX = "head."
# Key prefixes that wrappers add: DDP and DataParallel (module.), torch.compile (_orig_mod.).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Where checkpoints keep their weights, in the order they are looked for: EMA weights first
# (timm's train.py selects its best checkpoint by the EMA's accuracy when it keeps one, and
# timm's load_checkpoint prefers them), then the live weights.
WEIGHT_ENTRIES = ("state_dict_ema", "model_ema", "state_dict", "model")
MAX_LISTED = 20  # keys listed per kind of mismatch in an error message; the exception keeps all
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
_RUN_HINT = "if this is a training run's last.pt, the run's best.pt or an earlier copy may be intact"


class UnreadableCheckpointError(ValueError):
    """A file that is not a readable checkpoint: empty, not a PyTorch file, truncated or
    corrupted, or holding objects other than tensors and plain containers."""

    def __init__(self, path: str | Path, reason: str, fix: str = _RUN_HINT) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path} is not a readable checkpoint: {reason}; {fix}")


@dataclass
class LoadReport:
    """What a load did besides copying tensors one to one."""

    weights: str = ""  # the checkpoint entry the weights came from ("" for a bare state dict)
    stripped: list[str] = field(default_factory=list)  # wrapper prefixes removed from the keys
    recomputed: list[str] = field(default_factory=list)  # grid buffers kept from the model
    skipped: list[str] = field(default_factory=list)  # classifier keys left at their init

    def __str__(self) -> str:
        lines = [f"loaded the weights {_describe_entry(self.weights)}"]
        if self.stripped:
            lines.append(
                f"removed the key prefixes {', '.join(self.stripped)} (DDP / torch.compile wrappers)"
            )
        lines.append(
            f"recomputed {len(self.recomputed)} resolution-dependent buffers instead of loading them"
        )
        lines += [f"  {key}" for key in self.recomputed[:5]]
        if len(self.recomputed) > 5:
            lines.append(f"  ... and {len(self.recomputed) - 5} more")
        if self.skipped:
            lines.append(f"kept the model's own classifier: {', '.join(self.skipped)}")
        return "\n".join(lines)


def _describe_entry(entry: str) -> str:
    if not entry:
        return "of a bare state dict"
    notes = {
        "ema.module": " (a `fastervit train` checkpoint's EMA weights, which eval uses and which selected best.pt)",
        "model": " (the live weights: a `fastervit train` checkpoint's, when the run kept no EMA)",
        "state_dict_ema": " (the EMA weights)",
        "model_ema": " (the EMA weights)",
    }
    return f"under {entry!r}{notes.get(entry, '')}"


def _listed(keys: list[str]) -> str:
    more = f", ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else ""
    return ", ".join(keys[:MAX_LISTED]) + more


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys, shapes or constructor arguments differ from the model's.

    The message lists at most :data:`MAX_LISTED` keys of each kind; the attributes
    ``missing``, ``unexpected``, ``mismatched`` (key, checkpoint shape, model shape) and
    ``arguments`` (name, checkpoint value, model value) hold every one.
    """

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        arguments: list[tuple[str, Any, Any]] = (),
        hint: str | None = None,
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        self.arguments = list(arguments)
        lines = ["the checkpoint does not match the model:"]
        if self.arguments:
            differing = [f"{key}={ours!r} (checkpoint: {theirs!r})" for key, theirs, ours in self.arguments]
            lines.append(f"  constructor arguments that differ: {'; '.join(differing)}")
        if missing:
            lines.append(f"  missing from the checkpoint ({len(missing)}): {_listed(missing)}")
        if unexpected:
            lines.append(f"  not in the model ({len(unexpected)}): {_listed(unexpected)}")
        for key, found, expected in mismatched[:MAX_LISTED]:
            lines.append(f"  shape of {key}: checkpoint {list(found)}, model {list(expected)}")
        if len(mismatched) > MAX_LISTED:
            lines.append(f"  ... and {len(mismatched) - MAX_LISTED} more shapes that differ")
        lines.append(f"  what to do: {hint or self._hint()}")
        super().__init__("\n".join(lines))

    def _hint(self) -> str:
        differing = self.missing + self.unexpected + [key for key, _, _ in self.mismatched]
        if differing and all(key.startswith(HEAD_PREFIX) for key in differing):
            return (
                "only the classifier differs (another num_classes?): pass skip_head=True to load "
                "everything but the head, or build the model with the checkpoint's num_classes"
            )
        return (
            "build the variant the checkpoint was saved from (compare depths, dim, num_heads, hat, "
            "layer_scale and window_size with fastervit.list_models()); for a resolution other than "
            "the checkpoint's, only pass resolution=..."
        )


def _describe_start(head: bytes) -> str:
    text = head.decode("utf-8", errors="replace")
    if all(ch.isprintable() or ch.isspace() for ch in text):  # no replacement character either
        return f"it starts with the text {text[:40]!r}"
    return f"it starts with the bytes {head[:8].hex(' ')}"


def _verify_archive(path: Path) -> None:
    """Read every entry of a zip archive, checking its CRC-32 (torch.load checks none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size:
                    continue  # written with torch.serialization.set_crc32_options(False)
                with archive.open(info) as entry:
                    while entry.read(1 << 24):
                        pass
    except zipfile.BadZipFile as error:
        if "CRC" in str(error):
            reason = f"it is corrupted: {error} (a damaged copy or disk)"
        else:
            reason = f"it is truncated or corrupted ({error}), e.g. a copy or a save that stopped early"
        raise UnreadableCheckpointError(path, reason) from None
    except (EOFError, OSError, ValueError) as error:
        raise UnreadableCheckpointError(path, f"it is truncated or corrupted ({error})") from None


def _first_line(error: BaseException) -> str:
    """The start of an error's message, without torch's advice to load unsafely."""
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    line = line.split(". ")[0]
    return f"{type(error).__name__}: {line}" if line and "weights_only" not in line else type(error).__name__


def read_checkpoint(path: str | Path) -> dict:
    """The dict a checkpoint file holds, read safely (``torch.load(weights_only=True)``, on the CPU).

    Before unpickling, the file is checked to be a PyTorch file, and a zip archive's entries
    against their CRC-32 checksums (``torch.load`` checks none, so a flipped byte in the
    weights would otherwise load silently); this reads the file once more.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnreadableCheckpointError: the file is empty, not a PyTorch file, truncated or
            corrupted, holds objects other than tensors and plain containers, or holds
            something other than a dict. The message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        kind = " (it is a directory)" if path.is_dir() else ""
        raise FileNotFoundError(f"no checkpoint at {path}{kind}; pass a file written by torch.save")
    if path.stat().st_size == 0:
        raise UnreadableCheckpointError(path, "the file is empty (0 bytes), e.g. a save that was interrupted")
    with path.open("rb") as file:
        head = file.read(64)
    if head.startswith(_ZIP_MAGIC):
        _verify_archive(path)
    elif not head.startswith(b"\x80"):  # a pickle of protocol 2 or more: torch's legacy format
        raise UnreadableCheckpointError(
            path,
            f"it is not a PyTorch file: {_describe_start(head)}, where torch.save writes a zip "
            "archive (starting with 'PK')",
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # release files hold their args
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise UnreadableCheckpointError(
                path, f"it is truncated or corrupted ({_first_line(error)})"
            ) from None
        raise UnreadableCheckpointError(
            path,
            f"it holds objects other than tensors and plain containers ({found.group(1)}), which a "
            "safe reader does not unpickle: that could run code from the file",
            "re-save the weights alone from the program that wrote it, e.g. "
            f"torch.save({{'state_dict': model.state_dict()}}, path); {_RUN_HINT}",
        ) from None
    except Exception as error:  # noqa: BLE001 -- torch reports damage in many ways (EOF, OSError, KeyError...)
        raise UnreadableCheckpointError(
            path, f"it is truncated or corrupted ({_first_line(error)})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UnreadableCheckpointError(
            path, f"it holds a {type(checkpoint).__name__}, not a dict of weights"
        )
    return checkpoint


def is_training_checkpoint(checkpoint: Mapping) -> bool:
    """Whether ``checkpoint`` was written by this package's training loop (``last.pt``/``best.pt``)."""
    return isinstance(checkpoint.get("model_kwargs"), Mapping) and isinstance(
        checkpoint.get("model"), Mapping
    )


def _weights(checkpoint: Mapping) -> tuple[Mapping, str]:
    """The state dict inside a checkpoint and the entry it came from ("" for a bare state dict)."""
    if is_training_checkpoint(checkpoint):
        ema = checkpoint.get("ema")
        if isinstance(ema, Mapping) and isinstance(ema.get("module"), Mapping):
            return ema["module"], "ema.module"
        return checkpoint["model"], "model"
    for entry in WEIGHT_ENTRIES:
        if isinstance(checkpoint.get(entry), Mapping):
            return checkpoint[entry], entry
    return checkpoint, ""


def _strip_wrappers(state: Mapping) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove the wrapper prefixes from every key (in any order, e.g. ``module._orig_mod.``)."""
    stripped: set[str] = set()
    cleaned = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            prefix = next(p for p in WRAPPER_PREFIXES if key.startswith(p))
            stripped.add(prefix)
            key = key.removeprefix(prefix)
        cleaned[key] = value
    return cleaned, sorted(stripped)


def _state_dict(source: str | Path | Mapping) -> tuple[dict[str, torch.Tensor], LoadReport]:
    checkpoint = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"a checkpoint must be a dict, got {type(checkpoint).__name__}")
    weights, entry = _weights(checkpoint)
    state, stripped = _strip_wrappers(weights)
    others = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise ValueError(
            f"the checkpoint holds no state dict: its entries {_listed(others)} are not tensors, and "
            f"it has none of the entries {', '.join(WEIGHT_ENTRIES)} that hold one"
        )
    return state, LoadReport(weights=entry, stripped=stripped)


def read_state_dict(source: str | Path | StateDict) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file (read with :func:`read_checkpoint`) or mapping.

    Looks in a training checkpoint's EMA weights when the run kept them (else its live
    weights), then in ``state_dict_ema``, ``model_ema``, ``state_dict`` and ``model``, else
    takes a bare state dict; removes the ``module.`` and ``_orig_mod.`` prefixes that DDP and
    ``torch.compile`` add. To load the live weights of a file that also holds EMA weights,
    pass its entry: ``read_checkpoint(path)["state_dict"]``.
    """
    return _state_dict(source)[0]


def grid_buffer_keys(model: nn.Module) -> set[str]:
    """Keys of the buffers that depend only on the resolution (position-bias tables)."""
    return {
        f"{prefix}.{name}"
        for prefix, module in model.named_modules()
        if isinstance(module, GridBuffers)
        for name, _ in module.named_buffers(recurse=False)
    }


def load_checkpoint(model: nn.Module, source: str | Path | Mapping, skip_head: bool = False) -> LoadReport:
    """Load a checkpoint into ``model`` strictly, or raise :class:`CheckpointMismatchError`.

    ``source`` is a file or a mapping (a checkpoint or a state dict), found as by
    :func:`read_state_dict`. Resolution-dependent buffers are recomputed (listed in the
    report when the checkpoint's differ); with ``skip_head`` the classifier keeps its
    initialisation. The report says which entry the weights came from.
    """
    state, report = _state_dict(source)
    own = model.state_dict()
    if skip_head:
        report.skipped = sorted(key for key in own if key.startswith(HEAD_PREFIX))
        state = {key: value for key, value in state.items() if not key.startswith(HEAD_PREFIX)}
        own = {key: value for key, value in own.items() if not key.startswith(HEAD_PREFIX)}
    grid_keys = grid_buffer_keys(model)
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [
        (key, tuple(state[key].shape), tuple(own[key].shape))
        for key in own
        if key in state and key not in grid_keys and state[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(missing, unexpected, mismatched)
    report.recomputed = [
        key
        for key in own
        if key in grid_keys and (state[key].shape != own[key].shape or not torch.equal(state[key], own[key]))
    ]
    model.load_state_dict(state, strict=not skip_head)
    return report


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a path in a fresh temporary folder beside ``path``; on success, move it onto ``path``.

    Whatever else the writer puts in that folder (an ONNX file's external weights) is moved
    beside ``path`` first, so a reader never sees the main file without its companions. On
    failure nothing is left behind and an existing ``path`` stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield folder / path.name
        if not (folder / path.name).is_file():
            raise RuntimeError(f"the writer produced no file {path.name}")
        for extra in folder.iterdir():
            if extra.name != path.name:
                os.replace(extra, path.parent / extra.name)
        os.replace(folder / path.name, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_path`: a crash leaves the old file or the new one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(model: nn.Module, path: str | Path, **extra: Any) -> None:
    """Save ``model`` in the release format ``{"state_dict": ..., **extra}``, atomically."""
    atomic_save({"state_dict": model.state_dict(), **extra}, path)
