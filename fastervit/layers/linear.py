"""The linear layer, run through oneDNN in CPU inference (chapter 9).

Two thirds of FasterViT's inference time on a CPU is spent in its linear layers. PyTorch
runs ``nn.Linear`` on the CPU through its BLAS (MKL in the official wheels), which first
copies the bias into every row of the output and then multiplies; oneDNN, the library that
already runs the convolutions, computes ``x W^T + b`` in one pass. On the machine chapter 9
measures (an AMD CPU, where MKL does not use its AVX-512 kernels) oneDNN is 1.3-2x faster
for FasterViT's shapes; the results agree to float32 rounding.

The oneDNN kernel is used only where nothing needs more than the output: on the CPU, in
float32 or bfloat16, with autograd off (``torch.no_grad`` or ``torch.inference_mode``), not
under autocast (which must see ``F.linear`` to cast it), not while ``torch.compile``,
``torch.export`` or ``torch.jit.trace`` record the graph (they expect the standard operator;
Inductor picks oneDNN kernels of its own), and not while a dispatch mode watches the
operators (PyTorch's ``FlopCounterMode``, the memory counter of chapter 12: they know
``aten.addmm``, not oneDNN's kernel). Everywhere else the layer is ``F.linear``.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == x.dtype
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not is_in_torch_dispatch_mode()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x W^T + b``, as :func:`torch.nn.functional.linear`, through oneDNN where it applies.

    Shapes: ``(..., in_features) -> (..., out_features)``.
    """
    if _onednn_applies(x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
