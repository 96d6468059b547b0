"""Soft targets: label smoothing; mixup and cutmix targets are distributions, lambda matches what
was mixed, determinism."""

import pytest
import torch

from fastervit.data.mixup import Mixup, cutmix_box, smooth_one_hot

B, C, H, W, K = 6, 3, 16, 20, 5


def _batch():
    torch.manual_seed(0)
    return torch.rand(B, C, H, W), torch.randint(0, K, (B,))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_smooth_one_hot_values():
    targets = smooth_one_hot(torch.tensor([2, 0]), 4, smoothing=0.2)
    expected = torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]])
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.sum(1), torch.ones(2))


def test_smooth_one_hot_refuses_smoothing_of_one():
    with pytest.raises(ValueError, match="smoothing in"):
        smooth_one_hot(torch.tensor([0]), 3, smoothing=1.0)


def test_targets_are_distributions_with_the_right_mass():
    images, labels = _batch()
    for seed in range(20):
        mix = Mixup(K, mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1)
        _, targets = mix(images, labels, _gen(seed))
        assert targets.shape == (B, K)
        torch.testing.assert_close(targets.sum(1), torch.ones(B))
        assert (targets >= 0.1 / K - 1e-6).all()  # smoothing keeps every class above eps / K


def test_mixup_blends_each_image_with_the_reversed_batch():
    images, labels = _batch()
    mixed, targets = Mixup(K, mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0)(images, labels, _gen(3))
    # Recover lambda from the targets of a sample whose partner has another label.
    i = next(i for i in range(B) if labels[i] != labels.flip(0)[i])
    lam = targets[i, labels[i]].item()
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.flip(0))


def test_cutmix_lambda_equals_the_area_kept():
    images, labels = _batch()
    partner = images.flip(0)
    i = next(i for i in range(B) if labels[i] != labels.flip(0)[i])  # a pair with two labels
    kept_areas = set()
    for seed in range(10):
        mixed, targets = Mixup(K, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)(
            images, labels, _gen(seed)
        )
        from_partner = (mixed == partner) & (mixed != images)  # (B, C, H, W); rand values never tie
        pasted = from_partner[i, 0]
        area_kept = 1.0 - pasted.float().mean().item()
        assert targets[i, labels[i]].item() == pytest.approx(area_kept, abs=1e-6)
        kept_areas.add(round(area_kept, 6))
        # the pasted region is one rectangle, the same for every sample and channel
        rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
        if len(rows):
            assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert (from_partner == pasted).all()
    assert len(kept_areas) > 1


def test_cutmix_box_is_inside_and_about_the_asked_area():
    gen = _gen(0)
    for lam in (0.2, 0.5, 0.9):
        for _ in range(20):
            top, bottom, left, right = cutmix_box(100, 80, lam, gen)
            assert 0 <= top <= bottom <= 100 and 0 <= left <= right <= 80
            assert (bottom - top) * (right - left) <= (1 - lam) * 100 * 80


def test_prob_zero_only_smooths():
    images, labels = _batch()
    mixed, targets = Mixup(K, prob=0.0, label_smoothing=0.1)(images, labels, _gen(0))
    assert torch.equal(mixed, images)
    assert torch.equal(targets.argmax(1), labels)


def test_same_generator_seed_same_result_different_seed_different():
    images, labels = _batch()
    mix = Mixup(K, mixup_alpha=0.8, cutmix_alpha=1.0)
    a, ta = mix(images, labels, _gen(7))
    b, tb = mix(images, labels, _gen(7))
    assert torch.equal(a, b) and torch.equal(ta, tb)
    results = {tuple(mix(images, labels, _gen(s))[1][0].tolist()) for s in range(8)}
    assert len(results) > 1


def test_switch_prob_chooses_between_mixup_and_cutmix():
    images, labels = _batch()
    for switch_prob in (0.0, 1.0):
        mixed, _ = Mixup(K, 0.8, 1.0, switch_prob=switch_prob)(images, labels, _gen(1))
        pixels_from_either = ((mixed == images) | (mixed == images.flip(0))).float().mean().item()
        assert pixels_from_either == (1.0 if switch_prob == 1.0 else pytest.approx(0.0, abs=0.05))


def test_rejects_nothing_to_mix():
    with pytest.raises(ValueError, match="nothing would be mixed"):
        Mixup(K, mixup_alpha=0.0, cutmix_alpha=0.0)
