"""FLOP counting (fvcore and formulas) against the released models' counts, and the flops CLI."""

import json
from pathlib import Path

import pytest
import torch

import fastervit
from fastervit import FasterViT
from fastervit.analysis import analytic_report, build_for_counting, count_flops, count_params
from fastervit.analysis.flops import flop_analysis
from fastervit.commands.cli import main

SPEC = json.loads((Path(__file__).parent / "spec" / "complexity.json").read_text())["variants"]


def _spec_resolution(name):
    resolution = SPEC[name]["resolution"]
    return (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)


@pytest.fixture(scope="module")
def fv0_224():
    return count_flops("faster_vit_0_224")


@pytest.mark.parametrize("name", ["faster_vit_0_224", "faster_vit_1_224", "faster_vit_4_21k_224"])
def test_fvcore_count_matches_the_released_models(name, fv0_224):
    report = fv0_224 if name == "faster_vit_0_224" else count_flops(name)
    spec = SPEC[name]
    assert report.gmacs == pytest.approx(spec["gmacs"], rel=0.01)
    assert report.gmacs_cached_bias == pytest.approx(spec["gmacs_excluding_cpb_mlp"], rel=0.01)
    assert report.params == round(spec["params_M"] * 1e6)
    assert report.gflops == 2 * report.gmacs


@pytest.mark.parametrize("name", sorted(SPEC))
def test_formulas_match_the_released_models(name):
    """Every registered model at the resolution the counts were taken at (FasterViT-2 any-res: 541x960).

    The official any-resolution class lacks the carrier tokens' position embedding (a known
    bug, see the spec), so its uncached count is lower by that MLP; the cached count agrees.
    """
    report = analytic_report(name, _spec_resolution(name))
    assert report.gmacs == pytest.approx(SPEC[name]["gmacs"], rel=0.01)
    assert report.gmacs_cached_bias == pytest.approx(SPEC[name]["gmacs_excluding_cpb_mlp"], rel=1e-6)
    if not name.endswith("any_res"):
        assert count_params(name) == round(SPEC[name]["params_M"] * 1e6)


@pytest.mark.parametrize("resolution", [(224, 224), (320, 256)])
def test_formulas_match_fvcore_per_stage_and_component(resolution, fv0_224):
    fv = fv0_224 if resolution == (224, 224) else count_flops("faster_vit_0_224", resolution)
    formulas = analytic_report("faster_vit_0_224", resolution)
    assert formulas.macs == pytest.approx(fv.macs, rel=0.005)
    assert fv.by_module["levels.2"] == fv.by_stage["levels.2"] == formulas.by_stage["levels.2"]
    assert formulas.by_stage.keys() == fv.by_stage.keys()
    for stage, macs in fv.by_stage.items():
        assert formulas.by_stage[stage] == pytest.approx(macs, rel=0.005), stage
    assert formulas.by_component.keys() == fv.by_component.keys()
    for component, macs in fv.by_component.items():
        assert formulas.by_component[component] == pytest.approx(macs, rel=0.005), component


def test_formulas_follow_batch_size_but_position_mlps_run_once():
    one, four = (
        analytic_report("faster_vit_0_224", batch_size=1),
        analytic_report("faster_vit_0_224", batch_size=4),
    )
    assert four.position_mlp_macs == one.position_mlp_macs
    assert four.macs - four.position_mlp_macs == 4 * (one.macs - one.position_mlp_macs)


def test_fused_attention_counts_like_explicit_matmuls(tiny_kwargs):
    model = FasterViT(**tiny_kwargs()).eval()
    inputs = torch.zeros(1, 3, 224, 224)
    fused = flop_analysis(model, inputs).by_operator()
    model.set_fused_attn(False)
    explicit = flop_analysis(model, inputs).by_operator()
    assert fused["scaled_dot_product_attention"] > 0
    assert fused["scaled_dot_product_attention"] == explicit["matmul"]
    assert sum(fused.values()) == sum(explicit.values())


def test_cached_bias_count_leaves_out_exactly_the_position_mlps(tiny_kwargs):
    """gmacs_cached_bias drops the cpb_mlp modules, and those are what inference skips."""
    model = FasterViT(**tiny_kwargs()).eval()
    report = count_flops(model)
    assert report.position_mlp_macs == analytic_report(tiny_kwargs()).by_component["position_mlps"] > 0
    calls = []
    for name, module in model.named_modules():
        if name.endswith("cpb_mlp"):
            module.register_forward_hook(lambda *_: calls.append(1))
    inputs = torch.zeros(1, 3, 224, 224)
    model(inputs)
    uncached = len(calls)
    with torch.no_grad():
        model(inputs)  # fills the inference cache
        calls.clear()
        model(inputs)
    assert uncached == sum(name.endswith("cpb_mlp") for name, _ in model.named_modules())
    assert calls == []


def test_placeholder_build_counts_like_a_real_build(tiny_kwargs):
    overrides = {k: v for k, v in tiny_kwargs().items() if k != "resolution"}
    real = count_flops(fastervit.create_model("faster_vit_3_224", **overrides))
    placeholder = count_flops(build_for_counting("faster_vit_3_224", **overrides))
    assert (placeholder.macs, placeholder.params, placeholder.by_component) == (
        real.macs,
        real.params,
        real.by_component,
    )


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_flops_cli(capsys):
    assert main(["flops", "--model", "faster_vit_0_224", "--resolution", "64"]) == 0
    record = _last_json(capsys)
    assert record["model"] == "faster_vit_0_224" and record["resolution"] == [64, 64]
    assert record["params"] == round(SPEC["faster_vit_0_224"]["params_M"] * 1e6)
    assert record["gmacs"] == record["gmacs_analytic"] > record["gmacs_cached_bias"]
    assert record["gflops"] == pytest.approx(2 * record["gmacs"])
