#!/usr/bin/env bash
# DALL·E mini end to end on this CPU, side by side in one run: ours (dalle-export min-dalle
# --kv-cache each of KV_CACHES + dalle-ort generate, ONNX Runtime CPU) against min-dalle's own
# `generate_images` (benches/min_dalle_torch.py) on the same mini-shaped weights (12 layers x
# 1024, 16 heads, GLU 2730, vocabularies 50264 / 16385, random; the released VQGAN geometry,
# random), fp32, top-k 256, super-conditioning 16, grid 1x1 and 2x2; and the read-bandwidth
# floor of the decoder's weights (benches/bandwidth.py). Prints JSON lines and the machine load; the table
# in benches/RESULTS-min-dalle.md is written from them by hand.
#
#   benches/min_dalle.sh
#
# Environment: PYTHON (default /work/venv/bin/python), MODEL (default target/min_dalle_mini,
# made by `tools/fixtures/min_dalle_fixtures.py --shape mini --out target/min_dalle_mini` when
# missing), GRIDS (default "1 2"), RUNS (default 1), KV_CACHES: the decoder cache layouts ours
# is exported and run with, each named in its JSON lines (default "in-place", the CPU's fastest
# and what RESULTS-min-dalle.md's end-to-end table measured; "in-place concat" runs both side by
# side), REFERENCE (default 1; 0 skips min-dalle's side, for comparing our layouts alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/work/venv/bin/python}
MODEL=${MODEL:-target/min_dalle_mini}
GRIDS=${GRIDS:-1 2}
RUNS=${RUNS:-1}
KV_CACHES=${KV_CACHES:-in-place}
REFERENCE=${REFERENCE:-1}
PROMPT="a photo of an avocado armchair"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

[[ -f $MODEL/decoder.pt ]] || "$PYTHON" tools/fixtures/min_dalle_fixtures.py --shape mini --out "$MODEL"
[[ -f $MODEL/detoker.pt ]] || "$PYTHON" benches/min_dalle_torch.py --write-detoker "$MODEL/detoker.pt"
cargo build --release -q -p dalle --bin dalle-ort -p dalle-export --bin dalle-export
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$PWD"/.onnxruntime/cpu/libonnxruntime.so* | head -1)}

echo "{\"load_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\", \"cores\": $(nproc)}"
for kv in $KV_CACHES; do
    start=$(date +%s.%N)
    target/release/dalle-export min-dalle --model "$MODEL" --kv-cache "$kv" -o "$WORK/bundle-$kv" >/dev/null
    echo "{\"side\": \"ours\", \"kv_cache\": \"$kv\", \"export_s\": $(echo "$(date +%s.%N) - $start" | bc)}"
done
"$PYTHON" benches/bandwidth.py | sed 's/^/{"bandwidth": /; s/$/}/'
first=${KV_CACHES%% *}
du -b "$WORK/bundle-$first"/decoder.onnx* | awk '{s += $1} END {print "{\"decoder_weight_bytes\": " s "}"}'

for g in $GRIDS; do
    n=$((g * g))
    for run in $(seq 1 "$RUNS"); do
        for kv in $KV_CACHES; do
            out="$WORK/out_${g}_${run}_$kv"
            start=$(date +%s.%N)
            target/release/dalle-ort generate --model "$WORK/bundle-$kv" "$PROMPT" -n "$n" --seed 1 -o "$out" >/dev/null 2>&1
            wall=$(echo "$(date +%s.%N) - $start" | bc)
            "$PYTHON" - "$out/generation.json" "$g" "$wall" "$kv" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["timings"]
print(json.dumps({"side": "ours", "kv_cache": sys.argv[4], "grid": int(sys.argv[2]),
                  "process_wall_s": float(sys.argv[3]), "load_s": t["session_load_ms"] / 1e3,
                  "generate_s": t["total_ms"] / 1e3, "step_mean_ms": t["step_mean_ms"],
                  "decode_ms": t["decode_ms"]}))
PY
        done
        if [[ $REFERENCE != 0 ]]; then
            "$PYTHON" benches/min_dalle_torch.py --model "$MODEL" --grid "$g" --runs 1 --prompt "$PROMPT"
        fi
    done
done
echo "{\"load_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
