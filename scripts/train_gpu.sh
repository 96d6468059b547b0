#!/usr/bin/env bash
# Chapter 11's training at full size on a GPU: the shipped Fashion-MNIST run's command (the
# "full" training preset of fastervit/sizes.py, which the chapter runs with
# FASTERVIT_SIZE=full), then every peer and ablation whose command is recorded in
# results/fashion_mnist/<run>/command.txt, each with the GPU as its device. Every step is
# `python -m fastervit train`; the small result files go to $RESULTS_DIR/<run>/.
#
#   scripts/train_gpu.sh          # on a CUDA machine
#   SMOKE=1 scripts/train_gpu.sh  # CPU smoke test (a minute): the smoke preset on scikit-learn's
#                                 # digits, one epoch, results in a temporary folder unless
#                                 # RESULTS_DIR is set
#
# Settings (environment variables):
#   RESULTS_DIR  folder of the results (default results/training)
#   RUNS_DIR     checkpoints and TensorBoard logs, not kept with the results (default: a
#                temporary folder)
#   RUNS         which runs, in order (default: faster_vit, then every other folder of
#                results/fashion_mnist/ that holds a command.txt)
#   WORKERS      data-loading processes per run (default: CPU cores - 2, at most 12)
#   PYTHON       the interpreter (default .venv/bin/python, else python3)
#   FASTERVIT_DATA  folder holding fashion-mnist/*-ubyte.gz (default: the package's lookup)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
CORES=$(nproc)
WORKERS=${WORKERS:-$(( CORES > 14 ? 12 : (CORES > 3 ? CORES - 2 : 1) ))}
# The flags of one preset entry, one per line (fastervit/sizes.py, shared with the chapters).
preset() {
    "$PYTHON" -c 'import sys; from fastervit.sizes import preset_value; print("\n".join(preset_value(*sys.argv[1:])))' "$@"
}
# The train flags of a recorded run: its command.txt without the output folder and workers.
recorded() {
    "$PYTHON" - "$1" <<'EOF'
import shlex, sys
words = shlex.split(open(sys.argv[1]).read().strip().splitlines()[-1])
words, flags = words[words.index("train") + 1 :], []
while words:
    word = words.pop(0)
    if word in ("--output", "-j", "--workers", "--device", "--resume"):
        words.pop(0)
    else:
        flags.append(word)
print("\n".join(flags))
EOF
}

if [ "${SMOKE:-0}" = "1" ]; then
    RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d -t train_gpu_smoke.XXXXXX)}
    DEVICE=(--device cpu -j 0)
    SIZE=smoke
    EXTRA=(--dataset digits --epochs 1)  # scikit-learn's digits: no Fashion-MNIST needed
    RUNS=(${RUNS:-faster_vit})
else
    RESULTS_DIR=${RESULTS_DIR:-results/training}
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run on a GPU machine, or set SMOKE=1 for the CPU smoke test')"
    DEVICE=(--device cuda -j "$WORKERS")
    SIZE=full
    EXTRA=()
    if [ -z "${RUNS:-}" ]; then
        RUNS=(faster_vit)
        for FILE in results/fashion_mnist/*/command.txt; do
            NAME=$(basename "$(dirname "$FILE")")
            [ -e "$FILE" ] && [ "$NAME" != faster_vit ] && RUNS+=("$NAME")
        done
    else
        RUNS=($RUNS)
    fi
fi
RUNS_DIR=${RUNS_DIR:-$(mktemp -d -t train_gpu_runs.XXXXXX)}
mkdir -p "$RESULTS_DIR" "$RUNS_DIR"
log() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
START=$SECONDS

for RUN in "${RUNS[@]}"; do
    if [ "$RUN" = faster_vit ]; then
        mapfile -t FLAGS < <(preset "$SIZE" training train)
    elif [ -f "results/fashion_mnist/$RUN/command.txt" ]; then
        mapfile -t FLAGS < <(recorded "results/fashion_mnist/$RUN/command.txt")
    else
        echo "unknown run '$RUN': use faster_vit or a folder of results/fashion_mnist/ with a command.txt" >&2
        exit 2
    fi
    COMMAND=("$PYTHON" -m fastervit train "${FLAGS[@]}" "${EXTRA[@]}" "${DEVICE[@]}" --no-progress --output "$RUNS_DIR/$RUN")
    log "training $RUN"
    mkdir -p "$RESULTS_DIR/$RUN"
    "$PYTHON" -c 'import shlex, sys; print("python", shlex.join(sys.argv[1:]))' "${COMMAND[@]:1}" > "$RESULTS_DIR/$RUN/command.txt"
    # The JSON record (last line) is the run's summary; run.json holds its settings and machine.
    "${COMMAND[@]}" | tail -n 1 > "$RESULTS_DIR/$RUN/train.json"
    cut -c1-300 "$RESULTS_DIR/$RUN/train.json" >&2
    for FILE in run.json steps.csv epochs.csv confusion.csv predictions.json; do
        cp "$RUNS_DIR/$RUN/$FILE" "$RESULTS_DIR/$RUN/"
    done
done

log "training done in $(( SECONDS - START )) s: $RESULTS_DIR (checkpoints in $RUNS_DIR)"
