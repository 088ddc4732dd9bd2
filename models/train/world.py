"""A procedural captioned-shape world: the training data of the shipped demo model.

Why: no public DALL·E-1 weights can be fetched at run time, so the project trains a small one on
a world simple enough to learn on 2 CPU cores in about an hour, yet rich enough to show the
paper's findings in miniature (attribute control, binding across objects, spatial relations).

A scene is one or two flat-coloured shapes on a dark 32×32 canvas. Everything is deterministic
from a seed (`numpy.random.Generator(PCG64(seed))`). The constants below are also written into
`models/shapes/heldout.json` (`world_spec()`), which the Rust evaluator (`src/shapes/`) reads, so
the palette, sizes and anchors live in one place.

Held out: a scene's *content key* (`content_key`: a single object's size, colour, shape and
position; for two objects the unordered pair of coloured shapes) is hashed; keys in the held-out
bucket never appear in training (`is_heldout`), and the evaluation prompts are drawn from that
bucket only.
"""

import hashlib

import numpy as np

CANVAS = 32
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliased edges)
BACKGROUND = (24, 24, 24)
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "white": (235, 235, 235),
}
SHAPES = ("circle", "square", "triangle")
# extent (width = height) in pixels
SIZES = {"small": 9, "large": 14}
# single-object anchors (centre x, y); jitter +-2 px
POSITIONS = {
    "left": (9, 16),
    "right": (23, 16),
    "top": (16, 9),
    "bottom": (16, 23),
    "middle": (16, 16),
}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
RELATIONS = {
    # relation: (phrase, offset of the second object's centre from the first's)
    "above": ("above", (0, 14)),
    "below": ("below", (0, -14)),
    "left of": ("to the left of", (14, 0)),
    "right of": ("to the right of", (-14, 0)),
}
PAIR_SIZES = {"small": 8, "large": 12}  # two-object scenes use slightly smaller extents
JITTER = 2
PREFIXES = ("a", "a picture of a", "an image of a", "there is a")
HELDOUT_PERCENT = 15
WORDS = sorted(
    {w for p in PREFIXES for w in p.split()}
    | set(COLOURS) | set(SHAPES) | set(SIZES)
    | {w for p in POSITION_PHRASES.values() for w in p.split()}
    | {w for p, _ in RELATIONS.values() for w in p.split()}
    | {"and", "a"}
)


def world_spec():
    return {
        "canvas": CANVAS,
        "background": list(BACKGROUND),
        "colours": {k: list(v) for k, v in COLOURS.items()},
        "shapes": list(SHAPES),
        "sizes": dict(SIZES),
        "pair_sizes": dict(PAIR_SIZES),
        "positions": {k: list(v) for k, v in POSITIONS.items()},
        "position_phrases": dict(POSITION_PHRASES),
        "relations": list(RELATIONS),
        "relation_phrases": {k: p for k, (p, _) in RELATIONS.items()},
        "prefixes": list(PREFIXES),
    }


def content_key(scene):
    """What a held-out scene is: one object's size, colour, shape and position; or the
    unordered pair of (colour, shape) of two objects (whatever their sizes and relation, so a
    held-out pair is never seen together in training, in any order or layout)."""
    objs = scene["objects"]
    if len(objs) == 1:
        o = objs[0]
        return f"{o['size']} {o['colour']} {o['shape']} {o['position']}"
    return " + ".join(sorted(f"{o['colour']} {o['shape']}" for o in objs))


def is_heldout(scene):
    h = hashlib.sha256(content_key(scene).encode()).digest()
    return int.from_bytes(h[:4], "little") % 100 < HELDOUT_PERCENT


# ---- sampling scenes and captions ------------------------------------------------------------

def _obj(rng):
    return {
        "colour": str(rng.choice(list(COLOURS))),
        "shape": str(rng.choice(SHAPES)),
        "size": str(rng.choice(list(SIZES))),
    }


def sample_scene(rng, two_prob=0.5):
    if rng.random() < two_prob:
        a, b = _obj(rng), _obj(rng)
        while (a["colour"], a["shape"]) == (b["colour"], b["shape"]):
            b = _obj(rng)
        return {"objects": [a, b], "relation": str(rng.choice(list(RELATIONS)))}
    o = _obj(rng)
    o["position"] = str(rng.choice(list(POSITIONS)))
    return {"objects": [o]}


def _noun_phrase(o, with_size):
    words = ([o["size"]] if with_size else []) + [o["colour"], o["shape"]]
    return " ".join(words)


def sample_caption(rng, scene):
    """One of several phrasings; single objects may leave out size, colour or position."""
    objs = scene["objects"]
    prefix = str(rng.choice(PREFIXES))
    if len(objs) == 1:
        o = objs[0]
        words = []
        if rng.random() < 0.6:
            words.append(o["size"])
        if rng.random() < 0.9:
            words.append(o["colour"])
        words.append(o["shape"])
        text = f"{prefix} {' '.join(words)}"
        if rng.random() < 0.7:
            text += " " + POSITION_PHRASES[o["position"]]
        return text
    a, b = objs
    with_size = rng.random() < 0.4
    rel = scene["relation"]
    phrase = RELATIONS[rel][0]
    na, nb = _noun_phrase(a, with_size), _noun_phrase(b, with_size)
    if rng.random() < 0.15:
        # no relation words: "a red circle and a blue square" (layout still follows `relation`)
        return f"{prefix} {na} and a {nb}"
    return f"{prefix} {na} {phrase} a {nb}"


def layout(rng, scene):
    """Centres (x, y) of the scene's objects, with jitter."""
    objs = scene["objects"]
    j = lambda: rng.integers(-JITTER, JITTER + 1)  # noqa: E731
    if len(objs) == 1:
        x, y = POSITIONS[objs[0]["position"]]
        return [(x + j(), y + j())]
    dx, dy = RELATIONS[scene["relation"]][1]
    # the pair is centred on the canvas, then jittered as a whole and per object
    cx, cy = CANVAS / 2 + j(), CANVAS / 2 + j()
    ax, ay = cx - dx / 2, cy - dy / 2
    bx, by = cx + dx / 2, cy + dy / 2
    # the orthogonal axis is free: slide both objects along it
    if dx == 0:
        ax += j() * 2
        bx += j() * 2
    else:
        ay += j() * 2
        by += j() * 2
    return [(ax, ay), (bx, by)]


# ---- drawing -----------------------------------------------------------------------------------

_C = (np.arange(CANVAS * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
_XS, _YS = np.meshgrid(_C, _C)


def _mask(shape, cx, cy, extent):
    xs, ys = _XS, _YS
    h = extent / 2
    if shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= h * h
    if shape == "square":
        return (np.abs(xs - cx) <= h) & (np.abs(ys - cy) <= h)
    if shape == "triangle":  # apex up, base at the bottom
        top, bottom = cy - h, cy + h
        t = (ys - top) / (bottom - top)  # 0 at apex, 1 at base
        return (t >= 0) & (t <= 1) & (np.abs(xs - cx) <= h * t)
    raise ValueError(shape)


def render(scene, centres):
    """uint8 [CANVAS, CANVAS, 3]."""
    n = CANVAS * SUPERSAMPLE
    img = np.empty((n, n, 3), np.float32)
    img[:] = BACKGROUND
    sizes = SIZES if len(scene["objects"]) == 1 else PAIR_SIZES
    for o, (cx, cy) in zip(scene["objects"], centres):
        m = _mask(o["shape"], cx, cy, sizes[o["size"]])
        img[m] = COLOURS[o["colour"]]
    img = img.reshape(CANVAS, SUPERSAMPLE, CANVAS, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def sample(rng, heldout=False, two_prob=0.5):
    """(scene, caption, image) from the training part (or the held-out part) of the world."""
    while True:
        scene = sample_scene(rng, two_prob)
        if is_heldout(scene) == heldout:
            break
    caption = sample_caption(rng, scene)
    return scene, caption, render(scene, layout(rng, scene))


def dataset(seed, n, heldout=False):
    rng = np.random.Generator(np.random.PCG64(seed))
    scenes, captions, images = [], [], np.empty((n, CANVAS, CANVAS, 3), np.uint8)
    for i in range(n):
        s, c, im = sample(rng, heldout)
        scenes.append(s)
        captions.append(c)
        images[i] = im
    return scenes, captions, images
