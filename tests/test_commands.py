"""The command layer: every command's bad inputs in one table, help, and strict JSON last.

Usage errors (a bad flag value) exit with status 2 before any work; errors found when the
flags are read together exit with status 1, also before any work. Either way the last line
on stdout is a JSON record that says so.
"""

import json
import subprocess
import sys

import pytest

from fastervit.commands.cli import COMMANDS, main

# A FasterViT with every kind of stage, small enough for a CPU test.
TINY = {"dim": 16, "in_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "mlp_ratio": 2}
FV0 = ["--model", "faster_vit_0_224"]


def _strict_json(line: str) -> dict:
    """Parse one line as strict JSON: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def _last_record(capsys) -> dict:
    return _strict_json(capsys.readouterr().out.strip().splitlines()[-1])


def _run(capsys, argv: list[str]) -> tuple[int, dict]:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse: usage errors
        code = exit_info.code
    return code, _last_record(capsys)


# (argv, exit status, words of the message); {file} is an existing file, {dir} a folder.
BAD_INPUTS = [
    # flops
    (["flops", *FV0, "--resolution", "0"], 2, "expected an integer >= 1"),
    (["flops", *FV0, "--resolution", "-64"], 2, "expected an integer >= 1"),
    (["flops", *FV0, "--method", "analytic", "--resolution", "33"], 2, "multiples of 32"),
    (["flops", *FV0, "--resolution", "64", "64", "64"], 2, "takes H or H W"),
    (["flops", *FV0, "--batch-size", "0"], 2, "expected an integer >= 1"),
    (["flops", *FV0, "--method", "analytic", "--batch-size", "-2"], 2, "expected an integer >= 1"),
    (["flops", *FV0, "--model-kwargs", "[1, 2]"], 2, "expected a JSON object"),
    (["flops", *FV0, "--model-kwargs", "{{depths"], 2, "expected a JSON object"),
    (["flops", "--model", "no_such_vit", "--method", "analytic"], 1, "no_such_vit"),
    # summary
    (["summary", *FV0, "--resolution", "48"], 2, "multiples of 32"),
    (["summary", *FV0, "--depth", "0"], 2, "expected an integer >= 1"),
    (["summary", *FV0, "--batch-size", "0"], 2, "expected an integer >= 1"),
    (["summary", *FV0, "--model-kwargs", "3"], 2, "expected a JSON object"),
    # export
    (["export", *FV0, "--format", "onnx", "--output", ""], 2, "empty string"),
    (["export", *FV0, "--format", "onnx", "--output", "{file}/fv.onnx"], 2, "is not a directory"),
    (["export", *FV0, "--format", "onnx", "--output", "{dir}"], 2, "is a directory"),
    (
        ["export", *FV0, "--format", "onnx", "--output", "m.onnx", "--checkpoint", "{dir}/no.pt"],
        2,
        "does not exist",
    ),
    (["export", *FV0, "--format", "onnx", "--output", "m.onnx", "--num-classes", "-1"], 2, "integer >= 0"),
    (
        ["export", *FV0, "--format", "onnx", "--output", "m.onnx", "--resolution", "100"],
        2,
        "try --resolution 128",
    ),
    (["export", *FV0, "--format", "onnx", "--output", "m.onnx", "--model-kwargs", "[]"], 2, "JSON object"),
    (["export", *FV0, "--format", "export", "--output", "{dir}/fv.onnx"], 1, "name the output *.pt2"),
    (
        ["export", *FV0, "--format", "onnx", "--output", "m.onnx", "--checkpoint", "{file}"],
        1,
        "not a readable checkpoint",
    ),
    # segment
    (["segment", "--val-samples", "0"], 2, "expected an integer >= 1"),
    (["segment", "--resolution", "80"], 2, "multiples of 32"),
    (["segment", "--steps", "-5"], 2, "expected an integer >= 1"),
    (["segment", "--lr", "0"], 2, "a number > 0"),
    (["segment", "--lr", "nan"], 2, "a number > 0"),
    (["segment", "--weight-decay", "-1"], 2, "a number >= 0"),
    (["segment", "--scale", "0.5", "1.5"], 2, "a probability"),
    (["segment", "--seed", "-1"], 2, "an integer >= 0"),
    (["segment", "--source", "auto"], 2, "invalid choice"),
    (["segment", "--output", ""], 2, "empty string"),
    (["segment", "--checkpoint", "{file}/model.pt"], 2, "is not a directory"),
    (["segment", "--batch-size", "20", "--train-samples", "8"], 1, "must be at least batch_size (20)"),
    (["segment", "--warmup-steps", "10", "--steps", "10"], 1, "below steps (10)"),
    (["segment", "--drop-path", "1"], 1, "drop_path"),
    (["segment", "--device", "cuda"], 1, "no CUDA device"),
    (["segment", "--amp-dtype", "float16"], 1, "add --amp"),
    (["segment", "--amp", "--amp-dtype", "bf16"], 2, "invalid choice"),
    # bench, train and eval: the shared flag types
    (["bench", "--rounds", "0"], 2, "expected an integer >= 1"),
    (["bench", "--iters", "0"], 2, "expected an integer >= 1"),
    (["bench", "--threads", "-3"], 2, "expected an integer >= 1"),
    (["bench", "--batch-size", "0"], 2, "expected an integer >= 1"),
    (["bench", "--resolution", "33"], 2, "multiples of 32"),
    (["bench", "--output", ""], 2, "empty string"),
    (["train", *FV0, "--dataset", "digits", "--output", "o", "--model-kwargs", "[1]"], 2, "JSON object"),
    (["eval", "--checkpoint", "best.pt", "--batch-size", "0"], 2, "expected an integer >= 1"),
    (["eval", "--checkpoint", "best.pt", "--workers", "-1"], 2, "expected an integer >= 0"),
]


@pytest.mark.parametrize(
    "argv, status, message", BAD_INPUTS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_input_is_refused_with_a_clear_json_error(tmp_path, capsys, monkeypatch, argv, status, message):
    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("FASTERVIT_DATA", str(tmp_path))  # no data: errors must come before any loading
    argv = [a.format(file=tmp_path / "file", dir=tmp_path) for a in argv]
    code, record = _run(capsys, argv)
    assert code == status
    assert record["command"] == argv[0]
    assert record["status"] == ("usage_error" if status == 2 else "error")
    assert message in record["error"]


def test_every_command_is_tested_for_bad_input():
    assert {argv[0] for argv, _, _ in BAD_INPUTS} == set(COMMANDS)


def test_help_lists_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "fastervit", "--help"], check=True, capture_output=True, text=True, timeout=120
    )
    for name, module in COMMANDS.items():
        assert name in result.stdout
        summary = module.__doc__.split("\n")[0]
        assert summary.startswith(f"``fastervit {name}``: "), name  # the help line comes from it


def test_a_missing_command_is_a_usage_error_in_json():
    result = subprocess.run(
        [sys.executable, "-m", "fastervit"], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    record = _strict_json(result.stdout.strip().splitlines()[-1])
    assert record == {"command": None, "status": "usage_error", "error": record["error"]}
    assert "COMMAND" in record["error"]


def test_flops_prints_strict_json_last(capsys):
    code, record = _run(capsys, ["flops", *FV0, "--method", "analytic", "--resolution", "320", "256"])
    assert code == 0 and record["status"] == "ok" and record["resolution"] == [320, 256]
    assert (
        record["gflops"] == pytest.approx(2 * record["gmacs"]) and "FlopCounterMode" in record["convention"]
    )


def test_flops_fvcore_and_formulas_agree_at_another_resolution(capsys):
    """At 64 px stage 3 of a model built for 224 px is one window: both counts follow the model."""
    code, record = _run(capsys, ["flops", *FV0, "--resolution", "64"])
    assert code == 0 and record["method"] == "fvcore" and record["resolution"] == [64, 64]
    assert record["params"] == 31_404_840  # FasterViT-0's released checkpoint
    assert record["gmacs"] == record["gmacs_analytic"] > record["gmacs_cached_bias"]


def test_flops_follows_model_kwargs(capsys):
    _, full = _run(capsys, ["flops", *FV0, "--method", "analytic"])
    _, small = _run(capsys, ["flops", *FV0, "--method", "analytic", "--model-kwargs", json.dumps(TINY)])
    assert small["params"] < full["params"] / 10 and small["gmacs"] < full["gmacs"] / 10


def test_summary_prints_the_table_on_stderr_and_strict_json_last(capsys):
    argv = ["summary", *FV0, "--resolution", "96", "64", "--batch-size", "2", "--depth", "2"]
    code = main([*argv, "--model-kwargs", json.dumps({**TINY, "num_classes": 7})])
    captured = capsys.readouterr()
    record = _strict_json(captured.out.strip().splitlines()[-1])
    assert code == 0 and record["status"] == "ok"
    assert record["input_shape"] == [2, 3, 96, 64] and record["output_shape"] == [2, 7]
    assert "FasterViTLayer" in captured.err and f"{record['params']:,}" in captured.err
    assert record["gmacs"] > record["gmacs_cached_bias"] > 0
