#!/usr/bin/env bash
# `--precision` side by side on this CPU; writes benches/RESULTS-precision.md (see README.md).
#
#   benches/precision.sh
#
# Settings (environment): CHECKPOINT (the 76M bench model, default
# target/fixtures/bench_dalle/dalle.pt from tools/fixtures/bench_checkpoint.py), KV_CACHE
# (in-place), PRECISIONS (fp32 fp16 bf16 int8 int8-qdq), EVAL_LIMIT (all held-out prompts),
# PREC_STEPS, PREC_REPEATS, RESULTS, WORK (kept when given).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKPOINT=${CHECKPOINT:-target/fixtures/bench_dalle/dalle.pt}
KV_CACHE=${KV_CACHE:-in-place}
PRECISIONS=${PRECISIONS:-fp32 fp16 bf16 int8 int8-qdq}
RESULTS=${RESULTS:-benches/RESULTS-precision.md}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
bin=target/release
lib=$(ls "$PWD"/.onnxruntime/cpu/libonnxruntime.so.* | head -1)
export ORT_DYLIB_PATH=$lib
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

cargo build --release -p dalle-export -p dalle --bin dalle-export --bin dalle-ort --bin shapes-eval
cargo bench --no-run --bench precision 2>/dev/null

flags() { # precision label -> dalle-export flags
    case $1 in
        int8-qdq) echo "--precision int8 --int8-format qdq" ;;
        *) echo "--precision $1" ;;
    esac
}

# 1. Exports: the 76M bench model and the shapes model (with CLIP) at every precision.
: >"$WORK/sizes.tsv"
for p in $PRECISIONS; do
    # shellcheck disable=SC2046
    /usr/bin/time -f "%e s, %M KB" -o "$WORK/export-$p.time" \
        "$bin/dalle-export" dalle-pytorch --checkpoint "$CHECKPOINT" --kv-cache "$KV_CACHE" \
        $(flags "$p") -o "$WORK/bench-$p" --force >/dev/null
    # shellcheck disable=SC2046
    "$bin/dalle-export" dalle-pytorch --checkpoint models/shapes/dalle.pt \
        --tokenizer models/shapes/tokenizer.json --clip models/shapes/clip --kv-cache "$KV_CACHE" \
        $(flags "$p") -o "$WORK/shapes-$p" --force >/dev/null
    for b in bench shapes; do
        for f in "$WORK/$b-$p"/*.onnx "$WORK/$b-$p"/*.onnx.data; do
            [ -e "$f" ] && printf '%s\t%s\t%s\t%s\n' "$b" "$p" "$(basename "$f")" "$(stat -c %s "$f")" >>"$WORK/sizes.tsv"
        done
    done
    python3 - "$WORK/bench-$p/manifest.json" "$WORK/shapes-$p/manifest.json" >"$WORK/providers-$p.txt" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    m = json.load(open(path))
    for role, g in m["graphs"].items():
        p = g["attributes"]["precision"]
        q = p.get("quantization") or {}
        print(f'{path.split("/")[-2]}\t{role}\t{",".join(p["providers"]) or "-"}\t{",".join(p["verified_on"]) or "-"}\t{q.get("matrices", "")}')
EOF
done

# 2a. Read bandwidth, for the floor (weight bytes read per step / bandwidth).
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "${PYTHON:-/work/venv/bin/python}" benches/bandwidth.py \
    --threads "$(nproc)" | grep '^{' | tail -n1 >"$WORK/bandwidth.json"

# 2. Logits error and decode-step time of the 76M decoder (the CPU runs fp32, fp16, int8).
runnable=""
for p in $PRECISIONS; do
    [ "$p" = bf16 ] && continue
    runnable="$runnable${runnable:+,}$p=$WORK/bench-$p"
done
PREC_BUNDLES=$runnable cargo bench --bench precision 2>/dev/null >"$WORK/logits.json"

# 3. The shape-world evaluator, same seeds, every precision the CPU runs; CLIP rerank order.
for p in $PRECISIONS; do
    [ "$p" = bf16 ] && continue
    "$bin/shapes-eval" eval --model "$WORK/shapes-$p" -n 8 --top-k 16 --cond-scale 3 --seed 1 \
        ${EVAL_LIMIT:+--limit "$EVAL_LIMIT"} --report "$WORK/eval-$p.md" >"$WORK/eval-$p.log" 2>&1
done
prompt="a large red circle on the left"
rm -rf "$WORK/candidates"
"$bin/dalle-ort" --ep cpu generate --model "$WORK/shapes-fp32" "$prompt" -n 16 --top-k 16 \
    --cond-scale 3 --seed 7 -o "$WORK/candidates" >/dev/null 2>&1
for p in $PRECISIONS; do
    [ "$p" = bf16 ] && continue
    "$bin/dalle-ort" --ep cpu clip-score --model "$WORK/shapes-$p" "$prompt" \
        "$WORK"/candidates/candidate_*.png >"$WORK/clip-$p.tsv"
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$WORK PRECISIONS=$PRECISIONS LOAD_BEFORE=$load_before LOAD_AFTER=$load_after \
    KV_CACHE=$KV_CACHE CHECKPOINT=$CHECKPOINT python3 benches/precision_report.py >"$RESULTS"
echo "wrote $RESULTS (work: $WORK)"
