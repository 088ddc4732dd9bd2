#!/usr/bin/env bash
# GPU-node check of the device-resident decoder state and the TensorRT phase sessions (issue
# #17): not run by the test suite (no GPU there). On a node with the GPU build of ONNX Runtime
# (`scripts/setup-ort.sh --gpu`) and CUDA 13 / cuDNN 9 / TensorRT 10 on LD_LIBRARY_PATH:
#
#   scripts/device-state-check.sh [OUT]          (default out/device-check)
#
# 1. exports the shipped shape-world model with the concat cache (the GPU layout);
# 2. prints `dalle-ort --ep tensorrt info` (the plan, then the sessions it creates);
# 3. generates the same seeded request on cpu, cuda and tensorrt (twice: the second start must
#    reuse the engines in the per-bundle cache folder, so its session_load_ms drops) and prints
#    each run's tokens agreement with the cpu run and its timings from generation.json.
# Provider float differences may change a sampled token; the check prints, it does not assert.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-out/device-check}"
cargo build --release --locked -p dalle-export -p dalle --bin dalle-export --bin dalle-ort
bin=target/release
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.onnxruntime/gpu/libonnxruntime.so.1.31.1}"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$PWD/$out/cache}"
mkdir -p "$out"
"$bin/dalle-export" dalle-pytorch --checkpoint models/shapes/dalle.pt \
    --tokenizer models/shapes/tokenizer.json --kv-cache concat -o "$out/bundle" --force
"$bin/dalle-ort" --ep tensorrt info --model "$out/bundle"
for run in cpu cuda tensorrt tensorrt-again; do
    ep="${run%-again}"
    rm -rf "$out/$run"
    "$bin/dalle-ort" --ep "$ep" -v generate --model "$out/bundle" \
        "a large red circle on the left" -n 8 --top-k 16 --cond-scale 3 --seed 7 -o "$out/$run"
done
python3 - "$out" <<'EOF'
import json, sys
out = sys.argv[1]
runs = {r: json.load(open(f"{out}/{r}/generation.json")) for r in ["cpu", "cuda", "tensorrt", "tensorrt-again"]}
tokens = lambda g: [c["image_tokens"] for c in g["candidates"]]
for name, g in runs.items():
    same = sum(a == b for a, b in zip(tokens(g), tokens(runs["cpu"])))
    print(f"{name}: provider {g['provenance'].get('execution_provider')}, "
          f"{same}/{len(tokens(g))} candidates token-identical to cpu, "
          f"timings {json.dumps(g.get('timings', {}))}")
EOF
ls -la "$XDG_CACHE_HOME/dalle/tensorrt"/*/* || true
