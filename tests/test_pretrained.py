"""The book's trained model (chapter 11): shipped weights, their provenance, and their predictions.

The weights in ``fastervit/weights`` are the float16 EMA weights of the run recorded in
``results/fashion_mnist/faster_vit``; re-scored here on a fixed subset of the test set, they
must reproduce the predictions that run recorded for every test image (``predictions.csv``).
"""

import csv
import json
from pathlib import Path

import pytest
import torch

import fastervit
from fastervit.data.datasets import ImageDataset, build_source
from fastervit.data.transforms import pretrained_eval_transform
from fastervit.variants import WEIGHTS_DIR

RUN = Path(__file__).resolve().parents[1] / "results" / "fashion_mnist" / "faster_vit"
SUBSET = 1000  # the first 1,000 of the 10,000 test images


@pytest.fixture(scope="module")
def recorded() -> list[tuple[int, int]]:
    with open(RUN / "predictions.csv", newline="") as f:
        return [(int(row["label"]), int(row["predicted"])) for row in csv.DictReader(f)]


def test_the_shipped_file_is_small_and_half_precision():
    path = WEIGHTS_DIR / "faster_vit_fashion_mnist.pth"
    assert path.stat().st_size <= 16 * 2**20
    state = torch.load(path, weights_only=True)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}


def test_pretrained_cfg_says_how_to_feed_it():
    model = fastervit.create_model("faster_vit_fashion_mnist", pretrained=True)
    cfg = model.pretrained_cfg
    assert cfg.input_size == (1, 64, 64) == (model.in_chans, *model.resolution)
    assert len(cfg.mean) == len(cfg.std) == 1 and cfg.interpolation and 0 < cfg.crop_pct <= 1
    assert model.num_classes == 10


def test_the_run_is_recorded_whole():
    """Its provenance and its score; tests/test_results.py checks that its records (command,
    train.json, epochs.csv, predictions.csv) agree, as for every recorded run."""
    record = json.loads((RUN / "train.json").read_text())
    provenance = json.loads((RUN / "provenance.json").read_text())
    assert record["model"] == "faster_vit_fashion_mnist" and record["report"]["top1"] >= 91.0
    assert provenance["wall_time_s"]["total_about"] <= 3600 and len(provenance["commit"]) == 40
    with open(RUN / "epochs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == provenance["epochs"]


def test_shipped_weights_reproduce_the_recorded_predictions(recorded):
    model = fastervit.create_model("faster_vit_fashion_mnist", pretrained=True).eval()
    test_set = ImageDataset(
        build_source("fashion_mnist", "val"), pretrained_eval_transform(model.pretrained_cfg)
    )
    images, labels = zip(*(test_set[i] for i in range(SUBSET)))
    images = torch.stack(images)  # (SUBSET, 1, 64, 64)
    with torch.inference_mode():
        predicted = torch.cat([model(batch).argmax(-1) for batch in images.split(250)]).tolist()
    assert list(labels) == [label for label, _ in recorded[:SUBSET]]
    agreement = sum(p == r for p, (_, r) in zip(predicted, recorded)) / SUBSET
    assert agreement >= 0.995, f"only {agreement:.1%} of the recorded predictions reproduced"
    accuracy = sum(p == label for p, label in zip(predicted, labels)) / SUBSET
    recorded_accuracy = sum(r == label for label, r in recorded[:SUBSET]) / SUBSET
    assert abs(accuracy - recorded_accuracy) <= 0.005
