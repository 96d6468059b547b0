"""The comparison models (chapters 9 and 11): a ResNet and a plain ViT, built by name like ours.

FasterViT is compared with the two families it sits between, trained by the same loop,
recipe and data:

* :class:`ResNet` follows He et al. (2016): a stride-4 stem (conv 7x7 stride 2, BN, ReLU,
  max-pool 3x3 stride 2), four stages of basic blocks (two conv 3x3 + BN, ReLU after the
  residual sum) whose width doubles while the map halves, then global average pooling and a
  linear classifier. The defaults make ResNet-18.
* :class:`VisionTransformer` follows Dosovitskiy et al. (2021) as DeiT trains it (Touvron et
  al., 2021): non-overlapping patches embedded by a strided convolution, a class token, a
  learned position embedding, pre-norm blocks of global self-attention and an MLP, and a
  linear classifier on the class token. The defaults make ViT-S/16 (DeiT-S).

Both carry stochastic depth on their residual branches, rising linearly over the blocks as in
FasterViT, so that ``--drop-path`` means the same for every model, and both accept the
keyword arguments the training loop passes to any model (``num_classes``, ``in_chans``,
``resolution``, ``drop_path_rate``).

:func:`build_model` is the one lookup by name used by training and evaluation: a registered
FasterViT (:func:`fastervit.create_model`) or a peer (:data:`PEERS`).
"""

import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fastervit.checkpoint import load_checkpoint
from fastervit.layers.drop import DropPath
from fastervit.layers.mlp import Mlp
from fastervit.variants import VARIANTS, create_model


def _side(resolution: int | Sequence[int]) -> tuple[int, int]:
    """``resolution`` as ``(H, W)``: one number means a square."""
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = resolution
    return height, width


class BasicBlock(nn.Module):
    """``ReLU(shortcut(x) + DropPath(BN(conv(ReLU(BN(conv(x)))))))``; the first conv may stride.

    The shortcut is the identity, or conv 1x1 + BN where the width or the resolution changes.

    Shapes: ``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``.
    """

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.act = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or in_dim != out_dim:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), nn.BatchNorm2d(out_dim)
            )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        return self.act(self.shortcut(x) + self.drop_path(y))


class ResNet(nn.Module):
    """A ResNet of basic blocks; the defaults make ResNet-18 (11.7 M parameters for 3 channels and 1000 classes).

    Args:
        num_classes, in_chans: classes and input channels.
        depths: basic blocks per stage.
        width: channels of stage 1; stage ``i`` has ``width * 2**i``.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0.
        resolution: accepted for the common signature of trained models; a CNN runs at any size.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        depths: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
        drop_path_rate: float = 0.0,
        resolution: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        blocks, in_dim = [], width
        for i, depth in enumerate(depths):
            out_dim = width * 2**i
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_dim, out_dim, stride, rates[len(blocks)]))
                in_dim = out_dim
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(in_dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in blocks:  # each residual branch starts at zero: a block starts as its shortcut
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, 8 * width, H / 32, W / 32)
        return self.head(self.pool(x).flatten(1))


class Attention(nn.Module):
    """Global multi-head self-attention over all tokens (no position bias: ViT adds an
    absolute embedding once, before the first block).

    Shapes: ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, C / h)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, C / h)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    """``x + DropPath(attn(norm(x)))``, then ``x + DropPath(mlp(norm(x)))`` (pre-norm).

    Shapes: ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """A plain ViT with a class token; the defaults make ViT-S/16 (22.1 M parameters for 3
    channels, 1000 classes and 224 px).

    Args:
        num_classes, in_chans: classes and input channels.
        resolution: the image side (or ``(H, W)``) the position embedding is made for; other
            sizes (multiples of ``patch_size``) interpolate it bicubically, as DeiT does
            when fine-tuning at another resolution.
        patch_size: side of the square patches (one token each).
        dim, depth, num_heads, mlp_ratio: token width, blocks, heads, MLP hidden width / dim.
        drop_path_rate: stochastic depth of the last block, rising linearly from 0.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        resolution: int | Sequence[int] = 224,
        patch_size: int = 16,
        dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        height, width = _side(resolution)
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"VisionTransformer: resolution {height}x{width} is not a multiple of the "
                f"patch size {patch_size}; pass a resolution or patch_size that divides it."
            )
        self.patch_size = patch_size
        self.grid = (height // patch_size, width // patch_size)
        self.patch_embed = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_ratio, rate) for rate in rates))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """The class token's embedding and the patches' for a ``gh x gw`` grid.

        Shapes: ``-> (1, 1 + gh * gw, C)``.
        """
        if grid == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        C = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, *self.grid, C).permute(0, 3, 1, 2)  # (1, C, gh0, gw0)
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)  # (1, 1 + gh gw, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if H % self.patch_size or W % self.patch_size:
            raise ValueError(
                f"VisionTransformer: input {H}x{W} is not a multiple of the patch size "
                f"{self.patch_size}; resize or crop it to a multiple."
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, C), N = H W / patch^2
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + N, C)
        x = x + self.position_embedding((H // self.patch_size, W // self.patch_size))
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])  # (B, num_classes), from the class token


# Chapter 11's comparison on Fashion-MNIST (1-channel 64 px images, 10 classes), each about
# as large as faster_vit_fashion_mnist (5.78 M parameters), and its ablation: the same
# FasterViT with carrier tokens off (window attention only in stages 3 and 4).
_FASHION_MNIST = {"in_chans": 1, "num_classes": 10, "resolution": 64}

PEERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18_like": ResNet,
    "vit_small_like": VisionTransformer,
    "resnet_fashion_mnist": functools.partial(ResNet, width=46, **_FASHION_MNIST),
    "vit_fashion_mnist": functools.partial(
        VisionTransformer, dim=200, depth=12, num_heads=4, patch_size=8, **_FASHION_MNIST
    ),
    "faster_vit_fashion_mnist_no_carrier": functools.partial(
        create_model, "faster_vit_fashion_mnist", hat=(False,) * 4
    ),
}


def create_peer(name: str, **kwargs: object) -> nn.Module:
    """Build the peer model ``name`` (a key of :data:`PEERS`) with constructor ``kwargs``."""
    if name not in PEERS:
        raise KeyError(f"unknown peer model {name!r}; known peers: {', '.join(sorted(PEERS))}")
    return PEERS[name](**kwargs)


def build_model(
    name: str, pretrained: str | Path | Mapping | None = None, *, skip_head: bool = False, **kwargs: object
) -> nn.Module:
    """Build any model the package trains by name: a registered FasterViT or a peer.

    Args:
        name: a name from :func:`fastervit.list_models` or a key of :data:`PEERS`.
        pretrained: a checkpoint file, or the dict it holds (release format, a bare state
            dict ...), loaded strictly; see :func:`fastervit.create_model`.
        skip_head: load everything but the classifier ``head`` (another ``num_classes``).
        **kwargs: constructor arguments, e.g. ``num_classes=10, in_chans=1, resolution=32``.

    Raises:
        KeyError: for an unknown name, listing the closest known ones.
    """
    if name in PEERS:
        model = create_peer(name, **kwargs)
        if pretrained is not None:
            model.load_report = load_checkpoint(model, pretrained, skip_head=skip_head)
        return model
    if name not in VARIANTS:
        close = difflib.get_close_matches(name, [*VARIANTS, *PEERS], n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown model {name!r}: not a registered FasterViT (see fastervit.list_models()) "
            f"nor a peer ({', '.join(PEERS)}){hint}"
        )
    return create_model(name, pretrained=pretrained, skip_head=skip_head, **kwargs)
