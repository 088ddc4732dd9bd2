#!/usr/bin/env bash
# The main job on the embedded default model, from a fresh clone: fetches ONNX Runtime, builds
# both programs (release), exports the default model into a bundle, and generates images.
#
# Until a trained demo model ships, the default model is the project's small DALLE-pytorch
# test checkpoint with SEEDED RANDOM weights (python-free-tests/fixtures/dalle_ctor/dalle.pt:
# rotary embeddings, shift tokens, all four attention types, its own DiscreteVAE, 8×8 tokens →
# 32×32 px) and a 25-word tokenizer. Everything runs for real — checkpoint import, ONNX export,
# KV-cache sampling with classifier-free guidance, dVAE decoding — but the pictures are noise by
# design. A seeded random OpenAI-style dVAE round trip follows. Output goes to out/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-ort.sh
cargo build --release --locked -p dalle-export -p dalle --bin dalle-export --bin dalle-ort
bin=target/release
out=out/demo
mkdir -p "$out"

echo
echo "demo: NOTE the default model has seeded RANDOM weights (no trained model ships yet): images are noise."
"$bin/dalle-export" dalle-pytorch \
    --checkpoint python-free-tests/fixtures/dalle_ctor/dalle.pt \
    --tokenizer python-free-tests/fixtures/tokenizer/tiny_wordlevel.json \
    --out "$out/dalle-bundle" --force
"$bin/dalle-ort" info --model "$out/dalle-bundle"
"$bin/dalle-ort" generate --model "$out/dalle-bundle" "a small red circle above a blue square" \
    -n 8 --top-k 16 --temperature 1 --cond-scale 2 --seed 7 -o "$out/generated"

"$bin/dalle-export" demo --seed 7 --out "$out/dvae-bundle" --force
"$bin/dalle-ort" encode --model "$out/dvae-bundle" models/demo/sample.png -o "$out/tokens.npy"
"$bin/dalle-ort" decode --model "$out/dvae-bundle" "$out/tokens.npy" -o "$out/decoded.png"
echo
echo "demo: wrote $out/generated/ (8 candidates, grid.png, generation.json) and $out/decoded.png"
echo "demo: the models have seeded random weights (not trained), so the pictures are noise by design."
