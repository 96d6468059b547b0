"""The training loop (chapter 11): FasterViT's recipe, resumable without losing anything.

One optimizer step = ``grad_accum_steps`` micro-batches of ``batch_size`` images on each of
``world_size`` processes. :func:`train_step`: mixup/cutmix (optional) -> forward under
autocast (optional) -> soft-target or label-smoothed cross-entropy, plus MESA's distillation
from the EMA once it is on (optional) -> backward (scaled for float16) -> stop if the loss is
not finite -> unscale, clip -> optimizer -> scheduler -> EMA. The run lasts ``epochs +
cooldown_epochs`` epochs.
:func:`train_one_epoch` runs the steps of one epoch; after it, :func:`end_epoch` evaluates
(also with the EMA weights when kept), logs, and writes ``last.pt`` (and ``best.pt`` when
top-1 improved) atomically. :func:`train` builds the run and ties them together.

Resuming gives the same weights as never stopping because every source of randomness is
either restored (the Python, NumPy and torch generators of every process, saved in the
checkpoint) or a function of the seed and the position in training (data order,
augmentations, mixup).

Progress goes to the ``logging`` module (logger ``fastervit.train.loop``: the run's summary
line and one line per epoch) and, for a caller that wants every step, to ``callback(event,
record)`` with events ``"start"`` (what ``run.json`` holds), ``"step"`` and ``"epoch"`` (the
CSV rows). Only the main process logs and calls back.
"""

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from fastervit.amp import autocast
from fastervit.data.sampler import derive_seed
from fastervit.peers import build_model
from fastervit.train import output_lock
from fastervit.train.build import ModelFactory, Progress, Run, build_data, build_run, model_kwargs_for
from fastervit.train.checkpointing import (
    check_new_run,
    check_not_rewinding,
    check_resumable,
    check_same_model,
    load_training_checkpoint,
    remove_orphans,
    restore_run,
    save_run,
    seed_everything,
)
from fastervit.train.config import TrainConfig
from fastervit.train.distributed import Distributed, setup_distributed
from fastervit.train.evaluate import evaluate_run, predict, write_report
from fastervit.train.losses import label_smoothing_cross_entropy, soft_target_cross_entropy
from fastervit.train.mesa import mesa_active, mesa_loss
from fastervit.train.runlog import RunLog, environment

Callback = Callable[[str, dict], None]
T = TypeVar("T")
logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before applying that step."""


def train_step(run: Run, progress: Progress, batches: Iterator) -> tuple[float, float, float]:
    """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, lr, grad norm)."""
    config, dist, accum = run.config, run.dist, run.config.grad_accum_steps
    epoch = progress.step // run.steps_per_epoch
    mesa = config.mesa > 0 and mesa_active(epoch, config.epochs, config.mesa_start_ratio)
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=dist.device)
    for micro in range(accum):
        images, labels = next(batches)  # (B, C, H, W), (B,)
        images = images.to(dist.device, non_blocking=True)
        labels = labels.to(dist.device, non_blocking=True)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if run.mixup is not None:
            seed = derive_seed(config.seed, progress.step, dist.rank, micro)
            images, targets = run.mixup(images, labels, torch.Generator().manual_seed(seed))
        # DDP averages gradients across processes on the last micro-batch only.
        last = micro == accum - 1
        sync = contextlib.nullcontext() if last or not dist.enabled else run.trained.no_sync()
        with sync:
            with autocast(dist.device, run.amp_dtype):
                logits = run.trained(images)  # (B, K)
            if run.mixup is not None:
                loss = soft_target_cross_entropy(logits, targets)
            else:
                loss = label_smoothing_cross_entropy(logits, labels, config.smoothing)
            if mesa:  # the EMA, on the same (mixed) images, as a teacher
                with torch.no_grad(), autocast(dist.device, run.amp_dtype):
                    teacher_logits = run.ema.module(images)  # (B, K)
                loss = loss + config.mesa * mesa_loss(logits, teacher_logits)
            run.scaler.scale(loss / accum).backward()
        loss_sum += loss.detach()
    mean_loss = float(dist.all_reduce_sum(loss_sum / accum)) / dist.world_size
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"The training loss became {mean_loss} at step {progress.step + 1} (epoch "
            f"{progress.step // run.steps_per_epoch}); stopped before applying it, so "
            f"{run.output / 'last.pt'} still holds the last good checkpoint. Lower --lr, set "
            "--clip-grad, or use --amp-dtype bfloat16 instead of float16, then --resume from it."
        )
    run.scaler.unscale_(run.optimizer)
    max_norm = config.clip_grad if config.clip_grad is not None else math.inf
    grad_norm = float(nn.utils.clip_grad_norm_(run.model.parameters(), max_norm))
    lr = run.optimizer.param_groups[0]["lr"]
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update(run.model)
    progress.step += 1
    return mean_loss, lr, grad_norm


def train_one_epoch(
    run: Run, progress: Progress, epoch: int, stop_step: int, log: RunLog | None, callback: Callback | None
) -> bool:
    """Train ``epoch`` from where ``progress`` stands until its end or ``stop_step``; returns
    whether the epoch was finished."""
    accum, spe = run.config.grad_accum_steps, run.steps_per_epoch
    done_in_epoch = progress.step - epoch * spe
    if done_in_epoch == 0:
        progress.epoch_loss_sum, progress.epoch_loss_steps = 0.0, 0
    run.data.train_set.set_epoch(epoch)
    run.data.train_sampler.set_epoch(epoch, skip=done_in_epoch * accum * run.config.batch_size)
    run.trained.train()
    batches = iter(run.data.train_loader)
    while progress.step < min((epoch + 1) * spe, stop_step):
        loss, lr, grad_norm = train_step(run, progress, batches)
        progress.epoch_loss_sum += loss
        progress.epoch_loss_steps += 1
        row = {"step": progress.step, "epoch": epoch, "lr": lr, "loss": loss, "grad_norm": grad_norm}
        if log is not None:
            log.log_step(row)
        if callback is not None and run.dist.is_main:
            callback("step", row)
    return progress.step == (epoch + 1) * spe


def end_epoch(
    run: Run, progress: Progress, epoch: int, seconds: float, log: RunLog | None, callback: Callback | None
) -> dict[str, float | None]:
    """Evaluate, log, remember the best top-1 (of the EMA when kept), save; returns the metrics."""
    metrics = evaluate_run(run)
    top1 = metrics["ema_top1"] if run.ema is not None else metrics["top1"]
    improved = progress.best_top1 is None or top1 > progress.best_top1
    if improved:
        progress.best_top1 = top1
    train_loss = progress.epoch_loss_sum / max(progress.epoch_loss_steps, 1)
    row = {
        "epoch": epoch,
        "step": progress.step,
        "train_loss": train_loss,
        **metrics,
        "epoch_time_s": seconds,
    }
    if log is not None:
        log.log_epoch(row)
    if run.dist.is_main:
        ema = f", EMA top-1 {metrics['ema_top1']:.2f}%" if run.ema is not None else ""
        logger.info(
            "epoch %d: train loss %.4f, val top-1 %.2f%% top-5 %.2f%%%s",
            epoch,
            train_loss,
            metrics["top1"],
            metrics["top5"],
            ema,
        )
        if callback is not None:
            callback("epoch", row)
    save_run(run, progress, best=improved)
    return metrics


def report_run(run: Run) -> dict:
    """Predictions of the run's final weights (the EMA's when kept) on the whole validation
    split: ``confusion.csv`` and ``predictions.json`` in the output folder (main process)."""
    model = run.ema.module if run.ema is not None else run.model
    val_set = run.data.val_set
    loader = torch.utils.data.DataLoader(
        val_set, batch_size=run.config.batch_size, num_workers=run.config.workers
    )
    probs, labels = predict(model, loader, run.dist.device, run.amp_dtype, run.config.channels_last)
    classes = getattr(val_set.source, "classes", None) or [str(k) for k in range(probs.shape[-1])]
    summary = write_report(probs, labels, classes, run.output)
    return {"weights": "ema" if run.ema is not None else "model", **summary}


def _on_main(dist: Distributed, action: Callable[[], T]) -> T | None:
    """``action()`` on the main process (None elsewhere); when it raises, every process raises,
    so that none waits forever in a collective for a process that has given up."""
    result, failure = None, None
    if dist.is_main:
        try:
            result = action()
        except Exception as error:  # noqa: BLE001 -- re-raised below, on every process
            failure = error
    message = dist.all_gather_object(None if failure is None else f"{type(failure).__name__}: {failure}")[0]
    if failure is not None:
        raise failure
    if message is not None:
        raise RuntimeError(f"the main process stopped before training: {message}")
    return result


def _check_output(config: TrainConfig, checkpoint: dict | None) -> None:
    """Before any work on the (locked) output folder: clean up, and refuse to lose a run."""
    output = Path(config.output)
    remove_orphans(output)
    if checkpoint is None:
        check_new_run(output)
    else:
        step = checkpoint["progress"]["step"]
        check_not_rewinding(Path(config.resume), step, output, allow=config.rewind)


def _loop(run: Run, progress: Progress, callback: Callback | None) -> dict:
    """Train until ``--epochs`` are done or ``--max-steps`` steps; returns a summary."""
    config, spe, dist = run.config, run.steps_per_epoch, run.dist
    log = RunLog(run.output, progress.step if config.resume else None) if dist.is_main else None
    info = run.info()
    if dist.is_main:
        record = {**info, "environment": environment(dist.device)}
        (run.output / "run.json").write_text(json.dumps(record, indent=2) + "\n")
        logger.info(
            "fastervit train: %s on %s (%d train / %d val images, %dpx), %d process(es), global batch "
            "%d, lr %g, %d steps/epoch, %d steps",
            config.model,
            run.data.info.name,
            info["train_images"],
            info["val_images"],
            run.data.resolution,
            dist.world_size,
            run.global_batch,
            run.lr,
            spe,
            run.total_steps,
        )
        if callback is not None:
            callback("start", record)
    stop_step = min(run.total_steps, config.max_steps or run.total_steps)
    first_step, train_s, metrics = progress.step, 0.0, {}
    start = time.perf_counter()
    try:
        while progress.step < stop_step:
            epoch = progress.step // spe
            epoch_start = time.perf_counter()
            finished = train_one_epoch(run, progress, epoch, stop_step, log, callback)
            train_s += time.perf_counter() - epoch_start
            if not finished:
                save_run(run, progress, best=False)  # stopped mid-epoch by --max-steps
                break
            metrics = end_epoch(run, progress, epoch, time.perf_counter() - epoch_start, log, callback)
    finally:
        if log is not None:
            log.close()
    summary = {
        "model": config.model,
        "dataset": config.dataset,
        "params": sum(p.numel() for p in run.model.parameters()),
        "steps": progress.step,
        "epochs_completed": progress.step // spe,
        "finished": progress.step >= run.total_steps,
        **metrics,
        "best_top1": progress.best_top1,
        "lr": run.lr,
        "global_batch": run.global_batch,
        # The steps of this call (a resumed run counts from its checkpoint), without evaluation.
        "train_images_per_s": (progress.step - first_step) * run.global_batch / train_s if train_s else None,
        "output": str(run.output),
        "time_s": time.perf_counter() - start,
    }
    if summary["finished"] and dist.is_main:
        summary["report"] = report_run(run)
    return summary


def train(
    config: TrainConfig, model_factory: ModelFactory = build_model, callback: Callback | None = None
) -> dict:
    """Run (or resume) training as ``config`` says; returns the JSON-ready summary.

    Args:
        config: the run's settings.
        model_factory: ``factory(name, **kwargs) -> nn.Module`` mapping ``(B, C, H, W)``
            images to ``(B, num_classes)`` logits (called with ``pretrained=`` and
            ``skip_head=`` too when fine-tuning); by default
            :func:`fastervit.peers.build_model`, which knows every FasterViT and peer.
        callback: ``callback(event, record)``, called by the main process at the start,
            after every step and after every epoch (see the module docstring).

    Raises:
        OutputLockedError: another run is using ``config.output``.
        FileExistsError: the output holds a run and this one would overwrite it.
        NonFiniteLossError: the loss became NaN or infinite (``last.pt`` is the last good state).
    """
    dist = setup_distributed(config.device)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(dist.close)
        checkpoint = None if config.resume is None else load_training_checkpoint(Path(config.resume))
        lock = _on_main(dist, lambda: output_lock.acquire(Path(config.output)))
        if lock is not None:
            cleanup.callback(output_lock.release, lock)
        _on_main(dist, lambda: _check_output(config, checkpoint))
        seed_everything(config.seed)  # the same initial weights on every process
        data = build_data(config, dist)
        model_kwargs = model_kwargs_for(config, data.info, data.resolution)
        if checkpoint is not None:
            check_same_model(checkpoint, config.model, model_kwargs, Path(config.resume))
            check_resumable(checkpoint, config, dist.world_size)
        run = build_run(config, dist, data, model_kwargs, model_factory, resuming=checkpoint is not None)
        if checkpoint is not None:
            progress = restore_run(run, checkpoint)
            del checkpoint
        else:
            progress = Progress()
            seed_everything(derive_seed(config.seed, dist.rank))  # each process its own dropout
        return _loop(run, progress, callback)
