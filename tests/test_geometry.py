"""fastervit.geometry: stage sides, windows after padding and carrier tokens, as the model uses them."""

import pytest
import torch

from fastervit import FasterViT
from fastervit.geometry import stage_geometries, stage_geometry, stage_side
from fastervit.layers import TokenInitializer

FV0_WINDOWS = (7, 7, 7, 7)
FV0_HAT = (False, False, True, False)


def test_stage_sides_follow_the_strides():
    # strides 4, 8, 16, 32
    assert [stage_side((224, 224), i) for i in range(4)] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert [stage_side((320, 256), i) for i in range(4)] == [(80, 64), (40, 32), (20, 16), (10, 8)]


def test_windows_count_the_padded_map():
    # a 16x16 map in windows of 7 is padded to 21x21: 3x3 windows
    geometry = stage_geometry((16, 16), 7, hat=True)
    assert geometry.windows == (3, 3) and geometry.padded == (21, 21) and geometry.carrier
    assert stage_geometry((14, 21), 7, hat=False).windows == (2, 3)


@pytest.mark.parametrize(
    "resolution, carrier",
    [
        ((224, 224), [False, False, True, False]),  # 2x2 windows in stage 3
        ((64, 64), [False, False, False, False]),  # stage 3 is a 4x4 map: one window
        ((256, 224), [False, False, True, False]),
    ],
)
def test_carrier_tokens_need_hat_and_more_than_one_window(resolution, carrier):
    assert [g.carrier for g in stage_geometries(resolution, FV0_WINDOWS, FV0_HAT)] == carrier


def test_conv_stages_never_have_carrier_tokens_and_hat_none_means_every_stage():
    # at 512 px every stage holds several 7x7 windows; only stages 3 and 4 are attention stages
    geometries = stage_geometries((512, 512), FV0_WINDOWS, None)
    assert [g.carrier for g in geometries] == [False, False, True, True]
    assert [g.windows for g in geometries] == [(19, 19), (10, 10), (5, 5), (3, 3)]


def test_window_side_must_be_positive():
    with pytest.raises(ValueError, match="window side"):
        stage_geometry((14, 14), 0, hat=True)


@pytest.mark.parametrize("resolution", [(224, 224), (64, 64), (256, 224), (96, 160)])
@pytest.mark.parametrize("hat", [FV0_HAT, None])
def test_the_model_runs_what_the_geometry_says(tiny_kwargs, resolution, hat):
    """Each stage's output side, and whether its carrier tokens are pooled, in a real forward."""
    kwargs = tiny_kwargs(resolution=resolution, hat=hat)
    model = FasterViT(**kwargs).eval()
    sides, pooled = [], []
    for i, level in enumerate(model.levels):
        level.register_forward_hook(lambda module, args, out: sides.append(tuple(out.shape[-2:])))
        for module in level.modules():
            if isinstance(module, TokenInitializer):
                module.register_forward_hook(lambda module, args, out, i=i: pooled.append(i))
    with torch.no_grad():
        model(torch.randn(1, 3, *resolution))
    geometries = stage_geometries(resolution, kwargs["window_size"], hat)
    assert sides == [g.side for g in geometries]
    assert pooled == [i for i, g in enumerate(geometries) if g.carrier]
