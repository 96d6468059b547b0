"""Counting FLOPs and parameters (chapter 8): fvcore's count of a traced forward, and the report.

Conventions, the same as fvcore's, the FasterViT paper's and :mod:`fastervit.analysis.formulas`'
(which lists what each operator costs):

* one multiply-add is one "MAC"; fvcore calls it one flop. ``gmacs`` is that count / 1e9;
  ``gflops = 2 * gmacs`` counts the multiply and the add separately, as PyTorch's
  ``FlopCounterMode`` does;
* the position MLPs (``cpb_mlp``: the position embeddings and the continuous relative
  position biases) depend only on the weights and the grid. The released code recomputes
  them in every forward and its published counts include them; our model does too, except
  in inference (eval mode under ``torch.no_grad``/``inference_mode``), where it caches them.
  ``gmacs`` counts them once per forward (the uncached cost, comparable with the official
  numbers), ``gmacs_cached_bias`` leaves them out (what a cached inference forward costs).

Two counters agree to the MAC: :func:`count_flops` traces a forward with fvcore, adding a
handle for ``aten::scaled_dot_product_attention`` (fvcore counts nothing for it), and
:func:`analytic_report` sums the closed formulas of :func:`~fastervit.analysis.formulas.analytic_terms`.
"""

import logging
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastervit.analysis.formulas import COMPONENTS, analytic_terms, check_counted_input, resolve_kwargs
from fastervit.layers.position import ContinuousPositionBias, relative_coords_table, relative_position_index
from fastervit.layers.windows import as_grid
from fastervit.model import FasterViT
from fastervit.variants import create_model

STAGES = ("patch_embed", "levels.0", "levels.1", "levels.2", "levels.3", "head")
CONVENTION = "1 MAC = 1 multiply-add = fvcore 'flop' = 2 FlopCounterMode FLOPs; gflops = 2 * gmacs"


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``.

    q ``(..., N_q, d)``, k ``(..., N_k, d)``, v ``(..., N_k, d_v)``: ``q k^T`` costs
    ``N_q N_k d`` MACs per batch-head and ``attn @ v`` ``N_q N_k d_v``, as an explicit
    ``matmul`` pair would be counted. The scale, mask, softmax and dropout are element-wise.
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(value) for value in inputs[:3])
    batch_heads = math.prod(q[:-2])
    return batch_heads * q[-2] * k[-2] * (q[-1] + v[-1])


def _component(name: str) -> str:
    """The component an fvcore module scope belongs to (the innermost module owning the op)."""
    if name.startswith("patch_embed"):
        return "stem"
    if name in ("norm", "avgpool", "head"):
        return "head"
    if "cpb_mlp" in name:
        return "position_mlps"
    if ".downsample" in name:
        return "downsample"
    if ".global_tokenizer" in name or ".hat_" in name:
        return "carrier_tokens"
    if name.startswith(("levels.0.", "levels.1.")):
        return "conv_blocks"
    if ".attn" in name:
        return "window_attention"
    if ".mlp" in name:
        return "mlp"
    if name.endswith((".norm1", ".norm2")):
        return "norms"
    if ".blocks." in name:  # ops of a HAT block itself: the propagation's upsampling
        return "carrier_tokens"
    return "other"


def _stage(name: str) -> str:
    if name.startswith("levels."):
        return ".".join(name.split(".")[:2])
    return "head" if name in ("norm", "avgpool", "head") else name.split(".")[0]


def _exclusive_counts(counts: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """Per module scope, the MACs of the ops it runs itself (not those of its submodules)."""
    totals = {name: sum(ops.values()) for name, ops in counts.items()}
    exclusive = dict(totals)
    for name, total in totals.items():
        if not name:
            continue
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        while parent not in totals:  # skip levels of the hierarchy fvcore has no scope for
            parent = parent.rsplit(".", 1)[0] if "." in parent else ""
        exclusive[parent] -= total
    return exclusive


@dataclass(frozen=True)
class FlopReport:
    """MACs and parameters of one model at one input size (batch 1 unless stated).

    ``macs`` counts the position MLPs (uncached forward); ``position_mlp_macs`` is their
    share, so ``macs - position_mlp_macs`` is the cost of a cached inference forward.
    """

    model: str
    resolution: tuple[int, int]
    params: int
    macs: int
    position_mlp_macs: int
    by_stage: dict[str, int]
    by_component: dict[str, int]
    by_operator: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)  # fvcore: every module, with its submodules
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    batch_size: int = 1
    method: str = "fvcore"

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return 2 * self.gmacs

    @property
    def gmacs_cached_bias(self) -> float:
        return (self.macs - self.position_mlp_macs) / 1e9

    def record(self) -> dict[str, Any]:
        """The JSON record of the ``flops`` command."""
        return {
            "model": self.model,
            "resolution": list(self.resolution),
            "batch_size": self.batch_size,
            "params": self.params,
            "params_m": round(self.params / 1e6, 3),
            "gmacs": round(self.gmacs, 6),
            "gflops": round(self.gflops, 6),
            "gmacs_cached_bias": round(self.gmacs_cached_bias, 6),
            "method": self.method,
            "convention": CONVENTION,
            "gmacs_by_stage": {k: round(v / 1e9, 6) for k, v in self.by_stage.items()},
            "gmacs_by_component": {k: round(v / 1e9, 6) for k, v in self.by_component.items()},
        }


def build_for_counting(name: str, **overrides: Any) -> FasterViT:
    """A registered model with placeholder weights, built fast enough for the largest variants.

    The model is constructed on the meta device (no initialisation), then given zeroed CPU
    storage; the grid buffers that the position bias gathers with are recomputed. Counts do
    not depend on weight values, so this gives the same counts as ``create_model(name)``
    (FasterViT-6 builds in a second instead of half a minute).
    """
    with torch.device("meta"):
        model = create_model(name, **overrides)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.zero_()
        for module in model.modules():
            if isinstance(module, ContinuousPositionBias):
                module.relative_coords_table.copy_(relative_coords_table(module.grid))
                module.relative_position_index.copy_(relative_position_index(module.grid))
            elif isinstance(module, nn.BatchNorm2d):
                module.running_var.fill_(1.0)
    return model.requires_grad_(False).eval()


def flop_analysis(model: nn.Module, inputs: torch.Tensor) -> Any:
    """An fvcore ``FlopCountAnalysis`` of ``model(inputs)`` with our handles and quiet warnings.

    The trace runs here, in eval mode with autograd enabled, so that the position MLPs run
    (are not served from the inference cache) and are counted, as in a training forward
    and in the released code. Parameters that do not require gradients keep the trace light.
    """
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError as error:
        raise ImportError(
            'counting with fvcore needs it: pip install "fastervit-book[analysis]" (or use the '
            "closed formulas: analytic_report, flops --method analytic)"
        ) from error

    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    was_training = model.training
    model.eval()
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analysis.total()  # trace now, while autograd is on
    finally:
        logger.setLevel(level)
        model.train(was_training)
    return analysis


def count_flops(
    model: str | nn.Module,
    resolution: int | Sequence[int] | None = None,
    batch_size: int = 1,
    overrides: Mapping[str, Any] | None = None,
) -> FlopReport:
    """Count MACs (fvcore) and parameters of a model name or a FasterViT instance.

    Args:
        model: a registered name (built with :func:`build_for_counting`) or a module.
        resolution: input ``H, W`` (an int for square); default the model's own resolution.
        batch_size: images per forward; the position MLPs run once per forward, whatever it is.
        overrides: constructor overrides for a registered name.
    """
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        model = build_for_counting(model, **(overrides or {}))
    elif overrides:
        raise TypeError(f"constructor overrides {sorted(overrides)} apply to a registered name, not a module")
    size = as_grid(resolution if resolution is not None else getattr(model, "resolution", 224))
    check_counted_input(size, batch_size)
    in_chans = getattr(model, "in_chans", 3)
    inputs = torch.zeros(batch_size, in_chans, *size)
    if isinstance(model, FasterViT):
        model.check_input(inputs)  # before tracing, whose errors are harder to read
    analysis = flop_analysis(model, inputs)
    counts = analysis.by_module_and_operator()
    exclusive = _exclusive_counts(counts)
    by_stage: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    for scope, macs in exclusive.items():
        if macs and scope:
            by_stage[_stage(scope)] += macs
            by_component[_component(scope)] += macs
    if exclusive.get("", 0):
        by_component["other"] += exclusive[""]
    position = sum(sum(ops.values()) for scope, ops in counts.items() if scope.endswith("cpb_mlp"))
    return FlopReport(
        model=name,
        resolution=size,
        params=sum(p.numel() for p in model.parameters()),
        macs=int(analysis.total()),
        position_mlp_macs=int(position),
        by_stage={s: by_stage[s] for s in STAGES if by_stage[s]},
        by_component={c: by_component[c] for c in (*COMPONENTS, "other") if by_component[c]},
        by_operator=dict(analysis.by_operator()),
        by_module=dict(analysis.by_module()),
        unsupported_ops=dict(analysis.unsupported_ops()),
        batch_size=batch_size,
        method="fvcore",
    )


def analytic_report(
    model: str | Mapping[str, Any],
    resolution: int | Sequence[int] | None = None,
    batch_size: int = 1,
    params: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> FlopReport:
    """:func:`~fastervit.analysis.formulas.analytic_terms` summed into a :class:`FlopReport`.

    ``overrides`` update the constructor arguments of ``model``; ``params`` is reported as
    given (0 when not: the formulas count operations only).
    """
    kw = {**resolve_kwargs(model), **(overrides or {})}
    terms = analytic_terms(kw, resolution, batch_size)
    size = as_grid(resolution if resolution is not None else kw.get("resolution", 224))
    by_stage: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    for t in terms:
        by_stage[t.stage] += t.macs
        by_component[t.component] += t.macs
    return FlopReport(
        model=model if isinstance(model, str) else "FasterViT",
        resolution=size,
        params=params or 0,
        macs=sum(t.macs for t in terms),
        position_mlp_macs=by_component["position_mlps"],
        by_stage={s: by_stage[s] for s in STAGES if by_stage[s]},
        by_component={c: by_component[c] for c in COMPONENTS if by_component[c]},
        batch_size=batch_size,
        method="analytic",
    )


def count_params(name: str, **overrides: Any) -> int:
    """Parameters of a registered model (a shared module counted once), built on the meta device."""
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters())
