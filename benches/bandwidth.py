"""Memory copy bandwidth of this machine for benches/bench.sh: numpy copies of a 1 GiB float32
array (`np.copyto`, bytes read + bytes written per second), with 1 thread and with T threads
each copying its own slice at once (numpy releases the GIL while copying). Best of RUNS.
Prints one JSON line."""

import argparse
import json
import threading
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.mib * 1024 * 1024 // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.zeros(n, dtype=np.float32)
    np.copyto(dst, src)  # touch every page
    out = {"bytes": int(src.nbytes)}
    for threads in sorted({1, args.threads}):
        parts = np.array_split(np.arange(n), threads)
        bounds = [(int(p[0]), int(p[-1]) + 1) for p in parts]
        best = float("inf")
        for _ in range(args.runs):
            ts = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b])) for a, b in bounds]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            best = min(best, time.perf_counter() - t)
        out[f"copy_gbps_{threads}t"] = 2 * src.nbytes / best / 1e9
    out["copy_gbps"] = max(v for k, v in out.items() if k.startswith("copy_gbps_"))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
