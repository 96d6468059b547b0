#!/usr/bin/env bash
# Chapter 11's GPU run: a FasterViT-0-style model and two peers of the same size (a
# ResNet-18-style CNN and a plain ViT), trained on Fashion-MNIST at 96 px with the same recipe
# and the same number of epochs. Every step is `python -m fastervit train`; the small result
# files go to $RESULTS_DIR/<run>/ (see results/training/README.md).
#
#   scripts/train_gpu.sh          # on a CUDA machine
#   SMOKE=1 scripts/train_gpu.sh  # CPU smoke test (a few minutes): digits, tiny models, one
#                                 # epoch in float32, results in a temporary folder unless
#                                 # RESULTS_DIR is set
#
# Settings (environment variables):
#   RESULTS_DIR  folder of the results (default results/training)
#   RUNS_DIR     checkpoints and TensorBoard logs, not kept with the results (default: a
#                temporary folder)
#   EPOCHS       epochs of every run (default 30); WARMUP_EPOCHS (default 3) of them warm up
#   EMA_DECAY    decay of the weights' EMA (default 0.998: a time constant of 500 steps,
#                about a seventh of the 3,500 steps of 30 epochs of 117 steps)
#   RUNS         which runs, in order (default "fastervit resnet18_like vit_small_like")
#   WORKERS      data-loading processes per run (default: CPU cores - 2, at most 12)
#   PYTHON       the interpreter (default .venv/bin/python, else python3)
#   FASTERVIT_DATA  folder holding fashion-mnist/*-ubyte.gz (default: the package's lookup)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
CORES=$(nproc)
WORKERS=${WORKERS:-$(( CORES > 14 ? 12 : (CORES > 3 ? CORES - 2 : 1) ))}
RUNS=(${RUNS:-fastervit resnet18_like vit_small_like})

if [ "${SMOKE:-0}" = "1" ]; then
    RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d -t train_gpu_smoke.XXXXXX)}
    DATASET=digits
    EPOCHS=1
    WARMUP_EPOCHS=0.2
    EMA_DECAY=0.9
    WORKERS=0
    DEVICE=cpu
    BATCH=64
    AMP=()  # float32: bfloat16 autocast is slow on most CPUs
    FASTERVIT_KWARGS='{"dim": 16, "in_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 1, 2, 4], "window_size": [3, 3, 3, 3]}'
    RESNET_KWARGS='{"width": 8}'
    VIT_KWARGS='{"dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}'
else
    RESULTS_DIR=${RESULTS_DIR:-results/training}
    DATASET=fashion_mnist
    EPOCHS=${EPOCHS:-30}
    WARMUP_EPOCHS=${WARMUP_EPOCHS:-3}
    EMA_DECAY=${EMA_DECAY:-0.998}
    DEVICE=cuda
    BATCH=512
    AMP=(--amp --amp-dtype bfloat16)
    # FasterViT-0's depths and head width (32 channels per head) at half its width, 8.5 M
    # parameters. At 96 px = 224 x 3/7 every map is 3/7 of FasterViT-0's at 224 px (24, 12,
    # 6, 3), so 3x3 windows give the same layout: 2x2 windows with 16 carrier tokens in
    # stage 3, one window (global attention) in stage 4.
    FASTERVIT_KWARGS='{"dim": 32, "in_dim": 32, "num_heads": [1, 2, 4, 8], "window_size": [3, 3, 3, 3]}'
    RESNET_KWARGS='{"width": 56}'  # ResNet-18 at width 56: 8.6 M parameters
    VIT_KWARGS='{"dim": 240, "depth": 12, "num_heads": 4, "patch_size": 8}'  # ViT-S depth, 8.4 M, 144 patches
fi
RUNS_DIR=${RUNS_DIR:-$(mktemp -d -t train_gpu_runs.XXXXXX)}
mkdir -p "$RESULTS_DIR" "$RUNS_DIR"
HARDWARE=(--device "$DEVICE" "${AMP[@]}" --channels-last -b "$BATCH")
log() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
START=$SECONDS

# The recipe: LAMB with decoupled weight decay, linear warmup then cosine decay, gradient
# clipping, label smoothing, mixup/cutmix, stochastic depth, EMA, bf16 autocast, channels_last.
RECIPE=(
    --dataset "$DATASET" --resolution 96 --epochs "$EPOCHS" --warmup-epochs "$WARMUP_EPOCHS"
    --opt lamb --lr 5e-3 --min-lr 1e-5 --weight-decay 0.05 --clip-grad 5
    --smoothing 0.1 --mixup 0.8 --cutmix 1.0 --drop-path 0.1 --scale 0.35 1
    --model-ema --model-ema-decay "$EMA_DECAY"
    "${HARDWARE[@]}" -j "$WORKERS" --seed 0 --no-progress
)

for RUN in "${RUNS[@]}"; do
    case "$RUN" in
        fastervit) MODEL=(--model faster_vit_0_224 --model-kwargs "$FASTERVIT_KWARGS") ;;
        resnet18_like) MODEL=(--model resnet18_like --model-kwargs "$RESNET_KWARGS") ;;
        vit_small_like) MODEL=(--model vit_small_like --model-kwargs "$VIT_KWARGS") ;;
        *) echo "unknown run '$RUN': use fastervit, resnet18_like or vit_small_like" >&2; exit 2 ;;
    esac
    log "training $RUN: ${MODEL[*]}"
    mkdir -p "$RESULTS_DIR/$RUN"
    # The JSON record (last line) is the run's summary; run.json holds its settings and machine.
    "$PYTHON" -m fastervit train "${MODEL[@]}" "${RECIPE[@]}" --output "$RUNS_DIR/$RUN" \
        | tail -n 1 > "$RESULTS_DIR/$RUN/final.json"
    cut -c1-300 "$RESULTS_DIR/$RUN/final.json" >&2
    for FILE in run.json steps.csv epochs.csv confusion.csv predictions.json; do
        cp "$RUNS_DIR/$RUN/$FILE" "$RESULTS_DIR/$RUN/"
    done
done

log "training done in $(( SECONDS - START )) s: $RESULTS_DIR (checkpoints in $RUNS_DIR)"
