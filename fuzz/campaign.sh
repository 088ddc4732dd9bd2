#!/usr/bin/env bash
# Long fuzz campaigns: every target (or those named) at once, each in libFuzzer's fork mode so a
# crash is saved and the campaign goes on, at `nice -n 19`, with the memory cap the replay test
# uses. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   fuzz/campaign.sh [SECONDS] [TARGET...]     # default 3900 s (65 min), all targets
#
# Working corpora: fuzz/corpus/<target>/ (seeded from fuzz/seeds/<target>/), crashes:
# fuzz/artifacts/<target>/, logs: fuzz/logs/<target>.log (all gitignored). Afterwards
# `fuzz/stats.sh` tabulates the logs and `fuzz/minimize.sh` merges new coverage into fuzz/seeds/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-3900}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(pytorch pickle safetensors npy manifest tokenizer prompt image)
fi
nice -n 19 cargo +nightly fuzz build -O --debug-assertions
bin="target/x86_64-unknown-linux-gnu/release"
mkdir -p logs
# Scratch files (one folder per fuzzing process; libFuzzer's exit leaves them behind), removed
# at the end.
export TMPDIR="/dev/shm/dalle-fuzz-campaign-$$"
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    cp -n "seeds/$t"/* "corpus/$t/" 2>/dev/null || true
    cmd=(nice -n 19 "$bin/$t" "corpus/$t" -fork=1 -ignore_crashes=1 -ignore_ooms=1
        -ignore_timeouts=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=30
        -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="artifacts/$t/")
    echo "$(date -u +%FT%TZ) ${cmd[*]}" > "logs/$t.log"
    "${cmd[@]}" >> "logs/$t.log" 2>&1 &
done
wait
