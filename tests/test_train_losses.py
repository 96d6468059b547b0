"""Soft-target and label-smoothed cross-entropy against PyTorch's own."""

import pytest
import torch
import torch.nn.functional as F

from fastervit.train.losses import label_smoothing_cross_entropy, soft_target_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.4])
def test_label_smoothing_matches_torch(smoothing):
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 7), torch.randint(0, 7, (16,))
    ours = label_smoothing_cross_entropy(logits, labels, smoothing)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, label_smoothing=smoothing))


def test_soft_target_matches_torch_probability_targets():
    torch.manual_seed(1)
    logits = torch.randn(5, 3)
    targets = torch.softmax(torch.randn(5, 3), dim=-1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_errors():
    with pytest.raises(ValueError, match="shaped like logits"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
