"""EMA: the decay warmup, the update rule, copied buffers, and resuming."""

import pytest
import torch
from torch import nn

from fastervit.train.ema import ModelEma


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_decay_warms_up_then_caps():
    ema = ModelEma(_model(), decay=0.99)
    expected = [min(0.99, (1 + n) / (10 + n)) for n in range(1000)]
    seen = []
    model = _model()
    for _ in range(1000):
        seen.append(ema.current_decay())
        ema.update(model)
    assert seen == pytest.approx(expected)
    assert seen[0] == pytest.approx(0.1) and seen[-1] == 0.99


def test_update_moves_parameters_and_copies_buffers():
    model = _model()
    ema = ModelEma(model, decay=0.5)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()
    model(torch.randn(8, 3))  # changes BatchNorm's running statistics
    d = ema.current_decay()
    ema.update(model)
    live = model.state_dict()
    for name, _ in model.named_parameters():
        torch.testing.assert_close(ema.module.state_dict()[name], d * before[name] + (1 - d) * live[name])
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(ema.module.state_dict()[name], live[name])


def test_ema_copy_is_frozen_and_in_eval_mode():
    model = _model()
    ema = ModelEma(model)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert ema.module[0].weight is not model[0].weight


def test_state_dict_round_trip():
    model = _model()
    ema = ModelEma(model, decay=0.9)
    for _ in range(5):
        with torch.no_grad():
            model[0].weight.mul_(1.1)
        ema.update(model)
    restored = ModelEma(_model(), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == 5
    for a, b in zip(restored.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    model[0].weight.data.mul_(2)
    ema.update(model), restored.update(model)
    assert torch.equal(ema.module[0].weight, restored.module[0].weight)


def test_rejects_decay_of_one():
    with pytest.raises(ValueError, match=r"decay in \[0, 1\)"):
        ModelEma(_model(), decay=1.0)
