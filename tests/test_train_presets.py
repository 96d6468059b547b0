"""Presets: the release's per-variant recipe, each value with a source."""

import dataclasses

import pytest

import fastervit
from fastervit.train.config import TrainConfig
from fastervit.train.presets import PRESETS, TRAINING_MD_OVERRIDES, preset_values


def test_one_preset_per_imagenet_variant_with_the_same_settings():
    assert list(PRESETS) == [f"faster_vit_{n}" for n in range(7)]
    keys = {frozenset(p) for p in PRESETS.values()}
    assert len(keys) == 1
    assert set(TRAINING_MD_OVERRIDES) == set(PRESETS)


def test_every_value_names_its_source():
    for name, settings in PRESETS.items():
        for key, setting in settings.items():
            assert setting.source.startswith(("release", "paper")), (name, key)
            assert "{n}" not in setting.source
            if "configs/" in setting.source:
                assert f"faster_vit_{name[-1]}_224_1k.yaml" in setting.source


def test_facts_stated_in_the_issue():
    # From issue 13: AdamW for FasterViT-0 to -3, LAMB for -4 to -6; MESA for -1 to -6;
    # RandAugment rand-m9-mstd0.5-inc1, random erasing 0.25, 310 + 10 epochs, warmup from 1e-6.
    for n in range(7):
        values = preset_values(f"faster_vit_{n}")
        assert values["opt"] == ("lamb" if n >= 4 else "adamw")
        assert (values["mesa"] > 0) == (n >= 1)
        assert values["aa"] == "rand-m9-mstd0.5-inc1" and values["reprob"] == 0.25
        assert (values["epochs"], values["cooldown_epochs"], values["warmup_lr"]) == (310, 10, 1e-6)


def test_drop_path_is_the_registered_rate():
    for n in range(7):
        rate = fastervit.model_kwargs(f"faster_vit_{n}_224")["drop_path_rate"]
        assert preset_values(f"faster_vit_{n}")["drop_path"] == rate


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="faster_vit_0, faster_vit_1"):
        preset_values("faster_vit_7")


def test_every_setting_is_a_train_config_field_with_a_valid_value():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in PRESETS:
        values = preset_values(name)
        assert set(values) <= fields, set(values) - fields
        config = TrainConfig(model="faster_vit_0_224", dataset="imagefolder", output="o", **values)
        # the release's learning rate at the release's global batch (128 x 32 GPUs)
        assert config.learning_rate(world_size=32) == pytest.approx(0.005)
