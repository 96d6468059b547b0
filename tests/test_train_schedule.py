"""Warmup (from warmup_lr) + cosine + cooldown: the values at the landmarks, the phases in
steps, and the scheduler object that applies them."""

import itertools
import math

import pytest
import torch
from torch import nn

from fastervit.train.schedule import ScheduleSteps, WarmupCosineLR, warmup_cosine_lr

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
    with pytest.raises(ValueError, match="cosine_steps > warmup_steps"):
        WarmupCosineLR(_optimizer(), 10, 10)


def test_warmup_starts_from_warmup_lr():
    warmup_lr = 1e-4
    lr = lambda step: warmup_cosine_lr(step, BASE, WARMUP, TOTAL, MIN, warmup_lr)
    increment = (BASE - warmup_lr) / WARMUP
    assert lr(0) == pytest.approx(warmup_lr + increment)
    assert all(lr(s + 1) - lr(s) == pytest.approx(increment) for s in range(WARMUP - 1))
    assert lr(WARMUP - 1) == pytest.approx(BASE)
    assert lr(WARMUP + 50) == pytest.approx((BASE + MIN) / 2)  # the cosine is unchanged


def test_warmup_matches_timm_as_the_release_steps_it():
    # timm's warmup: warmup_lr + t (base - warmup_lr) / W at update t; the release advances the
    # scheduler to t = step + 1 before each step, so step k trains at t = k + 1.
    warmup_lr, base, warmup = 1e-6, 5e-3, 6260
    for k in (0, 1, 100, 3000, warmup - 2):
        timm = warmup_lr + (k + 1) * (base - warmup_lr) / warmup
        assert warmup_cosine_lr(k, base, warmup, 97030, 5e-6, warmup_lr) == pytest.approx(timm, rel=1e-12)


def test_schedule_steps_of_the_release():
    # 1,281,167 images in global batches of 4096: 312 steps per epoch (the release drops the rest).
    steps = ScheduleSteps.from_epochs(312, epochs=310, warmup_epochs=20, cooldown_epochs=10)
    assert steps == ScheduleSteps(warmup=20 * 312, cosine=310 * 312, total=320 * 312)
    assert ScheduleSteps.from_epochs(10, epochs=3, warmup_epochs=0.25).warmup == 2  # rounded (2.5 -> 2)


def test_cooldown_stays_at_min_lr():
    steps = ScheduleSteps.from_epochs(10, epochs=11, warmup_epochs=1, cooldown_epochs=3)
    opt = _optimizer()
    sched = WarmupCosineLR(opt, steps.warmup, steps.cosine, MIN, warmup_lr=1e-5)
    seen = []
    for _ in range(steps.total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1e-5 + (BASE - 1e-5) / 10)
    assert seen[steps.cosine - 1] == pytest.approx(MIN)  # the cosine ends on the last epoch
    assert seen[steps.cosine - 2] > MIN
    assert seen[steps.cosine :] == pytest.approx([MIN] * 30)  # three cooldown epochs


@pytest.mark.parametrize(
    "args,message",
    [
        ((10, 5, 5), "must be shorter than the cosine"),
        ((0, 5, 1), "steps_per_epoch >= 1"),
        ((10, 5, 1, -1), "cooldown_epochs >= 0"),
    ],
)
def test_schedule_steps_refuse_impossible_phases(args, message):
    with pytest.raises(ValueError, match=message):
        ScheduleSteps.from_epochs(*args)


def test_rejects_negative_warmup_lr():
    with pytest.raises(ValueError, match="warmup_lr >= 0"):
        WarmupCosineLR(_optimizer(), 2, 10, warmup_lr=-1.0)
