"""Trains the shipped demo model on the shape world (`world.py`) with DALLE-pytorch's own classes.

Why: a genuine DALLE-pytorch checkpoint (train_dalle.py format) that goes through the normal
import path, plus a small Hugging Face CLIP for reranking, trained in about an hour on 2 CPU
cores. Stages (each writes into --out, default models/shapes/):

    data    tokenizer.json (word level, DALLE-pytorch `HugTokenizer`), heldout.json (world spec +
            evaluation prompts from the held-out part of the world)
    vae     DiscreteVAE on world images (Gumbel temperature annealed 1 -> 1/16)
    clip    CLIPModel, contrastive, on world images and captions -> clip/
    dalle   DALLE on the VAE's codes of world images (null_cond_prob 0.1 for guidance) ->
            dalle.pt exactly as train_dalle.py's save_model writes it (fp16 weights; opt_state None)
    all     the four in order; training.json records seeds, steps, losses, times and versions

Run from the repository root (see models/README.md):

    /work/venv/bin/python models/train/train.py all
"""

import argparse
import json
import math
import os
import platform
import sys
import time
import types
from importlib import metadata

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.modules.setdefault("youtokentome", types.ModuleType("youtokentome"))  # unused import

import world  # noqa: E402

import dalle_pytorch  # noqa: E402
from dalle_pytorch import DALLE, DiscreteVAE  # noqa: E402
from dalle_pytorch.tokenizer import HugTokenizer  # noqa: E402

SEEDS = {"train_data": 1, "vae": 2, "clip": 3, "dalle": 4, "heldout": 5}
N_TRAIN = 60000
TEXT_SEQ_LEN = 16
THREADS = 2

VAE_PARAMS = dict(image_size=world.CANVAS, num_layers=2, num_tokens=128, codebook_dim=64,
                  hidden_dim=48, num_resnet_blocks=1, channels=3, temperature=0.9,
                  straight_through=False, smooth_l1_loss=False, kl_div_loss_weight=0.0)
VAE_TRAIN = dict(steps=3000, batch=64, lr=1e-3, lr_end=1e-4, temp_start=1.0, temp_end=1 / 16)

DALLE_PARAMS = dict(text_seq_len=TEXT_SEQ_LEN, dim=192, depth=4, heads=6, dim_head=32,
                    reversible=False, loss_img_weight=7, attn_types=("full",), ff_dropout=0.0,
                    attn_dropout=0.0, stable=False, shift_tokens=True, rotary_emb=True,
                    shared_attn_ids=None, shared_ff_ids=None, share_input_output_emb=False)
DALLE_TRAIN = dict(steps=1800, batch=64, lr=1e-3, lr_end=5e-5, warmup=100, null_cond_prob=0.1)

CLIP_CONTEXT = TEXT_SEQ_LEN + 4  # <|startoftext|> + caption + <|endoftext|>, with room to spare
CLIP_TEXT = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3,
                 num_attention_heads=4, max_position_embeddings=CLIP_CONTEXT, hidden_act="quick_gelu")
CLIP_VISION = dict(image_size=world.CANVAS, patch_size=4, hidden_size=64, intermediate_size=256,
                   num_hidden_layers=3, num_attention_heads=4, hidden_act="quick_gelu")
CLIP_TRAIN = dict(steps=1500, batch=128, lr=1e-3, lr_end=5e-5, warmup=100)
CLIP_MEAN = [0.5, 0.5, 0.5]
CLIP_STD = [0.5, 0.5, 0.5]

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "<|startoftext|>", "<|endoftext|>"

EVAL_COUNTS = {"single": 20, "binding": 24, "relation": 40}


def log(*a):
    print(*a, flush=True)


def cosine_lr(step, steps, lr, lr_end, warmup=0):
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * t))


# ---- data ------------------------------------------------------------------------------------

def vocab():
    v = {PAD: 0}
    for w in world.WORDS:
        v[w] = len(v)
    for t in (UNK, BOS, EOS):
        v[t] = len(v)
    return v


def tokenizer_json():
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t, i in vocab().items() if t in (PAD, UNK, BOS, EOS)
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab(), "unk_token": UNK},
    }


def eval_prompts(seed):
    """Held-out evaluation prompts with their expected scenes, by category."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out, seen = [], set()
    for category, count in EVAL_COUNTS.items():
        got = 0
        while got < count:
            scene = world.sample_scene(rng, two_prob=0.0 if category == "single" else 1.0)
            if not world.is_heldout(scene):
                continue
            objs = scene["objects"]
            if category == "single":
                o = objs[0]
                prompt = f"a {o['size']} {o['colour']} {o['shape']} {world.POSITION_PHRASES[o['position']]}"
                expect = {"objects": [dict(o)]}
            else:
                a, b = objs
                na, nb = f"{a['colour']} {a['shape']}", f"{b['colour']} {b['shape']}"
                if category == "binding":
                    prompt = f"a {na} and a {nb}"
                    expect = {"objects": [{k: a[k] for k in ("colour", "shape")},
                                          {k: b[k] for k in ("colour", "shape")}]}
                else:
                    prompt = f"a {na} {world.RELATIONS[scene['relation']][0]} a {nb}"
                    expect = {"objects": [{k: a[k] for k in ("colour", "shape")},
                                          {k: b[k] for k in ("colour", "shape")}],
                              "relation": scene["relation"]}
            if prompt in seen:
                continue
            seen.add(prompt)
            out.append({"category": category, "prompt": prompt, **expect})
            got += 1
    return out


def stage_data(out):
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, indent=1)
    held = {
        "why": "Evaluation prompts of the shape world, drawn only from its held-out part "
               "(scene contents never seen in training); written by models/train/train.py data.",
        "seed": SEEDS["heldout"],
        "world": world.world_spec(),
        "prompts": eval_prompts(SEEDS["heldout"]),
    }
    with open(os.path.join(out, "heldout.json"), "w") as f:
        json.dump(held, f, indent=1)
    # a smoke check: every prompt tokenizes with the real HugTokenizer and fits
    tok = HugTokenizer(os.path.join(out, "tokenizer.json"))
    tok.tokenize([p["prompt"] for p in held["prompts"]], TEXT_SEQ_LEN)
    log(f"data: vocab {tok.vocab_size}, {len(held['prompts'])} held-out prompts")


def train_set(cache):
    """(captions, images uint8 NHWC) of the training part of the world, cached in `cache`."""
    path = os.path.join(cache, f"train_{SEEDS['train_data']}_{N_TRAIN}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return list(z["captions"]), z["images"]
    t = time.time()
    _, captions, images = world.dataset(SEEDS["train_data"], N_TRAIN)
    os.makedirs(cache, exist_ok=True)
    np.savez(path, captions=np.array(captions), images=images)
    log(f"data: {N_TRAIN} training scenes in {time.time() - t:.0f} s")
    return captions, images


def to_tensor(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


# ---- stages ----------------------------------------------------------------------------------

def stage_vae(out, cache, record):
    torch.manual_seed(SEEDS["vae"])
    _, images = train_set(cache)
    vae = DiscreteVAE(**VAE_PARAMS)
    opt = torch.optim.Adam(vae.parameters(), VAE_TRAIN["lr"])
    rng = np.random.Generator(np.random.PCG64(SEEDS["vae"]))
    steps, bs = VAE_TRAIN["steps"], VAE_TRAIN["batch"]
    t0, losses = time.time(), []
    for step in range(steps):
        frac = step / max(1, steps - 1)
        temp = VAE_TRAIN["temp_start"] * (VAE_TRAIN["temp_end"] / VAE_TRAIN["temp_start"]) ** frac
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, VAE_TRAIN["lr"], VAE_TRAIN["lr_end"])
        x = to_tensor(images[rng.integers(0, len(images), bs)])
        loss = vae(x, return_loss=True, temp=temp)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 250 == 0 or step == steps - 1:
            log(f"vae step {step} loss {np.mean(losses[-50:]):.5f} temp {temp:.3f} "
                f"{time.time() - t0:.0f} s")
    vae.eval()
    with torch.no_grad():
        x = to_tensor(images[:512])
        codes = vae.get_codebook_indices(x)
        recon = (vae.decode(codes).clamp(-1, 1) + 1) / 2  # decoder output is normalized (x - .5) / .5
    mse = float(((recon - x) ** 2).mean())
    used = int(torch.unique(codes).numel())
    torch.save({"hparams": VAE_PARAMS, "weights": vae.state_dict()}, os.path.join(cache, "vae.pt"))
    record["vae"] = {"params": VAE_PARAMS, "train": VAE_TRAIN, "seed": SEEDS["vae"],
                     "seconds": round(time.time() - t0, 1), "final_loss": float(np.mean(losses[-100:])),
                     "hard_code_recon_mse": mse, "codes_used": used,
                     "parameters": sum(p.numel() for p in vae.parameters())}
    log(f"vae: {record['vae']}")
    return vae


def load_vae(cache):
    ck = torch.load(os.path.join(cache, "vae.pt"), map_location="cpu", weights_only=True)
    vae = DiscreteVAE(**ck["hparams"])
    vae.load_state_dict(ck["weights"])
    return vae.eval()


def stage_dalle(out, cache, record):
    torch.manual_seed(SEEDS["dalle"])
    captions, images = train_set(cache)
    vae = load_vae(cache)
    tok = HugTokenizer(os.path.join(out, "tokenizer.json"))
    t0 = time.time()
    with torch.no_grad():
        codes = torch.cat([vae.get_codebook_indices(to_tensor(images[i:i + 1000]))
                           for i in range(0, len(images), 1000)])
    text = tok.tokenize(captions, TEXT_SEQ_LEN)
    log(f"dalle: encoded {len(images)} images in {time.time() - t0:.0f} s")
    hparams = dict(DALLE_PARAMS, num_text_tokens=tok.vocab_size)
    dalle = DALLE(vae=vae, **hparams)
    opt = torch.optim.Adam([p for p in dalle.parameters() if p.requires_grad], DALLE_TRAIN["lr"])
    rng = np.random.Generator(np.random.PCG64(SEEDS["dalle"]))
    steps, bs = DALLE_TRAIN["steps"], DALLE_TRAIN["batch"]
    t0, losses = time.time(), []
    dalle.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, DALLE_TRAIN["lr"], DALLE_TRAIN["lr_end"],
                                DALLE_TRAIN["warmup"])
        idx = torch.from_numpy(rng.integers(0, len(images), bs))
        loss = dalle(text[idx], codes[idx], return_loss=True,
                     null_cond_prob=DALLE_TRAIN["null_cond_prob"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dalle.parameters(), 0.5)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"dalle step {step} loss {np.mean(losses[-50:]):.4f} {time.time() - t0:.0f} s")
    seconds = time.time() - t0
    dalle.eval()
    # save exactly like train_dalle.py's save_model with --fp16 (dalle.half() before state_dict);
    # opt_state is left out (None) to keep the committed file small
    save_obj = {
        "hparams": hparams,
        "vae_params": VAE_PARAMS,
        "epoch": 0,
        "version": dalle_pytorch.__version__,
        "vae_class_name": "DiscreteVAE",
        "weights": dalle.half().state_dict(),
        "opt_state": None,
        "scheduler_state": None,
    }
    torch.save(save_obj, os.path.join(out, "dalle.pt"))
    record["dalle"] = {"hparams": hparams, "train": DALLE_TRAIN, "seed": SEEDS["dalle"],
                       "seconds": round(seconds, 1), "final_loss": float(np.mean(losses[-100:])),
                       "decoder_parameters": sum(p.numel() for n, p in dalle.named_parameters()
                                                 if not n.startswith("vae."))}
    log(f"dalle: {record['dalle']}")


def clip_ids(captions, v):
    ids = torch.full((len(captions), CLIP_CONTEXT), v[PAD], dtype=torch.long)
    for i, c in enumerate(captions):
        toks = [v.get(w, v[UNK]) for w in c.lower().split()]
        row = [v[BOS], *toks[:CLIP_CONTEXT - 2], v[EOS]]
        ids[i, :len(row)] = torch.tensor(row)
    return ids


def stage_clip(out, cache, record):
    from transformers import CLIPConfig, CLIPModel
    torch.manual_seed(SEEDS["clip"])
    captions, images = train_set(cache)
    v = vocab()
    cfg = CLIPConfig(
        text_config=dict(CLIP_TEXT, vocab_size=len(v), bos_token_id=v[BOS], eos_token_id=v[EOS],
                         pad_token_id=v[PAD]),
        vision_config=dict(CLIP_VISION), projection_dim=64)
    model = CLIPModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), CLIP_TRAIN["lr"], weight_decay=0.01)
    rng = np.random.Generator(np.random.PCG64(SEEDS["clip"]))
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    ids_all = clip_ids(captions, v)
    steps, bs = CLIP_TRAIN["steps"], CLIP_TRAIN["batch"]
    t0, losses = time.time(), []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, steps, CLIP_TRAIN["lr"], CLIP_TRAIN["lr_end"],
                                CLIP_TRAIN["warmup"])
        idx = rng.integers(0, len(images), bs)
        px = (to_tensor(images[idx]) - mean) / std
        loss = model(input_ids=ids_all[idx], pixel_values=px, return_loss=True).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(f"clip step {step} loss {np.mean(losses[-50:]):.4f} {time.time() - t0:.0f} s")
    model.eval()
    d = os.path.join(out, "clip")
    model.save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, indent=1)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"pad_token": PAD, "bos_token": BOS, "eos_token": EOS, "unk_token": UNK,
                   "model_max_length": CLIP_CONTEXT}, f, indent=1)
    with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
        json.dump({"crop_size": {"height": world.CANVAS, "width": world.CANVAS},
                   "size": {"shortest_edge": world.CANVAS}, "do_resize": True,
                   "do_center_crop": True, "do_normalize": True, "do_rescale": True,
                   "rescale_factor": 1 / 255, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                   "resample": 3, "image_processor_type": "CLIPImageProcessor"}, f, indent=1)
    record["clip"] = {"text": CLIP_TEXT, "vision": CLIP_VISION, "train": CLIP_TRAIN,
                      "seed": SEEDS["clip"], "seconds": round(time.time() - t0, 1),
                      "final_loss": float(np.mean(losses[-100:])),
                      "parameters": sum(p.numel() for p in model.parameters())}
    log(f"clip: {record['clip']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["data", "vae", "clip", "dalle", "all"])
    ap.add_argument("--out", default="models/shapes")
    ap.add_argument("--cache", default="target/shapes-train")
    a = ap.parse_args()
    torch.set_num_threads(THREADS)
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.cache, exist_ok=True)
    rec_path = os.path.join(a.out, "training.json")
    record = json.load(open(rec_path)) if os.path.exists(rec_path) else {}
    record["environment"] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "dalle_pytorch": dalle_pytorch.__version__,
        "transformers": metadata.version("transformers"), "numpy": np.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {THREADS}",
        "seeds": SEEDS, "training_scenes": N_TRAIN,
    }
    stages = ["data", "vae", "clip", "dalle"] if a.stage == "all" else [a.stage]
    t0 = time.time()
    for s in stages:
        ts = time.time()
        {"data": lambda: stage_data(a.out), "vae": lambda: stage_vae(a.out, a.cache, record),
         "clip": lambda: stage_clip(a.out, a.cache, record),
         "dalle": lambda: stage_dalle(a.out, a.cache, record)}[s]()
        record.setdefault("stage_wall_seconds", {})[s] = round(time.time() - ts, 1)
        with open(rec_path, "w") as f:
            json.dump(record, f, indent=1)
    log(f"done: {', '.join(stages)} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
