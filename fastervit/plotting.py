"""The book's figures: its house style, set on import, and the plots that chapters share.

A chapter imports this module and draws; it does not set sizes or resolutions itself::

    from fastervit import plotting

    fig, ax = plotting.subplots(height=2.5)

Why these settings: a figure is drawn at the size it is shown in the book's column
(:data:`COLUMN_WIDTH` inches, one inch being 96 CSS pixels in a browser), so that a
10-point label reads like the text around it; and it is rendered at :data:`DPI` dots per
inch, twice the screen's, so that it stays sharp on high-density screens and when the
column shrinks. In a notebook the PNG is stored with its display size ("retina" format),
which the book uses as the image's width. ``tests/test_book.py`` checks the result on
every figure of the built book: at least 150 dots per displayed inch.

Needs matplotlib (the ``plot`` extra: ``pip install -e ".[plot]"``; the ``book`` extra
includes it).
"""

from collections.abc import Sequence
from pathlib import Path

try:
    import matplotlib as mpl
    import matplotlib.pyplot as plt
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        'fastervit.plotting needs matplotlib: pip install -e ".[plot]" (or the book extra)'
    ) from error

import numpy as np
import torch

# Width of a figure in inches (96 CSS pixels per inch): 720 px, the width of the book's
# column for outputs in a window of about 1330 px, from which on code lines of 80
# characters fit too (measured in headless Chromium; at its widest the column is 790 px).
# Narrower windows show figures scaled down, wider ones at this size.
COLUMN_WIDTH = 720 / 96
# Dots per inch of a figure's PNG: figures are drawn at 96 dpi (a figure inch is a CSS
# inch) and stored at twice that.
SCREEN_DPI = 96
DPI = 2 * SCREEN_DPI
# Without this, matplotlib stamps its version into the PNG and every upgrade changes it.
PNG_METADATA = {"Software": None}

STYLE = {
    "figure.figsize": (COLUMN_WIDTH, 0.55 * COLUMN_WIDTH),
    "figure.dpi": SCREEN_DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.interpolation": "nearest",
}


def use_book_style() -> None:
    """Apply :data:`STYLE` to matplotlib and, inside IPython, store figures as "retina"
    PNGs (rendered at :data:`DPI`, shown at their drawn size). Called on import."""
    mpl.rcParams.update(STYLE)
    try:
        from IPython import get_ipython
        from matplotlib_inline.config import InlineBackend
    except ImportError:  # plain Python: nothing to configure
        return
    shell = get_ipython()
    if shell is not None:
        # Setting the configuration (not only the current formatter) survives a later
        # `%matplotlib inline`, which re-reads it.
        InlineBackend.instance(parent=shell).figure_formats = {"retina"}


def subplots(
    nrows: int = 1, ncols: int = 1, *, height: float | None = None, width: float = 1.0, **kwargs
) -> tuple[plt.Figure, np.ndarray | plt.Axes]:
    """``plt.subplots`` for the book's column, with constrained layout.

    Args:
        nrows, ncols: the grid of axes.
        height: figure height in inches (default: the style's, 0.55 of the column width).
        width: figure width as a fraction of the column (1: the whole column).
        **kwargs: passed to ``plt.subplots`` (``sharex``, ``gridspec_kw``, ...).

    Returns:
        ``(figure, axes)`` as ``plt.subplots`` returns them.
    """
    if not 0 < width <= 1:
        raise ValueError(f"width={width}: pass a fraction of the column in (0, 1]")
    size = (width * COLUMN_WIDTH, STYLE["figure.figsize"][1] if height is None else height)
    return plt.subplots(nrows, ncols, figsize=size, layout="constrained", **kwargs)


def _as_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(3, H, W)`` or ``(H, W, 3)`` -> an array imshow takes."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W), (3, H, W) or (H, W, 3), got shape {array.shape}")
    return array


def show_images(
    images: Sequence[torch.Tensor | np.ndarray | None],
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "gray",
    robust: bool = True,
    title: str | None = None,
    height: float | None = None,
) -> plt.Figure:
    """A grid of images (feature maps or pictures) across the column.

    Args:
        images: row by row; ``None`` leaves a cell empty. Single-channel maps ``(H, W)`` are
            drawn with ``cmap``; colour images ``(3, H, W)`` or ``(H, W, 3)`` as they are.
        titles: one per image (ignored for empty cells).
        ncols: images per row (default: all in one row).
        cmap: colour map of single-channel maps.
        robust: scale each single-channel map to its 1st-99th percentile, so that a few
            extreme values do not turn the rest grey.
        title: the figure's title.
        height: figure height in inches (default: square cells).

    Returns:
        The figure.
    """
    if not images:
        raise ValueError("show_images needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    if height is None:
        height = nrows * COLUMN_WIDTH / ncols + (0.35 if titles else 0) * nrows + (0.3 if title else 0)
    fig, axes = subplots(nrows, ncols, height=height, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images) or images[i] is None:
            continue
        array = _as_image(images[i])
        limits = {}
        if array.ndim == 2 and robust:
            limits = dict(zip(("vmin", "vmax"), np.percentile(array, [1, 99]).tolist()))
        ax.imshow(array, cmap=cmap if array.ndim == 2 else None, **limits)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def log_axis(ax: plt.Axes, ticks: Sequence[float], axis: str = "x") -> None:
    """Put ``axis`` of ``ax`` on a log scale labelled with plain numbers at ``ticks``
    (no minor ticks), the way the book plots costs against image size."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis={axis!r}: pass 'x' or 'y'")
    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"set_{axis}ticks")(list(ticks), labels=[f"{t:g}" for t in ticks])
    getattr(ax, f"{axis}axis").set_minor_locator(mpl.ticker.NullLocator())


def save(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at :data:`DPI`, without a version stamp, and close it."""
    fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)


use_book_style()


# Attention of a trained model (chapters 4 to 6).


def token_spotlight(
    ax: plt.Axes,
    image: torch.Tensor | np.ndarray,
    weights: torch.Tensor | np.ndarray,
    *,
    query: tuple[int, int] | None = None,
    window: tuple[int, int, int] | None = None,
    fmt: str | None = "{:.2f}",
) -> None:
    """Draw ``image`` in grey with each token tinted by its weight, and the weight written.

    Args:
        ax: where to draw.
        image: ``(H, W)`` or ``(1, H, W)``; a token covers ``H/gh x W/gw`` pixels.
        weights: ``(gh, gw)``, one weight per token of the map, in [0, 1]; NaN where a token
            is no key (left untinted, nothing written).
        query: ``(row, col)`` of the query token, marked by a star.
        window: ``(row, col, side)`` in tokens, a window to outline.
        fmt: how a weight is written in its token (None: not at all).
    """
    array = _as_image(image).astype(np.float64)
    array = (array - array.min()) / max(array.max() - array.min(), 1e-12)
    w = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    gh, gw = w.shape
    cell_h, cell_w = array.shape[0] // gh, array.shape[1] // gw
    ax.imshow(array, cmap="gray", vmin=0, vmax=1.6)  # darkened, so that the tint stands out
    tint = np.ma.masked_invalid(np.kron(w, np.ones((cell_h, cell_w))))
    ax.imshow(tint, cmap="autumn_r", vmin=0, vmax=1, alpha=0.55 * (tint.filled(0) > 0))
    for (i, j), value in np.ndenumerate(w):
        if fmt is not None and not np.isnan(value):
            x, y = (j + 0.5) * cell_w - 0.5, (i + 0.5) * cell_h - 0.5
            ax.text(x, y + 0.3 * cell_h, fmt.format(value), ha="center", va="center", fontsize=7)
    if window is not None:
        row, col, side = window
        box = mpl.patches.Rectangle(
            (col * cell_w - 0.5, row * cell_h - 0.5),
            side * cell_w,
            side * cell_h,
            fill=False,
            ec="tab:cyan",
            lw=1.5,
        )
        ax.add_patch(box)
    if query is not None:
        y, x = (query[0] + 0.35) * cell_h - 0.5, (query[1] + 0.5) * cell_w - 0.5
        ax.plot(x, y, marker="*", color="tab:cyan", ms=8, mec="black", mew=0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def annotated_matrix(
    ax: plt.Axes,
    values: torch.Tensor | np.ndarray,
    fmt: str = "{:.2f}",
    *,
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    fontsize: float = 8,
) -> mpl.image.AxesImage:
    """A small matrix as a heat map with each value written in its cell.

    Args:
        ax: where to draw.
        values: ``(rows, cols)``.
        fmt: how each value is written (``"{:.1e}"`` for values across decades).
        log: colour on a log scale; values of 0 or less are drawn grey and written "0"
            (an exact zero has no place on it).
        vmin, vmax: the colour range (default: the values' range).
        cmap: the colour map; the text is black on light cells and white on dark ones.
        fontsize: of the written values.

    Returns:
        The image, for ``fig.colorbar``.
    """
    v = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"expected a matrix (rows, cols), got shape {v.shape}")
    shown = np.ma.masked_less_equal(v, 0) if log else np.ma.masked_invalid(v)
    vmin = shown.min() if vmin is None else vmin
    vmax = shown.max() if vmax is None else vmax
    norm = mpl.colors.LogNorm(vmin, vmax) if log else mpl.colors.Normalize(vmin, vmax)
    im = ax.imshow(shown, cmap=cmap, norm=norm)
    ax.set_facecolor("#d9d9d9")
    colours = plt.get_cmap(cmap)(norm(shown).filled(1.0))
    for (i, j), value in np.ndenumerate(v):
        if shown.mask is not np.ma.nomask and shown.mask[i, j]:
            ax.text(j, i, "0" if log else "", ha="center", va="center", fontsize=fontsize)
            continue
        luminance = colours[i, j, :3] @ np.array([0.299, 0.587, 0.114])
        ax.text(
            j,
            i,
            fmt.format(value),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="black" if luminance > 0.5 else "white",
        )
    return im
