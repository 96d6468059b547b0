"""Training FasterViT (chapters 10 and 11): the recipe's pieces and the loop.

* :mod:`~fastervit.train.optim`: LAMB and weight-decay parameter groups;
* :mod:`~fastervit.train.schedule`: per-step linear warmup + cosine decay + cooldown;
* :mod:`~fastervit.train.ema`: exponential moving average of the weights;
* :mod:`~fastervit.train.mesa`: MESA, the distillation from the EMA the release trains with;
* :mod:`~fastervit.train.presets`: the release's settings per FasterViT size, with sources;
* :mod:`~fastervit.train.losses`: label-smoothed and soft-target cross-entropy;
* :mod:`~fastervit.train.config`: :class:`~fastervit.train.config.TrainConfig`, every setting;
* :mod:`~fastervit.train.build`: the objects of a run (data, model, optimizer, schedule ...);
* :mod:`~fastervit.train.loop`: :func:`~fastervit.train.loop.train`, resumable, DDP-ready,
  as small functions (a step, an epoch, the end of an epoch);
* :mod:`~fastervit.train.evaluate`: accuracy, predictions, the confusion matrix;
* :mod:`~fastervit.train.checkpointing`, :mod:`~fastervit.train.output_lock`: saving,
  restoring and the checks that keep a run folder from losing work;
* :mod:`~fastervit.train.distributed`, :mod:`~fastervit.train.runlog`: processes and logs.
"""

from fastervit.data.mixup import smooth_one_hot
from fastervit.train.ema import ModelEma
from fastervit.train.losses import label_smoothing_cross_entropy, soft_target_cross_entropy
from fastervit.train.optim import Lamb, param_groups_weight_decay
from fastervit.train.schedule import WarmupCosineLR, warmup_cosine_lr

__all__ = [
    "Lamb",
    "ModelEma",
    "WarmupCosineLR",
    "label_smoothing_cross_entropy",
    "param_groups_weight_decay",
    "smooth_one_hot",
    "soft_target_cross_entropy",
    "warmup_cosine_lr",
]
