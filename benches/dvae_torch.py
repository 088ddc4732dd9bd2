"""PyTorch peer of `benches/dvae_decode.rs`: the reference `dall_e` dVAE on the CPU.

Times, on the same machine and with the same thread count as ONNX Runtime:
  - `torch.load(decoder.pkl / encoder.pkl, weights_only=False)` (what loading the released files costs),
  - `torch.onnx.export` of the decoder and encoder (PyTorch's own route to ONNX; the legacy
    TorchScript exporter, `dynamo=False`, first; the error text is recorded if it fails),
  - decoding one [1, 32, 32] token grid to a 256x256 image:
    `unmap_pixels(sigmoid(dec(one_hot(tokens).permute(0,3,1,2).float())[:, :3]))`,
  - encoding one 256x256 image: `argmax(enc(map_pixels(x)), dim=1)`,
each decode/encode after the same warm-up as the Rust bench, under `torch.no_grad()` in eval
mode. With `--ort-out DIR` it compares ONNX Runtime's outputs (written there by the Rust bench)
with PyTorch's. Prints one JSON object on stdout.

    /work/venv/bin/python benches/dvae_torch.py --fixture target/fixtures/dvae_full \
        --threads 2 --runs 10 --warmup 2 [--ort-out DIR] [--onnx-dir DIR]

Normally run by `benches/dvae.sh`.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

import dall_e
from dall_e import map_pixels, unmap_pixels


def stats(samples_s):
    ms = sorted(s * 1e3 for s in samples_s)
    return {
        "runs": len(ms),
        "min_ms": ms[0],
        "median_ms": statistics.median(ms),
        "mean_ms": statistics.fmean(ms),
        "max_ms": ms[-1],
        "samples_ms": ms,
    }


def time_runs(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    samples, out = [], None
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
    return samples, out


def timed_load(path):
    start = time.perf_counter()
    module = torch.load(path, map_location="cpu", weights_only=False)
    return module, (time.perf_counter() - start) * 1e3


def timed_onnx_export(module, example, path, input_name, output_name):
    """Seconds of `torch.onnx.export` (legacy exporter), or the error text."""
    result = {"exporter": "torch.onnx.export(dynamo=False)"}
    try:
        start = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                path,
                input_names=[input_name],
                output_names=[output_name],
                opset_version=17,
                dynamo=False,
            )
        result["ms"] = (time.perf_counter() - start) * 1e3
        size = os.path.getsize(path)
        data = path + ".data"
        if os.path.exists(data):
            size += os.path.getsize(data)
        result["bytes"] = size
    except Exception as e:  # noqa: BLE001 - the point is to record whatever went wrong
        result["error"] = f"{type(e).__name__}: {e}".strip()[:2000]
        result["traceback_tail"] = traceback.format_exc()[-1500:]
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", default="target/fixtures/dvae_full")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: leave torch's choice)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ort-out", default=None,
                    help="folder holding ort_dec_pixels.npy / ort_enc_tokens.npy to compare")
    ap.add_argument("--onnx-dir", default=None,
                    help="where torch.onnx.export writes (default: a temporary folder)")
    ap.add_argument("--skip-onnx-export", action="store_true")
    args = ap.parse_args()

    threads_default = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {
        "bench": "dvae_torch",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "dall_e": os.path.dirname(dall_e.__file__),
        "torch_threads_default": threads_default,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "warmup": args.warmup,
    }

    fx = args.fixture
    dec, report["decoder_load_ms"] = timed_load(os.path.join(fx, "decoder.pkl"))
    enc, report["encoder_load_ms"] = timed_load(os.path.join(fx, "encoder.pkl"))
    dec.eval()
    enc.eval()
    report["decoder_params"] = sum(p.numel() for p in dec.parameters())
    report["encoder_params"] = sum(p.numel() for p in enc.parameters())

    tokens = torch.from_numpy(np.load(os.path.join(fx, "dec_tokens.npy"))).long()
    vocab = dec.vocab_size
    pixels_path = os.path.join(fx, "enc_pixels.npy")
    pixels = np.load(pixels_path) if os.path.exists(pixels_path) else None
    if pixels is None or pixels.shape != (1, 3, 256, 256):
        raise SystemExit(f"{pixels_path} must be f32 [1, 3, 256, 256] (run the full fixture)")
    x = torch.from_numpy(pixels).float()

    def decode():
        with torch.no_grad():
            z = F.one_hot(tokens, num_classes=vocab).permute(0, 3, 1, 2).float()
            return unmap_pixels(torch.sigmoid(dec(z)[:, :3]))

    def encode():
        with torch.no_grad():
            return torch.argmax(enc(map_pixels(x)), dim=1)

    samples, torch_pixels = time_runs(decode, args.warmup, args.runs)
    report["decode"] = stats(samples)
    samples, torch_tokens = time_runs(encode, args.warmup, args.runs)
    report["encode"] = stats(samples)

    torch_pixels = torch_pixels.numpy()
    torch_tokens = torch_tokens.numpy()
    ref = np.load(os.path.join(fx, "dec_pixels.npy"))
    report["torch_vs_fixture_dec_max_abs"] = float(np.abs(torch_pixels - ref).max())

    if args.ort_out:
        cmp = {}
        p = os.path.join(args.ort_out, "ort_dec_pixels.npy")
        if os.path.exists(p):
            ort_pixels = np.load(p)
            cmp["dec_shape_equal"] = ort_pixels.shape == torch_pixels.shape
            if cmp["dec_shape_equal"]:
                cmp["dec_max_abs"] = float(np.abs(ort_pixels - torch_pixels).max())
        else:
            cmp["dec_missing"] = p
        p = os.path.join(args.ort_out, "ort_enc_tokens.npy")
        if os.path.exists(p):
            ort_tokens = np.load(p)
            if ort_tokens.shape == torch_tokens.shape:
                same = ort_tokens == torch_tokens
                cmp["enc_tokens_equal_frac"] = float(same.mean())
                margin_path = os.path.join(fx, "enc_margin.npy")
                if os.path.exists(margin_path):
                    clear = np.load(margin_path) > 1e-3
                    cmp["enc_tokens_equal_where_margin_gt_1e-3"] = bool(same[clear].all())
            else:
                cmp["enc_shape_mismatch"] = [list(ort_tokens.shape), list(torch_tokens.shape)]
        else:
            cmp["enc_missing"] = p
        report["ort_vs_torch"] = cmp

    if not args.skip_onnx_export:
        with tempfile.TemporaryDirectory(prefix="dvae-torch-onnx-") as tmp:
            out = args.onnx_dir or tmp
            os.makedirs(out, exist_ok=True)
            z = F.one_hot(tokens, num_classes=vocab).permute(0, 3, 1, 2).float()
            report["onnx_export_decoder"] = timed_onnx_export(
                dec, z, os.path.join(out, "torch_dvae_decoder.onnx"), "z", "x_stats")
            report["onnx_export_encoder"] = timed_onnx_export(
                enc, map_pixels(x), os.path.join(out, "torch_dvae_encoder.onnx"), "x", "z_logits")

    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
