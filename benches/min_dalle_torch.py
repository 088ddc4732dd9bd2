"""min-dalle's side of benches/min_dalle.sh: times `MinDalle.generate_images` on local files.

`MinDalle(...)` downloads its weights in `__init__`; this script builds the object without it
(`MinDalle.__new__` and the attributes `__init__` sets, for mini: `is_mega=False`), then loads
`encoder.pt`, `decoder.pt`, `detoker.pt` and the tokenizer exactly as `init_encoder`,
`init_decoder`, `init_detokenizer` and `init_tokenizer` do (`strict=False` for the first two),
on the CPU in float32, `is_reusable=True`. The decoder step is timed by wrapping
`decoder.sample_tokens`.

    python benches/min_dalle_torch.py --model DIR --grid 1 --runs 1 --prompt "..."
    python benches/min_dalle_torch.py --write-detoker DIR/detoker.pt   # random released geometry

Prints one JSON line per run.
"""

import argparse
import json
import os
import time

import torch


def write_detoker(path, seed):
    from min_dalle.models import VQGanDetokenizer

    torch.manual_seed(seed)
    m = VQGanDetokenizer()
    torch.save(m.state_dict(), path)


def build(model_dir):
    from min_dalle import MinDalle
    from min_dalle.models import DalleBartDecoder, DalleBartEncoder, VQGanDetokenizer
    from min_dalle.text_tokenizer import TextTokenizer

    m = MinDalle.__new__(MinDalle)
    m.is_mega, m.is_reusable, m.is_verbose = False, True, False
    m.device, m.dtype = "cpu", torch.float32
    m.text_token_count = 64
    enc_sd = torch.load(os.path.join(model_dir, "encoder.pt"))
    dec_sd = torch.load(os.path.join(model_dir, "decoder.pt"))
    m.embed_count = enc_sd["embed_tokens.weight"].shape[1]
    m.layer_count = 1 + max(int(k.split(".")[1]) for k in dec_sd if k.startswith("layers."))
    m.attention_head_count = m.embed_count // 64
    m.glu_embed_count = dec_sd["layers.0.glu.fc0.weight"].shape[0]
    m.text_vocab_count = enc_sd["embed_tokens.weight"].shape[0]
    m.image_vocab_count = dec_sd["embed_tokens.weight"].shape[0] - 1
    with open(os.path.join(model_dir, "vocab.json")) as f:
        vocab = json.load(f)
    with open(os.path.join(model_dir, "merges.txt")) as f:
        merges = f.read().split("\n")[1:-1]
    m.tokenizer = TextTokenizer(vocab, merges)
    m.encoder = DalleBartEncoder(
        attention_head_count=m.attention_head_count,
        embed_count=m.embed_count,
        glu_embed_count=m.glu_embed_count,
        text_token_count=m.text_token_count,
        text_vocab_count=m.text_vocab_count,
        layer_count=m.layer_count,
        device=m.device,
    ).to(m.dtype).eval()
    m.encoder.load_state_dict(enc_sd, strict=False)
    m.decoder = DalleBartDecoder(
        image_vocab_count=m.image_vocab_count,
        attention_head_count=m.attention_head_count,
        embed_count=m.embed_count,
        glu_embed_count=m.glu_embed_count,
        layer_count=m.layer_count,
        device=m.device,
    ).to(m.dtype).eval()
    m.decoder.load_state_dict(dec_sd, strict=False)
    m.detokenizer = VQGanDetokenizer().eval()
    m.detokenizer.load_state_dict(torch.load(os.path.join(model_dir, "detoker.pt")))
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--grid", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prompt", default="a photo of an avocado armchair")
    ap.add_argument("--write-detoker")
    args = ap.parse_args()
    if args.write_detoker:
        write_detoker(args.write_detoker, args.seed)
        return
    t = time.perf_counter()
    m = build(args.model)
    load_s = time.perf_counter() - t
    steps = []
    inner = m.decoder.sample_tokens

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = inner(*a, **k)
        steps.append(time.perf_counter() - t0)
        return out

    m.decoder.sample_tokens = timed
    for run in range(args.runs):
        steps.clear()
        t = time.perf_counter()
        with torch.no_grad():
            images = m.generate_images(
                args.prompt,
                seed=args.seed,
                grid_size=args.grid,
                temperature=1,
                top_k=256,
                supercondition_factor=16,
            )
        total = time.perf_counter() - t
        steps_sorted = sorted(steps)
        print(
            json.dumps(
                {
                    "side": "min-dalle",
                    "grid": args.grid,
                    "run": run,
                    "threads": torch.get_num_threads(),
                    "load_s": round(load_s, 3),
                    "generate_s": round(total, 3),
                    "decoder_steps_s": round(sum(steps), 3),
                    "step_median_ms": round(1000 * steps_sorted[len(steps) // 2], 2),
                    "images": list(images.shape),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
