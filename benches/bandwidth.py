"""Memory bandwidth of this machine for benches/bench.sh, with 1 thread and with T threads each
working on its own slice of a 1 GiB float32 array at once (numpy releases the GIL), best of RUNS:

- copy: `np.copyto` (bytes read + bytes written per second, the STREAM convention) — the
  issue's floor divides by this;
- read: a matrix-vector product (`np.dot` of a float32 matrix slice `[rows, 4096]` with a
  vector: BLAS `sgemv`, bytes of the matrix read per second, BLAS held to one thread per
  Python thread with threadpoolctl). This is what a decode step does with its weights: it only
  reads them, streaming. (`np.add.reduce`, used before, is compute-bound on these CPUs: about
  16 GB/s where sgemv streams 27-28 GB/s, so it put the read floor above the real limit; it is
  still measured (`reduce_gbps_*`), and the floor takes whichever of the two streams faster.)

Prints one JSON line."""

import argparse
import json
import threading
import time

import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # the bench's venv has it; without it BLAS picks its own thread count
    threadpool_limits = None

COLS = 4096


def best_time(runs, work):
    """Best wall time over `runs` of running every (function, args) of `work` in its own
    thread at once."""
    best = float("inf")
    for _ in range(runs):
        ts = [threading.Thread(target=f, args=a) for f, a in work]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        best = min(best, time.perf_counter() - t)
    return best


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
        copy_s = best_time(args.runs, [(np.copyto, (dst[a:b], src[a:b])) for a, b in bounds])
        out[f"copy_gbps_{threads}t"] = 2 * src.nbytes / copy_s / 1e9
        reduce_s = best_time(args.runs, [(np.add.reduce, (src[a:b],)) for a, b in bounds])
        out[f"reduce_gbps_{threads}t"] = src.nbytes / reduce_s / 1e9
        # GEMV: each thread streams its own whole rows of the matrix view of `src`.
        matrix = src.reshape(-1, COLS)
        x = np.ones(COLS, dtype=np.float32)
        rows = np.array_split(np.arange(matrix.shape[0]), threads)
        outs = [np.empty(len(r), dtype=np.float32) for r in rows]
        work = [
            (np.dot, (matrix[int(r[0]) : int(r[-1]) + 1], x, o)) for r, o in zip(rows, outs)
        ]
        if threadpool_limits is not None:
            with threadpool_limits(limits=1):
                read_s = best_time(args.runs, work)
        else:
            read_s = best_time(args.runs, work)
        out[f"read_gbps_{threads}t"] = src.nbytes / read_s / 1e9
    out["copy_gbps"] = max(v for k, v in out.items() if k.startswith("copy_gbps_"))
    out["sgemv_gbps"] = max(v for k, v in out.items() if k.startswith("read_gbps_"))
    out["reduce_gbps"] = max(v for k, v in out.items() if k.startswith("reduce_gbps_"))
    # The floor takes the faster streaming read: sgemv is the decode step's own access pattern,
    # but where np.add.reduce streams faster (it does on some of these CPUs) the machine can
    # read that fast, and the floor must not sit above what it can do.
    sgemv = "sgemv (np.dot, float32 [rows, %d] x vector)" % COLS
    if out["reduce_gbps"] > out["sgemv_gbps"]:
        out["read_gbps"], out["read_method"] = out["reduce_gbps"], "np.add.reduce (faster here than " + sgemv + ")"
    else:
        out["read_gbps"], out["read_method"] = out["sgemv_gbps"], sgemv
    out["threadpoolctl"] = threadpool_limits is not None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
