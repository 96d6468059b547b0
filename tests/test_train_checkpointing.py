"""RNG capture/restore survives a safe (weights-only) save and load; loading checks the format;
only the temporary folders of interrupted saves are cleaned up."""

import random

import numpy as np
import pytest
import torch

from fastervit.checkpoint import atomic_save
from fastervit.train.checkpointing import (
    FORMAT_VERSION,
    capture_rng_state,
    check_resumable,
    load_training_checkpoint,
    remove_orphans,
    restore_rng_state,
)
from fastervit.train.config import TrainConfig


def _draw():
    return random.random(), np.random.randn(3).tolist(), np.random.normal(), torch.rand(3).tolist()


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    np.random.normal()  # leave a cached Gaussian in NumPy's state
    atomic_save({"format": FORMAT_VERSION, "rng": [capture_rng_state()]}, tmp_path / "c.pt")
    expected = _draw()
    assert _draw() != expected
    restore_rng_state(load_training_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert _draw() == expected


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_training_checkpoint(tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="not a fastervit training checkpoint"):
        load_training_checkpoint(tmp_path / "weights.pt")


def test_remove_orphans_takes_only_the_temporary_folders_of_checkpoints(tmp_path):
    for name in (".last.pt.k2j3x", ".best.pt.9f8e7", ".other.pt.abc", "tb"):
        (tmp_path / name).mkdir()
    (tmp_path / ".last.pt.notes").write_text("a file, not a save's folder")
    (tmp_path / ".last.pt.k2j3x" / "last.pt").write_bytes(b"half a checkpoint")
    removed = remove_orphans(tmp_path)
    assert sorted(p.name for p in removed) == [".best.pt.9f8e7", ".last.pt.k2j3x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.pt.notes", ".other.pt.abc", "tb"]


def test_a_checkpoint_older_than_a_setting_resumes_at_its_default():
    # A run saved before --mesa, --reprob ... existed has no such keys: it ran as their
    # defaults do, so it resumes with them and refuses anything else.
    config = TrainConfig(model="m", dataset="digits", output="o", resume="last.pt")
    old = {k: v for k, v in config.to_dict().items() if k not in ("mesa", "reprob", "cooldown_epochs")}
    checkpoint = {"config": old, "rng": [capture_rng_state()]}
    check_resumable(checkpoint, config, world_size=1)
    with pytest.raises(ValueError, match=r"cooldown_epochs \(checkpoint 0, now 5\)"):
        check_resumable(checkpoint, TrainConfig(**{**config.to_dict(), "cooldown_epochs": 5}), world_size=1)
