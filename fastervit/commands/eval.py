"""``fastervit eval``: top-1/top-5 accuracy of a training checkpoint or of released weights.

Examples::

    python -m fastervit eval --checkpoint runs/fmnist/best.pt
    python -m fastervit eval --model faster_vit_0_224 --pretrained fastervit_0_224_1k.pth.tar \\
        --data-dir imagenet/val
    python -m fastervit eval --model faster_vit_0_224 --pretrained fastervit_0_224_1k.pth.tar \\
        --data-dir some_classes --class-map imagenet_folders.txt
    python -m fastervit eval --model faster_vit_fashion_mnist --pretrained --dataset fashion_mnist

``--checkpoint`` takes a last.pt/best.pt of ``fastervit train``: the model is rebuilt from the
checkpoint's model name and keyword arguments, with its EMA weights when the run kept them
(``--no-ema`` for the live weights), and scored on the val split of the dataset it was trained
on, at the input size and crop it trained with.

``--pretrained`` takes a file in the release's format (``{"state_dict": ...}``) of the registered
model ``--model`` and scores it on an ImageNet-style folder, ``--data-dir DIR`` holding
``DIR/<class>/<image>`` (images in nested folders count for their class folder). Images are
prepared as the model's ``pretrained_cfg`` says, by the rules of timm's validate.py: resized to
the input size / crop_pct with its interpolation, keeping the aspect ratio ("center") or not
("squash"), centre-cropped, normalised by its mean and std. Labels are the class folders'
positions in sorted order, which is right for a folder with all of the model's classes; for a
folder with only some of them, ``--class-map FILE`` gives one class-folder name per line, the
line number (from 0) being the class index, as timm's ``--class-map`` does. ``--pretrained``
without a file takes the weights shipped with the package (the book's
``faster_vit_fashion_mnist``), and ``--dataset NAME`` instead of ``--data-dir`` scores them on
the val split of a named dataset (all 10,000 test images of ``fashion_mnist``), prepared the
same way.

The record holds top1, top5 (in %), the mean cross-entropy, the number of images and images/s
(data loading included).
"""

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastervit.amp import AMP_DTYPES
from fastervit.checkpoint import is_training_checkpoint, read_checkpoint, read_state_dict
from fastervit.commands.common import add_resolution, json_object, non_negative_int, positive_int
from fastervit.data.datasets import ClassFolders, ImageDataset, build_dataset, build_source, read_class_map
from fastervit.data.sampler import ResumableSampler
from fastervit.data.transforms import pretrained_eval_transform
from fastervit.peers import build_model
from fastervit.train.build import ModelFactory
from fastervit.train.checkpointing import load_training_checkpoint

# --pretrained given without a file: the weights shipped with the package.
SHIPPED = Path("<shipped>")
from fastervit.train.distributed import setup_distributed
from fastervit.train.evaluate import evaluate
from fastervit.variants import create_model


def _score(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    workers: int,
    device: str | None,
    amp: str | None,
) -> dict[str, Any]:
    """Loss, top-1, top-5, images and images/s of ``model`` over ``dataset`` (every process's share)."""
    dist = setup_distributed(device)
    try:
        model.to(dist.device)
        sampler = ResumableSampler(len(dataset), False, 0, dist.rank, dist.world_size, drop_last=False)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers
        )
        start = time.perf_counter()
        metrics = evaluate(model, loader, dist, AMP_DTYPES.get(amp))
        seconds = time.perf_counter() - start
    finally:
        dist.close()
    images = metrics.pop("count")
    return {**metrics, "images": images, "images_per_s": images / seconds}


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
    return {
        "checkpoint": str(checkpoint_path),
        "model": checkpoint["model_name"],
        "dataset": dataset,
        "weights": weights,
        "step": checkpoint["progress"]["step"],
        **_score(model, val_set, batch_size, workers, device, amp),
    }


def evaluate_pretrained(
    model_name: str,
    pretrained: Path | None,
    data_dir: Path | None,
    class_map: Path | None = None,
    resolution: tuple[int, int] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    batch_size: int = 256,
    workers: int = 4,
    device: str | None = None,
    amp: str | None = None,
    dataset: str | None = None,
) -> dict:
    """Score released weights on an ImageNet-style folder, prepared as ``pretrained_cfg`` says.

    Args:
        model_name: the registered variant the file holds, e.g. ``"faster_vit_0_224"``.
        pretrained: a file in the release's format, or a bare state dict; None for the
            weights shipped with the package (``create_model(name, pretrained=True)``).
        data_dir: ``data_dir/<class>/.../<image>``; with ``dataset``, that dataset's folder
            (None: where the package finds it).
        dataset: a named dataset (``fashion_mnist``) whose ``val`` split is scored instead of
            a folder; its own labels, so no ``class_map``.
        class_map: one class-folder name per line, line ``i`` being class ``i``; by default
            the sorted folder names, which must then be as many as the model's classes.
        resolution: ``(H, W)`` input size instead of the ``pretrained_cfg``'s; the crop
            fraction, interpolation and normalisation stay the cfg's.
        model_kwargs: constructor overrides, for a file saved from a modified variant. The
            number of classes defaults to the size of the file's classifier.

    Returns:
        A JSON-ready dict: the model, file, the entry its weights came from (``state_dict``,
        ``state_dict_ema``, ...), input size and preparation used, loss, top1, top5 (in %),
        images and images/s.
    """
    classes = read_class_map(class_map) if class_map is not None else None
    if dataset is not None:
        source = build_source(dataset, "val", data_dir)
        classes = source.classes  # the dataset's own labels
    else:  # bad folders fail here, before a large file is read
        source = ClassFolders(data_dir, classes)
    checkpoint = read_checkpoint(pretrained) if pretrained is not None else True
    if checkpoint is not True and is_training_checkpoint(checkpoint):
        raise ValueError(
            f"{pretrained} was written by 'fastervit train'; score it with "
            f"'fastervit eval --checkpoint {pretrained}', which rebuilds the model it trained."
        )
    state = read_state_dict(checkpoint) if checkpoint is not True else {}
    overrides = dict(model_kwargs or {})
    if "num_classes" not in overrides and "head.weight" in state:
        overrides["num_classes"] = state["head.weight"].shape[0]  # a fine-tuned file keeps its own head
    if resolution is not None:
        overrides["resolution"] = resolution
    model = create_model(model_name, pretrained=checkpoint, **overrides)
    if model.num_classes == 0:
        raise ValueError(
            f"{pretrained or 'the shipped file'} holds no classifier (no head.weight) for {model_name}: a backbone "
            "cannot be scored on classes; pass weights with their head."
        )
    if classes is None and len(source.classes) != model.num_classes:
        raise ValueError(
            f"{data_dir} has {len(source.classes)} class folders and the model {model.num_classes} "
            "classes. Without --class-map the sorted folders are labelled 0, 1, 2, ..., which is "
            "right only for a folder with every class; pass --class-map FILE (one class-folder "
            "name per line, line i for class i) to score a subset against the model's indices."
        )
    if len(source.classes) > model.num_classes:
        raise ValueError(
            f"{class_map} names {len(source.classes)} classes, but the model has only "
            f"{model.num_classes}; use the class map of the data set the weights were trained on."
        )
    cfg = model.pretrained_cfg
    size = tuple(resolution) if resolution is not None else tuple(cfg.input_size[1:])
    prepared = ImageDataset(source, pretrained_eval_transform(cfg, size))
    return {
        "model": model_name,
        "checkpoint": str(pretrained) if pretrained is not None else model.pretrained_cfg.checkpoint_file,
        "weights": model.load_report.weights or "state dict",
        "dataset": dataset,
        "data_dir": None if data_dir is None else str(data_dir),
        "class_map": None if class_map is None else str(class_map),
        "resolution": list(size),
        "crop_pct": cfg.crop_pct,
        "crop_mode": cfg.crop_mode,
        "interpolation": cfg.interpolation,
        **_score(model, prepared, batch_size, workers, device, amp),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", type=Path, help="a last.pt or best.pt written by 'fastervit train'")
    weights.add_argument(
        "--pretrained",
        type=Path,
        nargs="?",
        const=SHIPPED,
        metavar="FILE",
        help="released weights ({'state_dict': ...}) of --model, scored on the folder --data-dir "
        "or the dataset --dataset; without FILE, the weights shipped with the package",
    )
    p.add_argument(
        "--model", help="with --pretrained: the registered model the file holds, e.g. faster_vit_0_224"
    )
    p.add_argument(
        "--dataset",
        help="with --checkpoint: dataset name (default: the one it was trained on); with --pretrained: "
        "a named dataset (e.g. fashion_mnist) to score instead of a folder",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="with --pretrained: the folder DIR/<class>/<image>; with --checkpoint: the dataset "
        "directory (default: the run's, for the dataset it was trained on)",
    )
    p.add_argument(
        "--class-map",
        type=Path,
        metavar="FILE",
        help="with --pretrained: one class-folder name per line, line i (from 0) naming class i "
        "(default: the sorted folders, which must then be all of the model's classes)",
    )
    add_resolution(p, "with --pretrained: input size H [W] (default: the pretrained_cfg's)")
    p.add_argument(
        "--model-kwargs",
        type=json_object,
        help="with --pretrained: JSON of constructor overrides for a file saved from a modified variant",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per batch (default: 256)")
    p.add_argument("--workers", type=non_negative_int, default=4, help="data-loading processes (default: 4)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), help="mixed precision (default: off)")
    p.add_argument(
        "--no-ema",
        dest="use_ema",
        action="store_false",
        help="with --checkpoint: the live weights, not the EMA",
    )


def _check_flags(args: argparse.Namespace) -> None:
    """Flags that belong to the other way of evaluating are refused, not ignored."""
    if args.pretrained is not None:
        needed = [flag for flag, value in (("--model", args.model),) if value is None]
        if args.data_dir is None and args.dataset is None:
            needed.append("--data-dir (or --dataset)")
        if needed:
            raise ValueError(
                f"--pretrained needs {' and '.join(needed)} (the model the file holds, the images)"
            )
        foreign = {
            "--no-ema": not args.use_ema,
            "--class-map with --dataset": bool(args.dataset and args.class_map),
        }
    else:
        foreign = {
            "--model": args.model is not None,
            "--class-map": args.class_map is not None,
            "--resolution": args.resolution is not None,
            "--model-kwargs": args.model_kwargs is not None,
        }
    given = [flag for flag, present in foreign.items() if present]
    if given:
        mode = "--pretrained" if args.pretrained is not None else "--checkpoint"
        raise ValueError(f"{', '.join(given)} cannot be used with {mode}; see 'fastervit eval --help'")


def run(args: argparse.Namespace) -> dict | None:
    """Evaluate; the result is returned by rank 0 only (it alone prints)."""
    _check_flags(args)
    loader_options = (args.batch_size, args.workers, args.device, args.amp)
    if args.pretrained is not None:
        result = evaluate_pretrained(
            args.model,
            None if args.pretrained == SHIPPED else args.pretrained,
            args.data_dir,
            args.class_map,
            args.resolution,
            args.model_kwargs,
            *loader_options,
            dataset=args.dataset,
        )
    else:
        result = evaluate_checkpoint(
            args.checkpoint, args.dataset, args.data_dir, *loader_options, args.use_ema
        )
    return result if int(os.environ.get("RANK", "0")) == 0 else None
