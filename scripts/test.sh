#!/usr/bin/env bash
# The whole test suite, from a fresh clone: fetches ONNX Runtime (scripts/setup-ort.sh, once),
# then runs every test of the workspace. ORT-backed tests are never skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-ort.sh
cargo test --workspace --locked "$@"
