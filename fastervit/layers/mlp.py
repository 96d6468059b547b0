"""The two-layer perceptron that follows every attention layer."""

import torch
from torch import nn

from fastervit.layers.linear import Linear


class Mlp(nn.Module):
    """Linear -> GELU (exact, erf) -> dropout -> Linear -> dropout, applied per token.

    Shapes: ``(..., in_features) -> (..., in_features)``.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
