"""Every registered variant against the facts of the released models (tests/spec/)."""

import inspect

import pytest
import torch

import fastervit
from fastervit.checkpoint import grid_buffer_keys

FIXED = [name for name in fastervit.list_models() if not name.endswith("any_res")]
ANY_RES = fastervit.list_models("*any_res")


def meta_model(name: str, **overrides) -> fastervit.FasterViT:
    with torch.device("meta"):
        return fastervit.create_model(name, **overrides)


def test_registry_covers_the_release(spec_models):
    assert sorted(fastervit.list_models()) == sorted(spec_models)


def test_list_models_filters():
    assert fastervit.list_models("*21k_384*") == ["faster_vit_4_21k_384", "faster_vit_4_21k_384_any_res"]


@pytest.mark.parametrize("name", fastervit.list_models())
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


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(KeyError, match="faster_vit_0_224"):
        fastervit.create_model("faster_vit_0")
