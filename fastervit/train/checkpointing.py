"""Training checkpoints: written atomically, checked on load, carrying every RNG state.

A training checkpoint (``last.pt``, ``best.pt``) is a dict holding

* ``model_name``, ``model_kwargs``: how to rebuild the model (``create_model(name, **kwargs)``);
* ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``: the state dicts;
* ``progress``: steps and epochs done, the best accuracy, the running epoch loss;
* ``config``: the training configuration, as a dict;
* ``rng``: the Python, NumPy and torch (CPU and CUDA) generator states of every process.

The data order needs no state: it is a function of the seed, the epoch and the step.
``fastervit.create_model(model_name, pretrained=path, **model_kwargs)`` loads the EMA
weights (``ema["module"]``) of such a file when the run kept them, else the live ``model``.
Files are written with :func:`fastervit.checkpoint.atomic_save`.
"""

import random
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1


def load_training_checkpoint(path: Path) -> dict:
    """Load a training checkpoint on the CPU, checking that it is one.

    Checkpoints hold only tensors and plain Python values, so they load with
    ``weights_only=True``: opening one runs no code from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Checkpoint {path} does not exist; pass the last.pt or best.pt a training run wrote."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT_VERSION:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path} is not a fastervit training checkpoint of format {FORMAT_VERSION} (found "
            f"format {found!r}); pretrained weights load with fastervit.create_model(pretrained=...)."
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
