"""PyTorch peer for benches/bench.sh: DALLE-pytorch 1.6.6's own `generate_images` on the bench
checkpoint, CPU, `torch.no_grad()`, eval mode, a fixed thread count.

The checkpoint is rebuilt like DALLE-pytorch's generate.py does
(`DALLE(vae=DiscreteVAE(**vae_params), **hparams).load_state_dict(weights)`), the text is
repeated once per candidate (generate.py's batching), and `generate_images` is called with the
same settings as ours (`filter_thres`, `temperature`, `cond_scale`, `use_cache`).

Without a working cache every step re-runs the whole sequence, so a full run (1024 steps) would
take far too long on a small CPU. Instead, each configuration runs `generate_images` three times
and records the start time of every `forward_with_cond_scale` call (one per sampled token):

  early  no priming; stopped (an exception from the wrapper) after STEPS + 1 calls
         -> step times at sequence lengths n = 257 .. 257 + STEPS - 1
  middle primed with 512 image tokens (`img` + `num_init_img_tokens`, the reference's own
         priming path), stopped after STEPS + 1 calls -> n = 769 ..
  late   primed with 1024 - STEPS tokens: a complete call (last steps + `vae.decode`)
         -> n = 1281 - STEPS .. 1280, and the decode time

A step's time is the interval between two consecutive calls (forward + top_k + gumbel + cat), the
last step's ends at `vae.decode`. The first call of a run (with a cache: the prefill of the whole
prefix) is kept apart. The full run is estimated as

  T_full = first call of `early` + sum_{n = 258}^{1280} t(n) + decode

where t(n) is, without a cache, the quadratic through the three (mean n, median step time)
points of the runs (exact through three points) and, with `use_cache`, the least-squares line
through every step sample of the three runs (cached steps cost nearly the same at every length). `n` is the number of positions the transformer sees (BOS + 256 text + image tokens so far).

Prints one JSON line.
"""

import argparse
import json
import os
import platform
import sys
import time
import types
from importlib import metadata

import numpy as np
import torch

sys.modules.setdefault("youtokentome", types.ModuleType("youtokentome"))
import dalle_pytorch  # noqa: E402
from dalle_pytorch import DALLE, DiscreteVAE  # noqa: E402


class Stop(Exception):
    pass


def load(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    dalle = DALLE(vae=DiscreteVAE(**ckpt["vae_params"]), **ckpt["hparams"])
    dalle.load_state_dict(ckpt["weights"])
    dalle.eval()
    return dalle


def run(dalle, text, args, prime, limit):
    """One generate_images call; returns (call start times, decode start, end, stopped)."""
    calls = []
    marks = {}
    orig_fwd = dalle.forward_with_cond_scale
    orig_decode = dalle.vae.decode
    orig_codes = dalle.vae.get_codebook_indices

    def fwd(*a, **kw):
        calls.append(time.perf_counter())
        if limit is not None and len(calls) > limit:
            raise Stop()
        return orig_fwd(*a, **kw)

    def decode(*a, **kw):
        marks["decode"] = time.perf_counter()
        return orig_decode(*a, **kw)

    def codes(*a, **kw):
        t = time.perf_counter()
        r = orig_codes(*a, **kw)
        marks["prime_s"] = time.perf_counter() - t
        return r

    dalle.forward_with_cond_scale = fwd
    dalle.vae.decode = decode
    dalle.vae.get_codebook_indices = codes
    kw = dict(filter_thres=args.filter_thres, temperature=args.temperature,
              cond_scale=args.cond_scale, use_cache=args.use_cache)
    if prime:
        img = torch.rand(text.shape[0], 3, dalle.vae.image_size, dalle.vae.image_size,
                         generator=torch.Generator().manual_seed(1))
        kw.update(img=img, num_init_img_tokens=prime)
    stopped = False
    start = time.perf_counter()
    try:
        with torch.no_grad():
            dalle.generate_images(text, **kw)
    except Stop:
        stopped = True
    end = time.perf_counter()
    del dalle.forward_with_cond_scale
    dalle.vae.decode = orig_decode
    dalle.vae.get_codebook_indices = orig_codes
    return dict(start=start, calls=calls, decode=marks.get("decode"), end=end,
                prime_s=marks.get("prime_s", 0.0), stopped=stopped)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=2)
    ap.add_argument("--filter-thres", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--cond-scale", type=float, default=1.0)
    ap.add_argument("--use-cache", action="store_true")
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = time.perf_counter()
    dalle = load(args.checkpoint)
    load_s = time.perf_counter() - t
    tsl, isl = dalle.text_seq_len, dalle.image_seq_len
    text = torch.zeros(1, tsl, dtype=torch.long)
    text[0, :12] = torch.arange(1, 13) * 97
    text = text.repeat(args.candidates, 1)
    k = args.steps
    base = tsl + 1  # positions seen by the transformer at the first image step (BOS + text)

    plan = [("early", 0, k + 1), ("middle", isl // 2, k + 1), ("late", isl - k, None)]
    points = []
    raw = {}
    first_call_s = None
    decode_s = None
    for name, prime, limit in plan:
        r = run(dalle, text.clone(), args, prime, limit)
        c = r["calls"]
        ends = c[1:] if r["stopped"] else c[1:] + [r["decode"]]
        # step i (0-based) of this run sees n = base + prime + i positions
        steps = [(base + prime + i, ends[i] - c[i]) for i in range(1, len(ends))]
        if name == "early":
            first_call_s = c[1] - c[0]
        if name == "late":
            decode_s = r["end"] - r["decode"]
            raw["late_call_s"] = r["end"] - r["start"]
            raw["late_prime_s"] = r["prime_s"]
        ns = [n for n, _ in steps]
        ts = [s for _, s in steps]
        points.append(dict(run=name, prime=prime, n_mean=float(np.mean(ns)),
                           step_mean_s=float(np.mean(ts)), step_median_s=float(np.median(ts)),
                           first_call_s=c[1] - c[0], steps_s=ts, n=ns))
    if args.use_cache:
        # cached steps cost about the same at every length (plus attention over the cache):
        # least-squares line through every step sample (robust to one slow step)
        xs = np.array([n for p in points for n in p["n"]])
        ys = np.array([s for p in points for s in p["steps_s"]])
        coef = np.polyfit(xs, ys, 1)
    else:
        # no cache: the whole sequence every step; quadratic through the three medians
        xs = np.array([p["n_mean"] for p in points])
        ys = np.array([p["step_median_s"] for p in points])
        coef = np.polyfit(xs, ys, 2)
    n_all = np.arange(base + 1, tsl + isl + 1)  # steps after the first call: n = 258 .. 1280
    steps_sum = float(np.sum(np.polyval(coef, n_all)))
    estimate = first_call_s + steps_sum + decode_s
    print(json.dumps(dict(
        config=dict(candidates=args.candidates, filter_thres=args.filter_thres,
                    temperature=args.temperature, cond_scale=args.cond_scale,
                    use_cache=args.use_cache, steps_per_run=k, threads=torch.get_num_threads()),
        load_s=load_s, first_call_s=first_call_s, decode_s=decode_s,
        points=points, fit_coef=coef.tolist(), fit=('linear, all samples' if args.use_cache else 'quadratic through the medians'), steps_sum_s=steps_sum,
        estimate_generate_s=estimate, n_steps_estimated=int(len(n_all)) + 1, **raw,
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      dalle_pytorch=metadata.version("dalle-pytorch"),
                      numpy=np.__version__),
    )))


if __name__ == "__main__":
    main()
