"""Deployment (chapter 12): ``torch.export``, ONNX and weight files, each checked against eager PyTorch.

* :func:`export_program` traces a model into an ``ExportedProgram`` (a graph of ATen
  operators with the weights, no Python left), with a dynamic batch dimension; it is saved
  as a ``.pt2`` file (:func:`save_program`) and runs again with ``torch.export.load``.
* :func:`export_onnx` writes an ONNX file with a dynamic batch dimension through PyTorch's
  dynamo-based exporter (needs the ``onnx`` and ``onnxscript`` packages: ``pip install
  "fastervit-book[export]"``); :func:`onnx_runner` runs it with ONNX Runtime.
* :func:`export_model` does one of the three, then compares the file's outputs with the eager
  model's on random batches of 1 and 3 images (a batch size other than the one traced). It
  reports ``verified`` only when every output agrees within a tolerance scaled to that
  output (:data:`RTOL` times its largest absolute value, plus :data:`ATOL`), and raises
  :class:`ExportMismatchError` otherwise, leaving no file (and an existing one unchanged).

The backbone is exported through :class:`BackboneFeatures`, which returns the four stage
maps of ``forward_intermediates`` as a tuple (exporters take tensors and tuples, not lists).

Files are written atomically: into a temporary folder beside the target, then renamed.
"""

import contextlib
import copy
import importlib.util
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastervit.checkpoint import atomic_path, atomic_save, load_checkpoint
from fastervit.layers.attention import attention_modules
from fastervit.model import FasterViT

FORMATS = ("export", "onnx", "weights")
Outputs = torch.Tensor | tuple[torch.Tensor, ...]
# Largest batch the exported graph promises to accept; the exporters need a bound.
MAX_BATCH = 4096
# Agreement an exported file must reach: every output within RTOL times its own largest
# absolute value, plus ATOL (for outputs that are all near zero). Scaling with the output
# makes one rule fit logits of size 1 and feature maps of size 100 alike; float32 exporters
# reorder sums and reach about 1e-6 relative, so 1e-4 leaves room without hiding real bugs.
RTOL = 1e-4
ATOL = 1e-6
# Float16 weights keep 11 significant bits (each value moves by at most 2**-11 of itself);
# logits then move by about 1e-3 of their scale, so half-precision files are held to 1e-2.
HALF_RTOL = 1e-2


def tolerance(rtol: float = RTOL) -> str:
    """The agreement rule, in words, for a relative tolerance ``rtol``."""
    return f"every output within {rtol:g} x its largest |value| + {ATOL:g} of eager PyTorch"


class ExportMismatchError(ValueError):
    """An exported file whose outputs disagree with the eager model beyond the tolerance."""


class BackboneFeatures(nn.Module):
    """A FasterViT's ``forward_intermediates`` as a module returning a tuple.

    Shapes: ``(B, in_chans, H, W) -> ((B, C_i, H/2**(i+2), W/2**(i+2)) for i in 0..3)``.
    """

    def __init__(self, model: FasterViT) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_intermediates(x, intermediates_only=True))


@contextlib.contextmanager
def explicit_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Run every attention of ``model`` as an explicit softmax product inside the block.

    Same numbers as the fused kernel (tests check it). The ONNX exporter of torch 2.13 fails
    to decompose ``scaled_dot_product_attention`` followed by the heads' reshape (the
    decomposed output's strides do not allow the view); the explicit product exports as
    plain MatMul and Softmax nodes.
    """
    attentions = attention_modules(model)
    saved = [m.fused for m in attentions]
    try:
        for m in attentions:
            m.fused = False
        yield model
    finally:
        for m, fused in zip(attentions, saved):
            m.fused = fused


def _batch_dynamic(example: torch.Tensor) -> tuple[dict[int, Any]]:
    if example.shape[0] < 2:
        raise ValueError(
            f"trace with an example batch of at least 2 images, got {example.shape[0]}: a batch "
            "of 1 would be specialised to 1 and the batch dimension could not stay dynamic"
        )
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """Trace ``model`` (in eval mode) on ``example`` ``(B >= 2, C, H, W)``; the batch stays dynamic.

    The height and width are fixed to the example's: they set the number of windows and
    carrier tokens, which the graph bakes in.
    """
    model.eval()
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=_batch_dynamic(example))


def save_program(program: torch.export.ExportedProgram, path: str | Path) -> Path:
    """Write ``program`` to ``path``, which must end in ``.pt2`` (torch.export's archive), atomically."""
    check_output_name("export", path)
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)
    return Path(path)


def load_program(path: str | Path) -> Callable[[torch.Tensor], Outputs]:
    """Load a ``.pt2`` file as a callable module."""
    return torch.export.load(path).module()


def _require(*packages: str) -> None:
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f'ONNX export needs the packages {", ".join(missing)}: pip install "fastervit-book[export]" '
            "(or pip install onnx onnxscript onnxruntime)"
        )


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int | None = None) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch, traced on ``example`` ``(B >= 2, C, H, W)``.

    Inputs are named ``images``; outputs ``output`` (one tensor) or ``output_0 ...``
    (a tuple). Weights above 2 GB (FasterViT-5 and -6) go to ``<path>.data`` beside the file,
    as ONNX's protobuf limit requires.
    """
    _require("onnx", "onnxscript")
    model.eval()
    with torch.no_grad():
        outputs = model(example)
    names = ["output"] if isinstance(outputs, torch.Tensor) else [f"output_{i}" for i in range(len(outputs))]
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > 1.8 * 2**30
    dynamic = _batch_dynamic(example)
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    try:
        onnx_logger.setLevel(logging.ERROR)  # "torchvision is not installed" notes
        with atomic_path(path) as tmp, explicit_attention(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside the exporter
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=names,
                dynamic_shapes=dynamic,
                opset_version=opset,
                external_data=external,
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)
    return Path(path)


def onnx_runner(path: str | Path, threads: int | None = None) -> Callable[[torch.Tensor], Outputs]:
    """An ONNX Runtime session (CPU) for ``path`` as a function of a torch batch.

    ``threads``: ONNX Runtime's intra-op threads (default: its own choice, all cores).
    """
    _require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads is not None:
        options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> Outputs:
        outputs = tuple(
            torch.from_numpy(o) for o in session.run(None, {input_name: x.detach().cpu().numpy()})
        )
        return outputs[0] if len(outputs) == 1 else outputs

    return run


@dataclass(frozen=True)
class Difference:
    """How an exported file's outputs differ from the eager model's on one batch.

    Attributes:
        max_abs: the largest ``|exported - eager|`` over every value of every output.
        max_rel: the largest, over outputs, of ``max |exported - eager| / max |eager|``.
        within: every output within :data:`RTOL` times its largest ``|eager|`` plus :data:`ATOL`.
    """

    max_abs: float
    max_rel: float
    within: bool


def difference(reference: Outputs, candidate: Outputs, rtol: float = RTOL) -> Difference:
    """Compare two outputs (a tensor or a tuple of tensors, shapes must agree) within ``rtol``."""
    reference = (reference,) if isinstance(reference, torch.Tensor) else tuple(reference)
    candidate = (candidate,) if isinstance(candidate, torch.Tensor) else tuple(candidate)
    if len(reference) != len(candidate):
        raise ValueError(f"expected {len(reference)} outputs, got {len(candidate)}")
    max_abs, max_rel, within = 0.0, 0.0, True
    for r, c in zip(reference, candidate):
        if r.shape != c.shape:
            raise ValueError(f"output shapes differ: eager {tuple(r.shape)}, exported {tuple(c.shape)}")
        diff = float((r.float() - c.float()).abs().max()) if r.numel() else 0.0
        scale = float(r.float().abs().max()) if r.numel() else 0.0
        if not math.isfinite(diff):
            diff = math.inf
        max_abs = max(max_abs, diff)
        max_rel = max(max_rel, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
        within = within and diff <= rtol * scale + ATOL
    return Difference(max_abs, max_rel, within)


def compare(
    model: nn.Module,
    runner: Callable[[torch.Tensor], Outputs],
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 3),
    seed: int = 0,
    rtol: float = RTOL,
) -> dict[int, Difference]:
    """How ``runner`` differs from ``model`` on a random batch of each size, within ``rtol``.

    ``input_shape`` is ``(C, H, W)``; inputs are standard normal from a generator seeded
    with ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    diffs = {}
    model.eval()
    for batch in batch_sizes:
        x = torch.randn(batch, *input_shape, generator=generator)
        with torch.no_grad():
            diffs[batch] = difference(model(x), runner(x), rtol)
    return diffs


def save_weights(model: nn.Module, path: str | Path, half: bool = False) -> Path:
    """Write ``model``'s state dict as ``{"state_dict": ...}`` (the release's format), atomically.

    With ``half``, floating-point tensors are stored in float16 (half the file); loading
    casts them back to the model's type.
    """
    state = {
        key: value.half() if half and value.is_floating_point() else value
        for key, value in model.state_dict().items()
    }
    atomic_save({"state_dict": state}, path)
    return Path(path)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """A copy of ``model`` with the weights of the file at ``path`` (strict: same keys and shapes)."""
    loaded = copy.deepcopy(model)
    load_checkpoint(loaded, path)
    return loaded.eval()


def check_output_name(fmt: str, output: str | Path) -> None:
    """Refuse an unknown format, or a torch.export archive not named ``*.pt2``, before any work."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "export" and Path(output).suffix != ".pt2":
        raise ValueError(f"torch.export archives are .pt2 files, got {str(output)!r}; name the output *.pt2")


def export_model(
    model: nn.Module,
    fmt: str,
    output: str | Path,
    input_shape: Sequence[int],
    batch_sizes: Sequence[int] = (1, 3),
    half: bool = False,
) -> dict[str, Any]:
    """Export ``model`` as ``fmt`` (``export``: a ``.pt2`` program; ``onnx``; ``weights``: the
    state dict in the release's format, in float16 with ``half``) and check the file.

    The model is traced on a random batch of 2 images of ``input_shape`` ``(C, H, W)``; the
    file is written beside ``output``, loaded back and compared with the eager model on
    batches of ``batch_sizes``, and moved onto ``output`` only if every output agrees within
    the tolerance (:func:`tolerance`: :data:`RTOL`, or :data:`HALF_RTOL` for float16
    weights). Where ONNX Runtime is missing, an ONNX file is
    written but not checked (``verified`` False, ``note`` says why).

    The model is put in eval mode (BatchNorm statistics, no dropout) and left there.

    Returns:
        A JSON-ready record: output path, format, input shape, file size, ``verified``, the
        tolerance, and per batch size ``max_abs_diff`` and ``max_rel_diff`` (the largest
        difference relative to the output's largest absolute value).

    Raises:
        ExportMismatchError: the file disagrees with the eager model beyond the tolerance;
            nothing is written and an existing ``output`` is left as it was.
    """
    check_output_name(fmt, output)
    if half and fmt != "weights":
        raise ValueError(f"half precision applies to weight files only, not to the {fmt!r} format")
    rtol = HALF_RTOL if half else RTOL
    model.eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(1))
    record: dict[str, Any] = {
        "output": str(output),
        "format": fmt,
        "input_shape": ["batch", *map(int, input_shape)],
        "tolerance": tolerance(rtol),
    }
    with atomic_path(output) as staged:
        if fmt == "export":
            save_program(export_program(model, example), staged)
            runner = load_program(staged)
        elif fmt == "weights":
            save_weights(model, staged, half)
            runner = load_weights(model, staged)
            record["dtype"] = "float16" if half else "float32"
        else:
            export_onnx(model, example, staged)
            try:
                runner = onnx_runner(staged)
            except ImportError as error:
                runner = None
                record.update(verified=False, note=f"not checked: {error}")
        record["file_bytes"] = staged.stat().st_size
        if runner is not None:
            diffs = compare(model, runner, input_shape, batch_sizes, rtol=rtol)
            record.update(
                verified=True,
                max_abs_diff={str(b): d.max_abs for b, d in diffs.items()},
                max_rel_diff={str(b): d.max_rel for b, d in diffs.items()},
                max_abs_diff_overall=max(d.max_abs for d in diffs.values()),
            )
            failed = {b: d for b, d in diffs.items() if not d.within}
            if failed:
                batch, worst = max(failed.items(), key=lambda item: item[1].max_rel)
                raise ExportMismatchError(
                    f"the exported {fmt} file disagrees with eager PyTorch: at batch {batch} an output "
                    f"differs by {worst.max_abs:.3g} ({worst.max_rel:.3g} of its largest value), beyond "
                    f"the tolerance ({tolerance(rtol)}); nothing was written to {output}"
                )
    return record
