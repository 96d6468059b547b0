#!/usr/bin/env bash
# Every GPU number the book shows, written as JSON into results/ (chapter 9 reads them).
#
#   scripts/gpu_results.sh [PART ...]           # on a CUDA machine; PART: bench, train, dense (default: all)
#   GPU_RESULTS_SMOKE=1 scripts/gpu_results.sh  # CPU smoke test with tiny sizes (a few minutes)
#
# Each part fits in one ten-minute command on an H100 (estimates, until measured): bench
# about 10 min (the deploy runs compile FasterViT-0 to -2 only, twice each), train a few
# minutes per run (scripts/train_gpu.sh: the shipped Fashion-MNIST run's command, then each
# recorded peer and ablation; where a command's time is limited, run them one by one with
# RUNS=faster_vit, RUNS=resnet ...), dense about 8 min (scripts/train_dense_gpu.sh).
# Run them as separate commands where a command's time is limited.
#
# Settings (environment variables):
#   PEAK_TFLOPS   the GPU's dense bf16 peak, for model FLOPs utilisation
#                 (default 989: H100 SXM; H100 PCIe 756, A100 312, H200 989)
#   RESULTS_DIR   where the JSON goes (default results/; the smoke test defaults to a
#                 temporary folder so that its numbers never pass for GPU results)
#   PYTHON        the interpreter (default .venv/bin/python, else python3)
#
# What it measures (each step prints its JSON record's last line to the log):
#   1. environment.json                 GPU, driver, torch/timm versions, peak used for MFU
#   2. throughput_b128_bf16.json        FasterViT-0..6 and peers (timm), batch 128, bf16 autocast;
#      throughput_b128_deploy.json      FasterViT-0..2 through fastervit.deploy (bf16, channels_last,
#                                       torch.compile with freezing), with agreement vs float32 eager
#   3. latency_b1_bf16.json             the same models at batch 1 (each record also holds its
#      latency_b1_deploy.json           batch-1 latency); deploy adds CUDA graphs at batch 1
#   4. ablation_fv0_b128.json           FasterViT-0: float32 eager, each deploy optimisation alone,
#                                       all of them (alternated), with agreement
#   5. resolution_fv0_bf16_<R>.json     FasterViT-0 from 224 to 1024 px, ~constant pixels per batch
#   training/                           chapter 11's Fashion-MNIST runs on the GPU (the shipped run's
#                                       command, its peers and ablation); run.json records the machine
#   dense/                              FasterViT + UperNet segmentation (chapter 12)
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=("${@:-all}")
want() { [[ " ${PARTS[*]} " == *" all "* || " ${PARTS[*]} " == *" $1 "* ]]; }
for part in "${PARTS[@]}"; do
    case "$part" in all|bench|train|dense) ;; *) echo "unknown part '$part': use bench, train, dense or all" >&2; exit 2 ;; esac
done

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
FV=("$PYTHON" -m fastervit)

# The benchmark sizes are the "throughput" presets of fastervit/sizes.py, which chapter 9 reads
# too (FASTERVIT_SIZE=full there is this script's full run; the smoke test is the smoke size).
preset() {
    "$PYTHON" -c 'import sys; from fastervit.sizes import preset_value; print("\n".join(preset_value(*sys.argv[1:])))' "$@"
}
if [ "${GPU_RESULTS_SMOKE:-0}" = "1" ]; then
    SIZE=smoke
    RESULTS_DIR=${RESULTS_DIR:-$(mktemp -d -t gpu_results_smoke.XXXXXX)}
    DEVICE=cpu
    MODELS=faster_vit_0_224
    PEERS=()
    DEPLOY_MODELS=faster_vit_0_224
    DEPLOY=(--deploy --no-compile)  # compiling takes minutes on a CPU
else
    SIZE=full
    RESULTS_DIR=${RESULTS_DIR:-results}
    DEVICE=cuda
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run on a GPU machine, or set GPU_RESULTS_SMOKE=1 for the CPU smoke test')"
    MODELS=all
    PEERS=(--peers)
    DEPLOY_MODELS=faster_vit_0_224,faster_vit_1_224,faster_vit_2_224
    DEPLOY=(--deploy)
fi
mapfile -t THROUGHPUT < <(preset "$SIZE" throughput throughput)
mapfile -t LATENCY < <(preset "$SIZE" throughput latency)
ABLATION=("${THROUGHPUT[@]}")
mapfile -t SWEEP < <(preset "$SIZE" throughput sweep)
mapfile -t RESOLUTIONS < <(preset "$SIZE" throughput resolutions)
PIXELS_PER_BATCH=$(preset "$SIZE" throughput pixels_per_batch)
mkdir -p "$RESULTS_DIR"
COMMON=(--device "$DEVICE" --peak-tflops "$PEAK_TFLOPS")
log() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)" >&2; }
START=$SECONDS

if want bench; then
log "1/5 environment"
"$PYTHON" - "$RESULTS_DIR/environment.json" "$PEAK_TFLOPS" "$DEVICE" <<'EOF'
import json, platform, subprocess, sys, importlib.metadata as md
import torch
out, peak, device = sys.argv[1], float(sys.argv[2]), sys.argv[3]
env = {"device": device, "torch_version": torch.__version__, "python_version": platform.python_version(),
       "peak_tflops_bf16": peak, "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
for package in ("timm", "torchvision", "fvcore"):
    try:
        env[f"{package}_version"] = md.version(package)
    except md.PackageNotFoundError:
        env[f"{package}_version"] = None
if device == "cuda":
    env.update(gpu=torch.cuda.get_device_name(0), cuda_version=torch.version.cuda,
               cudnn_version=torch.backends.cudnn.version())
    try:
        query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                                           capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        env["nvidia_smi"] = f"unavailable: {error}"
with open(out, "w") as f:
    json.dump(env, f, indent=1)
print(json.dumps(env))
EOF

log "2/5 throughput, batch 128: bf16 autocast (with peers), then the deploy path"
"${FV[@]}" bench --model "$MODELS" "${PEERS[@]}" "${THROUGHPUT[@]}" "${COMMON[@]}" --amp bf16 \
    --output "$RESULTS_DIR/throughput_b128_bf16.json" | tail -n 1 | cut -c1-300
"${FV[@]}" bench --model "$DEPLOY_MODELS" "${DEPLOY[@]}" "${THROUGHPUT[@]}" "${COMMON[@]}" \
    --output "$RESULTS_DIR/throughput_b128_deploy.json" | tail -n 1 | cut -c1-300

log "3/5 latency, batch 1: bf16 autocast, then the deploy path (CUDA graphs)"
"${FV[@]}" bench --model "$MODELS" "${PEERS[@]}" "${LATENCY[@]}" "${COMMON[@]}" --amp bf16 \
    --output "$RESULTS_DIR/latency_b1_bf16.json" | tail -n 1 | cut -c1-300
"${FV[@]}" bench --model "$DEPLOY_MODELS" "${DEPLOY[@]}" "${LATENCY[@]}" "${COMMON[@]}" \
    --output "$RESULTS_DIR/latency_b1_deploy.json" | tail -n 1 | cut -c1-300

log "4/5 FasterViT-0: float32 eager, each deploy optimisation alone, all of them"
"${FV[@]}" bench --model faster_vit_0_224 --ablation "${ABLATION[@]}" "${COMMON[@]}" \
    --output "$RESULTS_DIR/ablation_fv0_b128.json" | tail -n 1 | cut -c1-300

log "5/5 FasterViT-0 from ${RESOLUTIONS[0]} to ${RESOLUTIONS[-1]} px"
for R in "${RESOLUTIONS[@]}"; do
    BATCH=$(( PIXELS_PER_BATCH / (R * R) ))
    BATCH=$(( BATCH > 1 ? BATCH : 1 ))
    "${FV[@]}" bench --model faster_vit_0_224 --resolution "$R" --batch-size "$BATCH" "${SWEEP[@]}" "${COMMON[@]}" --amp bf16 \
        --output "$RESULTS_DIR/resolution_fv0_bf16_$R.json" | tail -n 1 | cut -c1-200
done

fi


# ======================================================================================
# training results: see the training chapter
# ======================================================================================
if want train; then
    log "training: the Fashion-MNIST runs of chapter 11 on the GPU (scripts/train_gpu.sh)"
    RESULTS_DIR="$RESULTS_DIR/training" SMOKE="${GPU_RESULTS_SMOKE:-0}" PYTHON="$PYTHON" scripts/train_gpu.sh
fi

# ======================================================================================
# dense prediction results: chapter 12, FasterViT + UperNet on pasted Fashion-MNIST scenes
# ======================================================================================
if want dense; then
    log "dense prediction (scripts/train_dense_gpu.sh)"
    RESULTS_DIR="$RESULTS_DIR/dense" DENSE_SMOKE="${GPU_RESULTS_SMOKE:-0}" PYTHON="$PYTHON" scripts/train_dense_gpu.sh
fi

log "done in $(( SECONDS - START )) s: $RESULTS_DIR"
