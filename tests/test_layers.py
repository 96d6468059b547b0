"""Each building block on its own: shapes, the numerics the checkpoints expect, inverses."""

import math

import pytest
import torch
import torch.nn.functional as F

from fastervit.layers import (
    HAT,
    ConvBlock,
    Downsample,
    LayerNorm2d,
    PositionEmbeddingMLP,
    Stem,
    TokenInitializer,
    WindowAttention,
    pad_to_windows,
    pooling_geometry,
    window_partition,
    window_reverse,
)
from fastervit.layers.carrier_tokens import raster_to_windows, windows_to_raster
from fastervit.layers.position import grid_coordinates, relative_coords_table, relative_position_index


def test_stem_shapes_and_eps():
    stem = Stem(in_chans=3, in_dim=8, dim=16)
    assert stem(torch.randn(2, 3, 64, 96)).shape == (2, 16, 16, 24)
    assert stem.conv_down[1].eps == 1e-4 and stem.conv_down[4].num_features == 16


def test_conv_block_is_residual_after_second_norm():
    block = ConvBlock(8).eval()
    torch.nn.init.zeros_(block.norm2.weight)  # the branch's last op outputs its bias, zero
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(block(x), x)
    assert ConvBlock(8, layer_scale=0.5).gamma.shape == (8,) and ConvBlock(8).gamma is None


def test_downsample_halves_and_doubles():
    down = Downsample(8)
    assert down(torch.randn(1, 8, 14, 10)).shape == (1, 16, 7, 5)
    assert down.norm.eps == 1e-6


def test_layernorm2d_normalises_channels_per_pixel():
    x = torch.randn(2, 6, 5, 7)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(LayerNorm2d(6)(x), expected)


@pytest.mark.parametrize("size", [(14, 14), (14, 21), (7, 28)])
def test_window_partition_roundtrip_and_order(size):
    x = torch.randn(2, 3, *size)
    windows = window_partition(x, 7)
    assert windows.shape == (2 * size[0] * size[1] // 49, 49, 3)
    torch.testing.assert_close(windows[0, :, 0], x[0, 0, :7, :7].flatten())  # row-major inside
    torch.testing.assert_close(windows[1, :, 0], x[0, 0, :7, 7:14].flatten())  # windows row-major
    torch.testing.assert_close(window_reverse(windows, 7, *size), x)


def test_pad_to_windows_pads_right_and_bottom():
    x = torch.randn(1, 2, 16, 15)
    padded = pad_to_windows(x, 7)
    assert padded.shape == (1, 2, 21, 21)
    torch.testing.assert_close(padded[..., :16, :15], x)
    assert padded[..., 16:, :].abs().sum() == 0 and padded[..., :, 15:].abs().sum() == 0


def test_relative_coords_table_is_log_spaced():
    table = relative_coords_table((7, 7))
    assert table.shape == (1, 13, 13, 2)
    # offset d in [-6, 6] -> 8 d / 6 -> sign * log2(1 + |x|) / 3
    d = torch.arange(-6, 7, dtype=torch.float32)
    expected = torch.sign(d) * torch.log2(1 + (8 * d / 6).abs()) / math.log2(8)
    torch.testing.assert_close(table[0, :, 0, 0], expected)
    torch.testing.assert_close(table[0, 0, :, 1], expected)


def test_relative_position_index_points_at_offsets():
    gh, gw = 3, 4
    index = relative_position_index((gh, gw))
    assert index.shape == (12, 12) and index.dtype == torch.int64
    for i in range(12):
        for j in range(12):
            dh, dw = i // gw - j // gw, i % gw - j % gw
            assert index[i, j] == (dh + gh - 1) * (2 * gw - 1) + (dw + gw - 1)


def test_grid_coordinates_are_centred():
    coords = grid_coordinates((7, 7))[0]
    assert coords.shape == (49, 2)
    torch.testing.assert_close(coords[0], torch.tensor([-1.0, -1.0]))
    torch.testing.assert_close(coords[8], torch.tensor([-2 / 3, -2 / 3]))  # row 1, column 1
    torch.testing.assert_close(coords[48], torch.tensor([1.0, 1.0]))


def test_position_bias_pads_carrier_tokens_with_zero():
    attn = WindowAttention(16, 2, (7, 7), num_carrier=4)
    bias = attn.pos_emb_funct((7, 7), 4)
    assert bias.shape == (1, 2, 53, 53)
    assert bias[..., :4, :].abs().sum() == 0 and bias[..., :, :4].abs().sum() == 0
    assert (bias[..., 4:, 4:] > 0).all() and (bias[..., 4:, 4:] < 16).all()


@pytest.mark.parametrize("num_carrier", [0, 4])
def test_fused_and_explicit_attention_agree(num_carrier):
    attn = WindowAttention(16, 2, (7, 7), num_carrier=num_carrier).eval()
    x = torch.randn(3, 49 + num_carrier, 16)
    fused = attn(x, (7, 7), num_carrier)
    attn.fused = False
    torch.testing.assert_close(fused, attn(x, (7, 7), num_carrier), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_carrier", [0, 4])
def test_attention_weights_are_the_ones_forward_applies(num_carrier):
    # Rebuild the forward from the weights with the module's own linear layers: a softmax
    # over the wrong axis, a missing bias or scale would change the output.
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (7, 7), num_carrier=num_carrier).eval()
    with torch.no_grad():  # move the bias MLP away from its nearly flat initial output
        attn.pos_emb_funct.cpb_mlp[2].weight.normal_(0, 1)
    x = torch.randn(3, 49 + num_carrier, 16)
    with torch.no_grad():
        weights = attn.attention_weights(x, (7, 7), num_carrier)  # (3, 2, N, N)
        v = attn.qkv(x)[..., 32:].view(3, -1, 2, 8).transpose(1, 2)  # (3, heads, N, 8)
        rebuilt = attn.proj((weights @ v).transpose(1, 2).reshape(3, -1, 16))
        expected = attn(x, (7, 7), num_carrier)  # the fused kernel
    assert weights.shape == (3, 2, 49 + num_carrier, 49 + num_carrier)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, 49 + num_carrier))
    torch.testing.assert_close(rebuilt, expected, rtol=1e-5, atol=1e-6)


def test_pooling_geometry_matches_the_release():
    assert pooling_geometry(14, 7, 2) == (4, 5, 3)  # 224 px, stage 3
    assert pooling_geometry(21, 7, 2) == (6, 6, 3)
    for side in (14, 21, 28, 42, 63):
        out, kernel, stride = pooling_geometry(side, 7, 2)
        assert (side - kernel) // stride + 1 == out  # the pooling tiles the side exactly


@pytest.mark.parametrize("windows", [(2, 2), (2, 3), (3, 1)])
def test_carrier_token_orders_invert_each_other(windows):
    nh, nw = windows
    raster = torch.arange(nh * 2 * nw * 2, dtype=torch.float32).view(1, -1, 1)
    window_order = raster_to_windows(raster, windows, 2)
    torch.testing.assert_close(windows_to_raster(window_order, windows, 2), raster)
    # the first window's tokens are the top-left 2x2 of the raster grid
    assert window_order[0, :4, 0].tolist() == [0, 1, 2 * nw, 2 * nw + 1]


def test_token_initializer_pools_each_window():
    init = TokenInitializer(4, ct_size=2)
    assert init.pos_embed is init.to_global_feature.pos
    x = torch.randn(2, 4, 14, 21)
    ct = init(x, 7)
    assert ct.shape == (2, 2 * 3 * 4, 4)
    pooled = F.avg_pool2d(init.pos_embed(x), kernel_size=(5, 6), stride=3)  # (2, 4, 4, 6)
    torch.testing.assert_close(ct[:, 4:8], pooled[:, :, 0:2, 2:4].flatten(2).transpose(1, 2))


def test_position_embedding_is_added():
    pos = PositionEmbeddingMLP(8, (7, 7))
    x = torch.zeros(2, 49, 8)
    torch.testing.assert_close(pos(x, (7, 7)), pos.cpb_mlp(grid_coordinates((7, 7))).expand(2, -1, -1))


def test_hat_block_shapes_and_propagation():
    block = HAT(16, 2, 7, windows=(2, 3), ct_size=2, layer_scale=0.5, propagate=True)
    x, ct = torch.randn(2 * 6, 49, 16), torch.randn(2, 6 * 4, 16)
    y, ct_out = block(x, ct, (2, 3))
    assert y.shape == x.shape and ct_out.shape == ct.shape
    block.propagate = False
    y_without, _ = block(x, ct, (2, 3))
    assert not torch.allclose(y, y_without)


def test_hat_block_without_carrier_tokens():
    block = HAT(16, 2, 7)
    y, ct = block(torch.randn(4, 49, 16), None, (2, 2))
    assert y.shape == (4, 49, 16) and ct is None
    assert not hasattr(block, "hat_attn")


def test_windows_of_an_empty_batch():
    x = torch.randn(0, 3, 14, 21)
    windows = window_partition(x, 7)
    assert windows.shape == (0, 49, 3)
    assert window_reverse(windows, 7, 14, 21).shape == (0, 3, 14, 21)
    ct = torch.randn(0, 2 * 3 * 4, 5)
    assert raster_to_windows(ct, (2, 3), 2).shape == windows_to_raster(ct, (2, 3), 2).shape == (0, 24, 5)


def test_hat_block_with_carrier_modules_runs_without_carrier_tokens():
    """Built for one window, the block keeps its carrier-token weights (so checkpoints load) but
    computes exactly what a plain window block computes when given no carrier tokens."""
    with_modules = HAT(16, 2, 7, windows=(1, 1), layer_scale=0.5, propagate=True).eval()
    plain = HAT(16, 2, 7, layer_scale=0.5).eval()
    assert hasattr(with_modules, "hat_attn")
    plain.load_state_dict(with_modules.state_dict(), strict=False)
    x = torch.randn(3, 49, 16)
    y, ct = with_modules(x, None, (1, 1))
    assert ct is None
    torch.testing.assert_close(y, plain(x, None, (1, 1))[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="without carrier tokens"):
        plain(x, torch.randn(3, 4, 16), (1, 1))
