"""Two processes on the CPU (Gloo) under torchrun: replicas stay identical, only rank 0
writes, and a DDP run resumed from its checkpoint matches one trained straight through."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import torch

from fastervit.train.checkpointing import load_training_checkpoint

# Three runs in one launch, sharing the process group the script sets up: straight through,
# then stopped after 8 steps, then resumed from that checkpoint.
SCRIPT = """
import os, sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, {tests_dir!r})
from test_train_loop import TinyNet
from fastervit.train.config import TrainConfig
from fastervit.train.loop import train

rank = int(os.environ["RANK"])
root = Path({root!r})
dist.init_process_group("gloo")
models = []

def factory(name, **kwargs):
    models.append(TinyNet(**kwargs))
    return models[-1]

def config(run):
    # Rank 1 gets its own output directory: if it wrote anything, the directory would exist.
    output = root / (run if rank == 0 else run + "_rank1")
    return TrainConfig(
        model="tiny", dataset="digits", output=str(output), epochs=2, batch_size=32, lr=5e-3,
        warmup_epochs=0.5, resolution=16, workers=0, seed=3, grad_accum_steps=2,
        mixup=0.8, model_ema=True,
    )

summary = train(config("straight"), factory)
torch.save({{"weights": models[-1].state_dict(), "summary": summary}}, root / f"rank{{rank}}.pt")
train(replace(config("split"), max_steps=8), factory)
train(replace(config("split"), resume=str(root / "split" / "last.pt")), factory)
dist.destroy_process_group()
"""


def _torchrun(tmp_path: Path) -> None:
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT.format(tests_dir=str(Path(__file__).parent), root=str(tmp_path)))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_two_process_gloo_training(tmp_path):
    _torchrun(tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    # 1437 images / (32 x 2 processes) = 22 batches per rank, 11 steps of 2 micro-batches.
    for summary in (rank0["summary"], rank1["summary"]):
        assert (summary["steps"], summary["epochs_completed"]) == (22, 2)
    assert rank0["summary"]["top1"] == rank1["summary"]["top1"]  # both evaluated all 360 images

    # Parameters are kept identical by DDP, BatchNorm statistics by averaging after each epoch.
    w0, w1 = rank0["weights"], rank1["weights"]
    assert [k for k in w0 if not torch.equal(w0[k], w1[k])] == []
    assert not (tmp_path / "straight_rank1").exists()
    run = tmp_path / "straight"
    assert {"last.pt", "best.pt", "steps.csv", "epochs.csv", "run.json", "tb"} <= {
        p.name for p in run.iterdir()
    }
    last = load_training_checkpoint(run / "last.pt")
    assert len(last["rng"]) == 2 and not torch.equal(last["rng"][0]["torch"], last["rng"][1]["torch"])
    assert [k for k in w0 if not torch.equal(w0[k], last["model"][k])] == []

    assert not (tmp_path / "split_rank1").exists()
    split = load_training_checkpoint(tmp_path / "split" / "last.pt")
    assert [k for k in w0 if not torch.equal(last["model"][k], split["model"][k])] == []
    assert _rows(run / "steps.csv") == _rows(tmp_path / "split" / "steps.csv")


def test_torchrun_cli_prints_one_json_record(tmp_path):
    tiny = '{"dim": 16, "in_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": [2, 2, 2, 1]}'
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "fastervit", "train", "--model", "faster_vit_0_224", "--model-kwargs", tiny,
        "--dataset", "digits", "--epochs", "2", "--batch-size", "16", "--warmup-epochs", "0.1",
        "--max-steps", "2", "--workers", "0", "--output", str(tmp_path / "run"),
    ]  # fmt: skip
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    records = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1  # rank 0 alone prints
    summary = json.loads(records[0])
    assert summary["status"] == "ok" and summary["steps"] == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["world_size"] == 2 and run["global_batch"] == 32
