"""Every registered variant against the facts of the released models (tests/spec/), and
create_model with the checkpoints it is given."""

import inspect

import pytest
import torch

import fastervit
from fastervit import CheckpointMismatchError, save_checkpoint
from fastervit.checkpoint import grid_buffer_keys

# The release's models; the book's own (faster_vit_fashion_mnist, weights bundled) has no spec.
RELEASED = [name for name in fastervit.list_models() if not fastervit.VARIANTS[name].pretrained_cfg.bundled]
FIXED = [name for name in RELEASED if not name.endswith("any_res")]
ANY_RES = fastervit.list_models("*any_res")


def meta_model(name: str, **overrides) -> fastervit.FasterViT:
    with torch.device("meta"):
        return fastervit.create_model(name, **overrides)


def test_registry_covers_the_release(spec_models):
    assert sorted(RELEASED) == sorted(spec_models)
    assert set(fastervit.list_models()) - set(RELEASED) == {"faster_vit_fashion_mnist"}


def test_list_models_filters():
    assert fastervit.list_models("*21k_384*") == ["faster_vit_4_21k_384", "faster_vit_4_21k_384_any_res"]


@pytest.mark.parametrize("name", RELEASED)
def test_constructor_kwargs_match_release(name, spec_models):
    expected = spec_models[name]["constructor_kwargs"]
    defaults = {
        key: param.default
        for key, param in inspect.signature(fastervit.FasterViT).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    ours = {**defaults, **fastervit.model_kwargs(name)}
    for key, value in expected.items():
        assert key in ours, key
        got = list(ours[key]) if isinstance(ours[key], tuple) else ours[key]
        assert got == value, (key, got, value)


@pytest.mark.parametrize("name", FIXED)
def test_state_dict_matches_release(name, spec_models):
    spec = spec_models[name]
    state = meta_model(name).state_dict()
    ours = [[key, list(t.shape), str(t.dtype).removeprefix("torch.")] for key, t in state.items()]
    theirs = [entry[:3] for entry in spec["entries"]]
    assert ours == theirs  # same keys, same order, same shapes and dtypes


@pytest.mark.parametrize("name", FIXED)
def test_parameter_count_and_kinds(name, spec_models):
    spec = spec_models[name]
    model = meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == spec["num_params"]
    buffers = {key for key, _ in model.named_buffers()}
    for key, _, _, kind in spec["entries"]:
        if key not in spec["aliases"]:
            assert (key in buffers) == (kind == "buffer"), key
    for key, target in spec["aliases"].items():
        assert model.get_parameter(key) is model.get_parameter(target)


@pytest.mark.parametrize("name", ANY_RES)
def test_any_res_shares_the_fixed_checkpoint_layout(name, spec_models):
    """Same keys as the checkpoint it reuses; only resolution-dependent buffers differ in shape."""
    twin = name.removesuffix("_any_res") if "21k" in name else name.replace("any_res", "224")
    model, reference = meta_model(name), meta_model(twin)
    state, ref_state = model.state_dict(), reference.state_dict()
    assert list(state) == list(ref_state)
    grid = grid_buffer_keys(model)
    for key, tensor in state.items():
        if key not in grid:
            assert tensor.shape == ref_state[key].shape, key
    assert sum(p.numel() for p in model.parameters()) == spec_models[twin]["num_params"]


@pytest.mark.parametrize("name", [n for n in FIXED if "21k" not in n])
@pytest.mark.parametrize("resolution", [64, 96])
def test_small_build_resolutions_keep_every_key(name, resolution):
    """Stage 3 holds a single window at 64 and 96 px: its carrier-token weights still exist."""
    model, reference = meta_model(name, resolution=resolution), meta_model(name)
    state, ref_state = model.state_dict(), reference.state_dict()
    assert list(state) == list(ref_state)
    grid = grid_buffer_keys(model)
    assert [k for k, t in state.items() if k not in grid and t.shape != ref_state[k].shape] == []


@pytest.mark.parametrize("resolution", [64, 96])
def test_release_weights_load_at_small_resolutions(tmp_path, resolution):
    source = fastervit.create_model("faster_vit_0_224").eval()
    path = tmp_path / "fastervit_0_224_1k.pth.tar"
    save_checkpoint(source, path)
    small = fastervit.create_model("faster_vit_0_224", pretrained=path, resolution=resolution).eval()
    x = torch.randn(1, 3, resolution, resolution)
    with torch.no_grad():
        torch.testing.assert_close(small(x), source(x))


def test_create_model_loads_pretrained(tmp_path):
    source = fastervit.create_model("faster_vit_0_224", num_classes=3).eval()
    path = tmp_path / "fastervit_0_224_1k.pth.tar"
    save_checkpoint(source, path)
    loaded = fastervit.create_model("faster_vit_0_any_res", pretrained=path, num_classes=3).eval()
    assert loaded.load_report.recomputed and loaded.load_report.weights == "state_dict"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


TINY = {
    "dim": 16,
    "in_dim": 8,
    "depths": [1, 1, 2, 1],
    "num_heads": [1, 2, 2, 4],
    "window_size": [7, 7, 7, 7],
    "mlp_ratio": 2,
    "num_classes": 10,
    "in_chans": 1,
    "resolution": 64,
}


def _training_checkpoint(with_ema: bool) -> tuple[dict, fastervit.FasterViT, fastervit.FasterViT]:
    """A checkpoint laid out as `fastervit train` writes it (fastervit/train/loop.py, save)."""
    live = fastervit.create_model("faster_vit_0_224", **TINY)
    ema = fastervit.create_model("faster_vit_0_224", **TINY)
    checkpoint = {
        "format": 1,
        "model_name": "faster_vit_0_224",
        "model_kwargs": dict(TINY),
        "model": live.state_dict(),
        "optimizer": {},
        "ema": {"module": ema.state_dict(), "num_updates": 7, "decay": 0.99} if with_ema else None,
        "progress": {"step": 7},
        "epoch": 1,
    }
    return checkpoint, live, ema


@pytest.mark.parametrize("with_ema", [True, False])
def test_training_checkpoint_loads_the_weights_eval_uses(tmp_path, with_ema):
    checkpoint, live, ema = _training_checkpoint(with_ema)
    path = tmp_path / "best.pt"
    torch.save(checkpoint, path)
    model = fastervit.create_model("faster_vit_0_224", pretrained=path, **{**TINY, "resolution": 224})
    expected = ema if with_ema else live
    assert model.load_report.weights == ("ema.module" if with_ema else "model")
    assert ("EMA weights" in str(model.load_report)) == with_ema
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), expected.parameters(), strict=True))


def test_training_checkpoint_into_another_model_says_to_pass_its_kwargs(tmp_path):
    checkpoint, _, _ = _training_checkpoint(with_ema=True)
    path = tmp_path / "last.pt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointMismatchError) as err:
        fastervit.create_model("faster_vit_0_224", pretrained=path)
    message = str(err.value)
    assert "create_model('faster_vit_0_224', pretrained=path, **checkpoint['model_kwargs'])" in message
    assert "dim=64 (checkpoint: 16)" in message and "resolution" not in message.split("what to do")[0]
    # Same shapes, another function: window_size changes no weight, and is caught all the same.
    with pytest.raises(
        CheckpointMismatchError, match=r"window_size=\[8, 8, 8, 8\] \(checkpoint: \[7, 7, 7, 7\]\)"
    ):
        fastervit.create_model("faster_vit_0_224", pretrained=path, **{**TINY, "window_size": (8, 8, 8, 8)})


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("faster_vit_0", "faster_vit_0_224"),
        ("fastervit_0_224", "faster_vit_0_224"),
        ("faster_vit_4_21k", "384"),
    ],
)
def test_unknown_model_names_get_close_matches(name, suggestion):
    with pytest.raises(KeyError, match=f"did you mean .*{suggestion}") as err:
        fastervit.create_model(name)
    assert "list_models()" in str(err.value)
