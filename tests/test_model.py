"""The whole model: shapes, gradients, modes, resolutions, checkpoints, compile and export."""

import fractions

import pytest
import torch

import fastervit
from fastervit import CheckpointMismatchError, FasterViT, load_checkpoint, save_checkpoint


@pytest.fixture
def model(tiny_kwargs) -> FasterViT:
    return FasterViT(**tiny_kwargs()).eval()


@pytest.mark.parametrize("size", [(224, 224), (256, 256), (384, 384), (320, 256), (96, 160)])
def test_any_resolution(model, size):
    x = torch.randn(2, 3, *size)
    features = model.forward_intermediates(x)
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
    ("shape", "message"),
    [
        ((3, 224, 224), r"\(B, C, H, W\)"),
        ((1, 1, 224, 224), "3-channel images, got 1 channels"),
        ((1, 3, 224, 200), "multiples of 32.*224x200.*224x224"),
    ],
)
def test_bad_inputs_name_the_constraint(model, shape, message):
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_checkpoint_roundtrip_release_format(tiny_kwargs, model, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    save_checkpoint(model, path, epoch=3)
    assert set(torch.load(path, weights_only=True)) == {"state_dict", "epoch"}
    other = FasterViT(**tiny_kwargs()).eval()
    report = load_checkpoint(other, path)
    assert report.recomputed == [] and report.skipped == []
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)


def test_bare_and_ddp_state_dicts_load(tiny_kwargs, model):
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    other = FasterViT(**tiny_kwargs())
    load_checkpoint(other, state)
    assert torch.equal(other.head.weight, model.head.weight)


def test_checkpoint_from_another_resolution_recomputes_grid_buffers(tiny_kwargs, model, tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(model, path)
    other = FasterViT(**tiny_kwargs(resolution=(320, 256)))
    report = load_checkpoint(other, path)
    assert report.recomputed and all(
        key.endswith(("relative_coords_table", "relative_position_index", "relative_bias"))
        for key in report.recomputed
    )
    assert "recomputed" in str(report)
    assert torch.equal(other.head.weight, model.head.weight)
    # and plain strict load_state_dict works across resolutions too
    other.load_state_dict(model.state_dict(), strict=True)


def test_mismatch_lists_keys_and_shapes(tiny_kwargs, model):
    state = model.state_dict()
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(1)
    state["levels.0.blocks.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(FasterViT(**tiny_kwargs()), state)
    message = str(err.value)
    assert "norm.weight" in message and "extra.weight" in message
    assert "levels.0.blocks.0.conv1.weight: checkpoint [1, 1, 3, 3], model [16, 16, 3, 3]" in message


def test_other_num_classes_suggests_skip_head(tiny_kwargs, model, tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(model, path)
    with pytest.raises(CheckpointMismatchError, match="skip_head=True"):
        load_checkpoint(FasterViT(**tiny_kwargs(num_classes=5)), path)
    other = FasterViT(**tiny_kwargs(num_classes=5))
    report = load_checkpoint(other, path, skip_head=True)
    assert report.skipped == ["head.bias", "head.weight"]
    assert torch.equal(other.norm.weight, model.norm.weight)


def test_create_model_loads_pretrained(tmp_path):
    source = fastervit.create_model("faster_vit_0_224", num_classes=3).eval()
    path = tmp_path / "fastervit_0_224_1k.pth.tar"
    save_checkpoint(source, path)
    loaded = fastervit.create_model("faster_vit_0_any_res", pretrained=path, num_classes=3).eval()
    assert loaded.load_report.recomputed  # built at 576x960, saved at 224
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_checkpoint_with_arbitrary_objects_is_refused_clearly(model, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "extra": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        load_checkpoint(model, path)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fastervit.create_model("faster_vit_0_224", pretrained=tmp_path / "nope.pth")


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
