"""Draw the static figures of the book's markdown pages into book/figures/.

Figures inside chapters are drawn by their notebooks; this script only makes the ones
that markdown pages embed. Run it with `make figures`; the PNGs are committed.
"""

import argparse
from pathlib import Path

import matplotlib.pyplot as plt

from fastervit.analysis import Counting, block_macs

FIGURES = Path(__file__).resolve().parent.parent / "book" / "figures"
# Without this, matplotlib stamps its version into the PNG and every upgrade changes it.
PNG_METADATA = {"Software": None}


def attention_cost(path: Path, channels: int = 256, window: int = 7, stride: int = 16) -> None:
    """Plot global vs windowed attention cost against the input image side."""
    sides = list(range(224, 1024 + 1, 32))
    maps = [(side // stride, side // stride) for side in sides]
    # the intro's formula: the attention layer alone, the map cut exactly into windows
    layer = Counting(padding=False, mlp=False, norms=False)
    global_cost = [block_macs("global", m, channels, 8, counting=layer) / 1e9 for m in maps]
    window_cost = [block_macs("window", m, channels, 8, window, counting=layer) / 1e9 for m in maps]

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(sides, global_cost, marker="o", markersize=3, label="global attention, $O(N^2)$")
    ax.plot(sides, window_cost, marker="s", markersize=3, label=f"{window}x{window} windows, $O(N)$")
    ax.set_xlabel("input image side (pixels)")
    ax.set_ylabel("multiply-adds per layer (G)")
    ax.set_title(f"One attention layer at stride {stride}, C = {channels}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=FIGURES, help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    attention_cost(args.out / "attention_cost.png")
    print("wrote attention_cost.png")


if __name__ == "__main__":
    main()
