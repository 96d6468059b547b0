"""MESA: the release's distillation term from the EMA model, and when it switches on."""

import numpy as np
import pytest
import torch

from fastervit.train.mesa import mesa_active, mesa_loss


def _kl_by_hand(student, teacher, temperature=3.0, scale=50.0):
    """50 * mean over the batch of sum_k q_k (log q_k - log p_k), in float64 NumPy."""
    s = student.double().numpy() / temperature
    t = teacher.double().numpy() / temperature
    log_p = s - np.log(np.exp(s - s.max(1, keepdims=True)).sum(1, keepdims=True)) - s.max(1, keepdims=True)
    log_q = t - np.log(np.exp(t - t.max(1, keepdims=True)).sum(1, keepdims=True)) - t.max(1, keepdims=True)
    return scale * float((np.exp(log_q) * (log_q - log_p)).sum(1).mean())


def test_equals_the_kl_divergence_written_out():
    gen = torch.Generator().manual_seed(0)
    student, teacher = 4 * torch.randn(6, 10, generator=gen), 4 * torch.randn(6, 10, generator=gen)
    assert float(mesa_loss(student, teacher)) == pytest.approx(_kl_by_hand(student, teacher), rel=1e-5)
    assert float(mesa_loss(student, teacher, temperature=1.0, scale=1.0)) == pytest.approx(
        _kl_by_hand(student, teacher, 1.0, 1.0), rel=1e-5
    )


def test_zero_for_the_teacher_itself_and_blind_to_logit_shifts():
    logits = torch.randn(4, 7)
    assert float(mesa_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    shifted = logits + torch.arange(4.0)[:, None]  # softmax ignores a constant per row
    assert float(mesa_loss(shifted, logits)) == pytest.approx(0.0, abs=1e-5)
    assert float(mesa_loss(logits, torch.randn(4, 7))) > 0


def test_gradient_reaches_the_student_only():
    student = torch.randn(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5, requires_grad=True)
    mesa_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_float32_under_low_precision_logits():
    loss = mesa_loss(torch.randn(2, 4).bfloat16(), torch.randn(2, 4).bfloat16())
    assert loss.dtype == torch.float32


def test_shapes_must_agree():
    with pytest.raises(ValueError, match=r"same shape \(B, K\)"):
        mesa_loss(torch.randn(2, 4), torch.randn(2, 5))


def test_switches_on_after_the_start_ratio():
    # The release: epoch / epochs > ratio. A quarter of 310 epochs is 77.5: epoch 78 is first.
    assert next(e for e in range(310) if mesa_active(e, 310, 0.25)) == 78
    # 0.3 of 310 is exactly epoch 93, which is not past it.
    assert not mesa_active(93, 310, 0.3) and mesa_active(94, 310, 0.3)
    assert not any(mesa_active(e, 10, 1.0) for e in range(10))
    assert all(mesa_active(e, 10, -1.0) for e in range(10))
