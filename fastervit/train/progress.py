"""A progress bar over a training run's steps, as a callback of :func:`~fastervit.train.loop.train`.

``python -m fastervit train`` draws it on stderr (``tqdm``); the notebooks pass
``tqdm.auto.tqdm``, which draws a widget in JupyterLab. ``TQDM_DISABLE=1`` in the environment
(set by the tests and by ``make notebooks``) turns the bar off, so that stored outputs hold no
bar, whose rates and times differ from run to run.
"""

import os
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def disabled_by_environment() -> bool:
    """Whether ``TQDM_DISABLE`` (``1`` or ``true``) asks for no bar.

    tqdm reads the variable itself, but ``tqdm.notebook`` (which ``tqdm.auto`` picks in
    JupyterLab) passes ``disable`` explicitly, which overrides it; so any bar a notebook
    draws takes ``disable=disabled_by_environment()``.
    """
    return os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")


class ProgressBar:
    """One bar over the run's steps, showing the epoch, the loss and the learning rate.

    Args:
        bar_class: the ``tqdm`` class to draw with (``tqdm.tqdm``, ``tqdm.auto.tqdm`` ...).
        options: further ``tqdm`` arguments (``dynamic_ncols=True`` ...).
    """

    def __init__(self, bar_class: Callable[..., tqdm] = tqdm, **options: Any) -> None:
        options.setdefault("disable", disabled_by_environment())
        self.bar = bar_class(desc="train", unit="step", **options)

    def __call__(self, event: str, record: dict) -> None:
        """``"start"`` sets the total from ``record["total_steps"]``; ``"step"`` moves the bar
        to ``record["step"]`` and shows whichever of its epoch, loss and lr it holds (so that
        other loops' progress records, such as the segmentation run's, drive it too)."""
        if event == "start":
            self.bar.reset(total=record["total_steps"])
        elif event == "step":
            self.bar.n = record["step"]
            shown = {"epoch": "{}", "loss": "{:.4f}", "lr": "{:.2e}"}
            self.bar.set_postfix({k: f.format(record[k]) for k, f in shown.items() if k in record})

    def close(self) -> None:
        """Close the bar (it stays on screen at its last state)."""
        self.bar.close()
