"""The peers (a ResNet-18-style CNN and a ViT-S-style transformer) and the one lookup by name."""

import pytest
import torch

import fastervit
from fastervit.checkpoint import save_checkpoint
from fastervit.peers import ResNet, VisionTransformer, build_model, create_peer
from fastervit.train.config import TrainConfig
from fastervit.train.loop import train


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_defaults_are_resnet18():
    # torchvision's resnet18 has 11,689,512 parameters: the same layers, counted the same way.
    assert _params(ResNet()) == 11_689_512


def test_defaults_are_vit_small_patch16():
    # timm's vit_small_patch16_224 (DeiT-S) has 22,050,664 parameters: patch embedding
    # 3*16*16*384 + 384, class token 384, position embedding 197*384, 12 blocks of
    # 1,774,464, final norm 768, head 384*1000 + 1000.
    assert _params(VisionTransformer()) == 22_050_664


@pytest.mark.parametrize("name", ["resnet18_like", "vit_small_like"])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes_at_any_size(name, size):
    small = (
        {"width": 8} if name == "resnet18_like" else {"dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}
    )
    model = create_peer(name, num_classes=10, in_chans=1, resolution=64, **small).eval()
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_vit_position_embedding_is_interpolated_only_at_other_sizes():
    model = VisionTransformer(
        num_classes=3, in_chans=1, resolution=32, patch_size=8, dim=16, depth=1, num_heads=2
    )
    assert model.position_embedding((4, 4)) is model.pos_embed  # the grid it was made for
    wider = model.position_embedding((4, 8))
    assert wider.shape == (1, 1 + 32, 16)
    torch.testing.assert_close(wider[:, 0], model.pos_embed[:, 0])  # the class token's is kept
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        model(torch.randn(1, 1, 36, 32))
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        VisionTransformer(resolution=40)


def test_the_class_token_sees_every_patch():
    # Changing one patch changes the class token's output: every token attends to every other.
    torch.manual_seed(0)
    model = VisionTransformer(
        num_classes=4, in_chans=1, resolution=32, patch_size=8, dim=16, depth=1, num_heads=2
    )
    x = torch.randn(1, 1, 32, 32)
    y = x.clone()
    y[..., 24:, 24:] += 1.0  # the last patch only
    assert not torch.allclose(model.eval()(x), model(y))


def test_drop_path_rises_linearly_and_is_off_in_eval():
    model = ResNet(num_classes=10, in_chans=1, width=8, drop_path_rate=0.3)
    rates = [block.drop_path.drop_prob for block in model.blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 8).tolist())
    vit = VisionTransformer(depth=4, drop_path_rate=0.3)
    assert [b.drop_path.drop_prob for b in vit.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    x = torch.randn(4, 1, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_blocks_start_as_their_shortcut():
    # The last BatchNorm of every residual branch starts at zero (its branch adds nothing).
    model = ResNet(num_classes=10, in_chans=1, width=8)
    block = model.blocks[1]  # identity shortcut, 8 channels
    x = torch.rand(2, 8, 16, 16)  # non-negative, as after the stem's ReLU
    torch.testing.assert_close(block.eval()(x), x)


def test_build_model_knows_fastervits_and_peers():
    assert isinstance(build_model("faster_vit_0_224", num_classes=3, resolution=64), fastervit.FasterViT)
    assert isinstance(build_model("resnet18_like", num_classes=3), ResNet)
    with pytest.raises(KeyError, match=r"unknown model 'resnet18'.*did you mean resnet18_like"):
        build_model("resnet18")
    with pytest.raises(KeyError, match="known peers: .*resnet18_like, .*vit_small_like"):
        create_peer("vgg")
    fashion = build_model("faster_vit_fashion_mnist_no_carrier")  # chapter 11's comparison models
    assert fashion.in_chans == 1 and fashion.num_classes == 10
    assert all(level.global_tokenizer is None for level in fashion.levels)  # no carrier tokens
    assert build_model("resnet_fashion_mnist", num_classes=4).num_classes == 4  # a given setting wins


def test_build_model_loads_a_peer_checkpoint_with_another_head(tmp_path):
    source = ResNet(num_classes=5, in_chans=1, width=8)
    save_checkpoint(source, tmp_path / "resnet.pth.tar")
    model = build_model(
        "resnet18_like", tmp_path / "resnet.pth.tar", skip_head=True, num_classes=3, in_chans=1, width=8
    )
    assert torch.equal(model.stem[0].weight, source.stem[0].weight)
    assert model.head.weight.shape == (3, 64) and model.load_report.skipped == ["head.bias", "head.weight"]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("resnet18_like", {"width": 8}),
        ("vit_small_like", {"dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}),
    ],
)
def test_trains_through_the_loop_by_name(tmp_path, name, kwargs):
    config = TrainConfig(
        model=name, dataset="digits", output=str(tmp_path / "run"), epochs=1,
        batch_size=128, lr=5e-3, warmup_epochs=0.3, resolution=32, workers=0,
        drop_path=0.1, mixup=0.8, cutmix=1.0, model_ema=True, model_ema_decay=0.9,
        model_kwargs=kwargs,
    )  # fmt: skip
    summary = train(config)  # the default factory builds peers by name
    assert summary["finished"] and summary["steps"] == 11
    assert 0 <= summary["ema_top1"] <= 100
