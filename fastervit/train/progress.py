"""A progress bar over a training run's steps, as a callback of :func:`~fastervit.train.loop.train`.

``python -m fastervit train`` draws it on stderr (``tqdm``); the notebooks pass
``tqdm.auto.tqdm``, which draws a widget in JupyterLab. ``TQDM_DISABLE=1`` in the environment
(set by the tests and by ``make notebooks``) turns every bar off, so that stored outputs hold no
bar, whose rates and times differ from run to run.
"""

from collections.abc import Callable
from typing import Any

from tqdm import tqdm


class ProgressBar:
    """One bar over the run's steps, showing the epoch, the loss and the learning rate.

    Args:
        bar_class: the ``tqdm`` class to draw with (``tqdm.tqdm``, ``tqdm.auto.tqdm`` ...).
        options: further ``tqdm`` arguments (``dynamic_ncols=True`` ...).
    """

    def __init__(self, bar_class: Callable[..., tqdm] = tqdm, **options: Any) -> None:
        self.bar = bar_class(desc="train", unit="step", **options)

    def __call__(self, event: str, record: dict) -> None:
        if event == "start":
            self.bar.reset(total=record["total_steps"])
        elif event == "step":
            self.bar.n = record["step"]
            self.bar.set_postfix(
                epoch=record["epoch"], loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}"
            )

    def close(self) -> None:
        """Close the bar (it stays on screen at its last state)."""
        self.bar.close()
