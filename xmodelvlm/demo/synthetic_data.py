"""Deterministic synthetic VLM data in exactly the real LLaVA-1.5 formats.

Scenes are 1-3 coloured shapes (distinct shapes within an image; colours may repeat) placed in five slots (left,
right, top, bottom, center), two sizes, on a plain / noisy / striped background of one of three neutral colours.
From each scene's description the generator writes:

``OUT/train/``
    ``images/NNNNNN.png``; ``pretrain.json`` (LLaVA-558K style captions); ``instruct.json`` (LLaVA-665K style
    multi-turn mix, short-answer VQA turns, free-form turns, ~5 % text-only samples); ``scenes.json`` (the scene
    descriptions, used by :mod:`xmodelvlm.demo.tiny_clip` for its dense auxiliary loss).
``OUT/eval/`` (LLaVA-1.5 ``playground/data/eval`` layout, held-out images)
    ``pope/llava_pope_test.jsonl``, ``pope/val2014/*.png``, ``pope/coco/coco_pope_{adversarial,popular,random}.json``;
    ``gqa/llava_gqa_testdev_balanced.jsonl``, ``gqa/data/images/*.png``, ``gqa/data/testdev_balanced_questions.json``;
    ``MME/llava_mme.jsonl``, ``MME/MME_Benchmark_release_version/<task>/...`` (flat layout for existence, count,
    position, color; ``images/`` + ``questions_answers_YN/`` layout for scene).
``OUT/manifest.json``
    arguments, counts and paths; written last, so its presence (with matching arguments) marks a complete run and
    a rerun is a no-op unless ``--force``.

Every image and question draws from its own ``numpy`` generator seeded by ``(seed, stream, index)``, so output is
identical for identical arguments and adding eval questions never changes the training set.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw

from xmodelvlm.constants import DEFAULT_IMAGE_TOKEN
from xmodelvlm.utils import atomic_write_json, atomic_write_text

GENERATOR_VERSION = 2

SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
MME_SUFFIX = " Please answer yes or no."

# name -> RGB; chosen to stay distinct from each other and from the neutral backgrounds.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "green": (34, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 210, 30),
    "purple": (145, 55, 195),
    "orange": (250, 135, 20),
}
# Non-uniform frequencies make POPE's "popular" negatives meaningful (the most frequent objects).
COLOR_WEIGHTS = {"red": 0.24, "blue": 0.2, "green": 0.17, "yellow": 0.15, "purple": 0.13, "orange": 0.11}
SHAPES = ("circle", "square", "triangle", "star")
SHAPE_WEIGHTS = {"circle": 0.32, "square": 0.28, "triangle": 0.22, "star": 0.18}
POSITIONS = ("left", "right", "top", "bottom", "center")
# slot centres as fractions of the image side (x, y)
SLOT_XY = {"left": (0.17, 0.5), "right": (0.83, 0.5), "top": (0.5, 0.17), "bottom": (0.5, 0.83), "center": (0.5, 0.5)}
POS_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
              "center": "in the center"}
SIZES = ("small", "large")
# Fractions of the image side. The slot centres are those of a 3x3 grid (1/6, 1/2, 5/6), and objects are as large
# as a grid cell allows, so at the demo's 48 px each object fills most of one 16 px cell: one patch of the demo's
# patch-16 tower (a large, jittered one spills a sliver into the next cell); a large object in the center
# only gets small neighbours, so shapes never overlap.
SIZE_RADIUS = {"small": 0.125, "large": 0.16}
SLOT_JITTER = 0.015
BG_COLORS: dict[str, tuple[int, int, int]] = {"white": (236, 236, 236), "gray": (128, 128, 128), "black": (32, 32, 32)}
BG_TEXTURES = ("plain", "noisy", "striped")
NUM_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

# LLaVA-Pretrain's brief-description instructions.
CAPTION_INSTRUCTIONS = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)
DESCRIBE_QUESTIONS = ("Describe the image briefly.", "What do you see in this image?", "Describe this picture.")

MME_TASKS = ("existence", "count", "position", "color", "scene")
MME_NESTED_TASKS = ("scene",)  # images/ + questions_answers_YN/ layout
POPE_CATEGORIES = ("adversarial", "popular", "random")


# ----------------------------------------------------------------------------------------------------- scenes
@dataclass
class Obj:
    color: str
    shape: str
    position: str
    size: str
    cx: float  # centre in pixels
    cy: float
    r: float   # radius in pixels


@dataclass
class Scene:
    objects: list[Obj]
    bg_color: str
    bg_texture: str
    stripe_dir: str = "horizontal"
    noise_seed: int = 0

    def count(self, color: str | None = None) -> int:
        return sum(1 for o in self.objects if color is None or o.color == color)

    def pairs(self) -> set[tuple[str, str]]:
        return {(o.color, o.shape) for o in self.objects}

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        """The inverse of `to_json`: a `scenes.json` entry (its "image" key is ignored)."""
        return cls([Obj(**o) for o in d["objects"]], d["bg_color"], d["bg_texture"],
                   d.get("stripe_dir", "horizontal"), d.get("noise_seed", 0))

    def to_json(self) -> dict:
        d = asdict(self)
        for o in d["objects"]:
            for k in ("cx", "cy", "r"):
                o[k] = round(o[k], 2)
        return d


def cell_index(obj: dict, cell: float, side: int) -> int:
    """Row-major index of the cell of a `side` x `side` grid of `cell`-pixel cells that holds `obj`'s centre (a
    `scenes.json` object); with the tower's patch size as `cell`, the patch token that sees the object."""
    return min(side - 1, int(obj["cy"] // cell)) * side + min(side - 1, int(obj["cx"] // cell))


def manifest_image_size(data_dir: str | Path) -> int | None:
    """The image size a dataset directory was generated at (its `manifest.json`), or None without a manifest."""
    manifest = Path(data_dir) / "manifest.json"
    return json.loads(manifest.read_text(encoding="utf-8"))["image_size"] if manifest.is_file() else None


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _wchoice(rng: np.random.Generator, weights: dict[str, float], k: int = 1, replace: bool = True) -> list[str]:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    idx = rng.choice(len(names), size=k, replace=replace, p=p / p.sum())
    return [names[int(i)] for i in np.atleast_1d(idx)]


def _pick(rng: np.random.Generator, seq):
    seq = list(seq)
    return seq[int(rng.integers(len(seq)))]


def sample_scene(rng: np.random.Generator, image_size: int) -> Scene:
    n = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    shapes = _wchoice(rng, SHAPE_WEIGHTS, k=n, replace=False)
    slots = [POSITIONS[int(i)] for i in rng.choice(len(POSITIONS), size=n, replace=False)]
    colors = _wchoice(rng, COLOR_WEIGHTS, k=n)
    objs = []
    sizes = [_pick(rng, SIZES) for _ in range(n)]
    if "center" in slots and sizes[slots.index("center")] == "large":
        sizes = ["large" if p == "center" else "small" for p in slots]
    for color, shape, pos, size in zip(colors, shapes, slots, sizes):
        fx, fy = SLOT_XY[pos]
        jx, jy = rng.uniform(-SLOT_JITTER, SLOT_JITTER, size=2)
        objs.append(Obj(color, shape, pos, size, (fx + jx) * image_size, (fy + jy) * image_size,
                        SIZE_RADIUS[size] * image_size * float(rng.uniform(0.97, 1.03))))
    return Scene(objs, _pick(rng, BG_COLORS), _pick(rng, BG_TEXTURES), _pick(rng, ("horizontal", "vertical")),
                 int(rng.integers(2**31)))


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.5
        a = -np.pi / 2 + k * np.pi / 5
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def render(scene: Scene, image_size: int) -> Image.Image:
    s = image_size
    base = np.array(BG_COLORS[scene.bg_color], dtype=np.float32)
    arr = np.broadcast_to(base, (s, s, 3)).copy()
    delta = 30.0 if scene.bg_color != "white" else -30.0
    if scene.bg_texture == "noisy":
        arr += np.random.default_rng(scene.noise_seed).normal(0.0, 16.0, size=(s, s, 3)).astype(np.float32)
    elif scene.bg_texture == "striped":
        period = max(4, s // 8)
        band = (np.arange(s) // (period // 2)) % 2 == 1
        if scene.stripe_dir == "horizontal":
            arr[band, :, :] += delta
        else:
            arr[:, band, :] += delta
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    _draw_objects(ImageDraw.Draw(img), scene, [COLORS[o.color] for o in scene.objects])
    return img


def render_mask(scene: Scene, image_size: int) -> np.ndarray:
    """uint8 H x W map with the same geometry as :func:`render`: 0 = background, k = ``scene.objects[k - 1]``."""
    img = Image.new("L", (image_size, image_size), 0)
    _draw_objects(ImageDraw.Draw(img), scene, list(range(1, len(scene.objects) + 1)))
    return np.asarray(img)


def _draw_objects(draw: ImageDraw.ImageDraw, scene: Scene, fills: list) -> None:
    for o, fill in zip(scene.objects, fills):
        cx, cy, r = o.cx, o.cy, o.r
        if o.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif o.shape == "square":
            h = r * 0.88
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
        elif o.shape == "star":
            draw.polygon(_star(cx, cy, r * 1.05), fill=fill)
        else:  # pragma: no cover - guarded by SHAPES
            raise ValueError(o.shape)


def save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", compress_level=6)


# ------------------------------------------------------------------------------------------------------- text
def object_phrase(o: Obj, rng: np.random.Generator, with_size: bool | None = None) -> str:
    if with_size is None:
        with_size = bool(rng.random() < 0.7)
    size = f"{o.size} " if with_size else ""
    return f"{_a(size + o.color)} {o.shape} {POS_PHRASE[o.position]}"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A BLIP-style lower-case caption that mentions every object (size, colour, shape, position) and the background."""
    objs = list(scene.objects)
    order = rng.permutation(len(objs))
    phrases = [object_phrase(objs[int(i)], rng) for i in order]
    bg = f"{scene.bg_texture} {scene.bg_color} background"
    n = len(objs)
    style = int(rng.integers(3))
    if style == 0:
        noun = "shape" if n == 1 else "shapes"
        return f"{NUM_WORDS[n]} {noun} on a {bg}: {_join(phrases)}"
    if style == 1:
        return f"{_join(phrases)} on a {bg}"
    return f"a {bg} with {_join(phrases)}"


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article ("a red", "an orange")."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def exist_question(color: str, shape: str) -> str:
    """POPE's question (without the short-answer suffix)."""
    return f"Is there {_a(color)} {shape} in the image?"


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


@dataclass
class QA:
    question: str            # without any suffix
    short: str               # canonical single word / phrase, lower case ("red", "yes", "2")
    long: str                # free-form sentence answer
    structural: str = "query"
    semantic: str = "attr"
    detailed: str = ""


def _yn(want: str | None, rng: np.random.Generator) -> bool:
    return (want == "yes") if want is not None else bool(rng.random() < 0.5)


def _absent_pair(scene: Scene, rng: np.random.Generator, mode: str, popularity: list[tuple[str, str]]) -> tuple[str, str]:
    present = scene.pairs()
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    if mode == "popular":
        return next(p for p in popularity if p not in present)
    if mode == "adversarial":
        pc = {c for c, _ in present}
        ps = {s for _, s in present}
        hard = [p for p in absent if p[0] in pc or p[1] in ps]
        return _pick(rng, hard or absent)
    return _pick(rng, absent)


def qa_exist_pair(scene, rng, want=None, neg_mode=None, popularity=None):
    if _yn(want, rng):
        o = _pick(rng, scene.objects)
        c, s, ans = o.color, o.shape, "yes"
    else:
        mode = neg_mode or _pick(rng, POPE_CATEGORIES)
        c, s = _absent_pair(scene, rng, mode, popularity or DEFAULT_POPULARITY)
        ans = "no"
    q = exist_question(c, s)
    long = f"Yes, there is {_a(c)} {s} in the image." if ans == "yes" else f"No, there is no {c} {s} in the image."
    return QA(q, ans, long, "verify", "obj", "existAttr")


def qa_exist_shape(scene, rng, want=None, **_):
    present = {o.shape for o in scene.objects}
    if _yn(want, rng):
        s, ans = _pick(rng, sorted(present)), "yes"
    else:
        s, ans = _pick(rng, [x for x in SHAPES if x not in present]), "no"
    long = f"Yes, there is a {s}." if ans == "yes" else f"No, there is no {s}."
    return QA(f"Is there a {s} in the image?", ans, long, "verify", "obj", "exist")


def qa_color_query(scene, rng, **_):
    o = _pick(rng, scene.objects)
    return QA(f"What color is the {o.shape}?", o.color, f"The {o.shape} is {o.color}.", "query", "attr", "colorQuery")


def qa_shape_query(scene, rng, **_):
    cnt = Counter(o.color for o in scene.objects)
    cands = [o for o in scene.objects if cnt[o.color] == 1]
    o = _pick(rng, cands)  # non-empty: FAMILIES only offers this family when _shape_query_ok(scene)
    return QA(f"What shape is the {o.color} object?", o.shape, f"The {o.color} object is a {o.shape}.", "query",
              "obj", "categoryQuery")


def _shape_query_ok(scene):
    cnt = Counter(o.color for o in scene.objects)
    return any(cnt[o.color] == 1 for o in scene.objects)


def qa_position_query(scene, rng, **_):
    o = _pick(rng, scene.objects)
    return QA(f"Where is the {o.shape}?", o.position, f"The {o.shape} is {POS_PHRASE[o.position]}.", "query", "rel",
              "positionQuery")


def qa_shape_at(scene, rng, **_):
    o = _pick(rng, scene.objects)
    return QA(f"What shape is {POS_PHRASE[o.position]}?", o.shape,
              f"There is a {o.shape} {POS_PHRASE[o.position]}.", "query", "rel", "categoryRelS")


def qa_color_at(scene, rng, **_):
    o = _pick(rng, scene.objects)
    return QA(f"What color is the shape {POS_PHRASE[o.position]}?", o.color,
              f"The shape {POS_PHRASE[o.position]} is {o.color}.", "query", "attr", "colorRelS")


def qa_bg_color(scene, rng, **_):
    return QA("What color is the background?", scene.bg_color, f"The background is {scene.bg_color}.", "query",
              "global", "bgColorQuery")


def qa_bg_texture(scene, rng, **_):
    return QA("What pattern does the background have?", scene.bg_texture,
              f"The background is {scene.bg_texture}.", "query", "global", "bgPatternQuery")


def qa_bg_verify(scene, rng, want=None, **_):
    if _yn(want, rng):
        t, ans = scene.bg_texture, "yes"
    else:
        t, ans = _pick(rng, [x for x in BG_TEXTURES if x != scene.bg_texture]), "no"
    long = f"Yes, the background is {t}." if ans == "yes" else f"No, the background is {scene.bg_texture}."
    return QA(f"Is the background {t}?", ans, long, "verify", "global", "verifyBg")


def _there_are(n: int, color: str = "") -> str:
    """"is one shape", "are two red shapes": the count sentence after "there", singular or plural."""
    return f"{'is' if n == 1 else 'are'} {NUM_WORDS[n]} {color + ' ' if color else ''}{'shape' if n == 1 else 'shapes'}"


def qa_count_all(scene, rng, **_):
    n = scene.count()
    return QA("How many shapes are there in the image?", str(n), f"There {_there_are(n)}.", "query", "obj", "count")


def qa_count_color(scene, rng, **_):
    c = _pick(rng, COLORS) if rng.random() < 0.3 else _pick(rng, scene.objects).color
    n = scene.count(c)
    return QA(f"How many {c} shapes are there?", str(n), f"There {_there_are(n, c)}.", "query", "attr", "countAttr")


def count_question(k: int) -> str:
    return "Is there only one shape in the image?" if k == 1 else f"Are there {NUM_WORDS[k]} shapes in the image?"


def qa_count_verify(scene, rng, want=None, **_):
    n = scene.count()
    if _yn(want, rng):
        k, ans = n, "yes"
    else:
        k, ans = _pick(rng, [x for x in (1, 2, 3, 4) if x != n]), "no"
    long = f"{'Yes' if ans == 'yes' else 'No'}, there {_there_are(n)}."
    return QA(count_question(k), ans, long, "verify", "obj", "verifyCount")


def qa_verify_color(scene, rng, want=None, **_):
    o = _pick(rng, scene.objects)
    if _yn(want, rng):
        c, ans = o.color, "yes"
    else:
        c, ans = _pick(rng, [x for x in COLORS if x != o.color]), "no"
    long = f"Yes, the {o.shape} is {o.color}." if ans == "yes" else f"No, the {o.shape} is {o.color}."
    return QA(f"Is the {o.shape} {c}?", ans, long, "verify", "attr", "verifyAttr")


def qa_verify_position(scene, rng, want=None, **_):
    o = _pick(rng, scene.objects)
    if _yn(want, rng):
        p, ans = o.position, "yes"
    else:
        p, ans = _pick(rng, [x for x in POSITIONS if x != o.position]), "no"
    name = f"{o.color} {o.shape}" if rng.random() < 0.5 else o.shape
    long = (f"Yes, the {name} is {POS_PHRASE[o.position]}." if ans == "yes"
            else f"No, the {name} is {POS_PHRASE[o.position]}.")
    return QA(f"Is the {name} {POS_PHRASE[p]}?", ans, long, "verify", "rel", "verifyPosition")


def _relations(scene):
    """(a, b, relation) triples that hold clearly: 'to the left of' / 'above' by at least a quarter image."""
    out = []
    objs = scene.objects
    for a in objs:
        for b in objs:
            if a is b:
                continue
            if b.cx - a.cx > 0.2 * (abs(b.cy - a.cy) + 1) and b.cx - a.cx > 8:
                out.append((a, b, "to the left of"))
            if b.cy - a.cy > 0.2 * (abs(b.cx - a.cx) + 1) and b.cy - a.cy > 8:
                out.append((a, b, "above"))
    return out


def _rel_ok(scene):
    return bool(_relations(scene))


def qa_relation(scene, rng, want=None, **_):
    rels = _relations(scene)
    a, b, rel = _pick(rng, rels)
    if not _yn(want, rng):
        a, b = b, a
        ans = "no"
    else:
        ans = "yes"
    q = f"Is the {a.shape} {rel} the {b.shape}?"
    long = f"Yes, the {a.shape} is {rel} the {b.shape}." if ans == "yes" else f"No, the {a.shape} is not {rel} the {b.shape}."
    return QA(q, ans, long, "verify", "rel", "relVerify")


def qa_choose_color(scene, rng, **_):
    o = _pick(rng, scene.objects)
    other = _pick(rng, [x for x in COLORS if x != o.color])
    a, b = (o.color, other) if rng.random() < 0.5 else (other, o.color)
    return QA(f"Is the {o.shape} {a} or {b}?", o.color, f"The {o.shape} is {o.color}.", "choose", "attr",
              "chooseAttr")


def qa_compare_color(scene, rng, want=None, **_):
    objs = scene.objects
    same = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1:] if a.color == b.color]
    diff = [(a, b) for i, a in enumerate(objs) for b in objs[i + 1:] if a.color != b.color]
    wy = _yn(want, rng)
    if wy and not same:
        wy = False
    if not wy and not diff:
        wy = True
    a, b = _pick(rng, same if wy else diff)
    if rng.random() < 0.5:
        a, b = b, a
    ans = "yes" if wy else "no"
    long = (f"Yes, both are {a.color}." if wy else f"No, the {a.shape} is {a.color} and the {b.shape} is {b.color}.")
    return QA(f"Are the {a.shape} and the {b.shape} the same color?", ans, long, "compare", "attr", "sameColor")


def qa_logical_or(scene, rng, want=None, popularity=None, **_):
    wy = _yn(want, rng)
    p1 = _absent_pair(scene, rng, _pick(rng, POPE_CATEGORIES), popularity or DEFAULT_POPULARITY)
    if wy:
        o = _pick(rng, scene.objects)
        p2 = (o.color, o.shape)
    else:
        p2 = _absent_pair(scene, rng, "random", popularity or DEFAULT_POPULARITY)
        while p2 == p1:
            p2 = _absent_pair(scene, rng, "random", popularity or DEFAULT_POPULARITY)
    if rng.random() < 0.5:
        p1, p2 = p2, p1
    ans = "yes" if wy else "no"
    long = "Yes." if wy else f"No, there is neither {_a(p1[0])} {p1[1]} nor {_a(p2[0])} {p2[1]}."
    return QA(f"Is there {_a(p1[0])} {p1[1]} or {_a(p2[0])} {p2[1]}?", ans, long, "logical", "obj", "existAttrOr")


# family name -> (function, applicability predicate, is_binary)
FAMILIES: dict[str, tuple[Callable, Callable[[Scene], bool], bool]] = {
    "exist_pair": (qa_exist_pair, lambda s: True, True),
    "exist_shape": (qa_exist_shape, lambda s: True, True),
    "color_query": (qa_color_query, lambda s: True, False),
    "shape_query": (qa_shape_query, _shape_query_ok, False),
    "position_query": (qa_position_query, lambda s: True, False),
    "shape_at": (qa_shape_at, lambda s: True, False),
    "color_at": (qa_color_at, lambda s: True, False),
    "bg_color": (qa_bg_color, lambda s: True, False),
    "bg_texture": (qa_bg_texture, lambda s: True, False),
    "bg_verify": (qa_bg_verify, lambda s: True, True),
    "count_all": (qa_count_all, lambda s: True, False),
    "count_color": (qa_count_color, lambda s: True, False),
    "count_verify": (qa_count_verify, lambda s: True, True),
    "verify_color": (qa_verify_color, lambda s: True, True),
    "verify_position": (qa_verify_position, lambda s: True, True),
    "relation": (qa_relation, _rel_ok, True),
    "choose_color": (qa_choose_color, lambda s: True, False),
    "compare_color": (qa_compare_color, lambda s: len(s.objects) >= 2, True),
    "logical_or": (qa_logical_or, lambda s: True, True),
}
# Shares of the training conversations: short-answer VQA; free-form opening with a description of the image (the
# rest: free-form questions only).
VQA_SHARE = 0.62
DESCRIBE_SHARE = 0.1
# training mix: presence (POPE) and GQA-style families weighted up, everything else present
TRAIN_FAMILY_WEIGHTS = {
    "exist_pair": 5.0, "exist_shape": 1.0, "color_query": 3.0, "shape_query": 1.5, "position_query": 1.5,
    "shape_at": 1.5, "color_at": 1.5, "bg_color": 0.7, "bg_texture": 0.7, "bg_verify": 1.0, "count_all": 1.0,
    "count_color": 0.7, "count_verify": 1.0, "verify_color": 2.0, "verify_position": 1.5, "relation": 1.0,
    "choose_color": 1.0, "compare_color": 1.0, "logical_or": 1.0,
}
GQA_FAMILY_WEIGHTS = {
    "color_query": 3.0, "shape_query": 1.0, "position_query": 1.0, "shape_at": 1.0, "color_at": 1.0, "bg_color": 0.5,
    "exist_shape": 1.0, "exist_pair": 1.0, "verify_color": 1.0, "verify_position": 1.0, "relation": 1.0,
    "choose_color": 1.0, "compare_color": 1.0, "logical_or": 1.0,
}
# expected frequency ranking (used until the empirical training ranking is known)
DEFAULT_POPULARITY = sorted(((c, s) for c in COLORS for s in SHAPES),
                            key=lambda p: (-COLOR_WEIGHTS[p[0]] * SHAPE_WEIGHTS[p[1]], p))


def sample_qa(scene: Scene, rng: np.random.Generator, weights: dict[str, float], popularity=None,
              exclude: Iterable[str] = ()) -> tuple[str, QA]:
    excl = set(exclude)
    names = [n for n in weights if n not in excl and FAMILIES[n][1](scene)]
    if not names:
        names = [n for n in weights if FAMILIES[n][1](scene)]
    fam = _wchoice(rng, {n: weights[n] for n in names})[0]
    return fam, FAMILIES[fam][0](scene, rng, popularity=popularity)


# ----------------------------------------------------------------------------------------------- text-only mix
def text_only_sample(rng: np.random.Generator) -> list[dict]:
    turns = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))):
        kind = int(rng.integers(5))
        if kind == 0:
            a, b = (int(x) for x in rng.integers(0, 10, size=2))
            q, ans = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
        elif kind == 1:
            a, b = sorted((int(x) for x in rng.integers(0, 10, size=2)), reverse=True)
            q, ans = f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
        elif kind == 2:
            mix = {("blue", "yellow"): "green", ("red", "yellow"): "orange", ("red", "blue"): "purple"}
            (c1, c2), res = _pick(rng, mix.items())
            q, ans = f"What color do you get by mixing {c1} and {c2}?", f"Mixing {c1} and {c2} gives {res}."
        elif kind == 3:
            s, n = _pick(rng, (("triangle", 3), ("square", 4), ("star", 10), ("circle", 0)))
            q = f"How many corners does a {s} have?"
            ans = f"A {s} has {NUM_WORDS.get(n, str(n))} corners." if n else "A circle has no corners."
        else:
            facts = (("What color is the sky on a clear day?", "The sky is blue on a clear day."),
                     ("What color is grass?", "Grass is usually green."),
                     ("What color is a ripe banana?", "A ripe banana is yellow."),
                     ("Which shape is perfectly round?", "A circle is perfectly round."))
            q, ans = _pick(rng, facts)
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": ans}]
    return turns


# ------------------------------------------------------------------------------------------------ generation
STREAM_TRAIN, STREAM_TRAIN_TEXT, STREAM_TEXT_ONLY, STREAM_POPE, STREAM_GQA, STREAM_MME = 1, 2, 3, 4, 5, 6
STREAM_LM_SCENES = 7  # the LM warm-up's own scenes (`xmodelvlm.demo.tiny_lm.scene_documents`), text only


def _image_turn(question: str, rng: np.random.Generator, after_prob: float) -> str:
    if rng.random() < after_prob:
        return f"{question}\n{DEFAULT_IMAGE_TOKEN}"
    return f"{DEFAULT_IMAGE_TOKEN}\n{question}"


def instruct_conversation(scene: Scene, rng: np.random.Generator, popularity) -> list[dict]:
    """One LLaVA-665K style conversation about ``scene`` (1-4 turns; VQA short-answer, free-form or description)."""
    style = float(rng.random())
    n_turns = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.3, 0.25, 0.2]))
    turns: list[tuple[str, str]] = []
    used: set[str] = set()
    if style < VQA_SHARE:  # short-answer VQA (the format every eval set uses)
        for _ in range(n_turns):
            fam, qa = sample_qa(scene, rng, TRAIN_FAMILY_WEIGHTS, popularity, exclude=used)
            used.add(fam)
            turns.append((qa.question + SHORT_ANSWER_SUFFIX, _cap(qa.short)))
    else:  # free-form conversation, sometimes opening with a description
        if style > 1 - DESCRIBE_SHARE:
            turns.append((_pick(rng, DESCRIBE_QUESTIONS), _cap(caption(scene, rng)) + "."))
        while len(turns) < n_turns:
            fam, qa = sample_qa(scene, rng, TRAIN_FAMILY_WEIGHTS, popularity, exclude=used)
            used.add(fam)
            turns.append((qa.question, qa.long))
    conv = []
    for k, (q, a) in enumerate(turns):
        if k == 0:
            q = _image_turn(q, rng, after_prob=0.1)
        conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return conv


@dataclass
class Args:
    out: Path
    seed: int = 0
    num_train: int = 4000
    num_eval: int = 300
    image_size: int = 64
    text_only_frac: float = 0.05

    def key(self) -> dict:
        return {"version": GENERATOR_VERSION, "seed": self.seed, "num_train": self.num_train,
                "num_eval": self.num_eval, "image_size": self.image_size, "text_only_frac": self.text_only_frac}


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def generate_train(a: Args) -> tuple[dict, list[tuple[str, str]]]:
    root = a.out / "train"
    pretrain, instruct, scenes_json = [], [], []
    scenes = []
    for i in range(a.num_train):
        rng = _rng(a.seed, STREAM_TRAIN, i)
        scene = sample_scene(rng, a.image_size)
        scenes.append(scene)
        rel = f"images/{i:06d}.png"
        save_png(render(scene, a.image_size), root / rel)
        scenes_json.append({"image": rel, **scene.to_json()})
        instr = _pick(rng, CAPTION_INSTRUCTIONS)
        human = f"{instr}\n{DEFAULT_IMAGE_TOKEN}" if rng.random() < 0.8 else f"{DEFAULT_IMAGE_TOKEN}\n{instr}"
        pretrain.append({"id": f"{i:06d}", "image": rel,
                         "conversations": [{"from": "human", "value": human},
                                           {"from": "gpt", "value": caption(scene, rng)}]})
    # empirical object frequencies over the training set -> POPE "popular" ranking
    freq = Counter(p for s in scenes for p in ((o.color, o.shape) for o in s.objects))
    popularity = sorted(((c, s) for c in COLORS for s in SHAPES), key=lambda p: (-freq[p], p))
    for i, scene in enumerate(scenes):
        rng = _rng(a.seed, STREAM_TRAIN_TEXT, i)
        instruct.append({"id": f"{i:06d}", "image": f"images/{i:06d}.png",
                         "conversations": instruct_conversation(scene, rng, popularity)})
    n_text = int(round(a.num_train * a.text_only_frac / max(1e-9, 1 - a.text_only_frac)))
    text_samples = [{"id": f"text_{k:06d}", "conversations": text_only_sample(_rng(a.seed, STREAM_TEXT_ONLY, k))}
                    for k in range(n_text)]
    # interleave text-only samples deterministically (LLaVA's mix is shuffled)
    order_rng = _rng(a.seed, STREAM_TEXT_ONLY, 10**9)
    slots = sorted(int(x) for x in order_rng.choice(len(instruct) + n_text, size=n_text, replace=False))
    merged, ti, ii = [], 0, 0
    for pos in range(len(instruct) + n_text):
        if ti < n_text and pos == slots[ti]:
            merged.append(text_samples[ti]); ti += 1
        else:
            merged.append(instruct[ii]); ii += 1
    atomic_write_json(root / "pretrain.json", pretrain, indent=None)
    atomic_write_json(root / "instruct.json", merged, indent=None)
    atomic_write_json(root / "scenes.json", scenes_json, indent=None)
    return ({"train_images": a.num_train, "pretrain_samples": len(pretrain), "instruct_samples": len(merged),
             "instruct_text_only": n_text,
             "instruct_turns": sum(len(s["conversations"]) // 2 for s in merged)}, popularity)


def generate_pope(a: Args, popularity) -> dict:
    root = a.out / "eval" / "pope"
    n_img = max(1, a.num_eval // 6)
    per_cat: dict[str, list[dict]] = {c: [] for c in POPE_CATEGORIES}
    for i in range(n_img):
        rng = _rng(a.seed, STREAM_POPE, i)
        scene = sample_scene(rng, a.image_size)
        name = f"COCO_val2014_{i + 1:012d}.png"
        save_png(render(scene, a.image_size), root / "val2014" / name)
        pos = _pick(rng, scene.objects)
        for cat in POPE_CATEGORIES:
            neg = _absent_pair(scene, rng, cat, popularity)
            pair_rows = [((pos.color, pos.shape), "yes"), (neg, "no")]
            if rng.random() < 0.5:
                pair_rows.reverse()
            for (c, s), label in pair_rows:
                per_cat[cat].append({"image": name, "text": exist_question(c, s), "label": label})
    questions, qid = [], 1
    for cat in POPE_CATEGORIES:
        labels = []
        for k, row in enumerate(per_cat[cat]):
            questions.append({"question_id": qid, "image": row["image"], "text": row["text"] + SHORT_ANSWER_SUFFIX,
                              "category": cat})
            # original POPE label files number their questions from 1 within each category
            labels.append({"question_id": k + 1, "image": row["image"], "text": row["text"], "label": row["label"]})
            qid += 1
        atomic_write_text(root / "coco" / f"coco_pope_{cat}.json", _jsonl(labels))
    atomic_write_text(root / "llava_pope_test.jsonl", _jsonl(questions))
    return {"pope_images": n_img, "pope_questions": len(questions)}


def generate_gqa(a: Args, popularity) -> dict:
    root = a.out / "eval" / "gqa"
    n_img = max(1, a.num_eval // 2)
    rows, gt = [], {}
    qnum = 0
    for i in range(n_img):
        rng = _rng(a.seed, STREAM_GQA, i)
        scene = sample_scene(rng, a.image_size)
        image_id = f"n{100000 + i}"
        save_png(render(scene, a.image_size), root / "data" / "images" / f"{image_id}.png")
        used: set[str] = set()
        for _ in range(2):
            fam, qa = sample_qa(scene, rng, GQA_FAMILY_WEIGHTS, popularity, exclude=used)
            used.add(fam)
            qid = str(20000000 + qnum)
            qnum += 1
            rows.append({"question_id": qid, "image": f"{image_id}.png", "text": qa.question + SHORT_ANSWER_SUFFIX})
            gt[qid] = {"imageId": image_id, "question": qa.question, "answer": qa.short, "fullAnswer": qa.long,
                       "types": {"structural": qa.structural, "semantic": qa.semantic, "detailed": qa.detailed},
                       "isBalanced": True}
    atomic_write_text(root / "llava_gqa_testdev_balanced.jsonl", _jsonl(rows))
    atomic_write_json(root / "data" / "testdev_balanced_questions.json", gt, indent=None)
    return {"gqa_images": n_img, "gqa_questions": len(rows),
            "gqa_open": sum(1 for v in gt.values() if v["types"]["structural"] == "query")}


MME_TASK_FAMILY = {"existence": "exist_pair", "count": "count_verify", "position": "verify_position",
                   "color": "verify_color", "scene": "bg_verify"}


def generate_mme(a: Args, popularity) -> dict:
    root = a.out / "eval" / "MME"
    release = root / "MME_Benchmark_release_version"
    n_img = max(1, a.num_eval // 10)
    rows = []
    for t, task in enumerate(MME_TASKS):
        fn = FAMILIES[MME_TASK_FAMILY[task]][0]
        for i in range(n_img):
            rng = _rng(a.seed, STREAM_MME, t * 1_000_000 + i)
            scene = sample_scene(rng, a.image_size)
            if task in MME_NESTED_TASKS:
                stem = f"Places365_val_{i + 1:08d}"
                img_rel = f"{task}/images/{stem}.png"
                gt_rel = f"{task}/questions_answers_YN/{stem}.txt"
            else:
                stem = f"{t + 1:02d}{i + 1:010d}"
                img_rel, gt_rel = f"{task}/{stem}.png", f"{task}/{stem}.txt"
            save_png(render(scene, a.image_size), release / img_rel)
            lines = []
            for want in ("yes", "no"):
                if task == "position" and _rel_ok(scene) and rng.random() < 0.4:
                    qa = qa_relation(scene, rng, want=want)
                else:
                    qa = fn(scene, rng, want=want, neg_mode="adversarial", popularity=popularity)
                # real MME has a few ground-truth questions with a double space before "Please"
                suffix = "  Please answer yes or no." if (task == "color" and i % 10 == 3 and want == "yes") else MME_SUFFIX
                full = qa.question + suffix
                lines.append(f"{full}\t{_cap(qa.short)}")
                rows.append({"question_id": img_rel, "image": img_rel,
                             "text": full.replace(MME_SUFFIX, SHORT_ANSWER_SUFFIX), "category": task})
            atomic_write_text(release / gt_rel, "\n".join(lines) + "\n")
    atomic_write_text(root / "llava_mme.jsonl", _jsonl(rows))
    return {"mme_tasks": len(MME_TASKS), "mme_images_per_task": n_img, "mme_questions": len(rows)}


def generate(out: str | Path, *, seed: int = 0, num_train: int = 4000, num_eval: int = 300, image_size: int = 64,
             text_only_frac: float = 0.05, force: bool = False, quiet: bool = False) -> dict:
    """Write the whole synthetic dataset under ``out``; return the manifest. A complete run with the same arguments
    is detected through ``out/manifest.json`` and not redone unless ``force``."""
    a = Args(Path(out), seed, num_train, num_eval, image_size, text_only_frac)
    manifest_path = a.out / "manifest.json"
    if manifest_path.exists() and not force:
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old and old.get("args") == a.key() and all((a.out / p).exists() for p in old.get("files", {}).values()):
            if not quiet:
                print(f"[synthetic_data] {a.out} is complete (manifest matches); nothing to do", file=sys.stderr)
            return old
    t0 = time.time()
    if manifest_path.exists():
        manifest_path.unlink()
    for sub in ("train", "eval"):  # never mix images of an older, different run
        if (a.out / sub).exists():
            shutil.rmtree(a.out / sub)
    counts, popularity = generate_train(a)
    counts.update(generate_pope(a, popularity))
    counts.update(generate_gqa(a, popularity))
    counts.update(generate_mme(a, popularity))
    files = {
        "pretrain_json": "train/pretrain.json", "instruct_json": "train/instruct.json",
        "train_image_folder": "train", "train_scenes": "train/scenes.json",
        "pope_questions": "eval/pope/llava_pope_test.jsonl", "pope_image_folder": "eval/pope/val2014",
        "pope_annotation_dir": "eval/pope/coco",
        "gqa_questions": "eval/gqa/llava_gqa_testdev_balanced.jsonl", "gqa_image_folder": "eval/gqa/data/images",
        "gqa_ground_truth": "eval/gqa/data/testdev_balanced_questions.json",
        "mme_questions": "eval/MME/llava_mme.jsonl", "mme_image_folder": "eval/MME/MME_Benchmark_release_version",
    }
    manifest = {"generator": "xmodelvlm.demo.synthetic_data", "args": a.key(), "seed": seed, "image_size": image_size,
                "counts": counts, "files": files, "popular_ranking": [f"{c} {s}" for c, s in popularity],
                "colors": list(COLORS), "shapes": list(SHAPES), "positions": list(POSITIONS),
                "backgrounds": {"colors": list(BG_COLORS), "textures": list(BG_TEXTURES)},
                "seconds": round(time.time() - t0, 2)}
    atomic_write_json(manifest_path, manifest)
    if not quiet:
        print(f"[synthetic_data] wrote {a.out} in {manifest['seconds']} s: {json.dumps(counts)}", file=sys.stderr)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=4000, help="training images (one caption + one conversation each)")
    p.add_argument("--num-eval", type=int, default=300, help="approximate questions per benchmark (POPE, GQA, MME)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--text-only-frac", type=float, default=0.05, help="fraction of text-only instruction samples")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching complete run exists")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    if ns.num_train < 1 or ns.num_eval < 10 or ns.image_size < 32:
        p.error("need --num-train >= 1, --num-eval >= 10, --image-size >= 32")
    generate(ns.out, seed=ns.seed, num_train=ns.num_train, num_eval=ns.num_eval, image_size=ns.image_size,
             text_only_frac=ns.text_only_frac, force=ns.force, quiet=ns.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
