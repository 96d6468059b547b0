"""The training loop (chapter 11): FasterViT's recipe, resumable without losing anything.

One optimizer step = ``grad_accum_steps`` micro-batches of ``batch_size`` images on each of
``world_size`` processes. Per step: mixup/cutmix (optional) -> forward under autocast
(optional) -> soft-target or label-smoothed cross-entropy -> backward (scaled for fp16) ->
stop if the loss is not finite -> unscale, clip -> LAMB -> scheduler -> EMA.
After each epoch: evaluate (also with the EMA weights when kept), log, and write
``last.pt`` (and ``best.pt`` when top-1 improved) atomically.

Resuming gives the same weights as never stopping because every source of randomness is
either restored (the Python, NumPy and torch generators of every process, saved in the
checkpoint) or a function of the seed and the position in training (data order,
augmentations, mixup).
"""

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from fastervit.checkpoint import atomic_save
from fastervit.data.datasets import DatasetInfo, ImageDataset, build_dataset
from fastervit.data.mixup import Mixup
from fastervit.data.sampler import ResumableSampler, derive_seed
from fastervit.model import FasterViT
from fastervit.train.checkpointing import (
    FORMAT_VERSION,
    capture_rng_state,
    check_same_model,
    load_training_checkpoint,
    restore_rng_state,
    seed_everything,
)
from fastervit.train.config import RESUMABLE_CHANGES, TrainConfig
from fastervit.train.distributed import Distributed, setup_distributed
from fastervit.train.ema import ModelEma
from fastervit.train.evaluate import evaluate
from fastervit.train.losses import label_smoothing_cross_entropy, soft_target_cross_entropy
from fastervit.train.optim import Lamb, param_groups_weight_decay
from fastervit.train.runlog import RunLog
from fastervit.train.schedule import WarmupCosineLR
from fastervit.variants import create_model

ModelFactory = Callable[..., nn.Module]
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before applying that step."""


@dataclass
class Progress:
    """Where training is: optimizer steps done, best top-1 so far, the current epoch's loss."""

    step: int = 0
    best_top1: float | None = None
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0


def model_kwargs_for(config: TrainConfig, info: DatasetInfo, img_size: int) -> dict:
    """Keyword arguments for the model factory: the dataset's shape, then ``--model-kwargs``."""
    kwargs: dict = {"num_classes": info.num_classes, "in_chans": info.channels, "resolution": img_size}
    if config.drop_path is not None:
        kwargs["drop_path_rate"] = config.drop_path
    return {**kwargs, **config.model_kwargs}


def _check_resumable(saved: dict, config: TrainConfig, path: Path) -> None:
    """Raise if settings that shape the run differ from those the checkpoint was made with."""
    current = config.to_dict()
    changed = [
        f"{key} (checkpoint {saved.get(key)!r}, now {value!r})"
        for key, value in current.items()
        if key not in RESUMABLE_CHANGES and saved.get(key) != value
    ]
    if changed:
        raise ValueError(
            f"Cannot resume {path} with different settings: {'; '.join(changed)}. Resume with "
            "the settings the run started with, or start a new run in another --output."
        )


def _loader(
    dataset: ImageDataset, sampler: ResumableSampler, config: TrainConfig, dist: Distributed, train: bool
) -> torch.utils.data.DataLoader:
    # Workers are started afresh every epoch (not persistent) so they see the dataset's
    # epoch; the loader's own generator keeps it from drawing on torch's global one.
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        drop_last=train,
        pin_memory=dist.device.type == "cuda",
        generator=torch.Generator().manual_seed(config.seed),
    )


def _build_optimizer(config: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = param_groups_weight_decay(model, config.weight_decay)
    if config.opt == "lamb":
        return Lamb(groups, lr=lr, eps=config.opt_eps)
    return torch.optim.AdamW(groups, lr=lr, eps=config.opt_eps)


class _Run:
    """The objects of one training run and the steps that change them."""

    def __init__(self, config: TrainConfig, dist: Distributed, model_factory: ModelFactory) -> None:
        self.config, self.dist = config, dist
        self.output = Path(config.output)
        if config.resume is None and (self.output / "last.pt").exists():
            raise FileExistsError(
                f"{self.output} already holds a run (last.pt); continue it with --resume "
                f"{self.output / 'last.pt'}, or choose another --output."
            )
        seed_everything(config.seed)  # the same initial weights on every process
        self._build_data()
        self.model_kwargs = model_kwargs_for(config, self.info, self.img_size)
        checkpoint = None if config.resume is None else self._load_resumable(Path(config.resume))
        self._build_model(model_factory)
        self._build_optimization()
        self.progress = Progress()
        if checkpoint is not None:
            self._restore(checkpoint)
        else:
            seed_everything(derive_seed(config.seed, dist.rank))  # each process its own dropout

        trained: nn.Module = torch.compile(self.model) if config.compile else self.model
        if dist.enabled:
            device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
            # A FasterViT built where a carrier-token stage holds one window has idle weights.
            idle = isinstance(self.model, FasterViT) and bool(self.model.unused_parameters())
            trained = DistributedDataParallel(trained, device_ids=device_ids, find_unused_parameters=idle)
        self.trained = trained  # what the training steps call: compiled and/or DDP-wrapped
        self.log = None
        if dist.is_main:
            self.log = RunLog(self.output, self.progress.step if config.resume else None)
            self._write_run_info()

    def _build_data(self) -> None:
        """Datasets, samplers and loaders; the schedule's length in steps."""
        config, dist = self.config, self.dist
        transform_options = {
            "scale": tuple(config.scale),
            "hflip": config.hflip,
            "color_jitter": config.color_jitter,
            "rand_augment": config.aa,
        }
        if config.img_size is not None:
            transform_options["img_size"] = config.img_size
        if config.crop_pct is not None:
            transform_options["crop_pct"] = config.crop_pct
        data_dir = None if config.data_dir is None else Path(config.data_dir)
        self.train_set = build_dataset(
            config.dataset, "train", data_dir, seed=config.seed, **transform_options
        )
        self.val_set = build_dataset(config.dataset, "val", data_dir, seed=config.seed, **transform_options)
        self.info = self.train_set.info
        self.img_size = config.img_size or self.info.default_img_size
        self.train_sampler = ResumableSampler(
            len(self.train_set), True, config.seed, dist.rank, dist.world_size
        )
        val_sampler = ResumableSampler(
            len(self.val_set), False, 0, dist.rank, dist.world_size, drop_last=False
        )
        self.train_loader = _loader(self.train_set, self.train_sampler, config, dist, train=True)
        self.val_loader = _loader(self.val_set, val_sampler, config, dist, train=False)

        self.global_batch = config.batch_size * dist.world_size * config.grad_accum_steps
        self.steps_per_epoch = len(self.train_loader) // config.grad_accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_set)} training images make no full step of {self.global_batch} "
                f"(batch {config.batch_size} x {dist.world_size} processes x "
                f"{config.grad_accum_steps} accumulation steps); lower --batch-size."
            )
        self.total_steps = config.epochs * self.steps_per_epoch
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"Warmup ({config.warmup_epochs} epochs = {self.warmup_steps} steps) must be shorter "
                f"than training ({config.epochs} epochs = {self.total_steps} steps); lower "
                "--warmup-epochs or raise --epochs."
            )

    def _build_model(self, model_factory: ModelFactory) -> None:
        """The model on its device (``self.model``, never wrapped) and its EMA."""
        config, dist = self.config, self.dist
        model = model_factory(config.model, **self.model_kwargs)
        if config.sync_bn and dist.enabled:
            if dist.device.type != "cuda":
                raise ValueError(
                    "--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); leave it off "
                    "on the CPU, where BatchNorm statistics are averaged over processes after "
                    "every epoch instead."
                )
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(dist.device, memory_format=memory_format)
        self.ema = ModelEma(self.model, config.model_ema_decay) if config.model_ema else None

    def _build_optimization(self) -> None:
        """Optimizer, schedule, loss scaling and batch mixing."""
        config = self.config
        self.lr = config.learning_rate(self.dist.world_size)
        self.optimizer = _build_optimizer(config, self.model, self.lr)
        self.scheduler = WarmupCosineLR(self.optimizer, self.warmup_steps, self.total_steps, config.min_lr)
        self.amp_dtype = AMP_DTYPES.get(config.amp)
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=config.amp == "fp16")
        self.mixup = None
        if config.mixup > 0 or config.cutmix > 0:
            self.mixup = Mixup(
                num_classes=self.info.num_classes,
                mixup_alpha=config.mixup,
                cutmix_alpha=config.cutmix,
                prob=config.mixup_prob,
                switch_prob=config.mixup_switch_prob,
                label_smoothing=config.smoothing,
            )

    def _write_run_info(self) -> None:
        """``run.json`` with the settings and what follows from them; a one-line summary."""
        run_info = {
            "config": self.config.to_dict(),
            "model_kwargs": self.model_kwargs,
            "world_size": self.dist.world_size,
            "global_batch": self.global_batch,
            "lr": self.lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }
        (self.output / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
        print(
            f"fastervit train: {self.config.model} on {self.info.name} ({len(self.train_set)} train / "
            f"{len(self.val_set)} val images, {self.img_size}px), {self.dist.world_size} process(es), "
            f"global batch {self.global_batch}, lr {self.lr:g}, {self.steps_per_epoch} steps/epoch, "
            f"{self.total_steps} steps",
            flush=True,
        )

    def _load_resumable(self, path: Path) -> dict:
        """Load the checkpoint to resume from, checking it belongs to this run."""
        checkpoint = load_training_checkpoint(path)
        check_same_model(checkpoint, self.config.model, self.model_kwargs, path)
        _check_resumable(checkpoint["config"], self.config, path)
        if len(checkpoint["rng"]) != self.dist.world_size:
            raise ValueError(
                f"{path} was written by {len(checkpoint['rng'])} process(es), this run has "
                f"{self.dist.world_size}; resume with the same number (data order and random "
                "streams depend on it)."
            )
        return checkpoint

    def _restore(self, checkpoint: dict) -> None:
        """Put every state of the checkpoint back, the random generators last."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.progress = Progress(**checkpoint["progress"])
        restore_rng_state(checkpoint["rng"][self.dist.rank])

    def save(self, top1_improved: bool) -> None:
        """Write ``last.pt`` (and ``best.pt``) from rank 0; every rank must call this.

        All ranks return once the files are on disk, so any of them may read them next.
        """
        rng = self.dist.all_gather_object(capture_rng_state())
        if self.dist.is_main:
            checkpoint = {
                "format": FORMAT_VERSION,
                "model_name": self.config.model,
                "model_kwargs": self.model_kwargs,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "ema": None if self.ema is None else self.ema.state_dict(),
                "progress": asdict(self.progress),
                "epoch": self.progress.step // self.steps_per_epoch,
                "config": self.config.to_dict(),
                "rng": rng,
            }
            if top1_improved:
                atomic_save(checkpoint, self.output / "best.pt")
            atomic_save(checkpoint, self.output / "last.pt")
        self.dist.barrier()

    def train_step(self, batches: Iterator) -> tuple[float, float, float]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns (loss, lr, grad norm)."""
        config, dist, accum = self.config, self.dist, self.config.grad_accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=dist.device)
        for micro in range(accum):
            images, labels = next(batches)  # (B, C, H, W), (B,)
            images = images.to(dist.device, non_blocking=True)
            labels = labels.to(dist.device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if self.mixup is not None:
                seed = derive_seed(config.seed, self.progress.step, dist.rank, micro)
                images, targets = self.mixup(images, labels, torch.Generator().manual_seed(seed))
            # DDP averages gradients across processes on the last micro-batch only.
            last = micro == accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.trained.no_sync()
            with sync:
                with torch.autocast(
                    dist.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
                ):
                    logits = self.trained(images)  # (B, K)
                if self.mixup is not None:
                    loss = soft_target_cross_entropy(logits, targets)
                else:
                    loss = label_smoothing_cross_entropy(logits, labels, config.smoothing)
                self.scaler.scale(loss / accum).backward()
            loss_sum += loss.detach()
        mean_loss = float(dist.all_reduce_sum(loss_sum / accum)) / dist.world_size
        if not math.isfinite(mean_loss):
            raise NonFiniteLossError(
                f"The training loss became {mean_loss} at step {self.progress.step + 1} (epoch "
                f"{self.progress.step // self.steps_per_epoch}); stopped before applying it, so "
                f"{self.output / 'last.pt'} still holds the last good checkpoint. Lower --lr, set "
                "--clip-grad, or use --amp bf16 instead of fp16, then --resume from it."
            )
        self.scaler.unscale_(self.optimizer)
        max_norm = config.clip_grad if config.clip_grad is not None else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.progress.step += 1
        return mean_loss, lr, grad_norm

    def evaluate(self) -> dict[str, float | None]:
        """Validation loss and top-1/top-5, for the live weights and the EMA weights."""
        self.dist.average_batchnorm_statistics(self.model)
        if self.ema is not None:
            self.dist.average_batchnorm_statistics(self.ema.module)
        args = (self.val_loader, self.dist, self.amp_dtype, self.config.channels_last)
        metrics = evaluate(self.model, *args)
        ema_metrics = evaluate(self.ema.module, *args) if self.ema is not None else None
        return {
            "val_loss": metrics["loss"],
            "top1": metrics["top1"],
            "top5": metrics["top5"],
            "ema_val_loss": None if ema_metrics is None else ema_metrics["loss"],
            "ema_top1": None if ema_metrics is None else ema_metrics["top1"],
            "ema_top5": None if ema_metrics is None else ema_metrics["top5"],
        }

    def train_epoch(self, epoch: int, stop_step: int) -> bool:
        """Train ``epoch`` from where progress stands; returns whether it was finished."""
        progress, accum, spe = self.progress, self.config.grad_accum_steps, self.steps_per_epoch
        done_in_epoch = progress.step - epoch * spe
        if done_in_epoch == 0:
            progress.epoch_loss_sum, progress.epoch_loss_steps = 0.0, 0
        self.train_set.set_epoch(epoch)
        self.train_sampler.set_epoch(epoch, skip=done_in_epoch * accum * self.config.batch_size)
        self.trained.train()
        show = self.dist.is_main and self.config.progress and sys.stderr.isatty()
        bar = tqdm(total=spe, initial=done_in_epoch, desc=f"epoch {epoch}", disable=not show, leave=False)
        batches = iter(self.train_loader)
        try:
            while progress.step < min((epoch + 1) * spe, stop_step):
                loss, lr, grad_norm = self.train_step(batches)
                progress.epoch_loss_sum += loss
                progress.epoch_loss_steps += 1
                if self.log is not None:
                    self.log.log_step(
                        {
                            "step": progress.step,
                            "epoch": epoch,
                            "lr": lr,
                            "loss": loss,
                            "grad_norm": grad_norm,
                        }
                    )
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                bar.update()
        finally:
            bar.close()
        return progress.step == (epoch + 1) * spe

    def end_epoch(self, epoch: int, seconds: float) -> dict[str, float | None]:
        """Evaluate, log, remember the best top-1 (of the EMA when kept), save; returns the metrics."""
        progress = self.progress
        metrics = self.evaluate()
        top1 = metrics["ema_top1"] if self.ema is not None else metrics["top1"]
        improved = progress.best_top1 is None or top1 > progress.best_top1
        if improved:
            progress.best_top1 = top1
        train_loss = progress.epoch_loss_sum / max(progress.epoch_loss_steps, 1)
        if self.log is not None:
            row = {"epoch": epoch, "step": progress.step, "train_loss": train_loss, **metrics}
            self.log.log_epoch({**row, "epoch_time_s": seconds})
            ema = f", EMA top-1 {metrics['ema_top1']:.2f}%" if self.ema is not None else ""
            print(
                f"epoch {epoch}: train loss {train_loss:.4f}, val top-1 {metrics['top1']:.2f}% "
                f"top-5 {metrics['top5']:.2f}%{ema}",
                flush=True,
            )
        self.save(top1_improved=improved)
        return metrics

    def run(self) -> dict:
        """Train until ``--epochs`` are done or ``--max-steps`` steps; returns a summary."""
        config, progress, spe = self.config, self.progress, self.steps_per_epoch
        stop_step = min(self.total_steps, config.max_steps or self.total_steps)
        metrics: dict[str, float | None] = {}
        start = time.perf_counter()
        try:
            while progress.step < stop_step:
                epoch = progress.step // spe
                epoch_start = time.perf_counter()
                if not self.train_epoch(epoch, stop_step):
                    self.save(top1_improved=False)  # stopped mid-epoch by --max-steps
                    break
                metrics = self.end_epoch(epoch, time.perf_counter() - epoch_start)
        finally:
            if self.log is not None:
                self.log.close()
        return {
            "model": config.model,
            "dataset": config.dataset,
            "steps": progress.step,
            "epochs_completed": progress.step // spe,
            "finished": progress.step >= self.total_steps,
            **metrics,
            "best_top1": progress.best_top1,
            "output": str(self.output),
            "time_s": time.perf_counter() - start,
        }


def train(config: TrainConfig, model_factory: ModelFactory = create_model) -> dict:
    """Run (or resume) training as ``config`` says; returns the JSON-ready summary.

    Args:
        config: the run's settings.
        model_factory: ``factory(name, **kwargs) -> nn.Module`` mapping ``(B, C, H, W)``
            images to ``(B, num_classes)`` logits; ``fastervit.create_model`` by default.
    """
    dist = setup_distributed(config.device)
    try:
        return _Run(config, dist, model_factory).run()
    finally:
        dist.close()
