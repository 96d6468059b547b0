"""Warmup + cosine: the values at the landmarks, and the scheduler object that applies them."""

import itertools
import math

import pytest
import torch
from torch import nn

from fastervit.train.schedule import WarmupCosineLR, warmup_cosine_lr

BASE, MIN, WARMUP, TOTAL = 0.1, 0.001, 10, 111  # 100 steps of decay after the first


def test_landmark_values():
    lr = lambda step: warmup_cosine_lr(step, BASE, WARMUP, TOTAL, MIN)
    assert lr(0) == pytest.approx(BASE / WARMUP)  # first step: not zero
    assert lr(WARMUP // 2 - 1) == pytest.approx(BASE / 2)
    assert lr(WARMUP - 1) == pytest.approx(BASE)  # end of warmup
    assert lr(WARMUP) == pytest.approx(BASE)  # start of the cosine
    assert lr(WARMUP + 50) == pytest.approx((BASE + MIN) / 2)  # half way down the cosine
    assert lr(WARMUP + 25) == pytest.approx(MIN + (BASE - MIN) * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr(TOTAL - 1) == pytest.approx(MIN)  # last step
    assert lr(TOTAL + 50) == pytest.approx(MIN)  # past the end


def test_warmup_is_linear_and_decay_monotone():
    lrs = [warmup_cosine_lr(s, BASE, WARMUP, TOTAL, MIN) for s in range(TOTAL)]
    diffs = [b - a for a, b in itertools.pairwise(lrs[:WARMUP])]
    assert all(d == pytest.approx(BASE / WARMUP) for d in diffs)
    assert all(b <= a for a, b in itertools.pairwise(lrs[WARMUP:]))


def test_no_warmup_starts_at_base():
    assert warmup_cosine_lr(0, BASE, 0, TOTAL, MIN) == pytest.approx(BASE)


def _optimizer(lr=BASE):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_scheduler_sets_the_function_value_each_step():
    opt = _optimizer()
    sched = WarmupCosineLR(opt, WARMUP, TOTAL, MIN)
    seen = []
    for _ in range(TOTAL):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([warmup_cosine_lr(s, BASE, WARMUP, TOTAL, MIN) for s in range(TOTAL)])


def test_scheduler_groups_follow_their_own_base_lr():
    opt = torch.optim.SGD(
        [
            {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.2},
            {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.02},
        ]
    )
    sched = WarmupCosineLR(opt, 4, 20, 0.0)
    for _ in range(3):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.02])


def test_state_dict_resumes_at_the_same_step():
    opt = _optimizer()
    sched = WarmupCosineLR(opt, WARMUP, TOTAL, MIN)
    for _ in range(37):
        opt.step()
        sched.step()
    opt2 = _optimizer()
    sched2 = WarmupCosineLR(opt2, WARMUP, TOTAL, MIN)
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert opt.param_groups[0]["lr"] == pytest.approx(warmup_cosine_lr(38, BASE, WARMUP, TOTAL, MIN))


def test_rejects_warmup_as_long_as_training():
    with pytest.raises(ValueError, match="total_steps > warmup_steps"):
        WarmupCosineLR(_optimizer(), 10, 10)
