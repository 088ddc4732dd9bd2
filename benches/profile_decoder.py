"""Where a decoder step's time goes inside ONNX Runtime: runs the bundle's `decoder.onnx` with
ONNX Runtime's Python package (same version as the runtime's library) and its built-in profiler,
one-token steps at a few past lengths, and sums kernel time per op type and per largest nodes.
Evidence for benches/RESULTS.md, not part of the timed harness (the Python binding adds its own
per-call overhead; the kernel times are ORT's own).

    /work/venv/bin/python benches/profile_decoder.py --bundle DIR [--pasts 257,1279] [--batch 1]

Prints one JSON line.
"""

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--pasts", default="257,1272")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    out = {"ort": ort.__version__, "batch": args.batch, "points": []}
    for past in [int(p) for p in args.pasts.split(",")]:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "prof")
        if args.threads:
            so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(os.path.join(args.bundle, "decoder.onnx"), so,
                                    providers=["CPUExecutionProvider"])
        feeds = {}
        for i in sess.get_inputs():
            if i.name == "input_ids":
                continue
            if i.name == "cache_length":  # --kv-cache in-place
                feeds[i.name] = np.array([past], dtype=np.int64)
                continue
            shape = [args.batch if d == "batch" else past if isinstance(d, str) else d
                     for d in i.shape]
            feeds[i.name] = (np.random.default_rng(0).standard_normal(shape) * 0.1).astype(np.float32)
        ids = np.full((args.batch, 1), 50000, dtype=np.int64)
        # In-place caches are bound as both past and present (as dalle-ort does); the
        # cache_length fed stays fixed, so every step writes the same slot.
        io = sess.io_binding()
        io.bind_cpu_input("input_ids", ids)
        for name, value in feeds.items():
            if name.startswith("past_key_values.") and "cache_length" in feeds:
                v = ort.OrtValue.ortvalue_from_numpy(value)
                feeds[name] = v
                io.bind_ortvalue_input(name, v)
                io.bind_ortvalue_output("present." + name[len("past_key_values."):], v)
            else:
                io.bind_cpu_input(name, value)
        bound = {o.name for o in sess.get_outputs() if o.name.startswith("present.")} \
            if "cache_length" in feeds else set()
        for o in sess.get_outputs():
            if o.name not in bound:
                io.bind_output(o.name)
        wall = []
        for _ in range(2 + args.steps):
            t = time.perf_counter()
            sess.run_with_iobinding(io)
            wall.append((time.perf_counter() - t) * 1e3)
        path = sess.end_profiling()
        events = json.load(open(path))
        runs = [e for e in events if e.get("name") == "model_run"]
        by_type = collections.Counter()
        by_node = collections.Counter()
        node_shape = {}
        # skip the 2 warm-up runs: keep kernel events after the 3rd model_run start
        start = sorted(r["ts"] for r in runs)[2] if len(runs) > 2 else 0
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
                continue
            by_type[e["args"]["op_name"]] += e["dur"]
            node = e["name"][: -len("_kernel_time")]
            by_node[node] += e["dur"]
            node_shape[node] = e["args"].get("output_type_shape")
        total = sum(by_type.values())
        out["points"].append(dict(
            past=past,
            run_wall_median_ms=float(np.median(wall[2:])),
            kernel_ms_per_step=total / 1e3 / args.steps,
            by_op_ms_per_step={k: v / 1e3 / args.steps for k, v in by_type.most_common()},
            top_nodes_ms_per_step=[(k, v / 1e3 / args.steps, node_shape[k])
                                   for k, v in by_node.most_common(12)],
        ))
        os.remove(path)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
