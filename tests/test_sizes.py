"""The size switch: FASTERVIT_SIZE, the presets, and that every preset is a valid command line."""

import argparse
import json
import shlex
from pathlib import Path

import pytest

from fastervit import sizes
from fastervit.commands import segment, train
from fastervit.commands.cli import build_parser
from fastervit.dense.train import DenseTrainConfig
from fastervit.train.config import TrainConfig
from fastervit.variants import create_model

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_PROVENANCE = ROOT / "results" / "fashion_mnist" / "faster_vit" / "provenance.json"


def parse(command: str, flags: list[str]) -> argparse.Namespace:
    return build_parser().parse_args([command, *flags])


@pytest.mark.parametrize(
    ("value", "size"),
    [(None, "smoke"), ("", "smoke"), ("smoke", "smoke"), ("full", "full"), (" FULL ", "full")],
)
def test_read_size(value, size):
    environ = {} if value is None else {sizes.SIZE_VARIABLE: value}
    assert sizes.read_size(environ) == size


def test_read_size_refuses_other_values_naming_the_variable_and_the_sizes():
    with pytest.raises(ValueError, match=r"FASTERVIT_SIZE='large' is not a size: use smoke or full"):
        sizes.read_size({"FASTERVIT_SIZE": "large"})


def test_chapter_settings_default_to_the_environment_and_are_read_only(monkeypatch):
    monkeypatch.setenv(sizes.SIZE_VARIABLE, "full")
    settings = sizes.chapter_settings("segmentation", device="cpu")
    assert (settings.chapter, settings.size, settings.device) == ("segmentation", "full", "cpu")
    assert settings.preset["segment"] == sizes.PRESETS["segmentation"]["full"]["segment"]
    with pytest.raises(TypeError):
        settings.preset["segment"] = []  # a notebook cannot change the preset the scripts share


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: sizes.chapter_settings("chapter 13", "smoke", "cpu"),
            "the chapters with presets are throughput",
        ),
        (lambda: sizes.chapter_settings("training", "huge", "cpu"), "unknown size 'huge'"),
        (lambda: sizes.preset_value("full", "training", "epochs"), "has no 'epochs'; it has train"),
    ],
)
def test_unknown_names_are_errors_that_list_the_known_ones(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_preset_value_gives_one_shell_word_per_entry():
    assert sizes.preset_value("full", "throughput", "resolutions")[:2] == ["224", "256"]
    assert sizes.preset_value("full", "throughput", "pixels_per_batch") == [str(128 * 224 * 224)]
    assert sizes.preset_value("full", "training", "train_images") == []  # None: the whole split
    flags = sizes.preset_value("smoke", "training", "train")
    assert flags[flags.index("--model-kwargs") + 1].startswith('{"dim": 16')  # JSON stays one word


@pytest.mark.parametrize("size", sizes.SIZES)
def test_training_presets_are_valid_train_commands(size):
    flags = sizes.preset_value(size, "training", "train")
    config = train.config_from_args(parse("train", [*flags, "--output", "run"]))
    assert isinstance(config, TrainConfig)
    assert (config.model, config.dataset, config.resolution) == (
        "faster_vit_fashion_mnist",
        "fashion_mnist",
        64,
    )


def test_the_smoke_model_keeps_the_architecture_layout():
    """Two conv stages, then a stage of 2x2 windows with carrier tokens, as in the shipped model."""
    flags = sizes.preset_value("smoke", "training", "train")
    config = train.config_from_args(parse("train", [*flags, "--output", "run"]))
    model = create_model(config.model, resolution=config.resolution, **config.model_kwargs)
    assert [level.conv for level in model.levels] == [True, True, False, False]
    assert model.levels[2].built_windows == (2, 2) and model.levels[2].global_tokenizer is not None


def test_the_full_training_preset_is_the_shipped_runs_command():
    if not SHIPPED_PROVENANCE.exists():
        pytest.skip("the shipped run's provenance.json is not in results/ yet")
    words = shlex.split(json.loads(SHIPPED_PROVENANCE.read_text())["command"])
    shipped = words[words.index("train") + 1 :]
    preset = sizes.preset_value("full", "training", "train")
    machine = {"output", "workers", "resume", "device"}  # where and how, not what is trained
    configs = [
        {
            k: v
            for k, v in vars(train.config_from_args(parse("train", [*flags, "--output", "x"]))).items()
            if k not in machine
        }
        for flags in (shipped, preset)
    ]
    assert configs[0] == configs[1]


@pytest.mark.parametrize("size", sizes.SIZES)
def test_segmentation_presets_are_valid_segment_commands(size):
    flags = sizes.preset_value(size, "segmentation", "segment")
    config = segment.config_from_args(parse("segment", [*flags, "--device", "cpu"]))
    assert isinstance(config, DenseTrainConfig)


def test_the_smoke_segmentation_preset_is_the_chapters_reduced_run():
    flags = sizes.preset_value("smoke", "segmentation", "segment")
    config = segment.config_from_args(parse("segment", [*flags, "--device", "cpu"]))
    assert config == DenseTrainConfig()  # chapter 12's stored outputs were made with these


@pytest.mark.parametrize("size", sizes.SIZES)
@pytest.mark.parametrize("key", ["throughput", "latency", "sweep"])
def test_throughput_presets_are_valid_bench_flags(size, key):
    args = parse("bench", ["--model", "faster_vit_0_224", *sizes.preset_value(size, "throughput", key)])
    assert args.iters >= 1 and args.rounds >= 1


# The chapter that reads each preset (README, "One switch for the size of a chapter").
CHAPTER_OF_PRESET = {
    "throughput": "09_throughput.ipynb",
    "training": "11_training.ipynb",
    "segmentation": "12_dense_prediction_and_export.ipynb",
}


def test_every_preset_has_a_chapter():
    assert set(CHAPTER_OF_PRESET) == set(sizes.PRESETS)


@pytest.mark.parametrize(("preset", "notebook"), CHAPTER_OF_PRESET.items())
def test_each_chapter_reads_its_preset_in_a_parameters_cell_near_its_top(preset, notebook):
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1, f"{notebook}: expected one code cell tagged 'parameters', found {len(tagged)}"
    index = tagged[0]
    source = "".join(code[index]["source"])
    assert f'chapter_settings(\n    "{preset}"' in source or f'chapter_settings("{preset}"' in source, (
        f"{notebook}: its parameters cell does not call chapter_settings({preset!r})"
    )
    assert index < 3, f"{notebook}: the parameters cell is code cell {index + 1}; put it near the top"
    assert "SIZE, DEVICE = settings.size, settings.device" in source, (
        f"{notebook}: its parameters cell does not name the size and device it picked (SIZE, DEVICE)"
    )
