#!/usr/bin/env bash
# Generation speed on this machine, in one run: ours (dalle-export + dalle-ort on ONNX Runtime's
# CPU provider) beside DALLE-pytorch's own generate_images on the same checkpoint, against the
# memory-bandwidth floor. Writes benches/RESULTS.md. See benches/README.md.
#
#   benches/bench.sh
#
# Steps: make the bench checkpoint if missing (tools/fixtures/bench_checkpoint.py: DALLE-pytorch
# train_dalle.py format, dim 512, depth 4, 76M decoder parameters, 32x32 grid, 8192 codes) and
# the ViT-B/32-shaped CLIP fixture for reranking (tools/fixtures/clip_fixtures.py --config full);
# build release; time `dalle-export dalle-pytorch` (without and with --clip); measure copy
# bandwidth (benches/bandwidth.py); decode-step latency against past length at batch 1 and 8
# (`cargo bench --bench decode_step`); the sampling and state-handling micro-benches
# (`cargo bench --bench sampling`, `cargo bench --bench state`);
# end-to-end `dalle-ort generate` for N candidates with/without CFG and rerank (wall time, max
# RSS, the sidecar's timings), and with --no-cpu-arena (memory); CLIP scoring cost per image
# (`dalle-ort clip-score`); the PyTorch peer (benches/generate_torch.py, timed steps + extrapolation); then benches/bench_report.py
# writes the results file.
#
# Environment overrides:
#   PYTHON        Python with torch + dalle_pytorch  (default /work/venv/bin/python)
#   CHECKPOINT    bench checkpoint folder            (default target/fixtures/bench_dalle)
#   CLIP_FIXTURE  Hugging Face CLIP folder           (default target/fixtures/clip_vit_b32)
#   CANDIDATES    N for the end-to-end runs          (default 2)
#   COND_SCALE    guidance scale of the CFG runs     (default 3)
#   FILTER_THRES  DALLE-pytorch top-k threshold      (default 0.9, generate.py's default)
#   PEER_STEPS    timed peer steps per window        (default 4)
#   STEP_RUNS     timed decode steps per point       (default 10)
#   KV_CACHE      decoder cache layout measured      (default in-place; the decode-step bench
#                 also runs the other layout, `concat`, for comparison)
#   THREADS       torch threads                      (default: physical cores, like ORT's pool)
#   RESULTS       output file                        (default benches/RESULTS.md)
#   KEEP_WORK=1   keep the work folder (raw JSON, bundles) and print its path
#   REVISION      revision to record                 (default: git rev-parse --short HEAD)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
COMMAND="benches/bench.sh${*:+ $*}"
for v in PYTHON CHECKPOINT CLIP_FIXTURE CANDIDATES COND_SCALE FILTER_THRES PEER_STEPS STEP_RUNS \
    THREADS RESULTS KV_CACHE; do
    if [[ -n "${!v:-}" ]]; then COMMAND="$v=${!v} $COMMAND"; fi
done
PYTHON=${PYTHON:-/work/venv/bin/python}
CHECKPOINT=${CHECKPOINT:-target/fixtures/bench_dalle}
CLIP_FIXTURE=${CLIP_FIXTURE:-target/fixtures/clip_vit_b32}
CANDIDATES=${CANDIDATES:-2}
COND_SCALE=${COND_SCALE:-3}
FILTER_THRES=${FILTER_THRES:-0.9}
PEER_STEPS=${PEER_STEPS:-4}
STEP_RUNS=${STEP_RUNS:-10}
KV_CACHE=${KV_CACHE:-in-place}
case $KV_CACHE in
    in-place) OTHER_KV_CACHE=concat ;;
    concat) OTHER_KV_CACHE=in-place ;;
    *) echo "KV_CACHE must be in-place or concat" >&2; exit 2 ;;
esac
RESULTS=${RESULTS:-benches/RESULTS.md}
SEED=1
PROMPT="a watercolor painting of a lighthouse on a cliff at sunset"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dalle-bench.XXXXXX")
if [[ "${KEEP_WORK:-}" == 1 ]]; then
    echo "work folder: $WORK" >&2
else
    trap 'rm -rf "$WORK"' EXIT
fi
say() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

# /usr/bin/time -v for max RSS; fall back to Python's getrusage when it is missing.
if [[ ! -x /usr/bin/time ]] && command -v apt-get >/dev/null; then
    apt-get install -y -qq time >/dev/null 2>&1 || true
fi
# timed NAME CMD...: runs CMD, writes $WORK/NAME.time (wall seconds, max RSS KiB) and .log
timed() {
    local name=$1
    shift
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.log" 2>&1 ||
            { cat "$WORK/$name.log" >&2; return 1; }
    else
        "$PYTHON" - "$WORK/$name.time" "$@" >"$WORK/$name.log" 2>&1 <<'EOF' ||
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
open(sys.argv[1], "w").write(f"{wall:.2f} {rss}\n")
sys.exit(rc)
EOF
            { cat "$WORK/$name.log" >&2; return 1; }
    fi
}

# --- fixtures -------------------------------------------------------------------------------
if [[ ! -f "$CHECKPOINT/dalle.pt" || ! -f "$CHECKPOINT/info.json" ]]; then
    say "bench checkpoint missing in $CHECKPOINT: generating it (~315 MB)"
    "$PYTHON" tools/fixtures/bench_checkpoint.py --out "$CHECKPOINT"
fi
if [[ ! -f "$CLIP_FIXTURE/config.json" ]]; then
    say "CLIP fixture missing in $CLIP_FIXTURE: generating it (ViT-B/32 shapes, ~600 MB)"
    "$PYTHON" tools/fixtures/clip_fixtures.py --config full --out "$CLIP_FIXTURE"
fi

# --- build everything before timing anything ------------------------------------------------
say "building (release)"
cargo build --release -p dalle-export -p dalle --bins
cargo bench --bench decode_step --no-run
cargo bench --bench sampling --bench state --no-run

# --- machine --------------------------------------------------------------------------------
UPTIME_BEFORE=$(uptime)
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
LOGICAL=$(nproc)
PHYSICAL=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
[[ "$PHYSICAL" -gt 0 ]] || PHYSICAL=$LOGICAL
THREADS=${THREADS:-$PHYSICAL}
MEM_KB=$(grep -m1 '^MemTotal' /proc/meminfo | awk '{print $2}')
RUSTC=$(rustc -V)
ORT_LIB=$(ls .onnxruntime/cpu/libonnxruntime.so.* 2>/dev/null | head -n1 || true)
ORT_VERSION=${ORT_LIB##*libonnxruntime.so.}
GIT_REV=${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then GIT_REV="$GIT_REV (uncommitted changes)"; fi

# --- export ---------------------------------------------------------------------------------
say "timing dalle-export dalle-pytorch"
sync
timed export target/release/dalle-export dalle-pytorch --checkpoint "$CHECKPOINT/dalle.pt" \
    --kv-cache "$KV_CACHE" --out "$WORK/bundle" --force
sync
timed export_clip target/release/dalle-export dalle-pytorch --checkpoint "$CHECKPOINT/dalle.pt" \
    --kv-cache "$KV_CACHE" --clip "$CLIP_FIXTURE" --out "$WORK/bundle_clip" --force
target/release/dalle-export dalle-pytorch --checkpoint "$CHECKPOINT/dalle.pt" \
    --kv-cache "$OTHER_KV_CACHE" --out "$WORK/bundle_other" --force
(cd "$WORK/bundle_clip" && find . -type f -printf '%f\t%s\n' | sort) >"$WORK/sizes.tsv"

# --- bandwidth ------------------------------------------------------------------------------
say "copy bandwidth"
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some of these machines for old OpenBLAS builds)
# slow a current numpy's kernels down: unset for this measurement only.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PYTHON" benches/bandwidth.py --threads "$PHYSICAL" |
    grep '^{' | tail -n1 >"$WORK/bandwidth.json"

# --- decode step vs past length -------------------------------------------------------------
say "cargo bench --bench decode_step"
STEP_BUNDLE="$WORK/bundle" STEP_RUNS="$STEP_RUNS" cargo bench --bench decode_step 2>"$WORK/step.log" |
    grep '^{' | tail -n1 >"$WORK/step.json" || { cat "$WORK/step.log" >&2; exit 1; }
say "cargo bench --bench decode_step (--kv-cache $OTHER_KV_CACHE)"
STEP_BUNDLE="$WORK/bundle_other" STEP_RUNS="$STEP_RUNS" cargo bench --bench decode_step \
    2>"$WORK/step_other.log" | grep '^{' | tail -n1 >"$WORK/step_other.json" ||
    { cat "$WORK/step_other.log" >&2; exit 1; }

# --- sampling micro-bench -------------------------------------------------------------------
say "cargo bench --bench sampling"
cargo bench --bench sampling -- --warm-up-time 1 --measurement-time 3 --noplot \
    >"$WORK/sampling.txt" 2>&1 || { cat "$WORK/sampling.txt" >&2; exit 1; }
say "cargo bench --bench state"
cargo bench --bench state -- --warm-up-time 1 --measurement-time 3 --noplot \
    >"$WORK/state.txt" 2>&1 || { cat "$WORK/state.txt" >&2; exit 1; }

# --- end to end (ours) ----------------------------------------------------------------------
: >"$WORK/e2e.tsv"
for cfg in 1 "$COND_SCALE"; do
    for rerank in no yes; do
        name="e2e_cfg${cfg}_rerank_${rerank}"
        say "dalle-ort generate -n $CANDIDATES --cond-scale $cfg (rerank $rerank)"
        args=(target/release/dalle-ort --ep cpu generate --model "$WORK/bundle" "$PROMPT"
            -n "$CANDIDATES" --filter-thres "$FILTER_THRES" --temperature 1 --cond-scale "$cfg"
            --seed "$SEED" -o "$WORK/$name")
        if [[ $rerank == yes ]]; then
            args=(target/release/dalle-ort --ep cpu generate --model "$WORK/bundle_clip" "$PROMPT"
                -n "$CANDIDATES" --filter-thres "$FILTER_THRES" --temperature 1
                --cond-scale "$cfg" --seed "$SEED" --rerank 1 -o "$WORK/$name")
        fi
        timed "$name" "${args[@]}"
        printf '%s\t%s\t%s\t%s\n' "$name" "$cfg" "$rerank" "$(cat "$WORK/$name.time")" >>"$WORK/e2e.tsv"
    done
done

# --- CLIP scoring per image (marginal: 4 images minus 1 image, over 3) ----------------------
: >"$WORK/e2e_noarena.tsv"
for cfg in 1 "$COND_SCALE"; do
    name="e2e_cfg${cfg}_noarena"
    say "dalle-ort --no-cpu-arena generate -n $CANDIDATES --cond-scale $cfg"
    timed "$name" target/release/dalle-ort --ep cpu --no-cpu-arena generate --model "$WORK/bundle" \
        "$PROMPT" -n "$CANDIDATES" --filter-thres "$FILTER_THRES" --temperature 1 \
        --cond-scale "$cfg" --seed "$SEED" -o "$WORK/$name"
    printf '%s\t%s\t%s\t%s\n' "$name" "$cfg" no "$(cat "$WORK/$name.time")" >>"$WORK/e2e_noarena.tsv"
done

say "dalle-ort clip-score"
img=$(ls "$WORK"/e2e_cfg1_rerank_no/candidate_*.png | head -n1)
timed clip1 target/release/dalle-ort --ep cpu clip-score --model "$WORK/bundle_clip" "$PROMPT" "$img"
timed clip4 target/release/dalle-ort --ep cpu clip-score --model "$WORK/bundle_clip" "$PROMPT" \
    "$img" "$img" "$img" "$img"

# --- PyTorch peer ---------------------------------------------------------------------------
peer() {
    local name=$1
    shift
    say "peer: benches/generate_torch.py $*"
    "$PYTHON" benches/generate_torch.py --checkpoint "$CHECKPOINT/dalle.pt" --threads "$THREADS" \
        --candidates "$CANDIDATES" --filter-thres "$FILTER_THRES" --temperature 1 \
        --steps "$PEER_STEPS" "$@" 2>"$WORK/$name.log" | grep '^{' | tail -n1 >"$WORK/$name.json" ||
        { cat "$WORK/$name.log" >&2; exit 1; }
}
peer peer_cfg1 --cond-scale 1
peer peer_cfg_nocache --cond-scale "$COND_SCALE"
peer peer_cfg_cache --cond-scale "$COND_SCALE" --use-cache

UPTIME_AFTER=$(uptime)

# --- results --------------------------------------------------------------------------------
say "writing $RESULTS"
# Saved so that `bench_report.py` can re-render from a kept work folder (see benches/README.md).
for v in ROOT WORK RESULTS COMMAND CPU_MODEL LOGICAL PHYSICAL THREADS MEM_KB RUSTC ORT_VERSION \
    GIT_REV UPTIME_BEFORE UPTIME_AFTER CHECKPOINT CLIP_FIXTURE CANDIDATES COND_SCALE \
    FILTER_THRES PEER_STEPS STEP_RUNS PROMPT SEED KV_CACHE OTHER_KV_CACHE; do
    printf '%s=%q\n' "$v" "${!v}"
done >"$WORK/report.env"
export ROOT WORK RESULTS COMMAND CPU_MODEL LOGICAL PHYSICAL THREADS MEM_KB RUSTC ORT_VERSION \
    GIT_REV UPTIME_BEFORE UPTIME_AFTER CHECKPOINT CLIP_FIXTURE CANDIDATES COND_SCALE \
    FILTER_THRES PEER_STEPS STEP_RUNS PROMPT SEED KV_CACHE OTHER_KV_CACHE
"$PYTHON" benches/bench_report.py
