"""PyTorch peer of benches/vqgan_decode.rs: min-dalle's own VQGanDetokenizer (CPU, eval,
no_grad, threads = physical cores like ORT) decoding the same [1, 16, 16] codes, timed the
same way; compares its pixels with ours (max |diff| must be <= 1e-4).

    /work/venv/bin/python benches/vqgan_torch.py FIXTURE_DIR ORT_OUT_DIR RUNS WARMUP
"""

import json
import os
import sys
import time

import numpy as np
import torch
from min_dalle.models import VQGanDetokenizer


def main():
    fixture, ort_dir, runs, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(int(os.environ.get("PHYSICAL_CORES", os.cpu_count() or 1)))
    t = time.perf_counter()
    det = VQGanDetokenizer().eval()
    det.load_state_dict(torch.load(os.path.join(fixture, "detoker.pt"), map_location="cpu"))
    load_ms = (time.perf_counter() - t) * 1e3
    codes = torch.from_numpy(np.load(os.path.join(fixture, "codes.npy"))[:1].reshape(1, -1))
    with torch.no_grad():
        for _ in range(warmup):
            det.forward(False, codes)
        samples = []
        for _ in range(runs):
            t = time.perf_counter()
            out = det.forward(False, codes)
            samples.append((time.perf_counter() - t) * 1e3)
    ours = np.load(os.path.join(ort_dir, "ort_pixels.npy"))           # [3, 256, 256] in [0, 1]
    ref = out.numpy().transpose(2, 0, 1) / 255.0
    diff = float(np.abs(ours - ref).max())
    samples.sort()
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_ms": load_ms,
        "decode": {"runs": runs, "min_ms": samples[0], "median_ms": samples[len(samples) // 2],
                   "mean_ms": sum(samples) / len(samples), "max_ms": samples[-1]},
        "max_abs_diff_vs_ours": diff,
    }))
    if diff > 1e-4:
        raise SystemExit(f"pixels differ from ours by {diff}")


if __name__ == "__main__":
    main()
