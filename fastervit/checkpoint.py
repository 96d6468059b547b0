"""Loading released and own checkpoints, with reports that say exactly what differs.

The release format is ``{"state_dict": ...}`` (training runs add more entries); a bare state
dict works too. Loading is strict: every key must be present with the right shape, except
that the position-bias buffers, which follow from the resolution alone, are recomputed for
the model's own resolution instead of loaded. Saving is atomic: a checkpoint on disk is
always complete.
"""

import argparse
import contextlib
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastervit.layers.attention import GridBuffers

StateDict = Mapping[str, torch.Tensor]
HEAD_PREFIX = "head."


@dataclass
class LoadReport:
    """What a load did besides copying tensors one to one."""

    recomputed: list[str] = field(default_factory=list)  # grid buffers kept from the model
    skipped: list[str] = field(default_factory=list)  # classifier keys left at their init

    def __str__(self) -> str:
        lines = [f"recomputed {len(self.recomputed)} resolution-dependent buffers instead of loading them"]
        lines += [f"  {key}" for key in self.recomputed[:5]]
        if len(self.recomputed) > 5:
            lines.append(f"  ... and {len(self.recomputed) - 5} more")
        if self.skipped:
            lines.append(f"kept the model's own classifier: {', '.join(self.skipped)}")
        return "\n".join(lines)


class CheckpointMismatchError(RuntimeError):
    """A state dict whose keys or shapes do not match the model's, listed one by one."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        lines = ["the checkpoint does not match the model:"]
        if missing:
            lines.append(f"  missing from the checkpoint ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  not in the model ({len(unexpected)}): {', '.join(unexpected)}")
        for key, found, expected in mismatched:
            lines.append(f"  shape of {key}: checkpoint {list(found)}, model {list(expected)}")
        lines.append(f"  what to do: {self._hint()}")
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


def read_state_dict(source: str | Path | StateDict) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint file (or mapping), without DDP's ``module.`` prefix.

    Files are read with ``torch.load(weights_only=True)``: tensors and plain containers only.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                source = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise ValueError(
                f"{path} holds objects other than tensors and plain containers, which "
                "weights_only=True refuses to unpickle. If you trust the file, load it yourself "
                "with torch.load(path, weights_only=False) and pass its state dict instead. "
                f"PyTorch said: {str(error).splitlines()[0]}"
            ) from error
    if not isinstance(source, Mapping):
        raise TypeError(f"a checkpoint must be a dict, got {type(source).__name__}")
    for wrapper in ("state_dict", "model"):
        if isinstance(source.get(wrapper), Mapping):
            source = source[wrapper]
            break
    return {key.removeprefix("module."): value for key, value in source.items()}


def grid_buffer_keys(model: nn.Module) -> set[str]:
    """Keys of the buffers that depend only on the resolution (position-bias tables)."""
    return {
        f"{prefix}.{name}"
        for prefix, module in model.named_modules()
        if isinstance(module, GridBuffers)
        for name, _ in module.named_buffers(recurse=False)
    }


def load_checkpoint(model: nn.Module, source: str | Path | StateDict, skip_head: bool = False) -> LoadReport:
    """Load a checkpoint into ``model`` strictly, or raise :class:`CheckpointMismatchError`.

    Resolution-dependent buffers are recomputed (listed in the report when the checkpoint's
    differ); with ``skip_head`` the classifier keeps its initialisation.
    """
    state = read_state_dict(source)
    own = model.state_dict()
    report = LoadReport()
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
