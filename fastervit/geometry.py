"""Stage geometry (chapter 7): where each stage works, how it is cut into windows, and
whether it has carrier tokens.

One place computes these facts, so that the model (:mod:`fastervit.model`, which sizes its
modules and position tables from them) and the cost formulas
(:mod:`fastervit.analysis.formulas`) cannot disagree.

* Stage ``i`` (0 to 3) works at stride ``2**(i+2)``: its map side is
  ``int(2**(-2-i) * side)``, as the release computes it (the exact quotient for the sides
  divisible by 32 that the model accepts).
* An attention stage zero-pads its map to whole windows: ``ceil(H / w) x ceil(W / w)``
  windows. The release's any-resolution models count them this way; its fixed-resolution
  class rounds down, which differs only where that class cannot run (a side of 8 to 13 with
  window 7, e.g. resolution 192); see ``book/errata.md`` (d).
* Carrier tokens are used where a stage asks for them (``hat``) and its map holds more than
  one window; stages 1 and 2 are convolutional and have none, whatever ``hat`` says. (The
  model keeps the carrier-token modules of a ``hat`` stage at any build resolution, so that
  every checkpoint loads; whether they run is decided by the input, with the same rule.)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastervit.layers.windows import Grid

NUM_STAGES = 4
CONV_STAGES = 2  # stages 0 and 1 are convolutional


@dataclass(frozen=True)
class StageGeometry:
    """Where one stage works.

    Attributes:
        side: ``(H, W)`` of the stage's feature map.
        window: the window side (meaningful for attention stages).
        windows: ``(n_h, n_w)``, the grid of windows after zero padding.
        carrier: whether the stage uses carrier tokens.
    """

    side: Grid
    window: int
    windows: Grid
    carrier: bool

    @property
    def padded(self) -> Grid:
        """``(H_p, W_p)``: the map's side after zero padding to whole windows."""
        return self.windows[0] * self.window, self.windows[1] * self.window


def stage_side(resolution: Grid, stage: int) -> Grid:
    """Side ``(H, W)`` of stage ``stage``'s map (0 to 3) for an input of ``resolution``."""
    height, width = resolution
    return int(2 ** (-2 - stage) * height), int(2 ** (-2 - stage) * width)


def has_carrier_tokens(windows: Grid, hat: bool) -> bool:
    """Whether a stage with this grid of windows uses carrier tokens: it asks for them
    (``hat``) and holds more than one window (a single window already attends globally)."""
    return bool(hat) and windows[0] * windows[1] > 1


def stage_geometry(side: Grid, window: int, hat: bool) -> StageGeometry:
    """The geometry of an attention stage (or, with ``hat=False``, any stage) on a ``side`` map."""
    if window < 1:
        raise ValueError(f"the window side must be at least 1, got {window}")
    windows = (math.ceil(side[0] / window), math.ceil(side[1] / window))
    return StageGeometry(side, window, windows, has_carrier_tokens(windows, hat))


def stage_geometries(
    resolution: Grid, window_size: Sequence[int], hat: Sequence[bool] | None
) -> list[StageGeometry]:
    """The four stages of a FasterViT built for (or run at) ``resolution``.

    Args:
        resolution: input ``(H, W)``.
        window_size: window side per stage (4 entries).
        hat: per stage, whether it asks for carrier tokens (``None``: every stage, as in the
            release's constructor).
    """
    hat = [True] * NUM_STAGES if hat is None else list(hat)
    return [
        stage_geometry(stage_side(resolution, i), window_size[i], hat[i] and i >= CONV_STAGES)
        for i in range(NUM_STAGES)
    ]
