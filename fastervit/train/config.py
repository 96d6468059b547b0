"""Every setting of a training run, in one frozen dataclass (the ``train`` flags map onto it).

The defaults follow the recipe's ingredients (LAMB, weight decay 0.05, label smoothing 0.1,
linear warmup then cosine decay) at a scale usable on small data; EMA, mixup, cutmix,
RandAugment, random erasing, MESA and a cooldown are opt-in. The release's settings per
FasterViT size are in :mod:`fastervit.train.presets` (``train --preset``). A new setting is one more field here (with its check in ``__post_init__`` and its
flag in :mod:`fastervit.commands.train`); the loop reads it from the config it is given.

Learning rate, timm's rule (``train.py``): the global batch is
``batch_size x world_size x grad_accum_steps``. ``lr``, when given, is used as it is.
Otherwise ``lr = lr_base x ratio`` with ``ratio = global batch / lr_base_size``, square-rooted
when ``lr_base_scale`` is ``"sqrt"``; left unset, ``lr_base_scale`` is ``"sqrt"`` for an
optimizer whose name contains "ada" or "lamb" (both of ours: ``lamb`` and ``adamw``) and
``"linear"`` otherwise. Changing the number of GPUs then keeps the rule's learning rate per
image. timm's own default ``lr_base`` (0.1) suits SGD; ours suits LAMB and AdamW.
"""

import math
from dataclasses import asdict, dataclass, field

from fastervit.amp import AMP_DTYPES
from fastervit.data.rand_augment import parse_rand_augment
from fastervit.data.random_erasing import MODES as ERASE_MODES

OPTIMIZERS = ("lamb", "adamw")
LR_BASE_SCALES = ("linear", "sqrt")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; see the ``train`` command's ``--help`` for each."""

    # What to train, and from where.
    model: str
    dataset: str
    output: str
    preset: str | None = None  # the fastervit.train.presets entry that filled the defaults
    data_dir: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = None  # None: the dataset's
    pretrained: str | None = None  # a release-format file to fine-tune from
    resume: str | None = None
    rewind: bool = False  # allow resuming from a checkpoint older than the output's last.pt
    # Schedule and optimizer.
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    lr_base: float = 1e-3
    lr_base_size: int = 256
    lr_base_scale: str | None = None  # None: timm's rule by optimizer name
    opt: str = "lamb"
    weight_decay: float = 0.05
    opt_eps: float = 1e-6
    warmup_epochs: float = 5.0
    warmup_lr: float = 0.0  # the warmup starts one step above it
    min_lr: float = 1e-5
    cooldown_epochs: int = 0  # epochs at min_lr after the cosine (the run lasts epochs + these)
    clip_grad: float | None = None
    grad_accum_steps: int = 1
    max_steps: int | None = None
    seed: int = 42
    # Regularisation and augmentation.
    smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    drop_path: float | None = None  # None: the model's
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    mesa: float = 0.0  # weight of the distillation from the EMA (0: off)
    mesa_start_ratio: float = 0.25  # MESA from the first epoch past this fraction of --epochs
    resolution: int | None = None  # the square side; None: the dataset's
    crop_pct: float | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.4
    aa: str | None = None  # a timm RandAugment policy, e.g. rand-m9-mstd0.5-inc1
    reprob: float = 0.0  # random erasing: probability, fill mode, largest number of boxes
    remode: str = "pixel"
    recount: int = 1
    # Hardware.
    device: str | None = None
    amp: bool = False
    amp_dtype: str | None = None  # None: float16 on CUDA, bfloat16 on the CPU
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    workers: int = 4

    def __post_init__(self) -> None:
        def at_least(name: str, value: float | None, low: float) -> tuple[bool, str]:
            ok = value is None or value >= low
            return ok, f"--{name.replace('_', '-')} must be >= {low}, got {value}"

        checks = [
            (bool(self.output.strip()), "--output must be a folder path, got an empty string"),
            at_least("epochs", self.epochs, 1),
            at_least("batch_size", self.batch_size, 1),
            at_least("grad_accum_steps", self.grad_accum_steps, 1),
            at_least("max_steps", self.max_steps, 1),
            at_least("warmup_epochs", self.warmup_epochs, 0),
            at_least("num_classes", self.num_classes, 1),
            at_least("resolution", self.resolution, 1),
            at_least("lr_base_size", self.lr_base_size, 1),
            at_least("workers", self.workers, 0),
            at_least("warmup_lr", self.warmup_lr, 0),
            at_least("cooldown_epochs", self.cooldown_epochs, 0),
            at_least("recount", self.recount, 1),
            at_least("mesa", self.mesa, 0),
            (0 <= self.reprob <= 1, f"--reprob must be in [0, 1], got {self.reprob}"),
            (
                self.remode in ERASE_MODES,
                f"--remode must be one of {', '.join(ERASE_MODES)}, got {self.remode!r}",
            ),
            (
                0 <= self.mesa_start_ratio <= 1,
                f"--mesa-start-ratio must be in [0, 1], got {self.mesa_start_ratio}",
            ),
            (
                self.mesa == 0 or self.model_ema,
                "--mesa needs --model-ema: the EMA of the weights is MESA's teacher",
            ),
            (0 <= self.smoothing < 1, f"--smoothing must be in [0, 1), got {self.smoothing}"),
            (self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.lr_base > 0, f"--lr-base must be > 0, got {self.lr_base}"),
            (self.opt in OPTIMIZERS, f"--opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}"),
            (
                self.lr_base_scale in (None, *LR_BASE_SCALES),
                f"--lr-base-scale must be linear or sqrt, got {self.lr_base_scale!r}",
            ),
            (
                self.amp_dtype in (None, *AMP_DTYPES),
                f"--amp-dtype must be one of {', '.join(AMP_DTYPES)}, got {self.amp_dtype!r}",
            ),
        ]
        if self.aa is not None:
            try:
                parse_rand_augment(self.aa)
            except ValueError as error:
                checks.append((False, f"--aa: {error}".rstrip(".")))
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("Invalid training settings: " + "; ".join(errors) + ".")

    def global_batch(self, world_size: int) -> int:
        """Images per optimizer step over all processes."""
        return self.batch_size * world_size * self.grad_accum_steps

    def lr_scaling(self) -> str:
        """How ``lr_base`` scales with the batch: ``lr_base_scale``, else timm's rule by optimizer."""
        if self.lr_base_scale is not None:
            return self.lr_base_scale
        return "sqrt" if any(part in self.opt.lower() for part in ("ada", "lamb")) else "linear"

    def learning_rate(self, world_size: int) -> float:
        """The peak learning rate for ``world_size`` processes (see the module docstring)."""
        if self.lr is not None:
            return self.lr
        ratio = self.global_batch(world_size) / self.lr_base_size
        return self.lr_base * (math.sqrt(ratio) if self.lr_scaling() == "sqrt" else ratio)

    def to_dict(self) -> dict:
        return asdict(self)


# Settings that may differ between a run and its resumption: they do not change its course
# (the device and compilation change only the rounding; the pretrained file is read only at
# the start, a resumed run takes its weights from the checkpoint).
RESUMABLE_CHANGES = (
    "preset",  # only a record: the settings it filled in are compared one by one
    "max_steps",
    "resume",
    "rewind",
    "pretrained",
    "output",
    "workers",
    "data_dir",
    "device",
    "compile",
)
