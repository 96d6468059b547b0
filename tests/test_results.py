"""The recorded Fashion-MNIST runs (results/fashion_mnist/, chapter 11) agree with themselves.

Each run folder holds the command it ran (command.txt), the settings the run recorded
(run.json), its epochs (epochs.csv), the command's JSON record (train.json) and every test
image's prediction (predictions.csv). These tests check that those records tell one story,
and that every run kept the same recipe and the epochs its budget gave it (budget.json).
"""

import csv
import json
import shlex
from pathlib import Path

import pytest

from fastervit.commands import train
from fastervit.commands.cli import build_parser

RESULTS = Path(__file__).resolve().parent.parent / "results" / "fashion_mnist"
BUDGET = json.loads((RESULTS / "budget.json").read_text())
RUNS = {model: entry for model, entry in BUDGET["models"].items() if (RESULTS / entry["folder"]).is_dir()}
# What may differ between the runs: the model, its epochs (the budget) and where it wrote.
PER_RUN = {"model", "epochs", "output"}


def command_config(folder: Path) -> dict:
    words = shlex.split((folder / "command.txt").read_text())
    assert words[:4] == ["python", "-m", "fastervit", "train"], (
        f"{folder.name}: not a fastervit train command"
    )
    return vars(train.config_from_args(build_parser().parse_args(words[3:])))


def epochs(folder: Path) -> list[dict[str, float]]:
    with open(folder / "epochs.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_the_shipped_run_and_a_peer_are_recorded():
    assert {"faster_vit_fashion_mnist", "resnet_fashion_mnist"} <= set(RUNS)


@pytest.mark.parametrize("model", RUNS)
def test_each_run_ran_its_budget_with_its_command(model):
    folder = RESULTS / RUNS[model]["folder"]
    config = command_config(folder)
    recorded = json.loads((folder / "run.json").read_text())["config"]
    assert (config["model"], config["epochs"]) == (model, RUNS[model]["epochs"])
    assert (recorded["model"], recorded["epochs"]) == (model, RUNS[model]["epochs"])
    rows = epochs(folder)
    assert [int(row["epoch"]) for row in rows] == list(range(RUNS[model]["epochs"]))


@pytest.mark.parametrize("model", RUNS)
def test_each_run_kept_the_recipe(model):
    reference = command_config(RESULTS / RUNS["faster_vit_fashion_mnist"]["folder"])
    config = command_config(RESULTS / RUNS[model]["folder"])
    differs = sorted(k for k in config if k not in PER_RUN and config[k] != reference[k])
    assert not differs, f"{model}: settings other than the shipped run's: {differs}"


@pytest.mark.parametrize("model", RUNS)
def test_the_records_of_a_run_agree(model):
    folder = RESULTS / RUNS[model]["folder"]
    last = epochs(folder)[-1]
    record = json.loads((folder / "train.json").read_text())
    assert record["status"] == "ok" and record["finished"]
    assert record["model"] == model and record["epochs_completed"] == RUNS[model]["epochs"]
    assert record["ema_top1"] == pytest.approx(last["ema_top1"])
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == record["report"]["images"] == 10_000
    correct = sum(row["label"] == row["predicted"] for row in rows)
    assert 100 * correct / len(rows) == pytest.approx(record["report"]["top1"], abs=0.005)
