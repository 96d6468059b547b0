"""``fastervit eval``: top-1/top-5 accuracy of a training checkpoint on a dataset's val split.

Example::

    python -m fastervit eval --checkpoint runs/fmnist/best.pt --dataset fashion_mnist

The model is rebuilt from the checkpoint's model name and keyword arguments; its EMA
weights are used when the run kept them (``--no-ema`` for the live weights). Input size and
crop default to those the run trained with.
"""

import argparse
import os
from pathlib import Path

import torch

from fastervit.amp import AMP_DTYPES
from fastervit.commands.common import non_negative_int, positive_int
from fastervit.data.datasets import build_dataset
from fastervit.data.sampler import ResumableSampler
from fastervit.peers import build_model
from fastervit.train.build import ModelFactory
from fastervit.train.checkpointing import load_training_checkpoint
from fastervit.train.distributed import setup_distributed
from fastervit.train.evaluate import evaluate


def evaluate_checkpoint(
    checkpoint_path: Path,
    dataset: str | None = None,
    data_dir: Path | None = None,
    batch_size: int = 256,
    workers: int = 4,
    device: str | None = None,
    amp: str | None = None,
    use_ema: bool = True,
    model_factory: ModelFactory = build_model,
) -> dict:
    """Evaluate a ``last.pt``/``best.pt`` on the ``val`` split; returns a JSON-ready dict."""
    checkpoint = load_training_checkpoint(checkpoint_path)
    config, kwargs = checkpoint["config"], checkpoint["model_kwargs"]
    if dataset is None or dataset == config["dataset"]:
        dataset = config["dataset"]
        data_dir = data_dir or config["data_dir"]
    transform_options = {"img_size": kwargs["resolution"]}
    if config["crop_pct"] is not None:
        transform_options["crop_pct"] = config["crop_pct"]
    val_set = build_dataset(dataset, "val", data_dir, **transform_options)
    info = val_set.info
    if (info.num_classes, info.channels) != (kwargs["num_classes"], kwargs["in_chans"]):
        raise ValueError(
            f"{checkpoint_path} holds a model for {kwargs['num_classes']} classes of "
            f"{kwargs['in_chans']}-channel images (trained on {config['dataset']!r}), but "
            f"{dataset!r} has {info.num_classes} classes of {info.channels}-channel images; "
            "evaluate it on a dataset like the one it was trained on."
        )
    model = model_factory(checkpoint["model_name"], **kwargs)
    weights = "ema" if use_ema and checkpoint["ema"] is not None else "model"
    model.load_state_dict(checkpoint["ema"]["module"] if weights == "ema" else checkpoint["model"])

    dist = setup_distributed(device)
    try:
        model.to(dist.device)
        sampler = ResumableSampler(len(val_set), False, 0, dist.rank, dist.world_size, drop_last=False)
        loader = torch.utils.data.DataLoader(
            val_set, batch_size=batch_size, sampler=sampler, num_workers=workers
        )
        metrics = evaluate(model, loader, dist, AMP_DTYPES.get(amp))
    finally:
        dist.close()
    return {
        "checkpoint": str(checkpoint_path),
        "model": checkpoint["model_name"],
        "dataset": dataset,
        "weights": weights,
        "step": checkpoint["progress"]["step"],
        **metrics,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="a last.pt or best.pt written by 'fastervit train'"
    )
    p.add_argument("--dataset", help="dataset name (default: the one the checkpoint was trained on)")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="dataset directory (default: the run's, for the dataset it was trained on)",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per batch (default: 256)")
    p.add_argument("--workers", type=non_negative_int, default=4, help="data-loading processes (default: 4)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), help="mixed precision (default: off)")
    p.add_argument("--no-ema", dest="use_ema", action="store_false", help="use the live weights, not the EMA")


def run(args: argparse.Namespace) -> dict | None:
    """Evaluate; the result is returned by rank 0 only (it alone prints)."""
    result = evaluate_checkpoint(
        args.checkpoint,
        args.dataset,
        args.data_dir,
        args.batch_size,
        args.workers,
        args.device,
        args.amp,
        args.use_ema,
    )
    return result if int(os.environ.get("RANK", "0")) == 0 else None
