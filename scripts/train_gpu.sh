#!/usr/bin/env bash
# Chapter 11's GPU run: a FasterViT-0-style model and a ResNet-18-style peer, trained on
# Fashion-MNIST with the same recipe and the same number of epochs, in about 10 minutes on
# one H100. The small result files go to $RESULTS_DIR/<run>/ (see results/training/README.md).
#
#   scripts/train_gpu.sh          # on a CUDA machine
#   SMOKE=1 scripts/train_gpu.sh  # CPU smoke test (about a minute): digits, tiny models, one
#                                 # epoch in float32, results in a temporary folder unless
#                                 # RESULTS_DIR is set
#
# Settings (environment variables):
#   RESULTS_DIR  folder of the results (default results/training)
#   RUNS_DIR     checkpoints and TensorBoard logs, not kept with the results (default: a
#                temporary folder)
#   BUDGET_S     seconds of training for the two models together (default 480); the number
#                of epochs is chosen from the measured cost of one step of each model
#   MAX_EPOCHS   at most this many epochs (default 40)
#   WORKERS      data-loading processes per run (default: CPU cores - 2, at most 12)
#   PYTHON       the interpreter (default .venv/bin/python, else python3)
#   FASTERVIT_DATA  folder holding fashion-mnist/*-ubyte.gz (default /usr/share/datasets, where
#                Debian's dataset-fashion-mnist package puts them)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
CORES=$(nproc)
WORKERS=${WORKERS:-$(( CORES > 14 ? 12 : (CORES > 3 ? CORES - 2 : 1) ))}
FASTERVIT=faster_vit_0_224
PEER=resnet18_like

if [ "${SMOKE:-0}" = "1" ]; then
    RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d -t train_gpu_smoke.XXXXXX)}
    DATASET=digits
    DEVICE=cpu
    BATCH=64
    BUDGET_S=1
    MAX_EPOCHS=1
    WORKERS=2
    AMP=()  # bf16 autocast is slow on most CPUs
    FASTERVIT_KWARGS='{"dim": 16, "in_dim": 16, "depths": [1, 1, 2, 1], "num_heads": [1, 1, 2, 4], "window_size": [3, 3, 3, 3]}'
    PEER_KWARGS='{"width": 8}'
    TIMING=(--timing-warmup 1 --timing-steps 2)
else
    RESULTS_DIR=${RESULTS_DIR:-results/training}
    DATASET=fashion_mnist
    DEVICE=cuda
    BATCH=512
    BUDGET_S=${BUDGET_S:-480}
    MAX_EPOCHS=${MAX_EPOCHS:-40}
    AMP=(--amp bf16)
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run on a GPU machine, or set SMOKE=1 for the CPU smoke test')"
    # FasterViT-0's depths and head width (32 channels per head) at half its width, 8.5 M
    # parameters. At 96 px = 224 x 3/7 every map is 3/7 of FasterViT-0's at 224 px (24, 12,
    # 6, 3), so 3x3 windows give the same layout: 2x2 windows with 16 carrier tokens in
    # stage 3, one window (global attention) in stage 4.
    FASTERVIT_KWARGS='{"dim": 32, "in_dim": 32, "num_heads": [1, 2, 4, 8], "window_size": [3, 3, 3, 3]}'
    PEER_KWARGS='{"width": 56}'  # ResNet-18 at width 56: 8.6 M parameters, as many as the FasterViT
    TIMING=()
fi
RUNS_DIR=${RUNS_DIR:-$(mktemp -d -t train_gpu_runs.XXXXXX)}
mkdir -p "$RESULTS_DIR" "$RUNS_DIR"
HARDWARE=(--device "$DEVICE" "${AMP[@]}" --channels-last --batch-size "$BATCH")
log() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
START=$SECONDS

log "training 1/4: time one step of each model, choose the epochs for ${BUDGET_S} s"
PLAN=$("$PYTHON" scripts/training_run.py plan --output "$RESULTS_DIR" --dataset "$DATASET" \
    --fastervit "$FASTERVIT" --fastervit-kwargs "$FASTERVIT_KWARGS" --peer "$PEER" --peer-kwargs "$PEER_KWARGS" \
    --budget-s "$BUDGET_S" --max-epochs "$MAX_EPOCHS" --drop-path 0.1 --img-size 96 "${HARDWARE[@]}" "${TIMING[@]}" \
    | tail -n 1)
read -r EPOCHS WARMUP EMA_DECAY <<< "$PLAN"
echo "epochs $EPOCHS, warmup $WARMUP epochs, EMA decay $EMA_DECAY" >&2

# The recipe: LAMB with decoupled weight decay, linear warmup then cosine decay, gradient
# clipping, label smoothing, mixup/cutmix, stochastic depth, EMA, bf16 autocast, channels_last.
RECIPE=(
    --dataset "$DATASET" --img-size 96 --epochs "$EPOCHS" --warmup-epochs "$WARMUP"
    --opt lamb --lr 5e-3 --min-lr 1e-5 --weight-decay 0.05 --clip-grad 5
    --smoothing 0.1 --mixup 0.8 --cutmix 1.0 --drop-path 0.1 --scale 0.35 1
    --model-ema --model-ema-decay "$EMA_DECAY"
    "${HARDWARE[@]}" --workers "$WORKERS" --seed 0 --no-progress
)

log "training 2/4: $FASTERVIT $FASTERVIT_KWARGS"
"$PYTHON" -m fastervit train --model "$FASTERVIT" --model-kwargs "$FASTERVIT_KWARGS" "${RECIPE[@]}" \
    --output "$RUNS_DIR/fastervit" | cut -c1-300

log "training 3/4: $PEER $PEER_KWARGS"
"$PYTHON" scripts/training_run.py train-peer --model "$PEER" --model-kwargs "$PEER_KWARGS" "${RECIPE[@]}" \
    --output "$RUNS_DIR/$PEER" | cut -c1-300

log "training 4/4: final accuracies, confusion matrices, sample predictions"
for RUN in fastervit "$PEER"; do
    "$PYTHON" scripts/training_run.py report --run "$RUNS_DIR/$RUN" --results "$RESULTS_DIR/$RUN" \
        --plan "$RESULTS_DIR/plan.json" --workers "$WORKERS" "${HARDWARE[@]}" | cut -c1-300
done

log "training done in $(( SECONDS - START )) s: $RESULTS_DIR (checkpoints in $RUNS_DIR)"
