"""Closed formulas for what FasterViT computes: the book's one cost model (chapters 1, 4-6, 8).

Every cost the book prints or plots comes from here, at two levels:

* one block of attention on a feature map (:func:`block_terms`, :func:`block_macs`): global
  attention, window attention, or hierarchical attention (HAT: windows with carrier
  tokens). Explicit switches (:class:`Counting`) say what is counted: the zero padding of
  the map to whole windows, the MLP, the LayerNorms, the position MLPs. Chapters 1 and 4 to
  6 compare attention designs with it; :data:`BLOCK` is the book's convention for that;
* a whole FasterViT forward (:func:`analytic_terms`), from its constructor arguments alone,
  built from the same block formulas. It equals fvcore's count of a traced forward
  (:mod:`fastervit.analysis.counting`) to the multiply-add.

Conventions, those of fvcore and of the FasterViT paper's tables:

* the unit is the multiply-add (MAC). fvcore calls one MAC one "flop"; PyTorch's
  ``torch.utils.flop_counter.FlopCounterMode`` counts the multiply and the add separately,
  two FLOPs per MAC, so its totals are twice these;
* convolutions and linear layers cost ``C_in/groups * k * k`` MACs per output value (biases
  are free); attention over ``n`` tokens of width ``C`` costs ``n^2 C`` for ``q k^T`` and as
  much for ``attn @ v`` (the heads split the channels, not the cost); BatchNorm in eval 2
  per value, LayerNorm 5 per value, nearest upsampling 1 per output value, adaptive average
  pooling 1 per input value; element-wise work (activations, softmax, additions, the
  position bias's gather and sigmoid) counts nothing;
* the position MLPs (``2 -> 512 -> out`` on a grid's coordinates: the relative position
  bias and the absolute position embedding) depend only on the weights and the grid. The
  model runs them in every training forward and once per grid in inference, so they are
  counted once per forward, whatever the batch.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastervit.geometry import StageGeometry, stage_geometries, stage_geometry
from fastervit.layers.windows import as_grid
from fastervit.variants import model_kwargs

# The components of the per-component breakdown of a whole model, in the order of the
# forward pass (fvcore's count is grouped the same way, by module).
COMPONENTS = (
    "stem",
    "conv_blocks",
    "downsample",
    "window_attention",
    "mlp",
    "norms",
    "carrier_tokens",
    "position_mlps",
    "head",
)
KINDS = ("global", "window", "hat")
POSITION_HIDDEN = 512  # hidden width of every position MLP (2 -> 512 -> out)
LAYER_NORM_MACS = 5  # per value: fvcore's convention
BATCH_NORM_MACS = 2  # per value, in eval mode: a scale and a shift


@dataclass(frozen=True)
class Counting:
    """What a block's cost counts: the switches of the cost model.

    Attributes:
        padding: count the tokens that zero padding adds to a map whose sides are not
            multiples of the window; the model computes them like real ones. Off: the map is
            treated as if the windows tiled it exactly (a fractional number of windows).
        mlp: count each transformer block's MLP (``C -> r C -> C``), not only its attention.
        norms: count the LayerNorm before attention (and the one before the MLP, when the
            MLP is counted).
        position_mlps: count the position MLPs, as a training forward (or an uncached one)
            runs them; off, as a cached inference forward skips them.
    """

    padding: bool = True
    mlp: bool = True
    norms: bool = True
    position_mlps: bool = False

    def describe(self) -> str:
        """The convention in words, for the header of any printed cost."""
        switches = (
            "padded map" if self.padding else "no padding",
            "with the MLP" if self.mlp else "attention alone (no MLP)",
            "with LayerNorms" if self.norms else "no LayerNorms",
            "with the position MLPs" if self.position_mlps else "position MLPs cached (not counted)",
        )
        return "MACs (1 per multiply-add = fvcore 'flop' = half a FlopCounterMode FLOP); " + ", ".join(
            switches
        )


# The book's convention for comparing attention designs: one whole block as the model
# computes it in inference (the map padded to whole windows, attention, MLP and norms, the
# position MLPs cached). Chapters 1 and 4-6 give their headline comparisons in it.
BLOCK = Counting()
# The attention layer alone (projections and the two products), as chapters 1 and 4 derive it.
ATTENTION = Counting(mlp=False, norms=False)
# Everything a forward computes without the inference cache: the whole-model count.
UNCACHED = Counting(position_mlps=True)


@dataclass(frozen=True)
class Term:
    """One line of an analytic count: ``macs`` of ``what`` in ``stage``, of kind ``component``."""

    stage: str
    component: str
    what: str
    macs: int


def conv_out(side: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Output side of a convolution: ``floor((side + 2p - k) / s) + 1``."""
    return (side + 2 * padding - kernel) // stride + 1


def conv_macs(out_h: int, out_w: int, c_in: int, c_out: int, kernel: int = 3, groups: int = 1) -> int:
    """A k x k convolution: every output value is a dot product of ``c_in/groups * k * k``."""
    return out_h * out_w * c_out * (c_in // groups) * kernel * kernel


def linear_macs(tokens: float, c_in: int, c_out: int) -> float:
    """A linear layer ``c_in -> c_out`` on ``tokens`` tokens."""
    return tokens * c_in * c_out


def attention_macs(sequences: float, tokens: float, dim: int) -> float:
    """``q k^T`` plus ``attn @ v`` over ``sequences`` sequences of ``tokens``: ``2 S n^2 C``."""
    return 2 * sequences * tokens * tokens * dim


def position_mlp_macs(rows: float, out_features: int) -> float:
    """A position MLP ``2 -> 512 -> out`` evaluated on ``rows`` coordinates."""
    return rows * (2 * POSITION_HIDDEN + POSITION_HIDDEN * out_features)


def transformer_terms(
    sequences: float,
    tokens: float,
    dim: int,
    mlp_ratio: float,
    counting: Counting = BLOCK,
    stage: str = "block",
    components: tuple[str, str, str] = ("window_attention", "mlp", "norms"),
    prefix: str = "",
    batch: int = 1,
) -> list[Term]:
    """One pre-norm transformer block over ``sequences`` sequences of ``tokens`` tokens each.

    ``x = x + attn(norm1(x))``, ``x = x + mlp(norm2(x))``, without position MLPs (the
    callers add those, since they depend on the grid).

    Args:
        sequences: sequences per image (windows); fractional for a map counted without
            padding, in which case only the returned terms are rounded.
        tokens: tokens per sequence.
        dim, mlp_ratio: width and MLP ratio.
        counting: whether the MLP and the norms are counted (padding is the caller's).
        stage: the ``stage`` of every term.
        components: names of the attention, MLP and norm components.
        prefix: prepended to every term's ``what`` (e.g. ``"carrier "``).
        batch: images.

    Returns:
        Terms ``qkv``, ``q k^T``, ``attn v``, ``proj``, then ``fc1``, ``fc2``, ``norm1``,
        ``norm2`` as counted.
    """
    attention, mlp, norms = components
    n = batch * sequences * tokens  # every token of the batch
    hidden = int(dim * mlp_ratio)
    terms = [
        (attention, "qkv", linear_macs(n, dim, 3 * dim)),
        (attention, "q k^T", attention_macs(batch * sequences, tokens, dim) / 2),
        (attention, "attn v", attention_macs(batch * sequences, tokens, dim) / 2),
        (attention, "proj", linear_macs(n, dim, dim)),
    ]
    if counting.mlp:
        terms += [(mlp, "fc1", linear_macs(n, dim, hidden)), (mlp, "fc2", linear_macs(n, hidden, dim))]
    if counting.norms:
        terms.append((norms, "norm1", LAYER_NORM_MACS * n * dim))
        if counting.mlp:
            terms.append((norms, "norm2", LAYER_NORM_MACS * n * dim))
    return [Term(stage, component, prefix + what, round(macs)) for component, what, macs in terms]


def _windows(side: tuple[int, int], window: int, padding: bool) -> tuple[float, float]:
    """The grid of windows over a ``side`` map: whole windows after padding, or fractional."""
    if padding:
        return stage_geometry(side, window, hat=False).windows
    return side[0] / window, side[1] / window


def block_terms(
    kind: str,
    side: tuple[int, int],
    dim: int,
    heads: int,
    window: int = 7,
    ct_size: int = 2,
    mlp_ratio: float = 4.0,
    counting: Counting = BLOCK,
    stage: str = "block",
    batch: int = 1,
) -> list[Term]:
    """Every counted operation of one attention block on a ``side`` ``(H, W)`` map of width ``dim``.

    Args:
        kind: ``"global"`` (every token attends to every token of the map), ``"window"``
            (``window x window`` windows) or ``"hat"`` (windows, each with ``ct_size**2``
            carrier tokens in front of its tokens, and all carrier tokens attending to each
            other in their own transformer block first, chapter 6).
        side: the map's ``(H, W)`` (before padding).
        dim, heads: width and attention heads (heads only size the relative-bias MLPs).
        window, ct_size, mlp_ratio: window side, carrier tokens per window side, MLP ratio.
        counting: what is counted (:class:`Counting`).
        stage: the ``stage`` of every term.
        batch: images; the position MLPs run once whatever the batch.

    Returns:
        Terms with components ``attention``, ``mlp`` and ``norms`` for global attention;
        ``window_attention``, ``mlp``, ``norms``, ``carrier_tokens`` and ``position_mlps``
        otherwise (the names of the whole-model breakdown).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r}; expected one of {KINDS}")
    if min(side) < 1 or min(dim, heads, window, ct_size, batch) < 1:
        raise ValueError(
            f"expected positive sides, width, heads, window, ct_size and batch, got side={side}, "
            f"dim={dim}, heads={heads}, window={window}, ct_size={ct_size}, batch={batch}"
        )
    height, width = side
    position = []
    if kind == "global":
        terms = transformer_terms(
            1, height * width, dim, mlp_ratio, counting, stage, ("attention", "mlp", "norms"), "", batch
        )
        position = [
            ("position embedding", position_mlp_macs(height * width, dim)),
            ("relative bias", position_mlp_macs((2 * height - 1) * (2 * width - 1), heads)),
        ]
    else:
        nh, nw = _windows(side, window, counting.padding)
        carriers = ct_size**2 if kind == "hat" else 0
        terms = transformer_terms(nh * nw, window**2 + carriers, dim, mlp_ratio, counting, stage, batch=batch)
        position = [
            ("position embedding", position_mlp_macs(window**2, dim)),
            ("relative bias", position_mlp_macs((2 * window - 1) ** 2, heads)),
        ]
        if kind == "hat":
            grid = (ct_size * nh, ct_size * nw)  # the carrier tokens in raster order
            terms += transformer_terms(
                1,
                grid[0] * grid[1],
                dim,
                mlp_ratio,
                counting,
                stage,
                ("carrier_tokens",) * 3,
                "carrier ",
                batch,
            )
            position += [
                ("carrier position embedding", position_mlp_macs(grid[0] * grid[1], dim)),
                ("carrier relative bias", position_mlp_macs((2 * grid[0] - 1) * (2 * grid[1] - 1), heads)),
            ]
    if counting.position_mlps:
        terms += [Term(stage, "position_mlps", what, round(macs)) for what, macs in position]
    return terms


def block_macs(
    kind: str,
    side: tuple[int, int],
    dim: int,
    heads: int,
    window: int = 7,
    ct_size: int = 2,
    mlp_ratio: float = 4.0,
    counting: Counting = BLOCK,
    batch: int = 1,
) -> int:
    """The sum of :func:`block_terms`: MACs of one block (see there for the arguments)."""
    terms = block_terms(kind, side, dim, heads, window, ct_size, mlp_ratio, counting, batch=batch)
    return sum(t.macs for t in terms)


def attention_entries(
    kind: str, side: tuple[int, int], window: int = 7, ct_size: int = 2, padding: bool = True
) -> int:
    """Entries of one head's attention matrices in one block, for one image.

    What an explicit (unfused) attention stores per head: ``(HW)^2`` globally, ``k^4`` per
    window, ``(k^2 + L^2)^2`` per window plus ``T^2`` for the ``T`` carrier tokens with HAT.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown block kind {kind!r}; expected one of {KINDS}")
    if kind == "global":
        return (side[0] * side[1]) ** 2
    nh, nw = _windows(side, window, padding)
    carriers = ct_size**2 if kind == "hat" else 0
    entries = nh * nw * (window**2 + carriers) ** 2
    if kind == "hat":
        entries += (nh * nw * carriers) ** 2
    return round(entries)


# --------------------------------------------------------------------------------------
# A whole FasterViT
# --------------------------------------------------------------------------------------


def resolve_kwargs(model: str | Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of a registered name, or a copy of the given ones."""
    return model_kwargs(model) if isinstance(model, str) else dict(model)


def check_counted_input(resolution: tuple[int, int], batch_size: int) -> None:
    """Refuse inputs no model runs: sides below 32 (the total stride) and batches without images.

    Other sides are counted as the release's arithmetic computes them (its any-resolution
    code accepts sides that are not multiples of 32; this package's model refuses them).
    """
    height, width = resolution
    if height < 32 or width < 32:
        raise ValueError(f"image sides must be at least 32 (the model's total stride), got {height}x{width}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def _attention_stage_terms(
    stage: str, geometry: StageGeometry, kw: Mapping[str, Any], index: int, batch: int
) -> list[Term]:
    """The blocks of one attention stage, with its carrier-token initializer and propagation."""
    dim, window, carrier = int(kw["dim"] * 2**index), geometry.window, geometry.carrier
    terms = []
    if carrier:
        padded = geometry.padded
        terms.append(
            Term(
                stage, "carrier_tokens", "initializer dwconv3x3", batch * conv_macs(*padded, dim, dim, 3, dim)
            )
        )
    block = block_terms(
        "hat" if carrier else "window",
        geometry.side,
        dim,
        kw["num_heads"][index],
        window,
        kw["ct_size"],
        kw["mlp_ratio"],
        UNCACHED,
        stage,
        batch,
    )
    terms += block * kw["depths"][index]
    if carrier and kw.get("do_propagation", False):
        windows = geometry.windows[0] * geometry.windows[1]
        terms.append(
            Term(stage, "carrier_tokens", "propagation upsample", batch * windows * dim * window * window)
        )
    return terms


def analytic_terms(
    model: str | Mapping[str, Any],
    resolution: int | Sequence[int] | None = None,
    batch_size: int = 1,
) -> list[Term]:
    """Every counted operation of a FasterViT forward, from its constructor arguments alone.

    Args:
        model: a registered name or the constructor keyword arguments of a FasterViT.
        resolution: input ``H, W``; default the model's ``resolution``. As in the model, the
            input's size decides which stages use carrier tokens.
        batch_size: images per forward (the position MLPs are counted once per forward).

    Follows fvcore's conventions (see the module docstring), so that the sum equals
    :func:`fastervit.analysis.counting.count_flops` exactly.
    """
    kw = resolve_kwargs(model)
    build = as_grid(kw.get("resolution", 224))
    height, width = as_grid(resolution) if resolution is not None else build
    check_counted_input((height, width), batch_size)
    dim, in_dim, in_chans = kw["dim"], kw["in_dim"], kw.get("in_chans", 3)
    hat = kw.get("hat", (False, False, True, False))
    counted = stage_geometries((height, width), kw["window_size"], hat)
    B = batch_size
    h, w = conv_out(height), conv_out(width)
    terms = [
        Term("patch_embed", "stem", "conv1", B * conv_macs(h, w, in_chans, in_dim)),
        Term("patch_embed", "stem", "bn1", B * BATCH_NORM_MACS * in_dim * h * w),
    ]
    h, w = conv_out(h), conv_out(w)
    terms += [
        Term("patch_embed", "stem", "conv2", B * conv_macs(h, w, in_dim, dim)),
        Term("patch_embed", "stem", "bn2", B * BATCH_NORM_MACS * dim * h * w),
    ]
    for i in range(4):
        stage, C = f"levels.{i}", int(dim * 2**i)
        if i < 2:
            per_block = [
                Term(stage, "conv_blocks", "conv1 + conv2", B * 2 * conv_macs(h, w, C, C)),
                Term(stage, "conv_blocks", "bn1 + bn2", B * 2 * BATCH_NORM_MACS * C * h * w),
            ]
            terms += per_block * kw["depths"][i]
        else:
            terms += _attention_stage_terms(stage, counted[i], kw, i, B)
        if i < 3:
            h2, w2 = conv_out(h), conv_out(w)
            terms += [
                Term(stage, "downsample", "layer norm", B * LAYER_NORM_MACS * C * h * w),
                Term(stage, "downsample", "conv3x3 s2", B * conv_macs(h2, w2, C, 2 * C)),
            ]
            h, w = h2, w2
    C = int(dim * 8)
    norm = LAYER_NORM_MACS if kw.get("layer_norm_last", False) else BATCH_NORM_MACS
    terms += [
        Term("head", "head", "norm", B * norm * C * h * w),
        Term("head", "head", "average pool", B * C * h * w),
    ]
    if kw.get("num_classes", 1000) > 0:
        terms.append(Term("head", "head", "classifier", B * C * kw.get("num_classes", 1000)))
    return terms
