"""``python -m fastervit``: train and eval end to end on digits, JSON last lines, clear errors."""

import json
import subprocess
import sys

import pytest
import torch

import fastervit
from fastervit.commands.cli import main
from fastervit.train.checkpointing import load_training_checkpoint
from fastervit.train.presets import preset_values

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
    code, record, _ = _run_err(capsys, argv)
    return code, record


def _run_err(capsys, argv):
    """Exit status, the JSON record (stdout's last line) and stderr of one command."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


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
    assert code == 0 and result["weights"] == "ema" and result["images"] == 360
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


def _flags(out, *extra):
    return [
        "train", "--model", "faster_vit_0_224", "--model-kwargs", TINY, "--dataset", "digits",
        "--epochs", "2", "-b", "128", "--warmup-epochs", "0.2", "-j", "0", "--no-progress",
        "--output", str(out), *extra,
    ]  # fmt: skip


def test_timm_flags_short_options_amp_switch_and_the_lr_rule(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--max-steps", "1", "--amp", "--lr-base", "1e-3", "--lr-base-size", "64", "--resolution", "64"]
    code, summary = _run(capsys, _flags(out, *flags))
    assert code == 0 and summary["steps"] == 1
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["batch_size"] == 128 and run["config"]["workers"] == 0
    assert run["amp_dtype"] == "bfloat16"  # the CPU's default under --amp
    assert run["model_kwargs"]["resolution"] == 64
    # timm: LAMB square-roots the ratio of the global batch (128) to --lr-base-size (64).
    assert run["lr_scaling"] == "sqrt" and run["lr"] == pytest.approx(1e-3 * 2**0.5)
    code, summary = _run(capsys, _flags(tmp_path / "linear", *flags, "--lr-base-scale", "linear"))
    assert summary["lr"] == pytest.approx(2e-3)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--output", ""], "expected a path, got an empty string"),
        (["--output", "{tmp}/file/run"], "is not a directory"),
        (["--num-classes", "-1"], "expected an integer >= 1"),
        (["--img-size", "32"], "unrecognized arguments: --img-size"),
        (["--amp", "bf16"], "unrecognized arguments: bf16"),  # --amp is a switch now
        (["--amp-dtype", "fp16"], "invalid choice: 'fp16'"),
        (["--resolution", "48"], "multiples of 32"),
        (["-b", "0"], "expected an integer >= 1"),
        (["--lr-base-scale", "cube"], "invalid choice: 'cube'"),
    ],
)
def test_train_usage_errors_before_any_work(tmp_path, capsys, flags, message):
    (tmp_path / "file").write_text("a file, not a folder")
    argv = _flags(tmp_path / "run", *[f.format(tmp=tmp_path) for f in flags])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["status"] == "usage_error" and message in record["error"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resolution", "64", "96"], "training takes square images"),
        (["--num-classes", "5"], "fewer than the 10 classes of 'digits'"),
    ],
)
def test_train_refuses_what_the_data_cannot_do(tmp_path, capsys, flags, message):
    code, error = _run(capsys, _flags(tmp_path / "run", *flags))
    assert code == 1 and message in error["error"]


@pytest.mark.parametrize("flag", ["--resume", "--pretrained"])
def test_an_unreadable_checkpoint_is_named_with_the_reason(tmp_path, capsys, flag):
    (tmp_path / "empty.pt").write_bytes(b"")  # what an interrupted copy leaves
    code, error = _run(capsys, _flags(tmp_path / "run", flag, str(tmp_path / "empty.pt")))
    assert code == 1 and error["error_type"] == "UnreadableCheckpointError"
    assert f"{tmp_path / 'empty.pt'} is not a readable checkpoint: the file is empty" in error["error"]


def _release_file(path, num_classes, seed=123):
    """A release-format file ({"state_dict": ...}) of a tiny 1-channel FasterViT."""
    torch.manual_seed(seed)
    model = fastervit.create_model(
        "faster_vit_0_224", num_classes=num_classes, in_chans=1, resolution=32, **json.loads(TINY)
    )
    fastervit.save_checkpoint(model, path)
    return model.state_dict()


def test_pretrained_fine_tunes_a_release_checkpoint_replacing_its_head(tmp_path, capsys):
    released = _release_file(tmp_path / "released.pth.tar", num_classes=1000)
    out = tmp_path / "ft"
    extra = ["--pretrained", str(tmp_path / "released.pth.tar"), "--max-steps", "3"]
    code, summary, err = _run_err(capsys, _flags(out, *extra, "--lr", "1e-9", "--warmup-epochs", "0"))
    assert code == 0 and summary["steps"] == 3
    assert "head (1000 classes) replaced by a new one (10 classes)" in err
    tuned = load_training_checkpoint(out / "last.pt")["model"]
    assert tuned["head.weight"].shape == (10, released["head.weight"].shape[1])
    # With a learning rate of 1e-9 the weights are still the released ones: they were loaded.
    for key, value in released.items():
        if value.is_floating_point() and not key.startswith("head.") and "running_" not in key:
            torch.testing.assert_close(tuned[key], value, rtol=0, atol=1e-5, msg=key)

    # Same classes: the head is loaded too; and real fine-tuning steps move the weights.
    released = _release_file(tmp_path / "ten.pth.tar", num_classes=10)
    out = tmp_path / "ft10"
    code, summary, err = _run_err(
        capsys, _flags(out, "--pretrained", str(tmp_path / "ten.pth.tar"), "--max-steps", "3")
    )
    assert code == 0 and "every weight loaded" in err
    tuned = load_training_checkpoint(out / "last.pt")["model"]
    assert not torch.equal(tuned["head.weight"], released["head.weight"])  # trained ...
    assert torch.allclose(tuned["head.weight"], released["head.weight"], atol=0.05)  # ... from there


def test_a_preset_fills_the_settings_and_explicit_flags_win(tmp_path, capsys):
    out = tmp_path / "run"
    # 11 steps per epoch: step 12 is in epoch 1, where faster_vit_1's MESA (weight 0.5) is on.
    extra = ["--preset", "faster_vit_1", "--max-steps", "12", "--resolution", "32", "--amp-dtype", "bfloat16"]
    code, summary = _run(capsys, _flags(out, *extra, "--weight-decay", "0.01"))
    assert code == 0 and summary["steps"] == 12
    config = json.loads((out / "run.json").read_text())["config"]
    released = preset_values("faster_vit_1")
    explicit = {"epochs": 2, "batch_size": 128, "warmup_epochs": 0.2, "weight_decay": 0.01, "resolution": 32}
    explicit |= {"workers": 0, "amp_dtype": "bfloat16"}
    for key, value in released.items():
        expected = explicit.get(key, value)
        assert config[key] == (list(expected) if isinstance(expected, tuple) else expected), key
    assert config["preset"] == "faster_vit_1" and config["mesa"] == 0.5 and config["opt"] == "adamw"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--preset", "faster_vit_9"], "invalid choice: 'faster_vit_9'"),
        (["--remode", "noise"], "invalid choice: 'noise'"),
        (["--reprob", "1.5"], "expected a probability in [0, 1]"),
        (["--recount", "0"], "expected an integer >= 1"),
        (["--cooldown-epochs", "-1"], "expected an integer >= 0"),
        (["--mesa", "-1"], "expected a number >= 0"),
    ],
)
def test_recipe_flags_refuse_bad_values(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(_flags(tmp_path / "run", *flags))
    assert exit_info.value.code == 2
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["status"] == "usage_error" and message in record["error"]


def test_bad_recipe_settings_are_errors_before_any_work(tmp_path, capsys):
    code, error = _run(capsys, _flags(tmp_path / "run", "--aa", "rand-m9-q3"))
    assert code == 1 and "cannot read section 'q3'" in error["error"]
    code, error = _run(capsys, _flags(tmp_path / "run", "--mesa", "1"))
    assert code == 1 and "--mesa needs --model-ema" in error["error"]
    assert not (tmp_path / "run").exists()
