"""Draw the book's static figures into book/figures/: the ones that markdown pages embed and
the two diagrams that several chapters share.

Figures that show a chapter's own computation are drawn by its notebook; this script makes
the rest. Run it with `make figures`; the PNGs are committed. The diagrams read their
numbers (stages, widths, map sides, windows, carrier tokens, tensor shapes) from the
package, by building FasterViT-0 and running it on one image, so they cannot drift from it.

Files: attention_cost.png (the intro), network.png (the whole network at 224 px),
hat_block.png (one HAT block's data flow).
"""

import argparse
from pathlib import Path

import torch
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

import fastervit
from fastervit import plotting
from fastervit.analysis import Counting, block_macs

FIGURES = Path(__file__).resolve().parent.parent / "book" / "figures"
MODEL = "faster_vit_0_224"
SIDE = 224
# Box colours: convolution, attention with carrier tokens, attention without, the rest.
CONV, HAT, WINDOW, OTHER = "#cfe2f3", "#f4cccc", "#fce5cd", "#eeeeee"


def shape(tensor_shape) -> str:
    return "(" + ", ".join(str(d) for d in tensor_shape) + ")"


def attention_cost(path: Path, channels: int = 256, window: int = 7, stride: int = 16) -> None:
    """Plot global vs windowed attention cost against the input image side."""
    sides = list(range(224, 1024 + 1, 32))
    maps = [(side // stride, side // stride) for side in sides]
    # the intro's formula: the attention layer alone, on a map counted as if it were cut
    # exactly into windows (fractional windows where the side is not a multiple of k)
    layer = Counting(padding=False, mlp=False, norms=False)
    global_cost = [block_macs("global", m, channels, 8, counting=layer) / 1e9 for m in maps]
    window_cost = [block_macs("window", m, channels, 8, window, counting=layer) / 1e9 for m in maps]

    fig, ax = plotting.subplots(height=3.6)
    ax.plot(sides, global_cost, marker="o", markersize=3, label="global attention, $O(N^2)$")
    ax.plot(
        sides, window_cost, marker="s", markersize=3, label=f"{window}x{window} windows, $O(N)$ (idealised)"
    )
    ax.set_xlabel("input image side (pixels)")
    ax.set_ylabel("multiply-adds per layer (G)")
    ax.set_title(f"One attention layer at stride {stride}, C = {channels}")
    ax.grid(alpha=0.3)
    ax.legend()
    plotting.save(fig, path)


def _box(ax, x: float, y: float, w: float, h: float, text: str, color: str, size: float = 9) -> None:
    """A rounded box centred on (x, y), with centred text."""
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=color,
            ec="0.3",
            lw=0.8,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=size, linespacing=1.3)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", **kwargs) -> None:
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=9, color="0.3", lw=0.8, **kwargs)
    )
    if text:
        middle = ((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2)
        ax.text(*middle, text, ha="left", va="center", fontsize=8, color="0.25", family="monospace")


def network(path: Path) -> None:
    """The whole network at 224 px: stem, four stages, head, with the package's shapes."""
    model = fastervit.create_model(MODEL).eval()
    with torch.no_grad():
        image = torch.zeros(1, model.in_chans, SIDE, SIDE)
        stem = model.patch_embed(image)
        final, maps = model.forward_intermediates(image)
        logits = model.forward_head(final)
    rows = [
        ("input image", shape(image.shape), OTHER),
        ("stem: 2 x (conv 3x3 stride 2, BN, ReLU)", shape(stem.shape), CONV),
    ]
    for i, (level, stage_map) in enumerate(zip(model.levels, maps)):
        depth, (H, W) = len(level.blocks), stage_map.shape[2:]
        if level.conv:
            kind, color = f"{depth} residual conv blocks (3x3, BN, GELU)", CONV
        else:
            windows = -(-H // level.window_size) * -(-W // level.window_size)
            carrier = level.global_tokenizer is not None and windows > 1
            if carrier:
                ct = level.blocks[0].ct_size
                kind = (
                    f"{depth} HAT blocks: {windows} windows of {level.window_size}x{level.window_size}, "
                    f"{windows * ct * ct} carrier tokens"
                )
                color = HAT
            else:
                kind = f"{depth} attention blocks: {windows} window of {level.window_size}x{level.window_size}, no carrier tokens"
                color = WINDOW
        rows.append((f"stage {i + 1}: {kind}", shape(stage_map.shape), color))
        if level.downsample is not None:
            rows.append(("downsample: LayerNorm, conv 3x3 stride 2, C -> 2C", "", OTHER))
    rows.append((f"head: {type(model.norm).__name__}, average pool, linear", shape(logits.shape), OTHER))

    step = 0.62
    fig, ax = plotting.subplots(height=step * len(rows) + 0.3)
    top = step * (len(rows) - 1)
    for j, (label, tensor, color) in enumerate(rows):
        y = top - j * step
        small = color == OTHER and not tensor
        _box(ax, 3.3, y, 6.2, step * (0.45 if small else 0.7), label, color, size=8 if small else 9)
        if tensor:
            ax.text(6.75, y, tensor, ha="left", va="center", fontsize=9, family="monospace")
        if j:
            _arrow(ax, (3.3, y + step * 0.65), (3.3, y + step * 0.37))
    ax.text(6.75, top + step * 0.55, "tensor (B, C, H, W)", ha="left", va="center", fontsize=8, color="0.3")
    ax.set_xlim(0, 9.6)
    ax.set_ylim(-step * 0.6, top + step * 0.8)
    ax.axis("off")
    fig.suptitle(f"FasterViT-0 ({MODEL}) at {SIDE} x {SIDE} px")
    plotting.save(fig, path)


def _hat_shapes() -> dict[str, tuple[int, ...]]:
    """The tensor shapes inside the first HAT block of FasterViT-0 at 224 px, recorded by
    running the model on one image."""
    model = fastervit.create_model(MODEL).eval()
    level = next(level for level in model.levels if level.global_tokenizer is not None)
    block = level.blocks[0]
    seen: dict[str, tuple[int, ...]] = {}

    def record(name, which="output"):
        def hook(module, args, output):
            tensor = args[0] if which == "input" else output
            seen.setdefault(name, tuple(tensor[0].shape if isinstance(tensor, tuple) else tensor.shape))

        return hook

    hooks = [
        level.register_forward_hook(record("map in", "input")),
        level.global_tokenizer.register_forward_hook(record("carrier tokens")),
        block.register_forward_hook(record("windows", "input")),
        block.hat_attn.register_forward_hook(record("carrier attention")),
        block.attn.register_forward_hook(record("window attention", "input")),
        block.register_forward_hook(record("window tokens out")),
        level.register_forward_hook(record("map out")),
    ]
    with torch.no_grad():
        model(torch.zeros(1, model.in_chans, SIDE, SIDE))
    for hook in hooks:
        hook.remove()
    seen["windows"] = tuple(seen["windows"])
    seen.update(
        ct_size=(block.ct_size,),
        window=(block.window_size,),
        depth=(len(level.blocks),),
        stage=(list(model.levels).index(level) + 1,),
    )
    return seen


def hat_block(path: Path) -> None:
    """One HAT block's data flow, with the tensor shapes of FasterViT-0's stage 3 at 224 px."""
    s = _hat_shapes()
    B, T, C = s["carrier tokens"]
    windows, k2, _ = s["windows"]
    n = s["ct_size"][0] ** 2
    left, right, middle = 2.3, 7.0, 4.65
    fig, ax = plotting.subplots(height=6.4)
    y = [7.4, 6.25, 5.1, 3.95, 2.8, 1.65, 0.5]
    _box(ax, middle, y[0], 5.6, 0.6, f"stage input map (B, C, H, W)\n{shape(s['map in'])}", OTHER)
    _box(
        ax, left, y[1], 4.2, 0.8,
        f"pool each window to {s['ct_size'][0]}x{s['ct_size'][0]}: carrier tokens\n(B, T, C) = {shape((B, T, C))}",
        HAT,
    )  # fmt: skip
    _box(
        ax, right, y[1], 4.2, 0.8,
        f"cut into {s['window'][0]}x{s['window'][0]} windows\n(B·windows, k², C) = {shape(s['windows'])}",
        WINDOW,
    )  # fmt: skip
    _box(
        ax, left, y[2], 4.2, 0.8,
        f"carrier-token attention + MLP,\nall T = {T} tokens: {shape(s['carrier attention'])}",
        HAT,
    )  # fmt: skip
    _box(
        ax, middle, y[3], 6.6, 0.8,
        f"concatenate per window: its {n} carrier tokens + its {k2} tokens\n{shape(s['window attention'])}",
        OTHER,
    )  # fmt: skip
    _box(
        ax, middle, y[4], 6.6, 0.8,
        f"window attention + MLP over {n + k2} tokens, in each of {windows} windows\n{shape(s['window attention'])}",
        WINDOW,
    )  # fmt: skip
    _box(ax, left, y[5], 4.2, 0.8, f"split: carrier tokens\n{shape((B, T, C))}, to the next block", HAT)
    _box(ax, right, y[5], 4.2, 0.8, f"split: window tokens\n{shape(s['window tokens out'])}", WINDOW)
    _box(
        ax, middle, y[6], 7.6, 0.8,
        "last block, variants 3-6 only: propagation (carrier tokens upsampled to their\n"
        f"window and added); windows merged back into the map {shape(s['map out'])}",
        OTHER,
    )  # fmt: skip
    _arrow(ax, (middle - 1, y[0] - 0.3), (left, y[1] + 0.4))
    _arrow(ax, (middle + 1, y[0] - 0.3), (right, y[1] + 0.4))
    _arrow(ax, (left, y[1] - 0.4), (left, y[2] + 0.4))
    _arrow(ax, (left, y[2] - 0.4), (middle - 1.5, y[3] + 0.4))
    _arrow(ax, (right, y[1] - 0.4), (middle + 1.5, y[3] + 0.4))
    _arrow(ax, (middle, y[3] - 0.4), (middle, y[4] + 0.4))
    _arrow(ax, (middle - 1.5, y[4] - 0.4), (left, y[5] + 0.4))
    _arrow(ax, (middle + 1.5, y[4] - 0.4), (right, y[5] + 0.4))
    _arrow(ax, (right, y[5] - 0.4), (right, y[6] + 0.4))
    _arrow(ax, (left, y[5] - 0.4), (left, y[6] + 0.4), linestyle="--")
    ax.text(
        9.3, (y[2] + y[5]) / 2,
        f"in each of the stage's {s['depth'][0]} blocks\n(pooling and windows: once per stage)",
        rotation=90, ha="center", va="center", fontsize=8, color="0.3",
    )  # fmt: skip
    ax.set_xlim(0, 9.6)
    ax.set_ylim(0, 7.8)
    ax.axis("off")
    fig.suptitle(f"One HAT block: FasterViT-0, stage {s['stage'][0]}, at {SIDE} x {SIDE} px (B = {B})")
    plotting.save(fig, path)


FIGURES_BY_NAME = {"attention_cost.png": attention_cost, "network.png": network, "hat_block.png": hat_block}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES, help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES_BY_NAME.items():
        draw(args.out / name)
        print(f"wrote {name}")


if __name__ == "__main__":
    main()
