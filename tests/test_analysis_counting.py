"""fastervit.analysis.counting: fvcore's count against the released models' and the formulas'."""

import json
from pathlib import Path

import pytest
import torch

import fastervit
from fastervit import FasterViT
from fastervit.analysis import analytic_report, build_for_counting, count_flops, flop_analysis

SPEC = json.loads((Path(__file__).parent / "spec" / "complexity.json").read_text())["variants"]


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


def test_counting_refuses_what_the_model_refuses(tiny_kwargs):
    model = FasterViT(**tiny_kwargs())
    with pytest.raises(ValueError, match="multiples of 32"):
        count_flops(model, (224, 240))
    with pytest.raises(ValueError, match="batch_size"):
        count_flops(model, 224, batch_size=0)
    with pytest.raises(TypeError, match="registered name"):
        count_flops(model, 224, overrides={"depths": (1, 1, 1, 1)})
