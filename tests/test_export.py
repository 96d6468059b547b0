"""fastervit.export and ``fastervit export``: torch.export and ONNX round trips, dynamic batch."""

import importlib.util
import json

import pytest
import torch

import fastervit.export
from fastervit import FasterViT, load_checkpoint, save_checkpoint
from fastervit.commands.cli import main
from fastervit.dense import SegmentationModel
from fastervit.export import (
    ATOL,
    HALF_RTOL,
    RTOL,
    BackboneFeatures,
    ExportMismatchError,
    atomic_path,
    compare,
    difference,
    explicit_attention,
    export_model,
    export_program,
    load_program,
    load_weights,
    onnx_runner,
    save_program,
)

# Small, with carrier tokens: at 64 px stage 3 is a 4x4 map of 2x2 windows.
TINY = {
    "dim": 16,
    "in_dim": 8,
    "depths": (1, 1, 1, 1),
    "num_heads": (1, 2, 2, 4),
    "mlp_ratio": 2,
    "window_size": (2, 2, 2, 1),
    "ct_size": 1,
    "resolution": 64,
    "num_classes": 10,
    "drop_path_rate": 0.0,
}
SHAPE = (3, 64, 64)
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX, reason="onnx, onnxscript or onnxruntime missing: pip install 'fastervit-book[export]'"
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FasterViT(**TINY).eval()


def test_tiny_model_has_carrier_tokens(model):
    assert model.levels[2].global_tokenizer is not None


def test_torch_export_round_trip_with_dynamic_batch(model, tmp_path):
    path = tmp_path / "classifier.pt2"
    record = export_model(model, "export", path, SHAPE)
    assert record["verified"] and set(record["max_abs_diff"]) == {"1", "3"}
    assert record["max_abs_diff_overall"] < 1e-5 and max(record["max_rel_diff"].values()) <= RTOL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.pt2"]  # no temporary left
    assert load_program(path)(torch.randn(5, *SHAPE)).shape == (5, 10)


def test_torch_export_of_the_backbone_returns_four_maps(model, tmp_path):
    program = export_program(BackboneFeatures(model), torch.randn(2, *SHAPE))
    save_program(program, tmp_path / "backbone.pt2")
    runner = load_program(tmp_path / "backbone.pt2")
    maps = runner(torch.randn(3, *SHAPE))
    assert [tuple(m.shape) for m in maps] == [(3, 16, 16, 16), (3, 32, 8, 8), (3, 64, 4, 4), (3, 128, 2, 2)]
    diffs = compare(BackboneFeatures(model), runner, SHAPE)
    assert all(d.within for d in diffs.values()) and max(d.max_abs for d in diffs.values()) < 1e-5


def test_torch_export_of_a_segmentation_model(tmp_path):
    torch.manual_seed(0)
    backbone = FasterViT(**{**TINY, "in_chans": 1, "num_classes": 0, "resolution": (64, 96)})
    record = export_model(
        SegmentationModel(backbone, 5, channels=8), "export", tmp_path / "seg.pt2", (1, 64, 96)
    )
    assert record["max_abs_diff_overall"] < 1e-5


@needs_onnx
def test_onnx_round_trip_with_dynamic_batch(model, tmp_path):
    record = export_model(model, "onnx", tmp_path / "model.onnx", SHAPE)
    assert record["verified"] and record["max_abs_diff_overall"] < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert all(m.fused for m in model.modules() if hasattr(m, "fused"))  # switched back


def test_the_tolerance_scales_with_each_output():
    torch.manual_seed(0)
    logits, maps = torch.randn(3, 10), 1000 * torch.randn(3, 8, 4, 4)
    # the same relative error passes on outputs of any size ...
    for reference in (logits, maps):
        scale = float(reference.abs().max())
        assert difference(reference, reference + 0.5 * RTOL * scale).within
        assert not difference(reference, reference + 2 * RTOL * scale).within
    # ... and an absolute error that is small for the maps is large for the logits
    assert difference(maps, maps + 0.01).within and not difference(logits, logits + 0.01).within
    assert not difference((logits, maps), (logits + 0.01, maps)).within  # every output must pass
    zeros = torch.zeros(3, 10)  # all-zero outputs: only the absolute floor applies
    assert difference(zeros, zeros + ATOL / 2).within and not difference(zeros, zeros + 2 * ATOL).within
    assert not difference(logits, torch.full_like(logits, float("nan"))).within
    with pytest.raises(ValueError, match="shapes differ"):
        difference(logits, logits[:2])


def _sabotaged(load):
    """A loader whose program is off by 1 % of each output's largest value."""

    def sabotaged_load(path):
        program = load(path)

        def run(x):
            out = program(x)
            return out + 0.01 * out.abs().max()

        return run

    return sabotaged_load


def test_a_file_that_disagrees_is_refused_and_not_written(model, tmp_path, monkeypatch):
    path = tmp_path / "classifier.pt2"
    path.write_bytes(b"an earlier export")
    monkeypatch.setattr(fastervit.export, "load_program", _sabotaged(load_program))
    with pytest.raises(ExportMismatchError, match="disagrees with eager PyTorch"):
        export_model(model, "export", path, SHAPE)
    assert path.read_bytes() == b"an earlier export"  # the earlier file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classifier.pt2"]  # no temporary left


def test_explicit_attention_restores_the_setting(model):
    with explicit_attention(model):
        assert not any(m.fused for m in model.modules() if hasattr(m, "fused"))
    assert all(m.fused for m in model.modules() if hasattr(m, "fused"))


def test_errors_are_clear(model, tmp_path):
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_model(model, "export", tmp_path / "model.bin", SHAPE)
    with pytest.raises(ValueError, match="at least 2"):
        export_program(model, torch.randn(1, *SHAPE))
    with pytest.raises(ValueError, match="unknown format"):
        export_model(model, "tflite", tmp_path / "m", SHAPE)


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def _cli(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _tiny_flags():
    kwargs = {k: v for k, v in TINY.items() if k not in ("resolution", "num_classes")}
    return ["--model", "faster_vit_0_224", "--model-kwargs", json.dumps(kwargs), "--resolution", "64"]


def test_cli_exports_a_program(tmp_path, capsys):
    output = tmp_path / "fv.pt2"
    code, record = _cli(capsys, ["export", *_tiny_flags(), "--format", "export", "--output", str(output)])
    assert code == 0 and record["status"] == "ok" and record["format"] == "export"
    assert record["output"] == str(output) and output.is_file()
    assert set(record["max_abs_diff"]) == {"1", "3"} and record["max_abs_diff_overall"] < 1e-5
    assert record["input_shape"] == ["batch", 3, 64, 64]


@needs_onnx
def test_cli_exports_a_checkpoint_backbone_to_onnx(tmp_path, capsys):
    torch.manual_seed(1)
    trained = FasterViT(**{**TINY, "num_classes": 4}).eval()
    save_checkpoint(trained, tmp_path / "ckpt.pth")
    output = tmp_path / "bb.onnx"
    argv = ["export", *_tiny_flags(), "--num-classes", "4", "--checkpoint", str(tmp_path / "ckpt.pth"),
            "--backbone", "--format", "onnx", "--output", str(output)]  # fmt: skip
    code, record = _cli(capsys, argv)  # the backbone's four maps, with the checkpoint's weights
    assert code == 0 and record["backbone"] and record["verified"] and record["max_abs_diff_overall"] < 1e-4
    diffs = compare(BackboneFeatures(trained), onnx_runner(output), SHAPE)
    assert all(d.within for d in diffs.values()) and max(d.max_abs for d in diffs.values()) < 1e-4


def test_cli_fails_when_the_file_disagrees(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fastervit.export, "load_program", _sabotaged(load_program))
    output = tmp_path / "fv.pt2"
    code, record = _cli(capsys, ["export", *_tiny_flags(), "--format", "export", "--output", str(output)])
    assert code == 1 and record["status"] == "error" and record["error_type"] == "ExportMismatchError"
    assert "beyond the tolerance" in record["error"] and not output.exists()


def test_cli_reports_errors_as_json(tmp_path, capsys):
    code, record = _cli(
        capsys, ["export", *_tiny_flags(), "--format", "export", "--output", str(tmp_path / "x.onnx")]
    )
    assert code == 1 and record["status"] == "error" and ".pt2" in record["error"]
    with pytest.raises(SystemExit) as exit_info:  # a usage error, found before any work
        main(["export", *_tiny_flags()[:-1], "48", "--format", "export", "--output", "x.pt2"])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exit_info.value.code == 2 and record["status"] == "usage_error"
    assert "multiples of 32" in record["error"] and "64 64" in record["error"]


@pytest.mark.parametrize("half", [False, True])
def test_weights_file_round_trip(model, tmp_path, half):
    path = tmp_path / "weights.pth"
    record = export_model(model, "weights", path, SHAPE, half=half)
    assert record["verified"] and record["dtype"] == ("float16" if half else "float32")
    state = torch.load(path, weights_only=True)["state_dict"]  # the release's format
    assert state.keys() == model.state_dict().keys()
    floats = [v.dtype for v in state.values() if v.is_floating_point()]
    assert set(floats) == {torch.float16 if half else torch.float32}
    reloaded = FasterViT(**TINY)
    load_checkpoint(reloaded, path)  # strict: same keys and shapes
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        expected, got = model(x), reloaded.eval()(x)
    if half:  # float16 rounding moves the logits a little, never by the 1e-2 bound
        assert 0 < difference(expected, got).max_rel < HALF_RTOL
    else:
        assert torch.equal(expected, got)


def test_half_precision_bound_is_enforced(model, tmp_path, monkeypatch):
    """A weights file that rounds worse than float16 would is refused."""

    def coarse(loaded_model, path):
        loaded = load_weights(loaded_model, path)
        with torch.no_grad():
            for p in loaded.parameters():
                p.add_(0.05 * p.abs().max())
        return loaded

    monkeypatch.setattr(fastervit.export, "load_weights", coarse)
    path = tmp_path / "w.pth"
    with pytest.raises(ExportMismatchError, match="beyond the tolerance"):
        export_model(model, "weights", path, SHAPE, half=True)
    assert not path.exists()


def test_cli_writes_half_weights_that_create_model_loads(tmp_path, capsys):
    torch.manual_seed(2)
    trained = FasterViT(**TINY).eval()
    save_checkpoint(trained, tmp_path / "ckpt.pth")
    output = tmp_path / "w.pth"
    argv = ["export", *_tiny_flags(), "--num-classes", "10", "--checkpoint", str(tmp_path / "ckpt.pth"),
            "--format", "weights", "--half", "--output", str(output)]  # fmt: skip
    code, record = _cli(capsys, argv)
    assert code == 0 and record["verified"] and record["dtype"] == "float16"
    loaded = fastervit.create_model("faster_vit_0_224", pretrained=str(output), **TINY).eval()
    x = torch.randn(1, *SHAPE)
    with torch.no_grad():
        assert difference(trained(x), loaded(x), HALF_RTOL).within


@pytest.mark.parametrize(
    "flags, message",
    [(["--format", "onnx", "--half"], "--half"), (["--format", "weights", "--backbone"], "--backbone")],
)
def test_cli_refuses_flags_that_do_not_apply(tmp_path, capsys, flags, message):
    output = tmp_path / ("m.onnx" if "onnx" in flags else "m.pth")
    code, record = _cli(capsys, ["export", *_tiny_flags(), *flags, "--output", str(output)])
    assert code == 1 and message in record["error"] and not output.exists()
