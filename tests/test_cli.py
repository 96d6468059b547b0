"""``python -m fastervit``: train and eval end to end on digits, JSON last lines, clear errors."""

import json
import subprocess
import sys

import pytest
import torch

import fastervit
from fastervit.commands.cli import main
from fastervit.train.checkpointing import load_training_checkpoint

# A FasterViT with every kind of stage, small and with small windows so CPU steps are quick.
TINY = json.dumps(
    {
        "dim": 16,
        "in_dim": 8,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 2, 2, 4],
        "mlp_ratio": 2,
        "window_size": [2, 2, 2, 1],
    }
)


def _run(capsys, argv):
    code = main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(lines[-1])


def test_train_then_eval_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [
        "--model", "faster_vit_0_224", "--dataset", "digits", "--epochs", "1", "--batch-size", "128",
        "--lr", "5e-3", "--warmup-epochs", "0.3", "--model-ema", "--model-ema-decay", "0.9",
        "--mixup", "0.5", "--drop-path", "0.1", "--workers", "0", "--no-progress",
    ]  # fmt: skip
    code, summary = _run(capsys, ["train", *flags, "--model-kwargs", TINY, "--output", str(out)])
    assert code == 0 and summary["status"] == "ok" and summary["finished"]
    assert summary["steps"] == 11 and summary["epochs_completed"] == 1
    assert 0 <= summary["ema_top1"] <= summary["ema_top5"] <= 100
    run = json.loads((out / "run.json").read_text())
    assert run["model_kwargs"]["resolution"] == 32 and run["model_kwargs"]["drop_path_rate"] == 0.1

    code, result = _run(capsys, ["eval", "--checkpoint", str(out / "best.pt"), "--workers", "0"])
    assert code == 0 and result["weights"] == "ema" and result["count"] == 360
    assert result["top1"] == pytest.approx(summary["ema_top1"], abs=0.3)  # one image in 360
    code, result = _run(capsys, ["eval", "--checkpoint", str(out / "best.pt"), "--workers", "0", "--no-ema"])
    assert result["weights"] == "model" and result["top1"] == pytest.approx(summary["top1"], abs=0.3)

    code, error = _run(capsys, ["eval", "--checkpoint", str(out / "best.pt"), "--dataset", "imagefolder"])
    assert code == 1 and "--data-dir" in error["error"]

    # The package's own loader reads the weights eval uses: the EMA's, as the run kept one.
    checkpoint = load_training_checkpoint(out / "best.pt")
    model = fastervit.create_model(
        "faster_vit_0_224", pretrained=out / "best.pt", **checkpoint["model_kwargs"]
    )
    assert model.load_report.weights == "ema.module"
    assert torch.equal(model.head.weight, checkpoint["ema"]["module"]["head.weight"])
    assert not torch.equal(model.head.weight, checkpoint["model"]["head.weight"])


def test_resume_with_another_model_says_which_model_it_was(tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "train", "--dataset", "digits", "--epochs", "2", "--batch-size", "128", "--warmup-epochs", "0.2",
        "--workers", "0", "--max-steps", "1", "--model-kwargs", TINY, "--output", str(out),
    ]  # fmt: skip
    code, _ = _run(capsys, [*base, "--model", "faster_vit_0_224"])
    assert code == 0 and (out / "last.pt").exists()
    code, error = _run(capsys, [*base, "--model", "faster_vit_1_224", "--resume", str(out / "last.pt")])
    assert code == 1 and "holds model 'faster_vit_0_224'" in error["error"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model", "no_such_vit", "--dataset", "digits"], "unknown model 'no_such_vit'"),
        (
            ["--model", "faster_vit_0_224", "--dataset", "cifar"],
            "known datasets: digits, fashion_mnist, imagefolder",
        ),
        (
            ["--model", "faster_vit_0_224", "--dataset", "fashion_mnist", "--data-dir", "{tmp}"],
            "apt-get install dataset-fashion-mnist",
        ),
        (
            ["--model", "faster_vit_0_224", "--dataset", "digits", "--resume", "{tmp}/last.pt"],
            "does not exist",
        ),
    ],
)
def test_bad_input_gives_a_json_error(tmp_path, capsys, flags, message):
    flags = [f.format(tmp=tmp_path) for f in flags]
    code, error = _run(capsys, ["train", *flags, "--output", str(tmp_path / "run"), "--workers", "0"])
    assert code == 1 and error["status"] == "error" and message in error["error"]


def test_bad_model_kwargs_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", "m", "--dataset", "digits", "--output", "o", "--model-kwargs", "[1, 2]"])
    assert exit_info.value.code == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_module_entry_point_prints_json_last(tmp_path):
    command = [sys.executable, "-m", "fastervit", "train", "--model", "nope", "--dataset", "digits"]
    result = subprocess.run(
        [*command, "--output", str(tmp_path)], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["command"] == "train" and "unknown model 'nope'" in record["error"]
    assert "Traceback" in result.stderr
