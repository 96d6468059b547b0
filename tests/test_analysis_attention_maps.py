import pytest
import torch
from torch import nn

from fastervit import create_model
from fastervit.analysis.attention_maps import record_attention
from fastervit.layers import HAT, TokenInitializer, window_partition


def small_model():
    torch.manual_seed(0)
    # 64 px: stage 3 is a 4x4 map of 2x2 windows with one carrier token each
    return create_model("faster_vit_fashion_mnist").eval()


def test_records_every_attention_that_ran_with_its_layout():
    model = small_model()
    images = torch.randn(2, 1, 64, 64)
    with torch.no_grad(), record_attention(model) as maps:
        model(images)
    depth3, depth4 = len(model.levels[2].blocks), len(model.levels[3].blocks)
    # stage 3: window and carrier-token attention in every block; stage 4: one window
    assert len(maps) == 2 * depth3 + depth4
    window = maps["levels.2.blocks.0.attn"]
    assert (window.grid, window.num_carrier) == ((2, 2), 1)
    assert window.weights.shape == (2 * 4, 8, 5, 5)  # (B * windows, heads, 1 + 4, 1 + 4)
    carrier = maps["levels.2.blocks.0.hat_attn"]
    assert (carrier.grid, carrier.num_carrier) == ((2, 2), 0)
    assert carrier.weights.shape == (2, 8, 4, 4)  # the 4 carrier tokens of each image
    last = maps[f"levels.3.blocks.{depth4 - 1}.attn"]
    assert (last.grid, last.num_carrier) == ((2, 2), 0)
    for record in maps.values():
        torch.testing.assert_close(record.weights.sum(-1), torch.ones(record.weights.shape[:-1]))


def test_records_the_weights_of_the_input_each_module_received():
    torch.manual_seed(0)
    block = HAT(16, 2, 7, windows=(2, 2), ct_size=2).eval()
    fmap = torch.randn(1, 16, 14, 14)
    x, ct = window_partition(fmap, 7), TokenInitializer(16, 2)(fmap, 7)
    with torch.no_grad(), record_attention(block) as maps:
        block(x, ct, (2, 2))
    with torch.no_grad():  # the window attention's input, rebuilt by hand
        carriers = block._carrier_attention(ct, (2, 2))  # (1, 16, 16), window order
        tokens = torch.cat([carriers.reshape(4, 4, 16), block.pos_embed(x, (7, 7))], dim=1)
        expected = block.attn.attention_weights(block.norm1(tokens), (7, 7), 4)
    torch.testing.assert_close(maps["attn"].weights, expected)


def test_batches_concatenate_and_outputs_and_hooks_are_left_as_they_were():
    model = small_model()
    images = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        before = model(images)
        with record_attention(model) as maps:
            during = model(images[:2])
            model(images[2:])
        after = model(images)
    torch.testing.assert_close(during, before[:2])
    torch.testing.assert_close(after, before)
    assert maps["levels.2.blocks.0.hat_attn"].weights.shape[0] == 3
    assert maps["levels.2.blocks.0.attn"].weights.shape[0] == 3 * 4
    assert all(not m._forward_pre_hooks for m in model.modules())


def test_two_grids_in_one_recording_are_refused():
    model = small_model()
    with torch.no_grad(), record_attention(model):
        model(torch.randn(1, 1, 64, 64))
        with pytest.raises(ValueError, match="record one input size at a time"):
            model(torch.randn(1, 1, 96, 96))


def test_a_model_without_attention_is_refused():
    with pytest.raises(ValueError, match="holds no WindowAttention"), record_attention(nn.Linear(2, 2)):
        pass
