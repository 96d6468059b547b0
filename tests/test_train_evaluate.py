"""Evaluation helpers: predictions in the loader's order, the confusion matrix by hand, the report."""

import csv
import json

import pytest
import torch
from torch import nn

from fastervit.train.distributed import setup_distributed
from fastervit.train.evaluate import confusion_matrix, evaluate, predict, topk_correct, write_report


class Fixed(nn.Module):
    """Logits given per sample: the input's first pixel indexes a table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]  # (B, C, H, W) -> (B, K)


def _loader(n, labels):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return torch.utils.data.DataLoader(list(zip(images, labels)), batch_size=2)


def test_confusion_matrix_by_hand():
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])  # row: true class, column: predicted
    assert torch.equal(confusion_matrix(predicted, labels, 3), expected)


def test_predict_keeps_the_order_and_gives_probabilities():
    torch.manual_seed(0)
    table = torch.randn(5, 3)
    labels = torch.tensor([2, 0, 1, 1, 0])
    probs, got = predict(Fixed(table), _loader(5, labels), torch.device("cpu"))
    torch.testing.assert_close(probs, table.softmax(-1))
    assert torch.equal(got, labels)


def test_evaluate_and_topk_agree_with_counting_by_hand():
    table = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2, 1, 1])  # right, second, second, third choice
    assert topk_correct(table, labels, (1, 2, 3)) == [1, 3, 4]
    metrics = evaluate(Fixed(table), _loader(4, labels), setup_distributed("cpu"))
    assert metrics["top1"] == 25.0 and metrics["top5"] == 100.0 and metrics["count"] == 4
    assert metrics["loss"] == pytest.approx(float(nn.functional.cross_entropy(table, labels)))


def test_write_report(tmp_path):
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    labels = torch.tensor([0, 1, 2, 2])  # the third one is wrong (0 for 2)
    summary = write_report(probs, labels, ["a", "b", "c"], tmp_path, samples=2)
    assert summary == {"images": 4, "top1": 75.0}
    with open(tmp_path / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["true \\ predicted", "a", "b", "c"],
        ["a", "1", "0", "0"],
        ["b", "0", "1", "0"],
        ["c", "1", "0", "1"],
    ]
    report = json.loads((tmp_path / "predictions.json").read_text())
    assert [s["index"] for s in report["first"]] == [0, 1]
    assert report["first_wrong"] == [
        {"index": 2, "label": 2, "predicted": 0, "top3": [[0, 0.5], [2, 0.4], [1, 0.1]]}
    ]
    with open(tmp_path / "predictions.csv", newline="") as f:
        every = list(csv.reader(f))
    assert every == [
        ["index", "label", "predicted"],
        ["0", "0", "0"],
        ["1", "1", "1"],
        ["2", "2", "0"],
        ["3", "2", "2"],
    ]
