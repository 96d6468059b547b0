"""The whole model: shapes, gradients, modes, resolutions, inputs, features, compile and export."""

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import fastervit
from fastervit import FasterViT, load_checkpoint


@pytest.fixture
def model(tiny_kwargs) -> FasterViT:
    return FasterViT(**tiny_kwargs()).eval()


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (384, 384), (320, 256), (96, 160)])
def test_any_resolution(model, size):
    x = torch.randn(2, 3, *size)
    features = model.forward_intermediates(x, intermediates_only=True)
    H, W = size
    assert [tuple(f.shape) for f in features] == [
        (2, 16 * 2**i, H // 2 ** (i + 2), W // 2 ** (i + 2)) for i in range(4)
    ]
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("size", [(256, 256), (320, 256)])
def test_built_resolution_and_runtime_resolution_agree(tiny_kwargs, size):
    """A model built for 224 and one built for the input's size compute the same function."""
    built_224 = FasterViT(**tiny_kwargs()).eval()
    built_here = FasterViT(**tiny_kwargs(resolution=size)).eval()
    built_here.load_state_dict(built_224.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(built_224(x), built_here(x))


def test_forward_features_and_head(model):
    x = torch.randn(2, 3, 224, 224)
    features = model.forward_features(x)
    assert features.shape == (2, 128, 7, 7)
    assert model.forward_head(features, pre_logits=True).shape == (2, 128)
    torch.testing.assert_close(model.forward_head(features), model(x))


def test_gradient_reaches_every_parameter(tiny_kwargs):
    model = FasterViT(**tiny_kwargs()).train()
    model(torch.randn(2, 3, 224, 224)).logsumexp(-1).sum().backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_deterministic_in_eval(model):
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_train_mode_is_stochastic_and_eval_is_not(tiny_kwargs):
    model = FasterViT(**tiny_kwargs(drop_path_rate=0.5, drop_rate=0.2))
    x = torch.randn(4, 3, 224, 224)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_fused_and_explicit_attention_give_the_same_logits(model):
    x = torch.randn(2, 3, 224, 224)
    fused = model(x)
    model.set_fused_attn(False)
    torch.testing.assert_close(model(x), fused, rtol=1e-5, atol=1e-5)


def test_inference_cache_follows_the_weights(model):
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)
        for name, p in model.named_parameters():
            if "cpb_mlp" in name:
                p.mul_(1.5)  # in place, as an EMA update or a checkpoint load would
        after = model(x)
    model.train(False)
    with torch.enable_grad():
        reference = model(x)  # grad enabled: computed afresh, not cached
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference.detach())


def test_channels_last_gives_the_same_output(tiny_kwargs, model):
    x = torch.randn(2, 3, 224, 224)
    model_cl = FasterViT(**tiny_kwargs()).eval()
    model_cl.load_state_dict(model.state_dict())
    model_cl = model_cl.to(memory_format=torch.channels_last)
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((3, 224, 224), torch.float32, r"\(B, C, H, W\)"),
        ((1, 1, 224, 224), torch.float32, "3-channel images, got 1 channels"),
        ((1, 3, 224, 200), torch.float32, "multiples of 32.*224x200.*224x224"),
        ((1, 3, 16, 16), torch.float32, "at least 32 pixels.*16x16.*32x32"),
        ((1, 3, 0, 0), torch.float32, "at least 32 pixels.*0x0.*32x32"),
        ((1, 3, 224, 0), torch.float32, "at least 32 pixels.*224x0.*224x32"),
        ((1, 3, 224, 224), torch.uint8, r"floating-point images, got torch.uint8.*x.float\(\) / 255"),
        ((1, 3, 224, 224), torch.int64, "floating-point images, got torch.int64"),
        (
            (1, 3, 224, 224),
            torch.float16,
            r"torch.float16 but the model's weights are torch.float32.*autocast",
        ),
    ],
)
def test_bad_inputs_name_the_constraint(model, shape, dtype, message):
    for method in (model, model.forward_features, model.forward_intermediates):
        with pytest.raises(ValueError, match=message):
            method(torch.zeros(*shape, dtype=dtype))


def test_lower_precision_input_under_autocast(model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)).shape == (1, 10)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"resolution": 16}, "at least 32"),
        ({"resolution": (224, 0)}, "at least 32"),
        ({"num_classes": -1}, "or 0"),
    ],
)
def test_bad_constructor_arguments(tiny_kwargs, overrides, message):
    with pytest.raises(ValueError, match=message):
        FasterViT(**tiny_kwargs(**overrides))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("size", [224, 64])
def test_empty_batch_gives_empty_outputs(model, mode, size):
    model.train(mode == "train")
    norm_mean = model.norm.running_mean.clone()
    x = torch.randn(0, 3, size, size, requires_grad=True)
    logits = model(x)
    assert logits.shape == (0, 10)
    assert model.forward_features(x).shape == (0, 128, size // 32, size // 32)
    final, features = model.forward_intermediates(x)
    assert final.shape == (0, 128, size // 32, size // 32)
    assert [tuple(f.shape) for f in features] == [
        (0, 16 * 2**i, size // 2 ** (i + 2), size // 2 ** (i + 2)) for i in range(4)
    ]
    logits.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(model.norm.running_mean, norm_mean)  # an empty batch moves no statistic


def _scaled_position_mlps(model: FasterViT) -> dict[str, torch.Tensor]:
    """New tensors (version counters at 0, as if read from a file): the position MLPs x1.5."""
    return {
        key: value * 1.5 if "cpb_mlp" in key else value.clone() for key, value in model.state_dict().items()
    }


@pytest.mark.parametrize("how", ["data", "data_copy_then_eval", "vector_to_parameters", "assign_on_meta"])
def test_inference_cache_sees_every_way_of_writing_weights(how):
    """FasterViT-0 (fewer blocks): weights written around the version counter are seen too."""
    kwargs = {"depths": (1, 1, 2, 1)}
    if how == "assign_on_meta":
        source = fastervit.create_model("faster_vit_0_224", **kwargs)
        with torch.device("meta"):
            model = fastervit.create_model("faster_vit_0_224", **kwargs)
        model.load_state_dict({key: value.clone() for key, value in source.state_dict().items()}, assign=True)
    else:
        model = fastervit.create_model("faster_vit_0_224", **kwargs)
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)  # computes the position biases and caches them
    new = _scaled_position_mlps(model)
    if how == "data":
        for name, p in model.named_parameters():
            p.data = new[name]
    elif how == "data_copy_then_eval":
        for name, p in model.named_parameters():
            p.data.copy_(new[name])  # invisible to the version counter: switching mode clears
        model.eval()
    elif how == "vector_to_parameters":
        vector_to_parameters(
            parameters_to_vector([new[name] for name, _ in model.named_parameters()]), model.parameters()
        )
    else:
        model.load_state_dict(new, assign=True)
    with torch.no_grad():
        after = model(x)
    with torch.enable_grad():
        reference = model(x).detach()  # autograd on: computed afresh, never cached
    assert not torch.allclose(before, reference)
    torch.testing.assert_close(after, reference)


@pytest.mark.parametrize("size", [64, 96])
def test_checkpoints_load_across_build_resolutions(tiny_kwargs, size):
    """At 64 and 96 px stage 3 holds one window. Weights saved from a model built at 224 load
    into one built at ``size`` and the other way; both compute the same function."""
    for source_size, target_size in ((224, size), (size, 224)):
        source = FasterViT(**tiny_kwargs(resolution=source_size)).eval()
        target = FasterViT(**tiny_kwargs(resolution=target_size)).eval()
        assert list(target.state_dict()) == list(source.state_dict())
        load_checkpoint(target, source.state_dict())
        for side in (size, 224):
            x = torch.randn(1, 3, side, side)
            with torch.no_grad():
                torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize("build", [64, 224])
def test_input_size_decides_whether_carrier_tokens_are_used(tiny_kwargs, build):
    model = FasterViT(**tiny_kwargs(resolution=build)).eval()
    calls = []
    model.levels[2].global_tokenizer.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))  # stage 3: 4x4, one window of 7
        assert calls == []
        model(torch.randn(1, 3, 224, 224))  # stage 3: 14x14, 2x2 windows
        assert calls == [1]


def test_unused_parameters_are_those_without_gradient(tiny_kwargs):
    model = FasterViT(**tiny_kwargs(resolution=64)).train()
    model(torch.randn(2, 3, 64, 64)).logsumexp(-1).sum().backward()
    without_gradient = [name for name, p in model.named_parameters() if p.grad is None]
    assert without_gradient and model.unused_parameters() == without_gradient
    assert FasterViT(**tiny_kwargs()).unused_parameters() == []


def test_forward_intermediates_follows_timm(model):
    x = torch.randn(2, 3, 256, 224)
    final, features = model.forward_intermediates(x)
    assert [tuple(f.shape) for f in features] == [(2, 16 * 2**i, 64 // 2**i, 56 // 2**i) for i in range(4)]
    torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
    torch.testing.assert_close(final, model.norm(features[-1]), rtol=0, atol=0)
    only = model.forward_intermediates(x, intermediates_only=True)
    assert isinstance(only, list) and all(torch.equal(a, b) for a, b in zip(only, features, strict=True))

    _, last_two = model.forward_intermediates(x, indices=2)
    assert [f.shape[1] for f in last_two] == [64, 128]
    _, chosen = model.forward_intermediates(x, indices=[-1, 0])
    assert [f.shape[1] for f in chosen] == [16, 128]  # in stage order
    _, normed = model.forward_intermediates(x, indices=1, norm=True)
    torch.testing.assert_close(normed[0], final, rtol=0, atol=0)


def test_forward_intermediates_stops_early(model):
    x = torch.randn(1, 3, 224, 224)
    calls = []
    model.levels[2].register_forward_hook(lambda *args: calls.append(1))
    final, features = model.forward_intermediates(x, indices=[1], stop_early=True)
    assert calls == [] and final.shape == (1, 32, 28, 28)
    torch.testing.assert_close(final, features[0], rtol=0, atol=0)
    assert model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)[1].shape == (1, 32, 28, 28)
    assert calls == []


@pytest.mark.parametrize("indices", [0, 5, [4], [-5], []])
def test_forward_intermediates_refuses_bad_indices(model, indices):
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(torch.randn(1, 3, 224, 224), indices=indices)


def test_reset_classifier(model):
    x = torch.randn(2, 3, 224, 224)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model(x).shape == (2, 5)
    assert torch.equal(model.head.bias, torch.zeros(5)) and 0.005 < model.head.weight.std() < 0.05
    model.reset_classifier(0)
    assert model.num_classes == 0
    pooled = model.forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model(x), pooled, rtol=0, atol=0)
    assert pooled.shape == (2, 128)
    with pytest.raises(ValueError, match="num_classes=-1"):
        model.reset_classifier(-1)


def test_torch_compile_small_config(model):
    x = torch.randn(2, 3, 224, 224)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_export_with_dynamic_batch(model):
    batch = torch.export.Dim("batch", min=1, max=16)
    exported = torch.export.export(model, (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("size", [224, 256])
def test_model_cast_to_another_dtype(tiny_kwargs, model, dtype, size):
    x = torch.randn(1, 3, size, size)
    reference = model(x)
    cast = FasterViT(**tiny_kwargs()).eval()
    cast.load_state_dict(model.state_dict())
    out = cast.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(out.float(), reference, rtol=tolerance, atol=tolerance)


def test_bfloat16_autocast(model):
    x = torch.randn(1, 3, 224, 224)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    torch.testing.assert_close(out.float(), model(x), rtol=0.1, atol=0.1)


def test_model_built_under_inference_mode(tiny_kwargs):
    with torch.inference_mode():
        model = FasterViT(**tiny_kwargs()).eval()
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)
