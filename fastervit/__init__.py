"""FasterViT: Fast Vision Transformers with Hierarchical Attention, built step by step.

>>> import fastervit
>>> model = fastervit.create_model("faster_vit_0_224")
"""

from fastervit.checkpoint import (
    CheckpointMismatchError,
    LoadReport,
    UnreadableCheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from fastervit.model import FasterViT
from fastervit.variants import VARIANTS, create_model, list_models, model_kwargs

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "CheckpointMismatchError",
    "FasterViT",
    "LoadReport",
    "UnreadableCheckpointError",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_kwargs",
    "read_checkpoint",
    "save_checkpoint",
]
