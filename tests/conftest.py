import json
from pathlib import Path

import pytest
import torch

SPEC_DIR = Path(__file__).parent / "spec"


@pytest.fixture(scope="session")
def spec_models() -> dict:
    """Facts of the released models: constructor kwargs, num_params, state-dict entries."""
    return json.loads((SPEC_DIR / "models.json").read_text())


def _tiny_kwargs(**overrides):
    """A FasterViT small enough for a CPU test that still has every kind of block.

    Stage 3 has carrier tokens (with layer scale and propagation), stage 4 plain windows.
    """
    kwargs = dict(
        dim=16,
        in_dim=8,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 2, 4),
        window_size=(7, 7, 7, 7),
        ct_size=2,
        mlp_ratio=2,
        resolution=224,
        drop_path_rate=0.0,
        num_classes=10,
        layer_scale=1e-5,
        do_propagation=True,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_kwargs():
    """``tiny_kwargs(**overrides)``: constructor arguments of a small but complete FasterViT."""
    return _tiny_kwargs


@pytest.fixture
def no_datasets(tmp_path, monkeypatch):
    """No dataset anywhere the package looks: an empty ``$FASTERVIT_DATA``, and neither the
    checkout's ``.data`` nor ``/usr/share/datasets`` (both point into an empty temporary folder)."""
    from fastervit.data import datasets

    empty = tmp_path / "no_datasets"
    empty.mkdir()
    monkeypatch.setenv("FASTERVIT_DATA", str(empty))
    monkeypatch.setattr(datasets, "CHECKOUT_DATA_DIR", empty)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_DIR", empty)
    return empty
