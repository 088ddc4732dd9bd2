#!/usr/bin/env bash
# Peak memory of `dalle-export dalle-pytorch` against the checkpoint's size (issue 16), on this
# machine, in one run; writes benches/RESULTS-export-memory.md.
#
#   benches/export_memory.sh
#   BASELINE_BIN=/tmp/old/dalle-export benches/export_memory.sh   # also the same runs with another build
#
# Steps: make the DALLE-pytorch checkpoints if missing (tools/fixtures/bench_checkpoint.py, one
# per depth in MEMORY_DEPTHS), build release, export each checkpoint under `/usr/bin/time -v`
# (peak RSS = "Maximum resident set size"), with BASELINE_BIN too when given (its bundle must be
# byte-identical to ours), and write the results file. Peak RSS does not depend on load; the
# wall-clock times recorded beside it do.
#
# Environment overrides:
#   PYTHON         Python with torch + dalle_pytorch    (default /work/venv/bin/python)
#   MEMORY_DEPTHS  transformer depths to export         (default "4 64": ~0.32 and ~1.3 GB)
#   FIXTURES       folder for the generated checkpoints (default target/fixtures)
#   BASELINE_BIN   another dalle-export to measure beside ours (e.g. a build of main)
#   DVAE_FIXTURE   OpenAI-dVAE folder with encoder.pkl/decoder.pkl, exported too when present
#                  (default target/fixtures/dvae_full, from tools/fixtures/dvae_fixtures.py --config full)
#   RESULTS        output file                          (default benches/RESULTS-export-memory.md)
set -euo pipefail

cd "$(dirname "$0")/.."
COMMAND="benches/export_memory.sh${*:+ $*}"
for v in PYTHON MEMORY_DEPTHS FIXTURES BASELINE_BIN DVAE_FIXTURE RESULTS; do
    if [[ -n "${!v:-}" ]]; then COMMAND="$v=${!v} $COMMAND"; fi
done
PYTHON=${PYTHON:-/work/venv/bin/python}
DEPTHS=${MEMORY_DEPTHS:-4 64}
FIXTURES=${FIXTURES:-target/fixtures}
BASELINE_BIN=${BASELINE_BIN:-}
DVAE_FIXTURE=${DVAE_FIXTURE:-target/fixtures/dvae_full}
RESULTS=${RESULTS:-benches/RESULTS-export-memory.md}
[[ -x /usr/bin/time ]] || { echo "needs /usr/bin/time (GNU time) for peak RSS" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dalle-bench-memory.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "== $*" >&2; }

say "building (release)"
cargo build --release -p dalle-export --bin dalle-export

checkpoint_of() { # depth -> path
    if [[ $1 == 4 ]]; then echo "$FIXTURES/bench_dalle/dalle.pt"; else echo "$FIXTURES/bench_dalle_d$1/dalle.pt"; fi
}
for depth in $DEPTHS; do
    ckpt=$(checkpoint_of "$depth")
    if [[ ! -f $ckpt ]]; then
        say "making $ckpt (depth $depth)"
        "$PYTHON" tools/fixtures/bench_checkpoint.py --out "$(dirname "$ckpt")" --depth "$depth"
    fi
done

UPTIME_BEFORE=$(uptime)
# Before anything is written (the results file itself would count as a change).
REVISION="$(git rev-parse --short HEAD)$([[ -n $(git status --porcelain 2>/dev/null) ]] && echo ' (uncommitted changes)')"
# measure BIN ARGS... -> "peak_kib wall" (the export's own arguments after the binary)
measure() {
    /usr/bin/time -v "$@" --force >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }
    local rss wall
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/log")
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/log")
    echo "$rss $wall"
}

rows=()
for depth in $DEPTHS; do
    ckpt=$(checkpoint_of "$depth")
    bytes=$(stat -c %s "$ckpt")
    # The largest tensor: the output projection [total_tokens, dim] in f32.
    largest=$("$PYTHON" -c "import json,sys; i=json.load(open(sys.argv[1])); print(i['total_tokens']*i['dim']*4)" "$(dirname "$ckpt")/info.json" 2>/dev/null || echo 0)
    say "exporting $ckpt ($bytes bytes)"
    read -r rss wall < <(measure target/release/dalle-export dalle-pytorch --checkpoint "$ckpt" -o "$WORK/ours")
    line="| dalle-pytorch depth $depth | $bytes | $largest | ours | $rss | $(awk -v r="$rss" -v b="$bytes" 'BEGIN{printf "%.3f", r*1024/b}') | $wall |"
    rows+=("$line")
    if [[ -n $BASELINE_BIN ]]; then
        read -r rss wall < <(measure "$BASELINE_BIN" dalle-pytorch --checkpoint "$ckpt" -o "$WORK/base")
        rows+=("| dalle-pytorch depth $depth | $bytes | $largest | baseline | $rss | $(awk -v r="$rss" -v b="$bytes" 'BEGIN{printf "%.3f", r*1024/b}') | $wall |")
        diff -r "$WORK/ours" "$WORK/base" >/dev/null ||
            { echo "bundles differ between ours and the baseline for depth $depth" >&2; exit 1; }
    fi
    rm -rf "$WORK/ours" "$WORK/base"
done
if [[ -f $DVAE_FIXTURE/encoder.pkl && -f $DVAE_FIXTURE/decoder.pkl ]]; then
    enc=$DVAE_FIXTURE/encoder.pkl
    dec=$DVAE_FIXTURE/decoder.pkl
    bytes=$(($(stat -c %s "$enc") + $(stat -c %s "$dec")))
    largest=$("$PYTHON" -c "
import sys, torch
m = max(t.numel() * t.element_size() for f in sys.argv[1:]
        for t in torch.load(f, weights_only=False).state_dict().values())
print(m)" "$enc" "$dec" 2>/dev/null || echo 0)
    say "exporting $enc + $dec ($bytes bytes)"
    args=(openai-dvae --vae-encoder "$enc" --vae-decoder "$dec")
    read -r rss wall < <(measure target/release/dalle-export "${args[@]}" -o "$WORK/ours")
    rows+=("| openai-dvae (both halves) | $bytes | $largest | ours | $rss | $(awk -v r="$rss" -v b="$bytes" 'BEGIN{printf "%.3f", r*1024/b}') | $wall |")
    if [[ -n $BASELINE_BIN ]]; then
        read -r rss wall < <(measure "$BASELINE_BIN" "${args[@]}" -o "$WORK/base")
        rows+=("| openai-dvae (both halves) | $bytes | $largest | baseline | $rss | $(awk -v r="$rss" -v b="$bytes" 'BEGIN{printf "%.3f", r*1024/b}') | $wall |")
        diff -r "$WORK/ours" "$WORK/base" >/dev/null ||
            { echo "dVAE bundles differ between ours and the baseline" >&2; exit 1; }
    fi
fi
UPTIME_AFTER=$(uptime)

{
    echo "# Export peak memory vs checkpoint size (issue 16)"
    echo
    echo "Command: \`$COMMAND\`"
    echo
    echo "- Revision: $REVISION"
    [[ -n $BASELINE_BIN ]] && echo "- Baseline: \`$BASELINE_BIN\` (bundles byte-identical to ours: checked)"
    echo "- Machine: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) logical CPUs, $(free -g | awk '/Mem:/{print $2}') GiB RAM"
    echo "- Load before: \`$UPTIME_BEFORE\`; after: \`$UPTIME_AFTER\`"
    echo "- Export: \`dalle-export dalle-pytorch --checkpoint … -o … --force\` (defaults: external data,"
    echo "  \`--kv-cache concat\`); checkpoints from \`tools/fixtures/bench_checkpoint.py --depth N\`"
    echo "  (dim 512, CLIP-BPE vocab, 32×32 grid, fp32); the dVAE (when present) with"
    echo "  \`dalle-export openai-dvae --vae-encoder … --vae-decoder … -o … --force\`. Peak RSS is GNU"
    echo "  time's maximum resident set size."
    echo
    echo "| checkpoint | checkpoint bytes | largest tensor bytes | build | peak RSS KiB | peak RSS / checkpoint | wall |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$RESULTS"
say "wrote $RESULTS"
cat "$RESULTS"
