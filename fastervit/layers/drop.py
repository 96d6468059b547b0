"""What wraps a residual branch ``x + DropPath(gamma * f(x))``: stochastic depth and layer scale."""

import torch
from torch import nn


class DropPath(nn.Module):
    """Zero the residual branch of a random subset of samples during training.

    Kept samples are scaled by ``1 / (1 - drop_prob)`` so that the expectation is unchanged;
    in eval mode (or with ``drop_prob == 0``) this is the identity.

    Shapes: ``(B, ...) -> (B, ...)``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
        return x * mask / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def layer_scale_parameter(dim: int, init: float | None) -> nn.Parameter | None:
    """A per-channel residual scale ``gamma`` initialised to ``init`` (LayerScale, Touvron et
    al. 2021), or None (no scaling) unless ``init`` is a number."""
    if isinstance(init, bool) or not isinstance(init, (int, float)):
        return None
    return nn.Parameter(init * torch.ones(dim))
