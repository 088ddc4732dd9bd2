#!/usr/bin/env bash
# After a campaign: merges the inputs of fuzz/corpus/<target>/ that add coverage into
# fuzz/seeds/<target>/, for every target or those named. libFuzzer's -set_cover_merge=1 keeps
# the fewest inputs covering every new edge (-use_counters=0: hit counts do not count) and
# files over 4 KiB are left out, so the committed corpus stays small and grows only by what is
# new.
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
    find "corpus/$t" -type f -size -4k -exec cp {} "$small/" \;
    nice -n 19 "$bin/$t" -set_cover_merge=1 -use_counters=0 -artifact_prefix="$small/" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=30 \
        "seeds/$t" "$small" 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' || true
    rm -rf "$small"
done
