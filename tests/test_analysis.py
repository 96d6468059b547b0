"""Throughput benchmarks: summaries, ablation settings, peers and the bench CLI."""

import importlib
import json

import pytest
import torch

import fastervit
from fastervit.analysis import analytic_report
from fastervit.analysis.benchmark import PEERS, ablation_settings, build_model, summarise
from fastervit.commands.cli import main


def test_summarise_reports_median_and_spread():
    stats = summarise([4.0, 1.0, 3.0, 2.0, 100.0], batch_size=8)
    assert stats["ms_per_batch_median"] == 3.0
    assert stats["ms_per_batch_iqr"] == 2.0  # quartiles 2 and 4: the outlier does not move them
    assert stats["images_per_s"] == pytest.approx(8 / 3e-3)


def test_ablation_settings_cover_memory_format_and_compile():
    labels = [s.label() for s in ablation_settings(fastervit.analysis.benchmark.BenchSettings(amp="bf16"))]
    assert labels == ["bf16", "bf16+channels_last", "bf16+compile", "bf16+channels_last+compile"]


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


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bench_cli_on_cpu(capsys):
    args = [
        "bench",
        "--model",
        "faster_vit_0_224",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--resolution",
        "64",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--rounds",
        "2",
    ]
    assert main(args) == 0
    (record,) = _last_json(capsys)["results"]
    assert record["model"] == "faster_vit_0_224" and record["batch_size"] == 1 and record["mode"] == "latency"
    assert record["images_per_s"] > 0 and record["ms_per_batch_iqr"] >= 0
    assert record["device"] == "cpu" and record["torch_version"] == torch.__version__
    assert record["gmacs"] == pytest.approx(analytic_report("faster_vit_0_224", 64).gmacs)
    assert record["settings"]["resolution"] == [64, 64]
