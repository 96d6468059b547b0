"""TrainConfig: timm's learning-rate rule, and every bad setting refused with its flag's name."""

import dataclasses

import pytest

from fastervit.train.config import TrainConfig

BASE = {"model": "m", "dataset": "d", "output": "o"}


def test_lr_follows_timms_rule():
    # timm's train.py: without --lr, lr = lr_base * global_batch / lr_base_size, square-rooted
    # when the optimizer's name contains "ada" or "lamb". Global batch here: 64 x 4 x 2 = 512.
    base = {"model": "m", "dataset": "d", "output": "o", "batch_size": 64, "grad_accum_steps": 2}
    lamb = TrainConfig(**base, lr_base=1e-3, lr_base_size=256)
    assert lamb.learning_rate(world_size=4) == pytest.approx(1e-3 * 2**0.5)
    adamw = TrainConfig(**base, opt="adamw", lr_base=1e-3, lr_base_size=128)
    assert adamw.learning_rate(world_size=4) == pytest.approx(1e-3 * 4**0.5)
    linear = TrainConfig(**base, lr_base=1e-3, lr_base_size=256, lr_base_scale="linear")
    assert linear.learning_rate(world_size=4) == pytest.approx(2e-3)
    assert TrainConfig(**base, lr=0.3, lr_base=1e-3).learning_rate(world_size=8) == 0.3  # --lr wins


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"output": "  "}, "--output must be a folder path"),
        ({"num_classes": 0}, "--num-classes must be >= 1"),
        ({"resolution": 0}, "--resolution must be >= 1"),
        ({"smoothing": 1.0}, r"--smoothing must be in \[0, 1\)"),
        ({"lr": 0.0}, "--lr must be > 0"),
        ({"lr_base_size": 0}, "--lr-base-size must be >= 1"),
        ({"lr_base_scale": "cube"}, "--lr-base-scale must be linear or sqrt"),
        ({"amp_dtype": "fp16"}, "--amp-dtype must be one of float16, bfloat16"),
        ({"opt": "sgd"}, "--opt must be one of lamb, adamw"),
        ({"workers": -1}, "--workers must be >= 0"),
        ({"warmup_lr": -1e-6}, "--warmup-lr must be >= 0"),
        ({"cooldown_epochs": -1}, "--cooldown-epochs must be >= 0"),
        ({"reprob": 1.5}, r"--reprob must be in \[0, 1\]"),
        ({"remode": "noise"}, "--remode must be one of pixel, rand, const"),
        ({"recount": 0}, "--recount must be >= 1"),
        ({"mesa": 1.0}, "--mesa needs --model-ema"),
        ({"mesa": -1.0, "model_ema": True}, "--mesa must be >= 0"),
        ({"mesa_start_ratio": 1.5}, r"--mesa-start-ratio must be in \[0, 1\]"),
        ({"aa": "rand-m9-x2"}, "--aa: RandAugment policy 'rand-m9-x2': cannot read section 'x2'"),
    ],
)
def test_bad_settings_name_their_flag(setting, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**BASE, **setting})


def test_the_config_is_frozen():
    config = TrainConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1
    assert dataclasses.replace(config, lr=0.1).lr == 0.1 and config.lr is None
