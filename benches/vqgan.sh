#!/usr/bin/env bash
# min-dalle's VQGAN detokenizer at mini's real shapes: ours (ONNX Runtime CPU, benches/vqgan_decode.rs)
# beside min-dalle's PyTorch module (benches/vqgan_torch.py), one run each, same machine.
# Writes benches/RESULTS-vqgan.md. Needs the reference venv (/work/venv or $PYTHON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-/work/venv/bin/python}
FIXTURE=target/fixtures/vqgan_min_dalle_full
RUNS=${VQGAN_RUNS:-10}
WARMUP=${VQGAN_WARMUP:-2}
[ -f "$FIXTURE/detoker.pt" ] || "$PYTHON" tools/fixtures/vqgan_fixtures.py --config full
scripts/setup-ort.sh >/dev/null
cargo build --release --bench vqgan_decode >/dev/null 2>&1 || cargo bench --no-run --bench vqgan_decode
OUT=$(mktemp -d)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
CORES=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
OURS=$(VQGAN_FIXTURE=$FIXTURE VQGAN_RUNS=$RUNS VQGAN_WARMUP=$WARMUP VQGAN_OUT_DIR=$OUT \
  cargo bench --bench vqgan_decode 2>/dev/null | grep '^{')
THEIRS=$(PHYSICAL_CORES=$CORES "$PYTHON" benches/vqgan_torch.py "$FIXTURE" "$OUT" "$RUNS" "$WARMUP" 2>/dev/null | grep '^{')
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
"$PYTHON" - "$OURS" "$THEIRS" "$LOAD_BEFORE" "$LOAD_AFTER" "$RUNS" "$WARMUP" <<'PY'
import json, platform, subprocess, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cpu = subprocess.run(["sh", "-c", "lscpu | grep 'Model name' | sed 's/.*: *//'"], capture_output=True, text=True).stdout.strip()
o, t = ours["decode"], theirs["decode"]
with open("benches/RESULTS-vqgan.md", "w") as f:
    f.write(f"""# VQGAN detokenizer (min-dalle, mini's real shapes): ours vs min-dalle PyTorch

Command: `benches/vqgan.sh` (VQGAN_RUNS={sys.argv[5]}, VQGAN_WARMUP={sys.argv[6]}).
Machine: {cpu}, {platform.machine()}; load average before {sys.argv[3]}, after {sys.argv[4]}
(a shared machine: other builds ran at the same time; compare the two columns, not absolutes).
Input: one [1, 16, 16] code grid (one 256x256 image) of `target/fixtures/vqgan_min_dalle_full`
(seeded random weights in min-dalle's own `VQGanDetokenizer`, `tools/fixtures/vqgan_fixtures.py --config full`).

| decode one image | ours (ONNX Runtime CPU) | min-dalle (PyTorch {theirs['torch']}, {theirs['threads']} threads) | ours / theirs |
|---|---|---|---|
| median ms | {o['median_ms']:.1f} | {t['median_ms']:.1f} | {o['median_ms'] / t['median_ms']:.2f} |
| min ms | {o['min_ms']:.1f} | {t['min_ms']:.1f} | {o['min_ms'] / t['min_ms']:.2f} |
| mean ms | {o['mean_ms']:.1f} | {t['mean_ms']:.1f} | {o['mean_ms'] / t['mean_ms']:.2f} |

- Ours: export of `detoker.pt` {ours['export_ms']:.0f} ms, session creation {ours['session_ms']:.0f} ms,
  graph + weights {ours['bundle_bytes'] / 1e6:.1f} MB. min-dalle: module build + `load_state_dict` {theirs['load_ms']:.0f} ms.
- Output check: max |ours - min-dalle| = {theirs['max_abs_diff_vs_ours']:.2e} (must be <= 1e-4).

Raw: `{json.dumps(ours)}`

`{json.dumps(theirs)}`
""")
print(open("benches/RESULTS-vqgan.md").read())
PY
rm -rf "$OUT"
