#!/usr/bin/env bash
# The first run on a GPU node, one command: sets up the GPU build of ONNX Runtime, exports the
# shipped model in the TensorRT layout, checks its graphs against every provider's support
# tables, then runs every graph on the CPU (the reference), CUDA and TensorRT (cold engine
# cache, then warm) and records parity against the CPU, session / engine build time, run and
# decode-step time, peak RSS and GPU memory.
#
#   scripts/gpu-check.sh [--out DIR] [--bundle DIR] [--device N] [--steps N] [--runs N]
#                        [--providers LIST] [--dry-run]
#
#   --out DIR         results (default out/gpu-check): check-<target>.txt, <provider>.json,
#                     reference/ (CPU outputs, .npy), nvidia-smi.txt, summary.md
#   --bundle DIR      check this bundle instead of exporting models/shapes (TensorRT layout)
#   --device N        CUDA device (default 0)
#   --steps N         decoder steps after the prefill (default 32); --runs N timed runs (10)
#   --providers LIST  comma-separated subset of cpu,cuda,tensorrt (default all three)
#   --dry-run         no GPU needed: CPU build only, providers cpu; checks the arguments, the
#                     export, `dalle-export check` and the CPU reference outputs
#
# Needs on the node (README "Execution providers and GPU nodes"): the NVIDIA driver, CUDA 13
# runtime + cuBLAS + cuRAND, cuDNN 9 and TensorRT 10.x libraries on LD_LIBRARY_PATH (the script
# checks each and names what is missing), Rust, Python 3 with pip (to fetch the wheel).
# Exit status: 0 when every graph runs on every provider within tolerance, 1 otherwise.
set -euo pipefail

usage() {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
invocation="$*"
out="$repo_root/out/gpu-check"
bundle=""
device=0
steps=32
runs=10
providers="cpu,cuda,tensorrt"
dry_run=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out | --bundle | --device | --steps | --runs | --providers)
            if [[ $# -lt 2 || -z $2 ]]; then
                echo "gpu-check.sh: $1 needs a value" >&2
                exit 2
            fi
            case "$1" in
                --out) out="$2" ;;
                --bundle) bundle="$2" ;;
                --device) device="$2" ;;
                --steps) steps="$2" ;;
                --runs) runs="$2" ;;
                --providers) providers="$2" ;;
            esac
            shift 2
            ;;
        --dry-run)
            dry_run=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "gpu-check.sh: unknown argument '$1'" >&2
            usage >&2
            exit 2
            ;;
    esac
done
for n in "$device" "$steps" "$runs"; do
    if ! [[ $n =~ ^[0-9]+$ ]]; then
        echo "gpu-check.sh: '$n' is not a non-negative integer" >&2
        exit 2
    fi
done
IFS=, read -r -a provider_list <<<"$providers"
for p in "${provider_list[@]}"; do
    case "$p" in
        cpu | cuda | tensorrt) ;;
        *)
            echo "gpu-check.sh: unknown provider '$p' (give cpu, cuda, tensorrt)" >&2
            exit 2
            ;;
    esac
done
if [[ $dry_run == 1 ]]; then
    provider_list=(cpu)
fi
if [[ -n $bundle && ! -f $bundle/manifest.json ]]; then
    echo "gpu-check.sh: --bundle $bundle has no manifest.json" >&2
    exit 2
fi

cd "$repo_root"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
log() { echo "gpu-check: $*" >&2; }

# 1. ONNX Runtime, and what the node has.
scripts/setup-ort.sh
gpu=0
for p in "${provider_list[@]}"; do
    [[ $p != cpu ]] && gpu=1
done
if [[ $gpu == 1 ]]; then
    scripts/setup-ort.sh --gpu
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "gpu-check.sh: nvidia-smi not found: no NVIDIA driver on this machine" >&2
        exit 1
    fi
    nvidia-smi >"$out/nvidia-smi.txt"
    log "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader -i "$device")"
    gpu_lib="$repo_root/.onnxruntime/gpu/libonnxruntime.so.1.31.1"
fi
cpu_lib="$repo_root/.onnxruntime/cpu/libonnxruntime.so.1.31.1"

# 2. Build, and the bundle (the TensorRT layout: --kv-cache concat, the default).
cargo build --release -p dalle-export --bin dalle-export
cargo bench --bench gpu_check --no-run
if [[ -z $bundle ]]; then
    bundle="$out/shapes-bundle"
    target/release/dalle-export dalle-pytorch --checkpoint models/shapes/dalle.pt \
        --tokenizer models/shapes/tokenizer.json --clip models/shapes/clip \
        --kv-cache concat -o "$bundle" --force
fi

# 3. Static check against each provider's support tables (no GPU needed).
status=0
for t in tensorrt cuda cpu; do
    if target/release/dalle-export check --target "$t" "$bundle" >"$out/check-$t.txt"; then
        log "check --target $t: ok"
    else
        log "check --target $t: FAIL (see $out/check-$t.txt)"
        status=1
    fi
done

# 4. Every graph on each provider; GPU memory sampled while it runs.
run_provider() { # provider [label] [trt cache dir]
    local p="$1" label="${2:-}" cache="${3:-}" lib="$cpu_lib" sampler=""
    [[ $p != cpu ]] && lib="$gpu_lib"
    if [[ $p != cpu ]]; then
        (while sleep 0.2; do
            nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i "$device"
        done) >"$out/gpu-mem-$p${label:+-$label}.txt" 2>/dev/null &
        sampler=$!
    fi
    local rc=0
    ORT_DYLIB_PATH="$lib" GPU_CHECK_BUNDLE="$bundle" GPU_CHECK_OUT="$out" GPU_CHECK_PROVIDER="$p" \
        GPU_CHECK_LABEL="$label" GPU_CHECK_TRT_CACHE="$cache" GPU_CHECK_DEVICE="$device" \
        GPU_CHECK_STEPS="$steps" GPU_CHECK_RUNS="$runs" \
        cargo bench --bench gpu_check >"$out/run-$p${label:+-$label}.log" 2>&1 || rc=$?
    if [[ -n $sampler ]]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        log "$p${label:+ $label}: peak GPU memory used $(sort -n "$out/gpu-mem-$p${label:+-$label}.txt" | tail -1) MiB"
    fi
    grep -E "^$p: " "$out/run-$p${label:+-$label}.log" >&2 || true
    if [[ $rc != 0 ]]; then
        log "$p${label:+ $label}: FAIL (see $out/run-$p${label:+-$label}.log)"
        status=1
    fi
}
run_provider cpu
for p in "${provider_list[@]}"; do
    case "$p" in
        cuda) run_provider cuda ;;
        tensorrt)
            rm -rf "$out/trt-cache" && mkdir -p "$out/trt-cache"
            run_provider tensorrt cold "$out/trt-cache"
            run_provider tensorrt warm "$out/trt-cache"
            ;;
    esac
done

{
    echo "# gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- command: scripts/gpu-check.sh $invocation"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- bundle: $bundle"
    [[ -f $out/nvidia-smi.txt ]] && echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader -i "$device")"
    echo "- load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
    for f in "$out"/check-*.txt; do
        echo "- $(basename "$f" .txt): $(tail -1 "$f")"
    done
    for f in "$out"/run-*.log; do
        echo
        echo "## $(basename "$f" .log)"
        echo
        grep -E "^(cpu|cuda|tensorrt): " "$f" | sed 's/^/    /' || echo "    (no results; see the log)"
    done
} >"$out/summary.md"
log "summary: $out/summary.md"
exit "$status"
