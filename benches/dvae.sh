#!/usr/bin/env bash
# Full-size dVAE speed, ours vs PyTorch, on this machine, in one run; writes benches/RESULTS-dvae.md.
#
#   benches/dvae.sh
#
# Steps: make the full-size fixture if missing (tools/fixtures/dvae_fixtures.py --config full),
# build release, time `dalle-export openai-dvae` (EXPORT_RUNS times), run the Rust bench
# (`cargo bench --bench dvae_decode`: ONNX Runtime CPU decode/encode), run the PyTorch peer
# (benches/dvae_torch.py: torch.load, torch.onnx.export, decode/encode), check that our decoded
# pixels match PyTorch's to <= 1e-4, and write the results file. See benches/README.md.
#
# Environment overrides:
#   PYTHON        Python with torch + dall_e         (default /work/venv/bin/python)
#   DVAE_FIXTURE  full-size fixture folder           (default target/fixtures/dvae_full)
#   DVAE_RUNS     timed decode/encode runs per side  (default 10)
#   DVAE_WARMUP   untimed warm-up runs per side      (default 2)
#   EXPORT_RUNS   timed exports                      (default 3)
#   RESULTS       output file                        (default benches/RESULTS-dvae.md)
#   REVISION      revision to record                 (default: git rev-parse --short HEAD)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
COMMAND="benches/dvae.sh${*:+ $*}"
# Record the overrides given (before the defaults below fill them in).
for v in PYTHON DVAE_FIXTURE DVAE_RUNS DVAE_WARMUP EXPORT_RUNS RESULTS; do
    if [[ -n "${!v:-}" ]]; then COMMAND="$v=${!v} $COMMAND"; fi
done
PYTHON=${PYTHON:-/work/venv/bin/python}
FIXTURE=${DVAE_FIXTURE:-target/fixtures/dvae_full}
RUNS=${DVAE_RUNS:-10}
WARMUP=${DVAE_WARMUP:-2}
EXPORT_RUNS=${EXPORT_RUNS:-3}
RESULTS=${RESULTS:-benches/RESULTS-dvae.md}
PIXEL_ATOL=1e-4

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dalle-bench-dvae.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say() { echo "== $*" >&2; }

# --- fixture -------------------------------------------------------------------------------
need=(encoder.pkl decoder.pkl dec_tokens.npy dec_pixels.npy enc_pixels.npy enc_margin.npy)
missing=0
for f in "${need[@]}"; do [[ -f "$FIXTURE/$f" ]] || missing=1; done
if [[ $missing == 1 ]]; then
    say "full-size fixture missing in $FIXTURE: generating it (~400 MB)"
    "$PYTHON" tools/fixtures/dvae_fixtures.py --config full --out "$FIXTURE"
fi

# --- build everything before timing anything ------------------------------------------------
say "building (release)"
cargo build --release -p dalle-export --bin dalle-export
cargo bench --bench dvae_decode --no-run

# --- machine --------------------------------------------------------------------------------
UPTIME_BEFORE=$(uptime)
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
LOGICAL=$(nproc)
PHYSICAL=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
[[ "$PHYSICAL" -gt 0 ]] || PHYSICAL=$LOGICAL
MEM_KB=$(grep -m1 '^MemTotal' /proc/meminfo | awk '{print $2}')
RUSTC=$(rustc -V)
ORT_LIB=$(ls .onnxruntime/cpu/libonnxruntime.so.* 2>/dev/null | head -n1 || true)
ORT_VERSION=${ORT_LIB##*libonnxruntime.so.}
GIT_REV=${REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then GIT_REV="$GIT_REV (uncommitted changes)"; fi

# --- export (ours) --------------------------------------------------------------------------
say "timing dalle-export openai-dvae ($EXPORT_RUNS runs)"
EXPORT_CMD=(target/release/dalle-export openai-dvae --vae-encoder "$FIXTURE/encoder.pkl"
    --vae-decoder "$FIXTURE/decoder.pkl" -o "$WORK/bundle" --force)
: >"$WORK/export.tsv"
for i in $(seq 1 "$EXPORT_RUNS"); do
    sync
    start=$(date +%s%N)
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%M' -o "$WORK/rss" "${EXPORT_CMD[@]}" 2>"$WORK/export.log"
        rss=$(tail -n1 "$WORK/rss")
    else
        "${EXPORT_CMD[@]}" 2>"$WORK/export.log"
        rss=""
    fi
    end=$(date +%s%N)
    printf '%s\t%s\n' "$(( (end - start) / 1000000 ))" "$rss" >>"$WORK/export.tsv"
done
(cd "$WORK/bundle" && find . -type f -printf '%f\t%s\n' | sort) >"$WORK/sizes.tsv"

# --- decode/encode (ours: ONNX Runtime CPU through the dalle library) -----------------------
say "cargo bench --bench dvae_decode (runs $RUNS, warm-up $WARMUP)"
DVAE_BUNDLE="$WORK/bundle" DVAE_TOKENS="$FIXTURE/dec_tokens.npy" \
    DVAE_PIXELS="$FIXTURE/enc_pixels.npy" DVAE_RUNS="$RUNS" DVAE_WARMUP="$WARMUP" \
    DVAE_OUT_DIR="$WORK/ort" \
    cargo bench --bench dvae_decode | grep '^{' | tail -n1 >"$WORK/ort.json"

# --- PyTorch peer ---------------------------------------------------------------------------
say "benches/dvae_torch.py (threads $PHYSICAL, runs $RUNS, warm-up $WARMUP)"
"$PYTHON" benches/dvae_torch.py --fixture "$FIXTURE" --threads "$PHYSICAL" --runs "$RUNS" \
    --warmup "$WARMUP" --ort-out "$WORK/ort" 2>"$WORK/torch.log" | grep '^{' | tail -n1 \
    >"$WORK/torch.json" || { cat "$WORK/torch.log" >&2; exit 1; }

UPTIME_AFTER=$(uptime)

# --- results --------------------------------------------------------------------------------
say "writing $RESULTS"
export ROOT WORK RESULTS COMMAND CPU_MODEL LOGICAL PHYSICAL MEM_KB RUSTC ORT_VERSION GIT_REV \
    UPTIME_BEFORE UPTIME_AFTER RUNS WARMUP EXPORT_RUNS PIXEL_ATOL FIXTURE
"$PYTHON" - <<'EOF'
import json, os, statistics, datetime

E = os.environ
work = E["WORK"]
ort = json.load(open(os.path.join(work, "ort.json")))
tch = json.load(open(os.path.join(work, "torch.json")))
exports = [line.rstrip("\n").split("\t") for line in open(os.path.join(work, "export.tsv"))]
export_ms = [float(ms) for ms, _ in exports]
export_rss = [int(r) for _, r in exports if r]
sizes = [line.rstrip("\n").split("\t") for line in open(os.path.join(work, "sizes.tsv"))]

def s(ms):
    return f"{ms / 1e3:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"

def load_avg(u):
    return u.split("load average:")[-1].strip()

cmp = tch.get("ort_vs_torch", {})
dec_err = cmp.get("dec_max_abs")
atol = float(E["PIXEL_ATOL"])
dec_ok = dec_err is not None and dec_err <= atol
enc_ok = cmp.get("enc_tokens_equal_where_margin_gt_1e-3")

def onnx_export(key):
    r = tch.get(key, {})
    return s(r["ms"]) if "ms" in r else f"failed: {r.get('error', 'not run')[:200]}"

def ratio(a, b):
    return f"{a / b:.2f}×"

export_med = statistics.median(export_ms)
tl = tch["decoder_load_ms"] + tch["encoder_load_ms"]
onnx_ms = [tch.get(k, {}).get("ms") for k in ("onnx_export_decoder", "onnx_export_encoder")]
onnx_total = s(sum(onnx_ms)) if all(m is not None for m in onnx_ms) else "n/a"
od, td = ort["decode"], tch["decode"]
oe, te = ort.get("encode") or {}, tch["encode"]
load1 = float(load_avg(E["UPTIME_BEFORE"]).split(",")[0])
load2 = float(load_avg(E["UPTIME_AFTER"]).split(",")[0])
busy = max(load1, load2) > 0.5 * int(E["LOGICAL"])

L = []
L.append("# dVAE speed: dalle-export + ONNX Runtime (CPU) vs PyTorch (CPU)\n")
L.append("Generated by `benches/dvae.sh`; do not edit by hand. See `benches/README.md`.\n")
L.append("## Command\n")
L.append("```sh\n" + E["COMMAND"] + "\n```\n")
L.append(f"Run {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}, "
         f"revision {E['GIT_REV']}; fixture `{E['FIXTURE']}` (full-size dVAE: n_hid 256, "
         f"2 blocks/group, 8192 codes, 256 px; encoder {tch['encoder_params']:,} + decoder "
         f"{tch['decoder_params']:,} parameters, seeded random weights saved like the released "
         f"`encoder.pkl`/`decoder.pkl`).\n")
L.append("## Machine and versions\n")
L.append(f"- CPU: {E['CPU_MODEL']}; {E['LOGICAL']} logical CPUs, {E['PHYSICAL']} physical cores")
L.append(f"- RAM: {int(E['MEM_KB']) / 1024 / 1024:.1f} GiB")
L.append(f"- {E['RUSTC']}; ONNX Runtime {E['ORT_VERSION']} (CPU build, "
         f"`{os.path.relpath(ort['ort_library'], E['ROOT'])}`)")
L.append(f"- Python {tch['python']}, torch {tch['torch']}, numpy {tch['numpy']}, DALL-E 0.1 (`dall_e`)")
L.append(f"- Threads: ONNX Runtime default intra-op pool (one per physical core = {E['PHYSICAL']}); "
         f"torch set to {tch['torch_threads']} (its default here was {tch['torch_threads_default']}), "
         f"inter-op {tch['torch_interop_threads']}")
L.append(f"- Load average before: {load_avg(E['UPTIME_BEFORE'])}; after: {load_avg(E['UPTIME_AFTER'])}")
if busy:
    L.append("- **Note: the machine was busy (load average above half the CPU count) during the run;"
             " absolute times are inflated and noisier than on an idle machine. Both sides ran"
             " in the same window, one after the other.**")
L.append("")
L.append("## Results\n")
L.append(f"Decode/encode: {E['WARMUP']} untimed warm-up run(s), then {E['RUNS']} timed runs each; "
         "median (min – max). Batch 1, fp32.\n")
L.append("| What | Ours | PyTorch | Ours / PyTorch (< 1: ours faster) |")
L.append("|---|---|---|---|")
L.append(f"| Export encoder + decoder `.pkl` → ONNX bundle | **{s(export_med)}** median of "
         f"{len(export_ms)} (`dalle-export openai-dvae`: {', '.join(s(m) for m in export_ms)})"
         f" | `torch.onnx.export` (legacy, `dynamo=False`): decoder {onnx_export('onnx_export_decoder')}, "
         f"encoder {onnx_export('onnx_export_encoder')}, total {onnx_total} (plus `torch.load` below) | – |")
L.append(f"| Load `.pkl` (PyTorch) / create the session (ours) | decoder {s(ort['decoder_session_ms'])}, "
         f"encoder {s(ort['encoder_session_ms'] or 0)} (ORT library load {s(ort['ort_load_ms'])}) "
         f"| `torch.load`: decoder {s(tch['decoder_load_ms'])}, encoder {s(tch['encoder_load_ms'])} | – |")
L.append(f"| **Decode** one 256×256 image (tokens [1,32,32] → pixels) | **{s(od['median_ms'])}** "
         f"({s(od['min_ms'])} – {s(od['max_ms'])}) | **{s(td['median_ms'])}** ({s(td['min_ms'])} – "
         f"{s(td['max_ms'])}) | {ratio(od['median_ms'], td['median_ms'])} |")
if oe:
    L.append(f"| **Encode** one 256×256 image (pixels → tokens [1,32,32]) | **{s(oe['median_ms'])}** "
             f"({s(oe['min_ms'])} – {s(oe['max_ms'])}) | **{s(te['median_ms'])}** ({s(te['min_ms'])} – "
             f"{s(te['max_ms'])}) | {ratio(oe['median_ms'], te['median_ms'])} |")
if export_rss:
    L.append(f"| Peak memory of the export (max RSS) | {max(export_rss) / 1024:.0f} MiB | – | – |")
L.append("")
L.append("Means: decode ours " + s(od["mean_ms"]) + ", PyTorch " + s(td["mean_ms"])
         + ("; encode ours " + s(oe["mean_ms"]) + ", PyTorch " + s(te["mean_ms"]) if oe else "") + ".\n")
L.append("Notes: ours is the Rust `dalle::dvae::decode_pixels`/`encode_pixels` on ONNX Runtime's CPU "
         "provider (includes input validation and copying the output out). PyTorch's export time includes "
         "one traced forward pass of the module (that is how `torch.onnx.export` works), but not the "
         "`torch.load`. Our export reads the pickles itself (no Python) and writes both graphs.\n")
L.append("## Bundle written by `dalle-export`\n")
L.append("| File | Bytes |")
L.append("|---|---|")
for name, size in sizes:
    L.append(f"| `{name}` | {int(size):,} |")
L.append(f"| total | {sum(int(b) for _, b in sizes):,} |")
for key in ("onnx_export_decoder", "onnx_export_encoder"):
    if "bytes" in tch.get(key, {}):
        L.append(f"\n`torch.onnx.export` {key.rsplit('_', 1)[1]}: {tch[key]['bytes']:,} bytes.")
L.append("")
L.append("## Same outputs\n")
L.append(f"- Decoded pixels, ours vs PyTorch (same run): max |diff| = {dec_err:.3g} "
         f"(limit {atol:g}): **{'OK' if dec_ok else 'FAIL'}**" if dec_err is not None
         else f"- Decoded pixels: not compared ({cmp})")
L.append(f"- PyTorch vs the fixture's `dec_pixels.npy`: max |diff| = {tch['torch_vs_fixture_dec_max_abs']:.3g}")
if "enc_tokens_equal_frac" in cmp:
    L.append(f"- Encoded tokens, ours vs PyTorch: {cmp['enc_tokens_equal_frac'] * 100:.2f}% equal; "
             f"all equal where the reference top-1/top-2 margin > 1e-3: {enc_ok}")
L.append("")
L.append("<details><summary>Raw JSON</summary>\n")
L.append("```json\n" + json.dumps(ort) + "\n" + json.dumps(tch) + "\n```\n")
L.append("</details>")
open(E["RESULTS"], "w").write("\n".join(L) + "\n")
print("\n".join(L))
if not dec_ok:
    raise SystemExit(f"decoded pixels differ from PyTorch's: max |diff| {dec_err} > {atol}")
EOF
