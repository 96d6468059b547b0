"""The inference fast path: same predictions as float32 eager, checkpoint format kept, inference only.

No test here times anything (chapter 9 and ``fastervit bench`` measure speed), and none
compiles (too slow for the suite): compiled deploys are checked by ``bench --ablation``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import fastervit
from fastervit import FasterViT
from fastervit.analysis.benchmark import agreement, fit_probe_head, reference_images
from fastervit.deploy import (
    DeployedModel,
    DeployOptions,
    FixedPositionBias,
    FixedPositionEmbedding,
    _compile_kwargs,
    ablation_options,
    deploy,
    native_bf16,
)
from fastervit.layers import ContinuousPositionBias, ConvBlock, Stem
from fastervit.layers.conv import fold_batchnorm
from fastervit.layers.linear import Linear, linear

EAGER_FP32 = dict(compile=False, precision="fp32")


def _with_batchnorm_statistics(model):
    """Non-trivial BatchNorm statistics and affine parameters, so that folding is exercised."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


@pytest.fixture
def tiny(tiny_kwargs):
    return _with_batchnorm_statistics(FasterViT(**tiny_kwargs()).eval())


def _eager(model, x):
    with torch.inference_mode():
        return model(x)


@pytest.mark.parametrize("layer_scale", [None, 0.5])
def test_conv_block_folds_batchnorm_in_eval_with_the_same_numbers(layer_scale):
    block = _with_batchnorm_statistics(ConvBlock(8, layer_scale=layer_scale)).eval()
    x = torch.randn(2, 8, 9, 9)
    # What training mode computes, with the BatchNorms in eval: conv -> BN -> GELU -> conv -> BN.
    y = block.norm2(block.conv2(F.gelu(block.norm1(block.conv1(x)))))
    expected = x + (y if layer_scale is None else y * block.gamma.view(1, -1, 1, 1))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_stem_folds_batchnorm_in_eval_with_the_same_numbers():
    stem = _with_batchnorm_statistics(Stem(3, 8, 16)).eval()
    x = torch.randn(2, 3, 32, 32)
    weight, bias = fold_batchnorm(stem.conv_down[0], stem.conv_down[1])
    assert bias.shape == (8,) and weight.shape == stem.conv_down[0].weight.shape
    expected = stem.conv_down(x)  # the Sequential, run module by module: BatchNorm unfolded
    torch.testing.assert_close(stem(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_convolutions_are_invisible_to_tracing():
    # FLOP counters trace the model as written: the BatchNorms must appear in the trace.
    stem = Stem(3, 8, 16).eval()
    graph = torch.jit.trace(stem, torch.randn(1, 3, 32, 32)).inlined_graph
    assert "aten::batch_norm" in str(graph)


@pytest.mark.parametrize("shape", [(5, 16), (2, 7, 16), (0, 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_f_linear(shape, bias):
    layer = Linear(16, 24, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_linear_keeps_autograd_and_autocast():
    layer = Linear(16, 24)
    x = torch.randn(3, 16, requires_grad=True)
    layer(x).sum().backward()  # the oneDNN kernel has no backward: F.linear must have run
    assert x.grad is not None and layer.weight.grad.shape == (24, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x.detach(), layer.weight, layer.bias).dtype == torch.bfloat16


def test_linear_is_visible_to_flop_counting_in_inference():
    """Under a dispatch mode (FlopCounterMode) the layer runs the standard operator it counts."""
    layer = Linear(16, 24)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        layer(torch.randn(5, 16))
    assert counter.get_total_flops() == 2 * 5 * 16 * 24


@pytest.mark.parametrize(
    "name", [name for name in ablation_options() if not ablation_options()[name].compile]
)
def test_each_eager_optimisation_keeps_the_outputs(tiny, name):
    x = torch.randn(3, 3, 224, 224)
    options = ablation_options()[name]
    deployed = deploy(tiny, options)
    expected = _eager(tiny, x)
    tolerance = 0.05 if deployed.applied["precision"] == "bf16" else 1e-5
    torch.testing.assert_close(deployed(x), expected, rtol=tolerance, atol=tolerance)


def test_positions_are_precomputed_for_the_deployed_resolution_and_computed_for_others(tiny):
    deployed = deploy(tiny, **EAGER_FP32)
    fixed = [m for m in deployed.modules() if isinstance(m, (FixedPositionBias, FixedPositionEmbedding))]
    originals = [m for m in tiny.modules() if isinstance(m, ContinuousPositionBias)]
    assert deployed.applied["precomputed_positions"] == len(fixed) > len(originals) > 0
    for size in [(224, 224), (256, 320)]:  # the build resolution, then another one
        x = torch.randn(2, 3, *size)
        torch.testing.assert_close(deployed(x), _eager(tiny, x), rtol=1e-5, atol=1e-5)


def test_deploy_keeps_the_checkpoint_format_both_ways(tiny, tiny_kwargs):
    deployed = deploy(tiny, **EAGER_FP32)
    assert set(deployed.state_dict()) == set(tiny.state_dict())
    fresh = FasterViT(**tiny_kwargs()).eval()
    fresh.load_state_dict(deployed.state_dict())  # strict
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(_eager(fresh, x), _eager(tiny, x))

    # A checkpoint loaded into the deployed model replaces the weights and what derives from them.
    other = _with_batchnorm_statistics(FasterViT(**tiny_kwargs())).eval()
    deployed.load_state_dict(other.state_dict())
    torch.testing.assert_close(deployed(x), _eager(other, x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(deployed(x), _eager(tiny, x), atol=1e-3)


def test_deployed_model_is_inference_only_and_leaves_the_original_trainable(tiny):
    deployed = tiny.deploy(**EAGER_FP32)
    assert isinstance(deployed, DeployedModel) and deployed.eval() is deployed
    with pytest.raises(RuntimeError, match="inference only.*deploy it again"):
        deployed.train()
    assert all(p.requires_grad for p in tiny.parameters())
    assert not any(isinstance(m, FixedPositionBias) for m in tiny.modules())
    tiny.train()(torch.randn(2, 3, 224, 224)).sum().backward()


def test_deploy_options_are_checked():
    with pytest.raises(ValueError, match="precision must be one of"):
        DeployOptions(precision="fp16")
    with pytest.raises(ValueError, match="channels_last must be"):
        DeployOptions(channels_last="yes")


def test_compile_options_per_device():
    cpu, graphs = _compile_kwargs(torch.device("cpu"), batch_size=1)
    assert cpu == {"options": {"freezing": True}} and not graphs
    cuda_b1, graphs = _compile_kwargs(torch.device("cuda"), batch_size=1)
    assert cuda_b1["mode"] == "reduce-overhead" and graphs
    assert _compile_kwargs(torch.device("cuda"), batch_size=128) == ({"options": {"freezing": True}}, False)


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr("fastervit.deploy.cpu_flags", lambda: {"avx2": True, "avx512_f": True})
    assert native_bf16("cpu") == (False, "the CPU has no native bf16 instructions (avx512_bf16, amx_bf16)")
    monkeypatch.setattr("fastervit.deploy.cpu_flags", lambda: {"avx512_bf16": True})
    assert native_bf16("cpu") == (True, "the CPU has avx512_bf16")


def test_bf16_deploy_agrees_with_float32_on_real_images():
    """Top-1 agreement of at least 99 % on the fixed set of real images (issue 15).

    FasterViT-0 with random weights and a nearest-mean probe head fitted on the same
    images, so that its predictions are confident (as a trained model's are)."""
    images, labels = reference_images()
    model = fit_probe_head(fastervit.create_model("faster_vit_0_224"), images, labels)
    expected = _eager(model, images)
    assert (expected.argmax(1) == labels).float().mean() > 0.9  # the probe is confident and right
    found = agreement(expected, deploy(model, compile=False, precision="bf16")(images))
    assert found["images"] == 112 and found["top1_agreement"] >= 0.99
    assert 0 < found["max_abs_logit_diff"] < 0.02 * found["logit_range"]
