"""The inference fast path (chapter 9): a FasterViT prepared for prediction only.

:func:`deploy` (or ``model.deploy()``) returns a :class:`DeployedModel`, an inference-only
copy of a trained model with every optimisation that keeps its predictions:

1. **BatchNorm folded** into the convolution before it: the model already does this itself
   in eval mode (:func:`fastervit.layers.conv.fold_batchnorm`); compiled, the folding is
   computed once.
2. **Position tables precomputed**: the position-bias and position-embedding MLPs depend
   only on their weights and the grid, so their outputs for the deployed resolution become
   constant buffers (other resolutions still work and compute them as before).
3. **bfloat16** autocast where the hardware computes it natively (a CPU with AVX-512 BF16
   or AMX, a CUDA GPU that supports it), float32 elsewhere; see :func:`native_bf16`.
   Autocast keeps the weights and the residual stream in float32 (so the state dict stays
   exact); compiled, the casts of the weights are computed once.
4. **torch.compile** (Inductor) with *freezing*: the weights become constants, so Inductor
   folds what depends only on them and prepacks them for oneDNN; on CUDA at batch 1, where
   kernel launches dominate, CUDA graphs as well (``mode="reduce-overhead"``).
5. **channels_last** for the input and the convolution weights only where it helps: on
   CUDA (tensor-core convolutions want NHWC). On the CPU the model already lays its input
   out channels-last for the conv stages, and Inductor picks its own layouts.

Each step is a field of :class:`DeployOptions`, so that each can be measured alone
(:func:`ablation_options`).

The state dict keeps the checkpoint format: the precomputed tables are non-persistent
buffers derived from the weights, so ``deployed.state_dict()`` loads into a fresh model and
``deployed.load_state_dict(sd)`` accepts any checkpoint of the model, recomputing the tables
and discarding compiled code. The model passed in is left unchanged (the deployed model is a
copy) and stays trainable; ``DeployedModel.train()`` raises.
"""

import copy
import inspect
import logging
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from fastervit.layers.position import ContinuousPositionBias, PositionEmbeddingMLP, grid_coordinates
from fastervit.layers.windows import Grid

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class DeployOptions:
    """What :func:`deploy` applies; the defaults apply everything that helps on the device.

    Args:
        precompute_positions: keep the position tables of the deployed resolution as constants.
        precision: ``"auto"`` (bf16 where native, see :func:`native_bf16`), ``"bf16"``, ``"fp32"``.
        compile: ``torch.compile`` with Inductor's freezing.
        channels_last: ``"auto"`` (on CUDA only), True or False.
    """

    precompute_positions: bool = True
    precision: str = "auto"
    compile: bool = True
    channels_last: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.channels_last not in (True, False, "auto"):
            raise ValueError(f"channels_last must be True, False or 'auto', got {self.channels_last!r}")


# Everything off: the model as trained, in float32 eager mode (the baseline of every ratio).
EAGER = DeployOptions(precompute_positions=False, precision="fp32", compile=False, channels_last=False)


def ablation_options() -> dict[str, DeployOptions]:
    """The baseline, each optimisation alone, and all of them (``deploy``), by name."""
    return {
        "eager fp32": EAGER,
        "precomputed positions": replace(EAGER, precompute_positions=True),
        "bf16": replace(EAGER, precision="bf16"),
        "channels_last": replace(EAGER, channels_last=True),
        "compile": replace(EAGER, compile=True),
        "deploy": DeployOptions(),
    }


def native_bf16(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` computes bfloat16 products natively, and the evidence.

    CPU: the AVX-512 BF16 or AMX-BF16 instructions (oneDNN uses them); without them
    bfloat16 is emulated and slower than float32. ARM CPUs: the BF16 extension. CUDA:
    ``torch.cuda.is_bf16_supported()`` (compute capability 8.0 or later).
    """
    device = torch.device(device)
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        return supported, f"torch.cuda.is_bf16_supported() is {supported}"
    flags = cpu_flags()
    found = [f for f in ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16") if flags.get(f)]
    if found:
        return True, f"the CPU has {', '.join(found)}"
    return False, "the CPU has no native bf16 instructions (avx512_bf16, amx_bf16)"


def cpu_flags() -> dict[str, bool]:
    """The CPU's instruction-set extensions as torch detects them (``torch.cpu.get_capabilities``,
    torch 2.10 and later), else as Linux lists them in ``/proc/cpuinfo``, else none."""
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        return {k: v for k, v in get_capabilities().items() if isinstance(v, bool)}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return dict.fromkeys(line.split(":", 1)[1].split(), True)
    except OSError:
        pass
    return {}


# --------------------------------------------------------------------------------------
# Precomputed position tables
# --------------------------------------------------------------------------------------


class FixedPositionBias(ContinuousPositionBias):
    """A :class:`~fastervit.layers.ContinuousPositionBias` whose bias for one
    ``(grid, num_carrier)`` is a constant buffer; other grids are computed as before."""

    def __init__(self, source: ContinuousPositionBias, key: tuple[Grid, int]) -> None:
        super().__init__(source.grid, source.num_heads, source.num_carrier)
        self.load_state_dict(source.state_dict())
        self.to(source.relative_coords_table.device)
        self.key = key
        self.register_buffer("fixed", None, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.refresh())
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        self.fixed = self._compute(*self.key)

    def forward(self, grid: Grid, num_carrier: int = 0) -> torch.Tensor:
        if (grid, num_carrier) == self.key:
            return self.fixed
        return super().forward(grid, num_carrier)


class FixedPositionEmbedding(PositionEmbeddingMLP):
    """A :class:`~fastervit.layers.PositionEmbeddingMLP` whose embedding for one grid is a
    constant buffer; other grids are computed as before."""

    def __init__(self, source: PositionEmbeddingMLP, grid: Grid) -> None:
        super().__init__(source.dim, source.grid)
        self.load_state_dict(source.state_dict())
        self.to(source.relative_bias.device)
        self.key = grid
        self.register_buffer("fixed", None, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.refresh())
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        weight = self.cpb_mlp[0].weight
        self.fixed = self.cpb_mlp(grid_coordinates(self.key, weight.dtype, weight.device))

    def embedding(self, grid: Grid) -> torch.Tensor:
        if grid == self.key:
            return self.fixed
        return super().embedding(grid)


def _position_calls(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, dict[str, Any]]:
    """The arguments, by name, each position module is called with on ``example``."""
    calls: dict[nn.Module, dict[str, Any]] = {}

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        calls.setdefault(module, dict(bound.arguments))

    handles = [
        m.register_forward_pre_hook(record, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, (ContinuousPositionBias, PositionEmbeddingMLP))
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls


# --------------------------------------------------------------------------------------
# The deployed model
# --------------------------------------------------------------------------------------


class DeployedModel(nn.Module):
    """An inference-only FasterViT: see :mod:`fastervit.deploy`. Built by :func:`deploy`.

    ``forward`` runs under :func:`torch.inference_mode` and returns float32 outputs
    whatever the precision inside. ``state_dict`` and ``load_state_dict`` use the original
    model's checkpoint format (``load_state_dict`` recomputes the position tables and
    discards compiled code, which holds the old weights as constants).

    Attributes:
        options: the :class:`DeployOptions` asked for.
        applied: what was applied, with the reason for each automatic choice.

    Shapes: ``(B, in_chans, H, W) -> (B, num_classes)`` (the wrapped model's ``forward``).
    """

    def __init__(self, model: nn.Module, options: DeployOptions, applied: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.options = options
        self.applied = applied
        self.autocast_dtype = torch.bfloat16 if applied["precision"] == "bf16" else None
        self.memory_format = torch.channels_last if applied["channels_last"] else torch.contiguous_format
        self._compile_kwargs: dict[str, Any] | None = applied.get("compile_kwargs")
        self.register_load_state_dict_post_hook(lambda module, _: module._recompile())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            if self.applied.get("cuda_graphs"):
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(x.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
                out = self.model(x)
            if out.dtype != torch.float32:
                return out.float()
            # CUDA graphs reuse their output memory: a caller keeping outputs needs a copy.
            return out.clone() if self.applied.get("cuda_graphs") else out

    def train(self, mode: bool = True) -> "DeployedModel":
        if mode:
            raise RuntimeError(
                "a deployed model is for inference only (position tables are constants, weights may be "
                "compiled in as constants, autograd is off): train the original model, which deploy() "
                "leaves unchanged, and deploy it again"
            )
        return super().train(False)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The wrapped model's state dict, in the checkpoint format (no ``model.`` prefix)."""
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint of the original model; position tables and compiled code follow."""
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)

    def _recompile(self) -> None:
        if self._compile_kwargs is not None:
            # Frozen weights are constants of the compiled code: compile again from the new ones.
            log.info("new weights: discarding compiled code (torch.compiler.reset)")
            torch.compiler.reset()
            self.model.compile(**self._compile_kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.applied.items() if k != "compile_kwargs")


def _compile_kwargs(device: torch.device, batch_size: int | None) -> tuple[dict[str, Any], bool]:
    """``torch.compile`` arguments: Inductor's freezing always; on CUDA at batch 1, where
    kernel launches dominate, CUDA graphs (``mode="reduce-overhead"``). Returns the
    arguments and whether CUDA graphs are used."""
    cuda_graphs = device.type == "cuda" and batch_size == 1
    kwargs: dict[str, Any] = {"options": {"freezing": True}}
    if cuda_graphs:
        kwargs["mode"] = "reduce-overhead"
    return kwargs, cuda_graphs


def deploy(
    model: nn.Module,
    options: DeployOptions | None = None,
    resolution: Grid | None = None,
    batch_size: int | None = None,
    **overrides: Any,
) -> DeployedModel:
    """An inference-only copy of ``model`` with the optimisations of ``options``.

    Args:
        model: a FasterViT (or any module built from the package's layers), on the device
            it will run on; it is copied, not changed.
        options: what to apply (default: :class:`DeployOptions`, everything that helps).
        resolution: the input size ``(H, W)`` whose position tables are precomputed
            (default: the model's build resolution). Other sizes still work.
        batch_size: the batch the model will mostly run at, if known: on CUDA, batch 1 uses
            CUDA graphs.
        **overrides: fields of :class:`DeployOptions`, e.g. ``compile=False``.

    Returns:
        A :class:`DeployedModel`; its ``applied`` attribute says what was done and why.
        Compilation happens on the first call.
    """
    options = replace(options or DeployOptions(), **overrides)
    device = next(model.parameters()).device
    model = copy.deepcopy(model).eval().requires_grad_(False)
    applied: dict[str, Any] = {}

    if options.precompute_positions:
        height, width = resolution or getattr(model, "resolution", (224, 224))
        example = torch.zeros(1, getattr(model, "in_chans", 3), height, width, device=device)
        calls = _position_calls(model, example)

        def fixed(m: nn.Module) -> nn.Module | None:
            if m not in calls:
                return None
            if isinstance(m, ContinuousPositionBias):
                return FixedPositionBias(m, (calls[m]["grid"], calls[m]["num_carrier"]))
            return FixedPositionEmbedding(m, calls[m]["grid"])

        replaced = 0
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                new = fixed(child)
                if new is not None:
                    setattr(parent, name, new)
                    replaced += 1
        applied["precomputed_positions"] = replaced

    channels_last = options.channels_last
    if channels_last == "auto":
        channels_last = device.type == "cuda"
    applied["channels_last"] = bool(channels_last)

    if channels_last:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)

    precision = options.precision
    native, why = native_bf16(device)
    if precision == "auto":
        precision = "bf16" if native else "fp32"
    applied["precision"] = precision
    applied["bf16_native"] = native
    applied["bf16_reason"] = why
    if precision == "bf16" and not native:
        log.warning("bf16 asked for, but %s: it will likely be slower than float32", why)

    applied["compile"] = options.compile
    if options.compile:
        kwargs, cuda_graphs = _compile_kwargs(device, batch_size)
        model.compile(**kwargs)
        applied["compile_kwargs"] = kwargs
        applied["cuda_graphs"] = cuda_graphs
    return DeployedModel(model, options, applied)
