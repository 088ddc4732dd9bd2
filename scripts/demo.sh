#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh clone: fetches ONNX Runtime, builds
# both programs (release), exports the default model into a bundle, and runs it with dalle-ort.
#
# Until a trained demo model ships, the default model is a seeded RANDOM tiny dVAE: the round
# trip below (image -> tokens -> image) exercises export and runtime end to end, but the output
# picture is noise. Output goes to out/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-ort.sh
cargo build --release --locked --bin dalle-export --bin dalle-ort
bin=target/release
out=out/demo
mkdir -p "$out"
"$bin/dalle-export" demo --seed 7 --out "$out/bundle" --force
"$bin/dalle-ort" info --model "$out/bundle"
"$bin/dalle-ort" encode --model "$out/bundle" models/demo/sample.png -o "$out/tokens.npy"
"$bin/dalle-ort" decode --model "$out/bundle" "$out/tokens.npy" -o "$out/decoded.png"
echo
echo "demo: wrote $out/tokens.npy and $out/decoded.png from models/demo/sample.png"
echo "demo: the model has seeded random weights (not trained), so decoded.png is noise by design."
