"""Soft targets: label smoothing, and Mixup and CutMix on a batch (chapter 10).

* Label smoothing (Szegedy et al., 2016) moves ``smoothing`` of the probability mass from
  the true class to all classes evenly (:func:`smooth_one_hot`).
* Mixup (Zhang et al., 2018) blends every image with another one of the batch:
  ``x = lam x + (1 - lam) x'``.
* CutMix (Yun et al., 2019) pastes a box of the other image into this one; the box covers
  about ``1 - lam`` of the image, and ``lam`` is then corrected to the exact area kept.

The partner of sample ``i`` is sample ``B - 1 - i`` (the batch reversed), and one ``lam`` is
drawn per batch from ``Beta(alpha, alpha)``. Targets blend the two label distributions with
the same ``lam``. All randomness comes from the ``torch.Generator`` passed in, so a batch is
mixed the same way every time it is replayed with an equally seeded generator.
"""

from dataclasses import dataclass

import numpy as np
import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Target distributions with label smoothing.

    Each row puts ``1 - smoothing + smoothing / K`` on the label and ``smoothing / K`` on
    every other class (``K = num_classes``), so rows sum to 1.

    Shapes: ``labels (B,)`` integer -> ``(B, K)`` float32.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smooth_one_hot: expected smoothing in [0, 1), got {smoothing}.")
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().unsqueeze(1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box covering about ``1 - lam`` of an image, centred uniformly, clipped to the image.

    Returns ``(top, bottom, left, right)``, half-open rows ``[top, bottom)`` and columns
    ``[left, right)``; the clipped box may be smaller than asked near the borders.
    """
    ratio = float(np.sqrt(1.0 - lam))
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


@dataclass
class Mixup:
    """Batch-wise mixup / cutmix producing soft targets.

    Args:
        num_classes: number of classes ``K`` of the targets.
        mixup_alpha: Beta parameter for mixup; 0 disables mixup.
        cutmix_alpha: Beta parameter for cutmix; 0 disables cutmix.
        prob: probability of mixing a batch at all (otherwise only label smoothing).
        switch_prob: when both are enabled, probability of cutmix instead of mixup.
        label_smoothing: smoothing applied to both label distributions before blending.
    """

    num_classes: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                f"Mixup: expected alphas >= 0, got mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha}."
            )
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError(
                "Mixup: both mixup_alpha and cutmix_alpha are 0, so nothing would be mixed; "
                "enable one of them or use smooth_one_hot for plain label smoothing."
            )
        if not (0.0 <= self.prob <= 1.0 and 0.0 <= self.switch_prob <= 1.0):
            raise ValueError(
                f"Mixup: expected prob and switch_prob in [0, 1], got {self.prob} and {self.switch_prob}."
            )

    def _draw(self, generator: torch.Generator) -> tuple[float, bool]:
        """Draw ``(lam, use_cutmix)`` for one batch; ``lam = 1`` means no mixing."""
        if float(torch.rand((), generator=generator)) >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = float(torch.rand((), generator=generator)) < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        beta_rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        return float(beta_rng.beta(alpha, alpha)), use_cutmix

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a batch.

        Shapes: ``images (B, C, H, W)``, ``labels (B,)`` integer ->
        ``(B, C, H, W)`` mixed images, ``(B, K)`` targets whose rows sum to 1.
        """
        lam, use_cutmix = self._draw(generator)
        partner = images.flip(0)
        if lam == 1.0:
            mixed = images
        elif use_cutmix:
            height, width = images.shape[-2:]
            top, bottom, left, right = cutmix_box(height, width, lam, generator)
            mixed = images.clone()
            mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        else:
            mixed = images * lam + partner * (1.0 - lam)
        own = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        targets = own * lam + own.flip(0) * (1.0 - lam)
        return mixed, targets
