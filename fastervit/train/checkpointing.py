"""Training checkpoints and the run folder: written atomically, checked on resume, never lost.

A training checkpoint (``last.pt``, ``best.pt``) is a dict holding

* ``model_name``, ``model_kwargs``: how to rebuild the model (``create_model(name, **kwargs)``);
* ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``: the state dicts;
* ``progress``: steps and epochs done, the best accuracy, the running epoch loss;
* ``config``: the training configuration, as a dict;
* ``rng``: the Python, NumPy and torch (CPU and CUDA) generator states of every process.

The data order needs no state: it is a function of the seed, the epoch and the step.
``fastervit.create_model(model_name, pretrained=path, **model_kwargs)`` loads the EMA
weights (``ema["module"]``) of such a file when the run kept them, else the live ``model``.
Files are written with
:func:`fastervit.checkpoint.atomic_save`, through a temporary folder beside them
(``.last.pt.XXXX``) that a run killed while saving leaves behind; the next run on the same
folder removes it (:func:`remove_orphans`).

Nothing is lost between runs on one folder: a run holds the folder's lock
(:mod:`fastervit.train.output_lock`) from start to end, a new run never starts over an
existing one, and a resumption never silently goes back to an older checkpoint than
``last.pt`` (:func:`check_not_rewinding`).
"""

import logging
import random
import shutil
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import numpy as np
import torch

from fastervit.checkpoint import atomic_save, read_checkpoint
from fastervit.train.build import Progress, Run
from fastervit.train.config import RESUMABLE_CHANGES, TrainConfig

FORMAT_VERSION = 1
CHECKPOINT_NAMES = ("last.pt", "best.pt")
logger = logging.getLogger(__name__)


def load_training_checkpoint(path: Path) -> dict:
    """Load a training checkpoint on the CPU, checking that it is one.

    Read with :func:`fastervit.checkpoint.read_checkpoint`: tensors and plain Python values
    only (opening one runs no code from the file), and an unreadable file is named with the
    reason (:class:`~fastervit.checkpoint.UnreadableCheckpointError`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist; pass the last.pt or best.pt a training run wrote."
        )
    checkpoint = read_checkpoint(path)
    if checkpoint.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"{path} is not a fastervit training checkpoint of format {FORMAT_VERSION} (found "
            f"format {checkpoint.get('format')!r}); pretrained weights load with "
            "fastervit.create_model(pretrained=...), or fine-tune from them with train --pretrained."
        )
    return checkpoint


def check_same_model(checkpoint: dict, model_name: str, model_kwargs: dict, path: Path) -> None:
    """Raise if ``checkpoint`` was written for another model than the one being built."""
    if checkpoint["model_name"] != model_name or checkpoint["model_kwargs"] != model_kwargs:
        raise ValueError(
            f"{path} holds model {checkpoint['model_name']!r} with {checkpoint['model_kwargs']}, "
            f"but this run builds {model_name!r} with {model_kwargs}; resume with "
            f"--model {checkpoint['model_name']} and the same --model-kwargs, image size and "
            "dataset, or start a new run in another --output directory."
        )


def check_resumable(checkpoint: dict, config: TrainConfig, world_size: int) -> None:
    """Raise if ``checkpoint``'s run had other settings that shape it, or another number of
    processes (data order and random streams depend on it)."""
    # A setting the checkpoint does not record is newer than it: the run had its default
    # (every new setting defaults to the behaviour from before it existed).
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    saved = {**defaults, **checkpoint["config"]}
    changed = [
        f"{key} (checkpoint {saved.get(key)!r}, now {value!r})"
        for key, value in config.to_dict().items()
        if key not in RESUMABLE_CHANGES and saved.get(key) != value
    ]
    if changed:
        raise ValueError(
            f"Cannot resume {config.resume} with different settings: {'; '.join(changed)}. Resume "
            "with the settings the run started with, or start a new run in another --output."
        )
    if len(checkpoint["rng"]) != world_size:
        raise ValueError(
            f"{config.resume} was written by {len(checkpoint['rng'])} process(es), this run has "
            f"{world_size}; resume with the same number (data order and random streams depend on it)."
        )


def check_new_run(output: Path) -> None:
    """Refuse to start a run from scratch in a folder that holds one."""
    if (output / "last.pt").exists():
        raise FileExistsError(
            f"{output} already holds a run (last.pt); continue it with --resume "
            f"{output / 'last.pt'}, or choose another --output."
        )


def check_not_rewinding(resume: Path, resume_step: int, output: Path, allow: bool) -> None:
    """Refuse to resume from a checkpoint older than the output's ``last.pt`` unless ``allow``.

    Resuming from ``best.pt`` (or a copy of an older ``last.pt``) into a folder whose
    ``last.pt`` is further on would overwrite that ``last.pt`` and cut the CSV logs back to
    the older step: work lost unless asked for (``--rewind``). An unreadable ``last.pt`` holds
    nothing to lose, so resuming from another checkpoint is then the way to recover.
    """
    last = output / "last.pt"
    if allow or not last.is_file() or last.resolve() == resume.resolve():
        return
    try:
        last_step = load_training_checkpoint(last)["progress"]["step"]
    except ValueError as error:  # unreadable, or no training checkpoint: nothing to protect
        logger.warning("%s is unreadable (%s); resuming from %s replaces it", last, error, resume)
        return
    if last_step > resume_step:
        raise FileExistsError(
            f"--resume {resume} goes back to step {resume_step}, but {last} holds step {last_step}: "
            f"resuming would overwrite {last} and cut steps.csv and epochs.csv back to step "
            f"{resume_step}. Resume from {last} to continue, pass --rewind to go back on purpose, "
            "or choose another --output."
        )


def remove_orphans(output: Path) -> list[Path]:
    """Remove the temporary folders a save killed mid-write left beside the checkpoints.

    :func:`fastervit.checkpoint.atomic_path` writes ``last.pt`` inside ``.last.pt.XXXX`` and
    moves it into place; a run killed before the move leaves the folder. Call this only while
    holding the folder's lock (no other run is saving). Returns what was removed.
    """
    orphans = [
        folder for name in CHECKPOINT_NAMES for folder in sorted(output.glob(f".{name}.*")) if folder.is_dir()
    ]
    for folder in orphans:
        logger.warning("removing %s, left by a save that did not finish", folder)
        shutil.rmtree(folder)
    return orphans


def capture_rng_state() -> dict:
    """This process's Python, NumPy and torch generator states (plain types and tensors)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict) -> None:
    """Undo everything drawn since :func:`capture_rng_state` returned ``state``."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_run(run: Run, progress: Progress, best: bool) -> None:
    """Write ``last.pt`` (and ``best.pt``) from the main process; every process must call this.

    All processes return once the files are on disk, so any of them may read them next.
    """
    rng = run.dist.all_gather_object(capture_rng_state())
    if run.dist.is_main:
        checkpoint = {
            "format": FORMAT_VERSION,
            "model_name": run.config.model,
            "model_kwargs": run.model_kwargs,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "ema": None if run.ema is None else run.ema.state_dict(),
            "progress": asdict(progress),
            "epoch": progress.step // run.steps_per_epoch,
            "config": run.config.to_dict(),
            "rng": rng,
        }
        if best:
            atomic_save(checkpoint, run.output / "best.pt")
        atomic_save(checkpoint, run.output / "last.pt")
    run.dist.barrier()


def restore_run(run: Run, checkpoint: dict) -> Progress:
    """Put every state of ``checkpoint`` back into ``run``, the random generators last."""
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    if run.ema is not None:
        run.ema.load_state_dict(checkpoint["ema"])
    restore_rng_state(checkpoint["rng"][run.dist.rank])
    return Progress(**checkpoint["progress"])
