"""MESA: distillation from the model's own EMA, switched on part-way through training (chapter 10).

Du et al., "Sharpness-Aware Training for Free" (NeurIPS 2022), propose MESA (memory-efficient
sharpness-aware training): instead of SAM's second forward-backward pass at perturbed weights,
the model is pulled towards the predictions of its exponential moving average, a flatter
"trajectory" of itself, at the cost of one more forward pass without gradients. The release
trains FasterViT-1 to -6 with it. Its training script adds, for every batch once a fraction
``start_ratio`` of the epochs has passed, ``weight`` times

    50 * KL( softmax(t / 3) || softmax(s / 3) ),   averaged over the batch,

to the classification loss, where ``s`` are the model's logits and ``t`` those of the EMA
model (in evaluation mode, without gradients) on the same, already mixed, images. Before the
switch the EMA is still close to the random initial weights and would teach nothing useful.

The release's flags are ``--mesa WEIGHT`` (0 disables) and ``--mesa-start-ratio`` (0.25); its
temperature 3 and factor 50 are fixed in the code.
"""

import torch
import torch.nn.functional as F

TEMPERATURE = 3.0
SCALE = 50.0


def mesa_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = TEMPERATURE, scale: float = SCALE
) -> torch.Tensor:
    """``scale * KL(softmax(teacher / T) || softmax(logits / T))``, averaged over the batch.

    Args:
        logits: ``(B, K)`` logits of the model being trained.
        teacher_logits: ``(B, K)`` logits of the teacher (the EMA model); no gradient flows
            into them.
        temperature: softens both distributions, so that the teacher's ranking of the wrong
            classes carries weight, not only its top class.
        scale: the release's fixed factor.

    Returns:
        A scalar in float32 (the softmaxes are taken in float32 even under autocast).
    """
    if logits.shape != teacher_logits.shape or logits.ndim != 2:
        raise ValueError(
            f"mesa_loss: expected logits and teacher_logits of the same shape (B, K), got "
            f"{tuple(logits.shape)} and {tuple(teacher_logits.shape)}."
        )
    log_p = F.log_softmax(logits.float() / temperature, dim=-1)
    log_q = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return scale * kl


def mesa_active(epoch: int, epochs: int, start_ratio: float) -> bool:
    """Whether 0-based ``epoch`` of a run of ``epochs`` (cooldown not counted) uses MESA.

    The release's rule: ``epoch / epochs > start_ratio``. With 310 epochs and 0.25 that is
    epoch 78 on, the first epoch past a quarter of the cosine.
    """
    return epoch / epochs > start_ratio
