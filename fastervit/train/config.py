"""Every setting of a training run, in one dataclass (the CLI flags map onto its fields).

The defaults follow the recipe's ingredients (LAMB, weight decay 0.05, label smoothing 0.1,
linear warmup then cosine decay) at a scale usable on small data; EMA, mixup and cutmix are
opt-in.

Learning-rate rule: the global batch is ``batch_size x world_size x grad_accum_steps``. With
``lr_base`` set, ``lr = lr_base x global_batch / 512``, so changing the number of GPUs keeps
the learning rate per image; otherwise ``lr`` is used as given.
"""

from dataclasses import asdict, dataclass, field


@dataclass
class TrainConfig:
    """Settings of one training run; see the ``train`` command's ``--help`` for each."""

    model: str
    dataset: str
    output: str
    data_dir: str | None = None
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_base: float | None = None
    opt: str = "lamb"
    weight_decay: float = 0.05
    opt_eps: float = 1e-6
    warmup_epochs: float = 5.0
    min_lr: float = 1e-5
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    drop_path: float | None = None
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    clip_grad: float | None = None
    grad_accum_steps: int = 1
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    device: str | None = None
    workers: int = 4
    seed: int = 42
    max_steps: int | None = None
    img_size: int | None = None
    crop_pct: float | None = None
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.4
    aa: str | None = None
    resume: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.grad_accum_steps >= 1, f"--grad-accum-steps must be >= 1, got {self.grad_accum_steps}"),
            (self.opt in ("lamb", "adamw"), f"--opt must be lamb or adamw, got {self.opt!r}"),
            (self.amp in (None, "bf16", "fp16"), f"--amp must be bf16 or fp16, got {self.amp!r}"),
            (
                self.max_steps is None or self.max_steps >= 1,
                f"--max-steps must be >= 1, got {self.max_steps}",
            ),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
        ]
        errors = [message for ok, message in checks if not ok]
        if errors:
            raise ValueError("Invalid training settings: " + "; ".join(errors) + ".")

    def learning_rate(self, world_size: int) -> float:
        """The peak learning rate for ``world_size`` processes (see the module docstring)."""
        if self.lr_base is None:
            return self.lr
        return self.lr_base * self.batch_size * world_size * self.grad_accum_steps / 512

    def to_dict(self) -> dict:
        return asdict(self)


# Settings that may differ between a run and its resumption: they do not change its course
# (the device and compilation change only the rounding).
RESUMABLE_CHANGES = (
    "max_steps",
    "resume",
    "output",
    "workers",
    "progress",
    "data_dir",
    "device",
    "compile",
)
