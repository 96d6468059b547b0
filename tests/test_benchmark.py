"""Timing machinery and ``fastervit bench``: summaries, settings, the JSON record, bad flags.

Nothing here checks a speed (chapter 9 and ``bench`` measure speed, as ratios in one run);
the timed runs are a few batches at 64 px, to check the record's shape and agreement.
"""

import importlib
import json

import pytest
import torch

from fastervit.analysis import analytic_report
from fastervit.analysis.benchmark import (
    PEERS,
    SKIMAGE_IMAGES,
    BenchSettings,
    ablation_settings,
    agreement,
    build_model,
    machine_info,
    operator_profile,
    reference_images,
    summarise,
)
from fastervit.commands.cli import main
from fastervit.deploy import EAGER, ablation_options

QUICK = ["--model", "faster_vit_0_224", "--device", "cpu", "--resolution", "64", "--batch-size", "2"]
QUICK += ["--warmup", "1", "--iters", "2", "--rounds", "2"]


def _run(capsys, argv):
    code = main(argv)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_summarise_reports_median_and_spread():
    stats = summarise([4.0, 1.0, 3.0, 2.0, 100.0], batch_size=8)
    assert stats["ms_per_batch_median"] == 3.0
    assert stats["ms_per_batch_iqr"] == 2.0  # quartiles 2 and 4: the outlier does not move them
    assert stats["images_per_s"] == pytest.approx(8 / 3e-3)


def test_ablation_covers_eager_each_optimisation_deploy_and_onnxruntime():
    settings = ablation_settings(BenchSettings(device="cpu", amp="bf16", compile=True), onnxruntime=True)
    assert [s.label() for s in settings] == [*ablation_options(), "onnxruntime"]
    assert settings[0].deploy == EAGER and settings[0].amp is None and not settings[0].compile
    assert settings[-1].runtime == "onnxruntime"
    assert "onnxruntime" not in [s.label() for s in ablation_settings(BenchSettings(device="cuda"))]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("batch_size", 0, "batch_size must be at least 1"), ("iters", 0, "iters must be at least 1"),
     ("warmup", -1, "warmup must be at least 0"), ("runtime", "tvm", "runtime must be one of")],
)  # fmt: skip
def test_settings_refuse_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        BenchSettings(device="cpu", **{field: value})


def test_missing_peer_library_is_reported(monkeypatch):
    real_import = importlib.import_module

    def without_peer_libraries(name, *args):
        if name.split(".")[0] in ("timm", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_peer_libraries)
    with pytest.raises(ModuleNotFoundError, match="needs timm or torchvision"):
        build_model("convnext_tiny")
    assert "deit_small_patch16_224" in PEERS


def test_reference_images_are_fixed_real_views():
    images, labels = reference_images((64, 96))
    assert images.shape == (8 * len(SKIMAGE_IMAGES), 3, 64, 96) and images.dtype == torch.float32
    assert labels.tolist() == [i for i in range(len(SKIMAGE_IMAGES)) for _ in range(8)]
    # Real, normalised images: roughly zero mean, unit spread, and not noise (neighbours agree).
    assert abs(images.mean()) < 0.5 and 0.5 < images.std() < 1.5
    assert (images[..., 1:] - images[..., :-1]).abs().mean() < 0.3 * images.std()
    again, _ = reference_images((64, 96))
    assert torch.equal(images, again)


def test_agreement_counts_top1_and_the_largest_logit_difference():
    reference = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 5.0], [0.0, 1.0, 0.5]])
    candidate = reference.clone()
    candidate[3] = torch.tensor([0.0, 0.6, 0.7])  # the last image changes its top class
    found = agreement(reference, candidate)
    assert found["top1_agreement"] == 0.75 and found["images"] == 4
    assert found["max_abs_logit_diff"] == pytest.approx(0.4) and found["logit_range"] == 5.0
    with pytest.raises(ValueError, match="logit shapes differ"):
        agreement(reference, candidate[:2])


def test_machine_info_names_the_cpu_and_its_isa():
    info = machine_info("cpu")
    assert info["torch_version"] == torch.__version__ and info["device"] == "cpu"
    assert info["cpu"] and info["cpu_cores_logical"] >= 1 and info["torch_threads"] >= 1
    assert {"avx2", "avx512f", "avx512_bf16", "amx_bf16"} <= set(info["isa"])
    assert isinstance(info["cpu_bf16_native"], bool) and info["cpu_bf16_reason"]
    json.dumps(info, allow_nan=False)


def test_bench_cli_on_cpu(capsys):
    code, record = _run(capsys, ["bench", *QUICK])
    assert code == 0 and record["machine"]["torch_version"] == torch.__version__
    (result,) = record["results"]
    assert result["model"] == "faster_vit_0_224" and result["batch_size"] == 2 and result["label"] == "fp32"
    assert result["images_per_s"] > 0 and result["ms_per_batch_iqr"] >= 0 and result["timed_batches"] == 2
    assert result["latency_ms_median"] > 0 and result["latency_ms_iqr"] >= 0
    assert result["device"] == "cpu" and result["agreement"] is None  # float32 eager is the reference
    assert result["gmacs"] == pytest.approx(analytic_report("faster_vit_0_224", 64).gmacs)
    assert result["settings"]["resolution"] == [64, 64]


def test_bench_train_times_a_training_step_of_each_model(capsys):
    models = "faster_vit_fashion_mnist,resnet_fashion_mnist"
    flags = ["--model", models, "--train", "--device", "cpu", "--resolution", "64", "--batch-size", "4"]
    code, record = _run(capsys, ["bench", *flags, "--warmup", "1", "--iters", "2", "--rounds", "2"])
    assert code == 0 and [r["model"] for r in record["results"]] == models.split(",")
    for result in record["results"]:
        assert result["label"] == "fp32+train" and result["settings"]["train"]
        assert result["images_per_s"] > 0 and result["latency_ms_median"] is None  # no latency
        assert result["agreement"] is None and "achieved_tflops" not in result
    assert record["results"][1]["source"] == "fastervit.peers"


@pytest.mark.parametrize(
    "flags, message",
    [(["--deploy"], "--deploy"), (["--runtime", "onnxruntime"], "--runtime"), (["--ablation"], "--ablation")],
)
def test_bench_train_refuses_other_paths(capsys, flags, message):
    code, record = _run(capsys, ["bench", *QUICK, "--train", *flags])
    assert code == 1 and "as trained" in record["error"] and message in record["error"]


def test_bench_deploy_reports_agreement(capsys):
    code, record = _run(capsys, ["bench", *QUICK, "--deploy", "--no-compile", "--amp", "fp32"])
    assert code == 0
    (result,) = record["results"]
    assert result["settings"]["deploy"]["precision"] == "fp32" and "precision=fp32" in result["applied"]
    found = result["agreement"]
    assert found["images"] == 8 * len(SKIMAGE_IMAGES) and found["top1_agreement"] == 1.0
    assert found["max_abs_logit_diff"] < 1e-4


def test_bench_onnxruntime(capsys):
    pytest.importorskip("onnxruntime")
    code, record = _run(capsys, ["bench", *QUICK, "--runtime", "onnxruntime"])
    assert code == 0
    (result,) = record["results"]
    assert result["label"] == "onnxruntime" and result["images_per_s"] > 0
    assert result["agreement"]["top1_agreement"] == 1.0 and result["agreement"]["max_abs_logit_diff"] < 1e-3


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--rounds", "0"], "expected an integer >= 1, got '0'"),
     (["--iters", "0"], "expected an integer >= 1, got '0'"),
     (["--threads", "-3"], "expected an integer >= 1, got '-3'"),
     (["--batch-size", "0"], "expected an integer >= 1, got '0'"),
     (["--warmup", "-1"], "expected an integer >= 0, got '-1'"),
     (["--runtime", "tvm"], "invalid choice: 'tvm'")],
)  # fmt: skip
def test_bench_refuses_bad_numbers_before_any_work(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--model", "faster_vit_0_224", *flags])
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exit_info.value.code == 2 and record["status"] == "usage_error" and message in record["error"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--device", "cuda"], "there is no CUDA device"),
     (["--iters", "2", "--rounds", "3"], "must be at least --rounds"),
     (["--deploy", "--runtime", "onnxruntime"], "leave out --deploy"),
     (["--deploy", "--amp", "fp16"], "use --amp bf16 or --amp fp32"),
     (["--deploy", "--peers"], "leave out --peers"),
     (["--ablation", "--model", "faster_vit_0_224,faster_vit_1_224"], "one model")],
)  # fmt: skip
def test_bench_reports_conflicts_and_missing_cuda(capsys, monkeypatch, flags, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, record = _run(capsys, ["bench", "--model", "faster_vit_0_224", *flags])
    assert code == 1 and record["status"] == "error" and message in record["error"]


def test_operator_profile_ranks_operators_by_self_time():
    layer = torch.nn.Linear(256, 256)
    x = torch.randn(64, 256)
    with torch.no_grad():
        rows = operator_profile(lambda: torch.relu(layer(x)), iters=2, top=3)
    assert 1 <= len(rows) <= 3
    assert [r["self_ms"] for r in rows] == sorted((r["self_ms"] for r in rows), reverse=True)
    assert all(0 < r["share"] <= 1 and r["calls"] >= 1 for r in rows)
    assert any("relu" in r["operator"] for r in rows) or len(rows) == 3
    with pytest.raises(ValueError, match="iters"):
        operator_profile(lambda: None, iters=0)
