"""The release's ImageNet-1K training recipe per variant, as data, each value with its source.

``python -m fastervit train --preset faster_vit_0 ...`` fills the training settings from
:data:`PRESETS`; flags given explicitly win. The values are facts read off the official
release (NVlabs/FasterViT, commit 22154cc) and the paper; no code of it is here.

Sources, and how they disagree:

* the paper (Hatamizadeh et al., ICLR 2024, section 4, image classification) gives one recipe
  for every variant: LAMB, 300 epochs, learning rate 0.005, total batch 4096 on 32 GPUs,
  "the same data augmentation as previous efforts", EMA;
* the release's configuration files ``fastervit/configs/faster_vit_{0..6}_224_1k.yaml`` hold
  every argument of its training script: AdamW for FasterViT-0 to -3 and LAMB for -4 to -6,
  310 epochs plus a 10-epoch cooldown, per-variant weight decay, warmup and MESA weight;
* the release's ``TRAINING.md`` prints one command per variant whose flags would override
  the files' ``--weight-decay`` and ``--mesa`` (:data:`TRAINING_MD_OVERRIDES`). As printed
  those commands do not run (their lines lack continuation backslashes, they name
  ``configs/*.yml`` where the files end in ``.yaml``, and ``--drop-path-rate`` is not a flag
  of the script), so the presets follow the configuration files.

``batch_size`` 128 is the release's batch per GPU, on 32 GPUs. Its learning rate, 0.005 for
that global batch of 4096, is given as ``lr_base`` 0.005 at ``lr_base_size`` 4096: the
``train`` command uses exactly 0.005 at the release's global batch and scales it by timm's
rule for any other (see :mod:`fastervit.train.config`); ``--lr`` sets it outright.
"""

from dataclasses import dataclass
from typing import Any

PAPER = "paper, section 4 (image classification)"
CONFIG = "release, fastervit/configs/faster_vit_{n}_224_1k.yaml"
TRAINING_MD = "release, TRAINING.md"
REGISTRY = "release, the drop_path_rate registered for faster_vit_{n}_224 (TRAINING.md's --drop-path-rate)"


@dataclass(frozen=True)
class Setting:
    """One value of a preset and where it comes from."""

    value: Any
    source: str


def _common() -> dict[str, Setting]:
    """Settings that every variant's configuration file shares."""
    return {
        "epochs": Setting(310, CONFIG + " (the paper says 300)"),
        "cooldown_epochs": Setting(10, CONFIG),
        "warmup_lr": Setting(1e-6, CONFIG),
        "min_lr": Setting(5e-6, CONFIG),
        "lr_base": Setting(5e-3, CONFIG + " (lr); " + TRAINING_MD + "; " + PAPER),
        "lr_base_size": Setting(4096, PAPER + " (total batch); " + TRAINING_MD + " (128 x 32 GPUs)"),
        "batch_size": Setting(128, CONFIG + " (per GPU; x 32 GPUs = the paper's 4096)"),
        "opt_eps": Setting(1e-8, CONFIG),
        "clip_grad": Setting(5.0, CONFIG),
        "smoothing": Setting(0.1, CONFIG),
        "mixup": Setting(0.8, CONFIG),
        "cutmix": Setting(1.0, CONFIG),
        "mixup_prob": Setting(1.0, CONFIG),
        "mixup_switch_prob": Setting(0.5, CONFIG),
        "model_ema": Setting(True, CONFIG + "; " + TRAINING_MD + "; " + PAPER),
        "model_ema_decay": Setting(0.9998, CONFIG),
        "aa": Setting("rand-m9-mstd0.5-inc1", CONFIG),
        "reprob": Setting(0.25, CONFIG),
        "remode": Setting("pixel", CONFIG),
        "recount": Setting(1, CONFIG),
        "scale": Setting((0.08, 1.0), CONFIG),
        "hflip": Setting(0.5, CONFIG),
        "color_jitter": Setting(0.4, CONFIG + " (unused: RandAugment replaces it)"),
        "crop_pct": Setting(0.875, CONFIG),
        "resolution": Setting(224, CONFIG + " (input_size 3 224 224)"),
        "amp": Setting(True, CONFIG),
        "amp_dtype": Setting("float16", CONFIG + " (bfloat false: float16)"),
        "channels_last": Setting(True, CONFIG),
        "mesa_start_ratio": Setting(0.25, CONFIG),
    }


# Per variant: (optimizer, weight decay, warmup epochs, drop path, MESA weight).
_VARIANTS = {
    0: ("adamw", 0.05, 20, 0.2, 0.0),
    1: ("adamw", 0.05, 20, 0.2, 0.5),
    2: ("adamw", 0.05, 20, 0.2, 1.0),
    3: ("adamw", 0.075, 35, 0.3, 1.0),
    4: ("lamb", 0.12, 20, 0.3, 4.0),
    5: ("lamb", 0.12, 20, 0.3, 5.0),
    6: ("lamb", 0.15, 20, 0.5, 5.0),
}


def _preset(n: int) -> dict[str, Setting]:
    opt, weight_decay, warmup_epochs, drop_path, mesa = _VARIANTS[n]
    settings = _common()
    settings.update(
        {
            "opt": Setting(opt, CONFIG + "; " + TRAINING_MD + " (the paper: LAMB for every variant)"),
            "weight_decay": Setting(weight_decay, CONFIG),
            "warmup_epochs": Setting(warmup_epochs, CONFIG),
            "drop_path": Setting(drop_path, REGISTRY),
            "mesa": Setting(mesa, CONFIG),
        }
    )
    if n == 3:
        settings["mesa_start_ratio"] = Setting(0.3, CONFIG)
    return {key: Setting(s.value, s.source.replace("{n}", str(n))) for key, s in settings.items()}


PRESETS: dict[str, dict[str, Setting]] = {f"faster_vit_{n}": _preset(n) for n in _VARIANTS}

# What TRAINING.md's commands pass instead of the configuration files' values.
TRAINING_MD_OVERRIDES: dict[str, dict[str, float]] = {
    "faster_vit_0": {"weight_decay": 0.005, "mesa": 0.1},
    "faster_vit_1": {"weight_decay": 0.005, "mesa": 0.2},
    "faster_vit_2": {"weight_decay": 0.005, "mesa": 0.5},
    "faster_vit_3": {"weight_decay": 0.005, "mesa": 0.5},
    "faster_vit_4": {"weight_decay": 0.12, "mesa": 5.0},
    "faster_vit_5": {"weight_decay": 0.12, "mesa": 5.0},
    "faster_vit_6": {"weight_decay": 0.12, "mesa": 5.0},
}


def preset_values(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (e.g. ``"faster_vit_0"``), without their sources.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return {key: setting.value for key, setting in PRESETS[name].items()}
