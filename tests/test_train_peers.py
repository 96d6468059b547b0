"""The ResNet-18-style peer: its size, shapes, stochastic depth, and training through the loop."""

import pytest
import torch

from fastervit.train.config import TrainConfig
from fastervit.train.loop import train
from fastervit.train.peers import ResNet, create_peer


def test_defaults_are_resnet18():
    # torchvision's resnet18 has 11,689,512 parameters: the same layers, counted the same way.
    assert sum(p.numel() for p in ResNet().parameters()) == 11_689_512


@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_at_any_size(size):
    model = create_peer("resnet18_like", num_classes=10, in_chans=1, width=8, resolution=size).eval()
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_drop_path_rises_linearly_and_is_off_in_eval():
    model = ResNet(num_classes=10, in_chans=1, width=8, drop_path_rate=0.3)
    rates = [block.drop_path.drop_prob for block in model.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 8).tolist())
    x = torch.randn(4, 1, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_blocks_start_as_their_shortcut():
    # The last BatchNorm of every residual branch starts at zero (its branch adds nothing).
    model = ResNet(num_classes=10, in_chans=1, width=8)
    block = model.blocks[1]  # identity shortcut, 8 channels
    x = torch.rand(2, 8, 16, 16)  # non-negative, as after the stem's ReLU
    torch.testing.assert_close(block.eval()(x), x)


def test_unknown_peer_names_the_known_ones():
    with pytest.raises(KeyError, match="known peers: resnet18_like"):
        create_peer("vgg")


def test_trains_through_the_loop(tmp_path):
    config = TrainConfig(
        model="resnet18_like", dataset="digits", output=str(tmp_path / "run"), epochs=1,
        batch_size=128, lr=5e-3, warmup_epochs=0.3, img_size=32, workers=0, progress=False,
        drop_path=0.1, mixup=0.8, cutmix=1.0, model_ema=True, model_ema_decay=0.9,
        model_kwargs={"width": 8},
    )  # fmt: skip
    summary = train(config, model_factory=create_peer)
    assert summary["finished"] and summary["steps"] == 11
    assert 0 <= summary["ema_top1"] <= 100
