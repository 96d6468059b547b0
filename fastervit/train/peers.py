"""A convolutional peer for training comparisons (chapter 11): a ResNet-18-style network.

FasterViT is compared with a plain residual CNN trained by the same loop, recipe and data.
:class:`ResNet` follows He et al. (2016): a stride-4 stem (conv 7x7 stride 2, BN, ReLU,
max-pool 3x3 stride 2), four stages of basic blocks (two conv 3x3 + BN, ReLU after the
residual sum) whose width doubles while the map halves, then global average pooling and a
linear classifier. The residual branches carry stochastic depth, rising linearly over the
blocks as in FasterViT, so that ``--drop-path`` means the same for both models.

:func:`create_peer` has the signature of the training loop's model factory
(``train(config, model_factory=create_peer)``); it knows the names in :data:`PEERS`.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fastervit.layers.drop import DropPath


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
        resolution: accepted for the training loop's factory signature; a CNN runs at any size.

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


PEERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18_like": ResNet,
}


def create_peer(name: str, **kwargs: object) -> nn.Module:
    """Build the peer model ``name`` (a key of :data:`PEERS`) with constructor ``kwargs``."""
    if name not in PEERS:
        raise KeyError(f"unknown peer model {name!r}; known peers: {', '.join(sorted(PEERS))}")
    return PEERS[name](**kwargs)
