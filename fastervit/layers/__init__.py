"""The building blocks of FasterViT, one module per chapter of the book."""

from fastervit.layers.attention import WindowAttention
from fastervit.layers.carrier_tokens import TokenInitializer, pooling_geometry
from fastervit.layers.conv import ConvBlock, Downsample, LayerNorm2d
from fastervit.layers.drop import DropPath
from fastervit.layers.hat import HAT
from fastervit.layers.mlp import Mlp
from fastervit.layers.position import ContinuousPositionBias, PositionEmbeddingMLP
from fastervit.layers.stem import Stem
from fastervit.layers.windows import pad_to_windows, window_partition, window_reverse

__all__ = [
    "HAT",
    "ContinuousPositionBias",
    "ConvBlock",
    "Downsample",
    "DropPath",
    "LayerNorm2d",
    "Mlp",
    "PositionEmbeddingMLP",
    "Stem",
    "TokenInitializer",
    "WindowAttention",
    "pad_to_windows",
    "pooling_geometry",
    "window_partition",
    "window_reverse",
]
