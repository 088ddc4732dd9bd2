#!/usr/bin/env bash
# Decode-step latency of this checkout against an earlier revision, on the same machine in the
# same window: both revisions' `decode_step` benches (each on a bundle exported by its own
# `dalle-export` from the same checkpoint, `--kv-cache in-place`) run alternately ROUNDS times,
# and benches/compare_report.py writes the per-point medians side by side. Used to show that the
# generation engine (per-row positions, sampling on the engine) did not slow the decode step.
#
#   benches/compare_revision.sh [REVISION]      (default ddb2df1, the last revision before the engine)
#
# Needs the bench checkpoint (benches/bench.sh makes it: target/fixtures/bench_dalle) and a
# release build of this checkout. The old revision is built in a git worktree under
# target/compare-<rev> (its target/release seeded from ours, so only the workspace recompiles).
# Environment: ROUNDS (default 3), STEP_BATCHES (1,8), STEP_PASTS (257,768,1268), STEP_RUNS (10),
# RESULTS (default benches/RESULTS-engine.md), CHECKPOINT (target/fixtures/bench_dalle).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REV=${1:-ddb2df1}
ROUNDS=${ROUNDS:-3}
CHECKPOINT=${CHECKPOINT:-target/fixtures/bench_dalle}
RESULTS=${RESULTS:-benches/RESULTS-engine.md}
export STEP_BATCHES=${STEP_BATCHES:-1,8}
export STEP_PASTS=${STEP_PASTS:-257,768,1268}
export STEP_RUNS=${STEP_RUNS:-10}
export STEP_REPEATS=1
COMMAND="benches/compare_revision.sh${1:+ $1}"
say() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

[[ -f "$CHECKPOINT/dalle.pt" ]] || { echo "no $CHECKPOINT/dalle.pt: run benches/bench.sh first" >&2; exit 2; }
scripts/setup-ort.sh >/dev/null
export ORT_DYLIB_PATH="$ROOT/.onnxruntime/cpu/libonnxruntime.so.1.31.1"

OLD="$ROOT/target/compare-$REV"
if [[ ! -d "$OLD" ]]; then
    git worktree add --detach "$OLD" "$REV" >/dev/null
fi
mkdir -p "$OLD/target"
[[ -d "$OLD/target/release" ]] || cp -a target/release "$OLD/target/"
ln -sfn "$ROOT/.onnxruntime" "$OLD/.onnxruntime"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dalle-compare.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say "building this checkout and $REV (release)"
cargo build --release --locked -p dalle-export --bin dalle-export >&2
cargo bench --locked --bench decode_step --no-run >&2 2>/dev/null
(cd "$OLD" && cargo build --release --locked -p dalle-export --bin dalle-export >&2 &&
    cargo bench --locked --bench decode_step --no-run >&2 2>/dev/null)

say "exporting the bench checkpoint with each revision's exporter"
target/release/dalle-export dalle-pytorch --checkpoint "$CHECKPOINT/dalle.pt" \
    --kv-cache in-place --out "$WORK/new" --force >&2
"$OLD/target/release/dalle-export" dalle-pytorch --checkpoint "$CHECKPOINT/dalle.pt" \
    --kv-cache in-place --out "$WORK/old" --force >&2

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$ROUNDS"); do
    say "round $round/$ROUNDS: $REV"
    (cd "$OLD" && STEP_BUNDLE="$WORK/old" cargo bench --locked --bench decode_step 2>/dev/null) |
        grep '^{' | tail -n1 >"$WORK/old-$round.json"
    say "round $round/$ROUNDS: this checkout"
    STEP_BUNDLE="$WORK/new" cargo bench --locked --bench decode_step 2>/dev/null |
        grep '^{' | tail -n1 >"$WORK/new-$round.json"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 benches/compare_report.py "$WORK" "$ROUNDS" "$REV" "$(git rev-parse --short HEAD)" \
    "$COMMAND" "$load_before" "$load_after" >"$RESULTS"
say "wrote $RESULTS"
