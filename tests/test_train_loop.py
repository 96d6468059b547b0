"""The training loop: resume loses nothing, NaN stops cleanly, checkpoints survive crashes."""

import csv
import json
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from fastervit.commands.eval import evaluate_checkpoint
from fastervit.train.checkpointing import load_training_checkpoint
from fastervit.train.config import TrainConfig
from fastervit.train.loop import NonFiniteLossError, train


class TinyNet(nn.Module):
    """A classifier small enough for many CPU steps, with BatchNorm (buffers) and dropout (RNG)."""

    def __init__(self, num_classes: int, in_chans: int, resolution: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, stride=2, padding=1),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.3),
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, H, W) -> (B, num_classes)


def tiny_factory(name: str, **kwargs) -> nn.Module:
    assert name == "tiny", name
    return TinyNet(**kwargs)


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """Digits at 16 px, batch 64: 22 steps per epoch."""
    settings = {
        "model": "tiny", "dataset": "digits", "output": str(tmp_path / "run"), "epochs": 2,
        "batch_size": 64, "lr": 5e-3, "warmup_epochs": 0.5, "resolution": 16, "workers": 0,
        "seed": 7,
    }  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def state(path):
    return load_training_checkpoint(path)


def test_resume_mid_epoch_equals_training_straight_through(tmp_path):
    # Everything that draws random numbers is on: dropout, augmentation (RandAugment),
    # mixup/cutmix, EMA, accumulation and clipping. 11 steps per epoch; stop at 5, resume to 16.
    recipe = {
        "mixup": 0.8, "cutmix": 1.0, "aa": "rand-m9-n2", "model_ema": True, "model_ema_decay": 0.9,
        "grad_accum_steps": 2, "clip_grad": 1.0,
    }  # fmt: skip
    straight = tiny_config(tmp_path / "a", max_steps=16, **recipe)
    summary = train(straight, tiny_factory)
    assert summary["steps"] == 16 and summary["epochs_completed"] == 1

    first = tiny_config(tmp_path / "b", max_steps=5, **recipe)
    assert train(first, tiny_factory)["steps"] == 5
    resumed = replace(first, max_steps=16, resume=str(tmp_path / "b" / "run" / "last.pt"))
    assert train(resumed, tiny_factory)["steps"] == 16

    a, b = state(tmp_path / "a" / "run" / "last.pt"), state(tmp_path / "b" / "run" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["module"]:
        assert torch.equal(a["ema"]["module"][key], b["ema"]["module"][key]), key
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(s_a["exp_avg_sq"], s_b["exp_avg_sq"])
    assert a["progress"] == b["progress"]
    assert read_csv(tmp_path / "a" / "run" / "steps.csv") == read_csv(tmp_path / "b" / "run" / "steps.csv")
    epochs_a, epochs_b = (read_csv(tmp_path / r / "run" / "epochs.csv") for r in "ab")
    drop_time = lambda rows: [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]
    assert len(epochs_a) == 1 and drop_time(epochs_a) == drop_time(epochs_b)


def test_a_different_seed_gives_different_weights(tmp_path):
    # The resume test above would pass vacuously if training ignored its randomness.
    a = train(tiny_config(tmp_path / "a", max_steps=3), tiny_factory)
    b = train(tiny_config(tmp_path / "b", max_steps=3, seed=8), tiny_factory)
    wa, wb = state(a["output"] + "/last.pt")["model"], state(b["output"] + "/last.pt")["model"]
    assert not torch.equal(wa["head.weight"], wb["head.weight"])


def test_loading_workers_do_not_change_the_result(tmp_path):
    a = train(tiny_config(tmp_path / "a", max_steps=3, aa="rand-m9-n2"), tiny_factory)
    b = train(tiny_config(tmp_path / "b", max_steps=3, aa="rand-m9-n2", workers=2), tiny_factory)
    assert read_csv(a["output"] + "/steps.csv") == read_csv(b["output"] + "/steps.csv")


def test_full_run_writes_logs_best_and_last(tmp_path):
    summary = train(tiny_config(tmp_path, epochs=3, batch_size=128), tiny_factory)
    out = tmp_path / "run"
    assert summary["finished"] and summary["steps"] == 3 * 11
    assert {"last.pt", "best.pt", "steps.csv", "epochs.csv", "run.json", "tb"} <= {
        p.name for p in out.iterdir()
    }
    assert [p.name for p in out.glob(".*")] == []  # no temporary folder (.last.pt.XXXX), no lock
    steps, epochs = read_csv(out / "steps.csv"), read_csv(out / "epochs.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, 34))
    assert [int(r["epoch"]) for r in epochs] == [0, 1, 2]
    assert float(steps[-1]["loss"]) < float(steps[0]["loss"])  # it learns something
    assert max(float(r["top1"]) for r in epochs) == pytest.approx(summary["best_top1"])
    assert state(out / "best.pt")["progress"]["best_top1"] == pytest.approx(summary["best_top1"])
    assert list((out / "tb").iterdir())


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    class NanAfter(TinyNet):
        calls = 0

        def forward(self, x):
            if self.training:
                NanAfter.calls += 1
                if NanAfter.calls > 14:
                    return super().forward(x) * float("nan")
            return super().forward(x)

    config = tiny_config(tmp_path, batch_size=128)  # 11 steps per epoch
    with pytest.raises(NonFiniteLossError, match="at step 15 .*last.pt still holds"):
        train(config, lambda name, **kw: NanAfter(**kw))
    last = state(tmp_path / "run" / "last.pt")
    assert last["progress"]["step"] == 11
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert [int(r["step"]) for r in read_csv(tmp_path / "run" / "steps.csv")][-1] == 14


def test_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, epochs=2, batch_size=128)
    train(replace(config, max_steps=11), tiny_factory)
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()

    def dying_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        train(replace(config, resume=str(last)), tiny_factory)
    assert last.read_bytes() == before
    assert not list(last.parent.glob(".*"))  # no temporary file or folder left behind
    monkeypatch.undo()
    assert state(last)["progress"]["step"] == 11


def test_resume_refuses_another_model_or_other_settings(tmp_path):
    config = tiny_config(tmp_path, max_steps=2)
    train(config, tiny_factory)
    last = str(tmp_path / "run" / "last.pt")
    with pytest.raises(
        ValueError,
        match=r"holds model 'tiny' with \{'num_classes': 10, 'in_chans': 1, 'resolution': 16\}, but this run builds 'tiny' with .*'width': 16",
    ):
        train(replace(config, resume=last, model_kwargs={"width": 16}), lambda n, **kw: TinyNet(**kw))
    with pytest.raises(ValueError, match="holds model 'tiny'.*--model tiny"):
        train(replace(config, resume=last, model="other"), lambda n, **kw: TinyNet(**kw))
    with pytest.raises(ValueError, match=r"lr \(checkpoint 0.005, now 0.1\)"):
        train(replace(config, resume=last, lr=0.1), tiny_factory)
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(config, tiny_factory)


def test_setting_errors(tmp_path):
    with pytest.raises(ValueError, match="--warmup-epochs"):
        train(tiny_config(tmp_path, epochs=1, warmup_epochs=1), tiny_factory)
    with pytest.raises(ValueError, match="lower --batch-size"):
        train(tiny_config(tmp_path, batch_size=4096), tiny_factory)
    with pytest.raises(ValueError, match="--grad-accum-steps must be >= 1"):
        tiny_config(tmp_path, grad_accum_steps=0)


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_mixed_precision_and_channels_last_on_cpu(tmp_path, amp_dtype):
    config = tiny_config(tmp_path, max_steps=3, amp=True, amp_dtype=amp_dtype, channels_last=True)
    summary = train(config, tiny_factory)
    rows = read_csv(tmp_path / "run" / "steps.csv")
    assert summary["steps"] == 3 and all(float(r["loss"]) > 0 for r in rows)
    scaler = state(tmp_path / "run" / "last.pt")["scaler"]
    assert ("scale" in scaler) == (amp_dtype == "float16")  # only float16 scales the loss


def test_amp_defaults_to_bfloat16_on_the_cpu(tmp_path):
    train(tiny_config(tmp_path, max_steps=1, amp=True), tiny_factory)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["amp_dtype"] == "bfloat16"
    train(tiny_config(tmp_path / "off", max_steps=1), tiny_factory)
    assert json.loads((tmp_path / "off" / "run" / "run.json").read_text())["amp_dtype"] is None


def test_evaluate_checkpoint_reproduces_the_runs_accuracy(tmp_path):
    summary = train(tiny_config(tmp_path, epochs=1, warmup_epochs=0.2, batch_size=128), tiny_factory)
    result = evaluate_checkpoint(tmp_path / "run" / "last.pt", workers=0, model_factory=tiny_factory)
    assert result["weights"] == "model" and result["images"] == 360
    assert result["top1"] == pytest.approx(summary["top1"], abs=0.3)  # one image in 360
    assert result["loss"] == pytest.approx(summary["val_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="1-channel images .* 'imagefolder' has"):
        evaluate_checkpoint(tmp_path / "run" / "last.pt", "imagefolder", _write_tree(tmp_path / "tree"))


def _write_tree(root):
    for split in ("train", "val"):
        (root / split / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "a" / "0.png")
    return root


def test_resuming_from_an_older_checkpoint_needs_rewind(tmp_path):
    config = tiny_config(tmp_path, batch_size=128, epochs=3)  # 11 steps per epoch
    train(replace(config, max_steps=22), tiny_factory)
    out = tmp_path / "run"
    older = out / "older.pt"
    older.write_bytes((out / "last.pt").read_bytes())  # step 22
    train(replace(config, resume=str(out / "last.pt")), tiny_factory)  # on to step 33
    with pytest.raises(
        FileExistsError, match=r"older.pt goes back to step 22, but .*last.pt holds step 33.*--rewind"
    ):
        train(replace(config, resume=str(older)), tiny_factory)
    assert state(out / "last.pt")["progress"]["step"] == 33 and len(read_csv(out / "steps.csv")) == 33

    train(replace(config, resume=str(older), rewind=True, max_steps=23), tiny_factory)
    assert state(out / "last.pt")["progress"]["step"] == 23  # went back on purpose
    assert [int(r["step"]) for r in read_csv(out / "steps.csv")] == list(range(1, 24))


def test_an_unreadable_last_pt_does_not_block_resuming_from_best(tmp_path, caplog):
    config = tiny_config(tmp_path, batch_size=128, epochs=3)
    train(replace(config, max_steps=14), tiny_factory)
    out = tmp_path / "run"
    (out / "last.pt").write_bytes(b"half a checkpoint")  # what a disk gone bad leaves
    summary = train(replace(config, resume=str(out / "best.pt"), max_steps=13), tiny_factory)
    assert summary["steps"] == 13 and "unreadable" in caplog.text


def test_a_save_killed_mid_write_leaves_an_orphan_and_a_stale_lock_the_next_run_removes(tmp_path, caplog):
    # A real kill: torch.save writes half a file, then the process dies by SIGKILL.
    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            from pathlib import Path
            import torch
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_train_loop import tiny_config, tiny_factory
            from fastervit.train.loop import train

            def dying_save(obj, f, *args, **kwargs):
                Path(f).write_bytes(b"half a checkpoint")
                os.kill(os.getpid(), signal.SIGKILL)

            torch.save = dying_save
            train(tiny_config(Path({str(tmp_path)!r}), max_steps=2), tiny_factory)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    out = tmp_path / "run"
    orphans = [p for p in out.glob(".last.pt.*") if p.is_dir()]
    assert len(orphans) == 1 and (out / ".lock").exists() and not (out / "last.pt").exists()

    summary = train(tiny_config(tmp_path, max_steps=2), tiny_factory)  # takes over, cleans up
    assert summary["steps"] == 2 and (out / "last.pt").is_file()
    assert [p.name for p in out.glob(".*")] == []
    assert "no longer running" in caplog.text and f"removing {orphans[0]}" in caplog.text


def test_tensorboard_is_optional(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    summary = train(tiny_config(tmp_path, epochs=1, batch_size=128), tiny_factory)
    out = tmp_path / "run"
    assert summary["finished"] and not (out / "tb").exists()
    assert len(read_csv(out / "steps.csv")) == 11 and len(read_csv(out / "epochs.csv")) == 1


def test_a_finished_run_reports_predictions_of_its_final_weights(tmp_path):
    summary = train(tiny_config(tmp_path, epochs=1, batch_size=128, model_ema=True), tiny_factory)
    out = tmp_path / "run"
    with open(out / "confusion.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true \\ predicted", *[str(k) for k in range(10)]]
    confusion = torch.tensor([[int(v) for v in row[1:]] for row in rows[1:]])
    assert int(confusion.sum()) == 360  # every validation image once
    # Its diagonal is the EMA's top-1 that the epoch's evaluation measured independently.
    assert 100 * float(confusion.trace()) / 360 == pytest.approx(summary["ema_top1"])
    assert summary["report"] == {"weights": "ema", "images": 360, "top1": pytest.approx(summary["ema_top1"])}
    predictions = json.loads((out / "predictions.json").read_text())
    assert [s["index"] for s in predictions["first"]] == list(range(16))
    assert all(s["label"] != s["predicted"] for s in predictions["first_wrong"])
    assert not (tmp_path / "stopped" / "confusion.csv").exists()
    train(tiny_config(tmp_path / "stopped", max_steps=2), tiny_factory)  # not finished: no report
    assert not (tmp_path / "stopped" / "run" / "confusion.csv").exists()


# The release's recipe at toy scale: RandAugment, random erasing (two boxes), mixup/cutmix, EMA,
# MESA from the first epoch past a quarter of --epochs, warmup from --warmup-lr, a cooldown.
# 22 steps per epoch: warmup 11 steps, cosine until step 44, cooldown 44 to 66.
WHOLE_RECIPE = {
    "aa": "rand-m9-mstd0.5-inc1", "reprob": 0.25, "recount": 2, "mixup": 0.8, "cutmix": 1.0,
    "model_ema": True, "model_ema_decay": 0.9, "mesa": 1.0, "mesa_start_ratio": 0.25,
    "warmup_lr": 1e-4, "min_lr": 1e-5, "cooldown_epochs": 1, "clip_grad": 5.0,
}  # fmt: skip


def test_the_whole_recipe_runs_its_phases_and_resumes_exactly(tmp_path):
    straight = tiny_config(tmp_path / "a", **WHOLE_RECIPE)
    summary = train(straight, tiny_factory)
    assert summary["finished"] and summary["steps"] == 66 and summary["epochs_completed"] == 3
    info = json.loads((tmp_path / "a" / "run" / "run.json").read_text())
    assert (info["warmup_steps"], info["cosine_steps"], info["total_steps"]) == (11, 44, 66)
    assert info["config"]["reprob"] == 0.25 and info["config"]["mesa"] == 1.0

    lrs = [float(row["lr"]) for row in read_csv(tmp_path / "a" / "run" / "steps.csv")]
    assert lrs[0] == pytest.approx(1e-4 + (5e-3 - 1e-4) / 11)  # one step above --warmup-lr
    assert lrs[10] == pytest.approx(5e-3)  # the end of the warmup
    assert lrs[42] > 1e-5 and lrs[43:] == pytest.approx([1e-5] * 23)  # the cosine's end, the cooldown

    first = tiny_config(tmp_path / "b", max_steps=30, **WHOLE_RECIPE)  # stops in epoch 1, MESA on
    assert train(first, tiny_factory)["steps"] == 30
    assert train(
        replace(first, max_steps=None, resume=str(tmp_path / "b" / "run" / "last.pt")), tiny_factory
    )["finished"]
    a, b = state(tmp_path / "a" / "run" / "last.pt"), state(tmp_path / "b" / "run" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert read_csv(tmp_path / "a" / "run" / "steps.csv") == read_csv(tmp_path / "b" / "run" / "steps.csv")


def test_mesa_switches_on_at_the_first_epoch_past_its_ratio(tmp_path):
    # 2 epochs, ratio 0.25: epoch 0 (0 / 2) trains without MESA, epoch 1 (1 / 2) with it.
    runs = {}
    for mesa in (0.0, 5.0):
        config = tiny_config(tmp_path / str(mesa), max_steps=23, **{**WHOLE_RECIPE, "mesa": mesa})
        train(config, tiny_factory)
        runs[mesa] = [float(row["loss"]) for row in read_csv(tmp_path / str(mesa) / "run" / "steps.csv")]
    assert runs[0.0][:22] == runs[5.0][:22]  # the same steps until MESA starts
    assert runs[5.0][22] > runs[0.0][22]  # then the distillation term adds to the loss
