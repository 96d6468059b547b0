"""Automatic mixed precision: the low-precision types by timm's names, for every command.

Under ``torch.autocast`` matrix products and convolutions run in a 16-bit type while the
weights, the reductions and the loss stay in float32. ``--amp`` switches it on and
``--amp-dtype`` picks the type, as in timm's ``train.py``:

* ``float16`` (timm's default, the default here on CUDA): 10 mantissa bits but a small
  range, so the loss is scaled before the backward pass (``torch.amp.GradScaler``) to keep
  small gradients from flushing to zero;
* ``bfloat16`` (the default here on the CPU): float32's range with 7 mantissa bits, so no
  loss scaling; CPUs with AVX512-BF16 or AMX run it natively. float16 autocast also runs
  on the CPU (PyTorch 2.1 and later), but few CPUs compute in it natively.
"""

import torch

AMP_DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def default_amp_dtype(device: torch.device) -> str:
    """timm's default, ``float16``, on CUDA; ``bfloat16`` on the CPU, the type CPUs accelerate."""
    return "float16" if device.type == "cuda" else "bfloat16"


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """``torch.autocast`` on ``device`` in ``dtype``, or a no-op context when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
