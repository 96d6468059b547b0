#!/usr/bin/env bash
# Chapter 12's full segmentation runs: FasterViT + UperNet on pasted Fashion-MNIST scenes,
# trained on a GPU; the JSON records go to results/dense/, which the chapter shows.
#
#   scripts/train_dense_gpu.sh                  # on a CUDA machine (estimate: 15-20 minutes on an H100)
#   DENSE_SMOKE=1 scripts/train_dense_gpu.sh    # CPU smoke test with tiny sizes (about a minute)
#
# Settings (environment variables):
#   RESULTS_DIR  where the JSON goes (default results/dense; the smoke test defaults to a
#                temporary folder so that its numbers never pass for GPU results)
#   CKPT_DIR     where the trained weights go (default runs/dense, not committed)
#   WORKERS      data-loader workers drawing canvases on the fly (default 8)
#   PYTHON       the interpreter (default .venv/bin/python, else python3)
#
# What it trains (each step prints its JSON record's last line to the log):
#   1. fv0_upernet_256.json    FasterViT-0 (widths 64-512, depths 2-3-6-5) + UperNet (128 channels),
#                              256x256 canvases with 3-8 items, 6k steps of 32, bf16, from scratch
#   2. tiny_upernet_64.json    the chapter's CPU model and task, 10x longer (4000 steps), to show
#                              how far the CPU run is from what the tiny model can reach
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
TRAIN=("$PYTHON" -m fastervit segment)
WORKERS=${WORKERS:-8}

# The FasterViT-0 run is the "full" segmentation preset of fastervit/sizes.py, which chapter 12
# runs with FASTERVIT_SIZE=full; the tiny run is the "smoke" preset (the chapter's CPU run), 10x longer.
preset() {
    "$PYTHON" -c 'import sys; from fastervit.sizes import preset_value; print("\n".join(preset_value(*sys.argv[1:])))' "$@"
}
mapfile -t FV0 < <(preset full segmentation segment)
mapfile -t TINY < <(preset smoke segmentation segment)
if [ "${DENSE_SMOKE:-0}" = "1" ]; then
    RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d -t dense_smoke.XXXXXX)}
    CKPT_DIR=${CKPT_DIR:-$RESULTS_DIR}
    # the same runs, cut to a few steps of tiny batches in float32 (the last flags win)
    SHRINK=(--resolution 64 --steps 4 --warmup-steps 1 --batch-size 4 --train-samples 64 --val-samples 16
            --log-every 2 --eval-every 2 --items 1 3 --scale 0.4 0.8)
    FV0+=("${SHRINK[@]}")
    TINY+=("${SHRINK[@]}")
    COMMON=(--device cpu --workers 2)
else
    RESULTS_DIR=${RESULTS_DIR:-results/dense}
    CKPT_DIR=${CKPT_DIR:-runs/dense}
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run on a GPU machine, or set DENSE_SMOKE=1 for the CPU smoke test')"
    TINY+=(--steps 4000 --warmup-steps 200 --train-samples 40000 --val-samples 1000 --eval-every 500 --log-every 100)
    COMMON=(--device cuda --workers "$WORKERS")
fi
mkdir -p "$RESULTS_DIR" "$CKPT_DIR"
log() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
START=$SECONDS

log "1/2 FasterViT-0 + UperNet on 256x256 scenes"
"${TRAIN[@]}" "${FV0[@]}" "${COMMON[@]}" --output "$RESULTS_DIR/fv0_upernet_256.json" \
    --checkpoint "$CKPT_DIR/fv0_upernet_256.pt" | tail -n 1 | cut -c1-300

log "2/2 the chapter's tiny model, 10x longer"
"${TRAIN[@]}" "${TINY[@]}" "${COMMON[@]}" --output "$RESULTS_DIR/tiny_upernet_64.json" \
    --checkpoint "$CKPT_DIR/tiny_upernet_64.pt" | tail -n 1 | cut -c1-300

log "done in $(( SECONDS - START )) s: $RESULTS_DIR"
