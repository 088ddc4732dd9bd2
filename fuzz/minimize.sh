#!/usr/bin/env bash
# After a campaign: merges the inputs of fuzz/corpus/<target>/ that add coverage into
# fuzz/seeds/<target>/ (libFuzzer -merge=1: the committed corpus grows only by what is new, and
# files over 64 KiB are left out to keep it small), for every target or those named.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pytorch pickle safetensors npy manifest tokenizer prompt image)
fi
bin="target/x86_64-unknown-linux-gnu/release"
export TMPDIR="/dev/shm/dalle-fuzz-minimize-$$"
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
for t in "${targets[@]}"; do
    small="$(mktemp -d -p /tmp)"
    find "corpus/$t" -type f -size -64k -exec cp {} "$small/" \;
    nice -n 19 "$bin/$t" -merge=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=30 \
        "seeds/$t" "$small" 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' || true
    rm -rf "$small"
done
