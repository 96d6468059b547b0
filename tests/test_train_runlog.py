"""Run logs: a resumption drops what the checkpoint does not hold; TensorBoard is optional; the
machine record names this torch."""

import csv
import sys

import torch

from fastervit.train.runlog import RunLog, environment


def _steps(path):
    with open(path, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def _row(step):
    return {"step": step, "epoch": 0, "lr": 0.1, "loss": 1.0, "grad_norm": 2.0}


def test_resuming_cuts_the_logs_back_to_the_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    for step in range(1, 8):
        log.log_step(_row(step))
    log.close()
    log = RunLog(tmp_path, resume_step=4)  # the checkpoint was written after step 4
    log.log_step(_row(5))
    log.close()
    assert _steps(tmp_path / "steps.csv") == [1, 2, 3, 4, 5]
    assert list((tmp_path / "tb").iterdir())


def test_without_tensorboard_the_csv_logs_are_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    log = RunLog(tmp_path)
    log.log_step(_row(1))
    log.close()
    assert _steps(tmp_path / "steps.csv") == [1] and not (tmp_path / "tb").exists()


def test_environment_records_this_torch_and_no_gpu_on_the_cpu():
    record = environment(torch.device("cpu"))
    assert record["torch"] == torch.__version__ and record["device"] == "cpu"
    assert "gpu" not in record and record["cpu_count"] >= 1
