"""The build of a training run: data, model, optimizer, schedule, EMA, loss scaling, mixup.

:func:`build_run` turns a :class:`~fastervit.train.config.TrainConfig` into a :class:`Run`,
the objects one run trains with; :class:`Progress` is where the run stands. Nothing here
trains: :mod:`fastervit.train.loop` does, and :mod:`fastervit.train.checkpointing` saves and
restores both.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fastervit.amp import AMP_DTYPES, default_amp_dtype
from fastervit.checkpoint import read_checkpoint, read_state_dict
from fastervit.data.datasets import DatasetInfo, ImageDataset, build_dataset
from fastervit.data.mixup import Mixup
from fastervit.data.sampler import ResumableSampler
from fastervit.model import FasterViT
from fastervit.peers import build_model
from fastervit.train.config import TrainConfig
from fastervit.train.distributed import Distributed
from fastervit.train.ema import ModelEma
from fastervit.train.optim import Lamb, param_groups_weight_decay
from fastervit.train.schedule import ScheduleSteps, WarmupCosineLR

# factory(name, **model_kwargs) -> model mapping (B, C, H, W) images to (B, num_classes)
# logits; called with pretrained=<the checkpoint dict>, skip_head=... too when fine-tuning.
ModelFactory = Callable[..., nn.Module]
logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where training is: optimizer steps done, best top-1 so far, the current epoch's loss."""

    step: int = 0
    best_top1: float | None = None
    epoch_loss_sum: float = 0.0
    epoch_loss_steps: int = 0


@dataclass(frozen=True)
class RunData:
    """Datasets, samplers and loaders of a run, and the square side the model sees."""

    train_set: ImageDataset
    val_set: ImageDataset
    train_sampler: ResumableSampler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    resolution: int

    @property
    def info(self) -> DatasetInfo:
        return self.train_set.info


@dataclass(frozen=True)
class Run:
    """The objects of one training run; the training steps change their state, not them."""

    config: TrainConfig
    dist: Distributed
    data: RunData
    model_kwargs: dict
    model: nn.Module  # never wrapped: what is saved, averaged and evaluated
    trained: nn.Module  # what the training steps call: the model, compiled and/or DDP-wrapped
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosineLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    mixup: Mixup | None
    lr: float
    steps_per_epoch: int
    steps: ScheduleSteps  # warmup, cosine and total (cooldown included) in optimizer steps

    @property
    def total_steps(self) -> int:
        return self.steps.total

    @property
    def output(self) -> Path:
        return Path(self.config.output)

    @property
    def global_batch(self) -> int:
        return self.config.global_batch(self.dist.world_size)

    def info(self) -> dict:
        """The settings and what follows from them: what ``run.json`` holds."""
        return {
            "config": self.config.to_dict(),
            "model_kwargs": self.model_kwargs,
            "world_size": self.dist.world_size,
            "global_batch": self.global_batch,
            "lr": self.lr,
            "lr_scaling": None if self.config.lr is not None else self.config.lr_scaling(),
            "amp_dtype": None if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch."),
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.steps.total,
            "warmup_steps": self.steps.warmup,
            "cosine_steps": self.steps.cosine,
            "train_images": len(self.data.train_set),
            "val_images": len(self.data.val_set),
        }


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


def build_data(config: TrainConfig, dist: Distributed) -> RunData:
    """Both splits with their transforms, this process's samplers and the loaders."""
    options = {
        "scale": tuple(config.scale),
        "hflip": config.hflip,
        "color_jitter": config.color_jitter,
        "rand_augment": config.aa,
        "re_prob": config.reprob,
        "re_mode": config.remode,
        "re_count": config.recount,
    }
    if config.resolution is not None:
        options["img_size"] = config.resolution
    if config.crop_pct is not None:
        options["crop_pct"] = config.crop_pct
    data_dir = None if config.data_dir is None else Path(config.data_dir)
    train_set = build_dataset(config.dataset, "train", data_dir, seed=config.seed, **options)
    val_set = build_dataset(config.dataset, "val", data_dir, seed=config.seed, **options)
    train_sampler = ResumableSampler(len(train_set), True, config.seed, dist.rank, dist.world_size)
    val_sampler = ResumableSampler(len(val_set), False, 0, dist.rank, dist.world_size, drop_last=False)
    return RunData(
        train_set=train_set,
        val_set=val_set,
        train_sampler=train_sampler,
        train_loader=_loader(train_set, train_sampler, config, dist, train=True),
        val_loader=_loader(val_set, val_sampler, config, dist, train=False),
        resolution=config.resolution or train_set.info.default_img_size,
    )


def model_kwargs_for(config: TrainConfig, info: DatasetInfo, resolution: int) -> dict:
    """Keyword arguments for the model factory: the dataset's shape, then ``--model-kwargs``.

    ``--num-classes`` may exceed the dataset's classes (the extra logits are never a label),
    not fall short of them.
    """
    num_classes = config.num_classes or info.num_classes
    if num_classes < info.num_classes:
        raise ValueError(
            f"--num-classes {num_classes} is fewer than the {info.num_classes} classes of "
            f"{info.name!r}; leave --num-classes out to use the dataset's."
        )
    kwargs: dict = {"num_classes": num_classes, "in_chans": info.channels, "resolution": resolution}
    if config.drop_path is not None:
        kwargs["drop_path_rate"] = config.drop_path
    return {**kwargs, **config.model_kwargs}


def _make_model(config: TrainConfig, model_kwargs: dict, factory: ModelFactory, load_pretrained: bool):
    """The model, from ``--pretrained`` when asked, its head replaced if the classes differ."""
    if config.pretrained is None or not load_pretrained:
        return factory(config.model, **model_kwargs)
    checkpoint = read_checkpoint(config.pretrained)
    head = read_state_dict(checkpoint).get("head.weight")
    skip_head = head is not None and head.shape[0] != model_kwargs["num_classes"]
    model = factory(config.model, pretrained=checkpoint, skip_head=skip_head, **model_kwargs)
    if skip_head:
        logger.info(
            "fine-tuning from %s: its head (%d classes) replaced by a new one (%d classes)",
            config.pretrained,
            head.shape[0],
            model_kwargs["num_classes"],
        )
    else:
        logger.info("fine-tuning from %s, every weight loaded", config.pretrained)
    return model


def schedule_steps(config: TrainConfig, data: RunData, world_size: int) -> tuple[int, ScheduleSteps]:
    """``(steps_per_epoch, phases)``, refusing runs too small to schedule."""
    steps_per_epoch = len(data.train_loader) // config.grad_accum_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(data.train_set)} training images make no full step of "
            f"{config.global_batch(world_size)} (batch {config.batch_size} x {world_size} processes "
            f"x {config.grad_accum_steps} accumulation steps); lower --batch-size."
        )
    phases = ScheduleSteps.from_epochs(
        steps_per_epoch, config.epochs, config.warmup_epochs, config.cooldown_epochs
    )
    return steps_per_epoch, phases


def build_optimizer(config: TrainConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """LAMB or AdamW over two groups: decayed weights, and the 1-D ones left undecayed."""
    groups = param_groups_weight_decay(model, config.weight_decay)
    if config.opt == "lamb":
        return Lamb(groups, lr=lr, eps=config.opt_eps)
    return torch.optim.AdamW(groups, lr=lr, eps=config.opt_eps)


def build_run(
    config: TrainConfig,
    dist: Distributed,
    data: RunData,
    model_kwargs: dict,
    factory: ModelFactory = build_model,
    resuming: bool = False,
) -> Run:
    """Every object of a run, on ``dist``'s device; the model freshly initialised (or fine-tuned
    from ``--pretrained`` unless ``resuming``, when the checkpoint's weights follow).

    The caller seeds the generators first: the initial weights come from them.
    """
    steps_per_epoch, steps = schedule_steps(config, data, dist.world_size)
    model = _make_model(config, model_kwargs, factory, load_pretrained=not resuming)
    if config.sync_bn and dist.enabled:
        if dist.device.type != "cuda":
            raise ValueError(
                "--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only); leave it off "
                "on the CPU, where BatchNorm statistics are averaged over processes after "
                "every epoch instead."
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    model = model.to(dist.device, memory_format=memory_format)
    ema = ModelEma(model, config.model_ema_decay) if config.model_ema else None

    lr = config.learning_rate(dist.world_size)
    optimizer = build_optimizer(config, model, lr)
    amp_dtype = AMP_DTYPES[config.amp_dtype or default_amp_dtype(dist.device)] if config.amp else None
    mixup = None
    if config.mixup > 0 or config.cutmix > 0:
        mixup = Mixup(
            num_classes=model_kwargs["num_classes"],
            mixup_alpha=config.mixup,
            cutmix_alpha=config.cutmix,
            prob=config.mixup_prob,
            switch_prob=config.mixup_switch_prob,
            label_smoothing=config.smoothing,
        )
    trained: nn.Module = torch.compile(model) if config.compile else model
    if dist.enabled:
        device_ids = [dist.local_rank] if dist.device.type == "cuda" else None
        # A FasterViT built where a carrier-token stage holds one window has idle weights.
        idle = isinstance(model, FasterViT) and bool(model.unused_parameters())
        trained = DistributedDataParallel(trained, device_ids=device_ids, find_unused_parameters=idle)
    return Run(
        config=config,
        dist=dist,
        data=data,
        model_kwargs=model_kwargs,
        model=model,
        trained=trained,
        ema=ema,
        optimizer=optimizer,
        scheduler=WarmupCosineLR(
            optimizer, steps.warmup, steps.cosine, config.min_lr, warmup_lr=config.warmup_lr
        ),
        # Only float16 needs its loss scaled (bfloat16 has float32's range).
        scaler=torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        mixup=mixup,
        lr=lr,
        steps_per_epoch=steps_per_epoch,
        steps=steps,
    )
