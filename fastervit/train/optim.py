"""LAMB, the layer-wise adaptive large-batch optimizer FasterViT is trained with (chapter 10).

You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes"
(ICLR 2020), Algorithm 2. For every parameter tensor ``w`` (a "layer") with gradient ``g``
at step ``t``:

    m = b1 m + (1 - b1) g                     first moment (Adam)
    v = b2 v + (1 - b2) g^2                   second moment (Adam)
    r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    u = r + wd w                              weight decay added to the update, not to g
    trust = ||w|| / ||u||  (1 where either norm is 0)
    w = w - lr trust u

The trust ratio gives every layer a step proportional to its own size, which is what keeps
very large batches stable.
"""

from collections.abc import Callable, Iterable

import torch
from torch import nn


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32 for low-precision tensors (bf16, fp16), their own dtype otherwise."""
    return torch.promote_types(tensor.dtype, torch.float32)


class Lamb(torch.optim.Optimizer):
    """LAMB optimizer: Adam moments, decoupled weight decay, layer-wise trust ratio.

    Args:
        params: parameters or parameter groups, as for any ``torch.optim.Optimizer``.
        lr: learning rate.
        betas: decay rates of the first and second moments.
        eps: added to the root of the second moment, for numerical stability.
        weight_decay: coefficient of ``w`` added to the update (per group).

    Gradient clipping is the training loop's (``--clip-grad``, over all parameters), and the
    moments are always bias-corrected, as in the paper.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Lamb: expected lr >= 0, got {lr}.")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb: expected both betas in [0, 1), got {betas}.")
        if eps <= 0.0:
            raise ValueError(f"Lamb: expected eps > 0, got {eps}.")
        if weight_decay < 0.0:
            raise ValueError(f"Lamb: expected weight_decay >= 0, got {weight_decay}.")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        "Lamb does not support sparse gradients; use dense embeddings "
                        "(nn.Embedding(sparse=False))."
                    )
                dtype = _compute_dtype(p)
                grad = p.grad.to(dtype)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=dtype)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)

                m_hat = exp_avg / (1.0 - beta1 ** state["step"])
                v_hat = exp_avg_sq / (1.0 - beta2 ** state["step"])
                weight = p.to(dtype)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"] != 0.0:
                    update = update + group["weight_decay"] * weight

                w_norm = torch.linalg.vector_norm(weight)
                u_norm = torch.linalg.vector_norm(update)
                both_positive = (w_norm > 0) & (u_norm > 0)
                trust_ratio = torch.where(both_positive, w_norm / u_norm, torch.ones_like(w_norm))
                p.add_((update * (-group["lr"] * trust_ratio)).to(p.dtype))
        return loss


def param_groups_weight_decay(
    model: nn.Module, weight_decay: float, skip_keywords: Iterable[str] | None = None
) -> list[dict]:
    """Split a model's trainable parameters into a decayed and a non-decayed group.

    No weight decay for biases, normalisation weights and every other tensor with at most
    one dimension (layer scale, for instance), nor for any parameter whose name contains one
    of ``skip_keywords``. By default those are the model's ``no_weight_decay_keywords()``
    when it has that method (FasterViT's: the position-bias MLPs ``cpb_mlp``, whose outputs
    are biases), else none. Empty groups are left out.

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay}, {"params": [...], "weight_decay": 0.0}]``
    """
    if skip_keywords is None:
        skip_keywords = model.no_weight_decay_keywords() if hasattr(model, "no_weight_decay_keywords") else ()
    keywords = tuple(skip_keywords)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in keywords)
        (no_decay if skip else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
