"""LAMB against its update rule computed by hand, and the weight-decay parameter groups."""

import pytest
import torch
from torch import nn

import fastervit
from fastervit.train.optim import Lamb, param_groups_weight_decay

BETA1, BETA2, EPS = 0.9, 0.999, 1e-6


def lamb_reference(w, grads, lr, weight_decay):
    """LAMB (You et al. 2020, Algorithm 2) on one tensor, written out step by step."""
    w = w.clone()
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = BETA1 * m + (1 - BETA1) * g
        v = BETA2 * v + (1 - BETA2) * g * g
        m_hat = m / (1 - BETA1**t)
        v_hat = v / (1 - BETA2**t)
        u = m_hat / (v_hat.sqrt() + EPS) + weight_decay * w
        w_norm, u_norm = w.norm().item(), u.norm().item()
        trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        w = w - lr * trust * u
    return w


def test_lamb_matches_hand_computed_updates_over_three_steps():
    torch.manual_seed(0)
    weight0, bias0 = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    grads_w = [torch.randn(3, 4, dtype=torch.float64) for _ in range(3)]
    grads_b = [torch.randn(4, dtype=torch.float64) for _ in range(3)]
    weight, bias = nn.Parameter(weight0.clone()), nn.Parameter(bias0.clone())
    opt = Lamb(
        [{"params": [weight], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0}],
        lr=0.05,
        eps=EPS,
    )
    for gw, gb in zip(grads_w, grads_b):
        weight.grad, bias.grad = gw.clone(), gb.clone()
        opt.step()
    expected_w = lamb_reference(weight0, grads_w, 0.05, 0.1)
    expected_b = lamb_reference(bias0, grads_b, 0.05, 0.0)
    torch.testing.assert_close(weight.detach(), expected_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bias.detach(), expected_b, rtol=1e-12, atol=1e-12)
    assert not torch.equal(weight.detach(), weight0)


def test_trust_ratio_is_one_for_zero_weights():
    # ||w|| = 0: a freshly zeroed bias moves by the plain Adam step lr * m_hat / (sqrt(v_hat) + eps).
    p = nn.Parameter(torch.zeros(5))
    grad = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    p.grad = grad.clone()
    Lamb([p], lr=0.1, weight_decay=0.0).step()
    adam_step = grad / (grad.abs() + EPS)  # first step: m_hat = g, sqrt(v_hat) = |g|
    torch.testing.assert_close(p.detach(), -0.1 * adam_step)


def test_trust_ratio_is_one_for_zero_update():
    # Zero gradient and no weight decay: the update is 0, so the weights stay where they are.
    p = nn.Parameter(torch.tensor([1.0, 2.0]))
    p.grad = torch.zeros(2)
    Lamb([p], lr=0.1, weight_decay=0.0).step()
    assert torch.equal(p.detach(), torch.tensor([1.0, 2.0]))


def test_trust_ratio_makes_the_step_proportional_to_the_weight_norm():
    # Same gradient direction, weights 10x larger: the step is 10x larger too.
    steps = []
    for scale in (1.0, 10.0):
        w0 = torch.tensor([3.0, 4.0]) * scale
        p = nn.Parameter(w0.clone())
        p.grad = torch.tensor([0.3, -0.1])
        Lamb([p], lr=0.01).step()
        steps.append((p.detach() - w0).norm().item())
        assert steps[-1] == pytest.approx(0.01 * w0.norm().item(), rel=1e-5)  # lr * ||w||
    assert steps[1] == pytest.approx(10 * steps[0], rel=1e-5)


def test_weight_decay_is_added_to_the_update_not_to_the_gradient():
    # Zero gradient: moments stay 0 (decay never enters them), u = wd * w, trust = 1 / wd,
    # so the step is lr * w whatever wd is.
    for wd in (0.01, 0.5):
        p = nn.Parameter(torch.tensor([2.0, -1.0, 0.5]))
        p.grad = torch.zeros(3)
        opt = Lamb([p], lr=0.1, weight_decay=wd)
        opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor([2.0, -1.0, 0.5]) * 0.9)
        assert torch.count_nonzero(opt.state[p]["exp_avg"]) == 0
        assert torch.count_nonzero(opt.state[p]["exp_avg_sq"]) == 0


def test_lamb_rejects_bad_settings():
    p = [nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="lr >= 0"):
        Lamb(p, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        Lamb(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps > 0"):
        Lamb(p, eps=0.0)
    with pytest.raises(ValueError, match="weight_decay >= 0"):
        Lamb(p, weight_decay=-0.1)


def test_lamb_state_dict_round_trip_continues_identically():
    torch.manual_seed(2)
    p1 = nn.Parameter(torch.randn(3, 3))
    p2 = nn.Parameter(p1.detach().clone())
    o1, o2 = Lamb([p1], lr=0.1, weight_decay=0.05), Lamb([p2], lr=0.1, weight_decay=0.05)
    grads = [torch.randn(3, 3) for _ in range(3)]
    for g in grads[:2]:
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    o3 = Lamb([p2], lr=0.1, weight_decay=0.05)
    o3.load_state_dict(o2.state_dict())
    p1.grad, p2.grad = grads[2].clone(), grads[2].clone()
    o1.step()
    o3.step()
    assert torch.equal(p1, p2)


def test_param_groups_exclude_biases_norms_and_position_mlps():
    model = fastervit.FasterViT(
        dim=16,
        in_dim=8,
        depths=(1, 1, 1, 1),
        window_size=(7, 7, 7, 7),
        ct_size=2,
        mlp_ratio=2,
        num_heads=(1, 2, 2, 4),
        resolution=64,
        num_classes=5,
    )
    groups = param_groups_weight_decay(model, 0.05)
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    names = dict(model.named_parameters())
    assert len(decay) + len(no_decay) == len(names)
    cpb = [n for n in names if "cpb_mlp" in n and n.endswith("weight") and names[n].ndim == 2]
    assert cpb, "the model should have position-bias MLP weights"
    for name, param in names.items():
        expect_no_decay = param.ndim <= 1 or "cpb_mlp" in name or name.endswith(".bias")
        assert (id(param) in no_decay) == expect_no_decay, name
    assert id(model.head.weight) in decay


def test_param_groups_use_explicit_keywords_and_drop_empty_groups():
    model = nn.Sequential(nn.Linear(3, 4, bias=False))
    assert [g["weight_decay"] for g in param_groups_weight_decay(model, 0.1)] == [0.1]
    groups = param_groups_weight_decay(model, 0.1, skip_keywords=("0.weight",))
    assert [g["weight_decay"] for g in groups] == [0.0]
