#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh clone: fetches ONNX Runtime, builds
# the programs (release), exports the shipped shape-world model (models/shapes/: a DALLE-pytorch
# checkpoint in train_dalle.py format with its DiscreteVAE, and a small Hugging Face CLIP, trained
# by models/train/) into a bundle, generates 8 candidates for a prompt with classifier-free
# guidance, keeps the 4 CLIP likes best, and checks them with the shape-world evaluator.
#
#   scripts/demo.sh ["a small blue triangle at the top"]
#
# The prompt must use the world's words (see models/README.md). Output goes to out/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Keep the default prompt and settings in sync with python-free-tests/cli/shapes_demo.rs.
prompt="${1:-a large red circle on the left}"
scripts/setup-ort.sh
cargo build --release --locked -p dalle-export -p dalle \
    --bin dalle-export --bin dalle-ort --bin shapes-eval
bin=target/release
out=out/demo
mkdir -p "$out"
start=$(date +%s)

"$bin/dalle-export" dalle-pytorch \
    --checkpoint models/shapes/dalle.pt \
    --tokenizer models/shapes/tokenizer.json \
    --clip models/shapes/clip --kv-cache in-place \
    -o "$out/shapes-bundle" --force
"$bin/dalle-ort" info --model "$out/shapes-bundle"
# generate refuses a non-empty output folder (--force writes into it); start clean
rm -rf "$out/generated"
"$bin/dalle-ort" generate --model "$out/shapes-bundle" "$prompt" \
    -n 8 --top-k 16 --cond-scale 3 --seed 7 --rerank 4 -o "$out/generated"
echo
echo "demo: the shape-world evaluator on the 4 best candidates (CLIP order):"
"$bin/shapes-eval" --prompts models/shapes/heldout.json judge "$prompt" \
    "$out"/generated/rank_*.png || true
echo
echo "demo: exported and generated in $(( $(date +%s) - start )) s;" \
    "wrote $out/generated/ (rank_NN_candidate_NN.png, grid.png, generation.json)"
