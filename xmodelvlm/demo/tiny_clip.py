"""A small CLIP, pre-trained for about a minute on the synthetic captions; the demo's frozen vision tower.

The saved directory looks like ``openai/clip-vit-large-patch14-336``: a whole ``CLIPModel`` checkpoint
(``config.json`` + ``model.safetensors``) and a ``preprocessor_config.json``, so ``CLIPVisionModel.from_pretrained``
and ``CLIPImageProcessor.from_pretrained`` load it the same way. Shape: vision width 128, 4 layers, 4 heads, MLP
512, ``quick_gelu``, at a given image and patch size (function defaults 64 px / patch 8; the demo uses 48 px /
patch 16, one token per cell of the scenes' 3x3 slot grid); the text tower is a 2-layer transformer over a
word-level vocabulary built from the captions (saved as ``clip_text_vocab.json``; the VLM never uses the text side).

Objective: the symmetric CLIP image-caption contrastive loss, plus auxiliary region-phrase contrastive losses
(see :func:`_aux_region_loss`) when the dataset's ``scenes.json`` is present. The VLM reads the hidden states of
layer -2, patch tokens only, and nothing but the contrastive loss on the pooled CLS token of the last layer would
otherwise ask those patch tokens to say what lies at their own location. The region phrases name the place too
("a red circle on the left", ``located_phrases``), as grounding captions do: a patch token then says what lies
there *and where*; without the place, training washes out the little position signal a token has.

What training buys, measured with 4,000 scenes, 600 steps of batch 64, lr 1e-3, about a minute on both cores
(linear probes on each object's own token, 2,000 scenes, held out): shape 0.77 → 0.997 and slot 0.55 → 0.975 from
the random initialisation (slot 0.43 when the phrases leave out the place). The demo now trains 400 steps: shape
0.98, slot 0.53. A VLM on the random tower never learned to read shape at all (it answers every "what shape ..."
with the most frequent one); see BENCHMARKS.md, "Demo".

CLI: ``python -m xmodelvlm.demo.tiny_clip --data DIR --out DIR [--steps N]``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from xmodelvlm.utils import atomic_write_json

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_STEPS = 200
VOCAB_FILE = "clip_text_vocab.json"
STATS_FILE = "clip_pretrain_stats.json"
PAD, BOS, UNK, EOS = "<pad>", "<bos>", "<unk>", "<eos>"  # ids 0..3; eos != 2 so CLIP pools at the first eos

_WORD = re.compile(r"[a-z0-9]+")


def cpu_has_bf16() -> bool:
    """Native bf16 matmul on this CPU (AVX512-BF16 or AMX); elsewhere autocast would be emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


# ----------------------------------------------------------------------------------------------------- data
def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocab(captions: list[str]) -> dict[str, int]:
    words = sorted({w for c in captions for w in _words(c)})
    return {w: i for i, w in enumerate([PAD, BOS, UNK, EOS] + words)}


def padded_length(texts: list[str]) -> int:
    """Tokens to hold the longest of ``texts`` with its <bos> and <eos>, rounded up to a multiple of 8."""
    return 8 * math.ceil((max(len(_words(t)) for t in texts) + 2) / 8)


def encode_texts(texts: list[str], vocab: dict[str, int], max_len: int) -> torch.Tensor:
    ids = torch.zeros(len(texts), max_len, dtype=torch.long)
    for i, t in enumerate(texts):
        toks = [vocab[BOS]] + [vocab.get(w, vocab[UNK]) for w in _words(t)][: max_len - 2] + [vocab[EOS]]
        ids[i, : len(toks)] = torch.tensor(toks)
    return ids


def load_images(paths: list[Path], image_size: int) -> torch.Tensor:
    """uint8 N x 3 x S x S. Square images of the right size are taken as they are (the CLIP processor is the
    identity on them: resize to the same size, full center crop); others go through the processor's resize+crop."""
    out = torch.empty(len(paths), 3, image_size, image_size, dtype=torch.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                w, h = im.size
                scale = image_size / min(w, h)
                im = im.resize((max(image_size, round(w * scale)), max(image_size, round(h * scale))), Image.BICUBIC)
                w, h = im.size
                left, top = (w - image_size) // 2, (h - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
            out[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    return out


def normalize(images_u8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images_u8.float() / 255.0 - mean) / std


# --------------------------------------------------------------------------------- scene-derived patch labels
def scenes_meta() -> dict:
    """What the scenes are made of (the generator's colours, shapes, backgrounds and slots), for the phrases and
    labels below."""
    from xmodelvlm.demo import synthetic_data as sd

    return {"colors": list(sd.COLORS), "shapes": list(sd.SHAPES), "textures": list(sd.BG_TEXTURES),
            "bg_colors": list(sd.BG_COLORS), "positions": list(sd.POSITIONS),
            "position_phrases": [sd.POS_PHRASE[p] for p in sd.POSITIONS]}


def _phrases(meta: dict, located: bool = False) -> list[str]:
    """The region phrases over ``meta`` (:func:`scenes_meta`): every colour-shape pair ("a red circle"; with
    ``located``, once per slot: "a red circle on the left"), then every background ("a striped gray background")."""
    places = [f" {p}" for p in meta["position_phrases"]] if located else [""]
    objs = [f"a {c} {s}{p}" for c in meta["colors"] for s in meta["shapes"] for p in places]
    bgs = [f"a {t} {c} background" for t in meta["textures"] for c in meta["bg_colors"]]
    return objs + bgs


def patch_targets(scenes: list[dict], image_size: int, patch_size: int, meta: dict,
                  located: bool = False) -> torch.Tensor:
    """Soft labels N x P x C over the phrase list of :func:`_phrases` (``located`` alike): for each patch, the
    fraction of its pixels covered by each object ("a red circle [on the left]"), the rest going to the image's
    background phrase."""
    from xmodelvlm.demo.synthetic_data import Scene, render_mask  # same geometry as the images

    colors, shapes = meta["colors"], meta["shapes"]
    places = meta["positions"] if located else [None]
    n_obj = len(colors) * len(shapes) * len(places)
    bg_index = {(t, c): n_obj + i * len(meta["bg_colors"]) + j
                for i, t in enumerate(meta["textures"]) for j, c in enumerate(meta["bg_colors"])}
    g = image_size // patch_size
    n_cls = n_obj + len(bg_index)
    out = torch.zeros(len(scenes), g * g, n_cls)
    for k, sc in enumerate(scenes):
        scene = Scene.from_json(sc)
        mask = render_mask(scene, image_size)  # H x W, 0 = background, j+1 = object j
        cover = np.zeros((g * g, len(scene.objects) + 1), dtype=np.float32)
        m = mask.reshape(g, patch_size, g, patch_size).transpose(0, 2, 1, 3).reshape(g * g, -1)
        for j in range(len(scene.objects) + 1):
            cover[:, j] = (m == j).mean(axis=1)
        t = torch.from_numpy(cover)
        out[k, :, bg_index[(scene.bg_texture, scene.bg_color)]] = t[:, 0]
        for j, o in enumerate(scene.objects):
            pair = colors.index(o.color) * len(shapes) + shapes.index(o.shape)
            out[k, :, pair * len(places) + (places.index(o.position) if located else 0)] += t[:, j + 1]
    return out


# -------------------------------------------------------------------------------------------------- model
def tiny_clip_config(vocab_size: int, max_text_len: int, image_size: int = 64, patch_size: int = 8):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=max_text_len, hidden_act="quick_gelu",
                         pad_token_id=0, bos_token_id=1, eos_token_id=3),
        vision_config=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                           image_size=image_size, patch_size=patch_size, num_channels=3, hidden_act="quick_gelu",
                           layer_norm_eps=1e-5),
        projection_dim=128,
    )


def patch_features(vision_model, pixel_values: torch.Tensor, layer: int = -2) -> torch.Tensor:
    """What the VLM uses: hidden states of ``layer``, CLS dropped -> B x P x D."""
    out = vision_model(pixel_values=pixel_values, output_hidden_states=True)
    return out.hidden_states[layer][:, 1:]


def _contrastive(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    labels = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def _aux_region_loss(head: nn.Module, feats: torch.Tensor, phrase_emb: torch.Tensor, targets: torch.Tensor,
                     scale: torch.Tensor, n_obj_phrases: int | None = None) -> torch.Tensor:
    """Dense region-phrase alignment (in the spirit of FILIP / RegionCLIP / GLIP's word-region contrast): each
    layer -2 patch token, through a small head that is thrown away afterwards, is contrasted against the text
    tower's embeddings of all object phrases ("a red circle") and background phrases ("a striped gray
    background"), with soft targets = what actually covers that patch. It keeps the loss CLIP-like (image regions
    vs. text, one shared text tower) while asking the very tokens the VLM reads to carry their local content;
    position then comes from the token's place in the sequence and count from the number of object regions.
    With ``n_obj_phrases`` (the first that many phrases are the objects) an object-level term is added: tokens
    mask-pooled over each object are contrasted against all object phrases (RegionCLIP's region-concept contrast),
    which weighs every object equally however few patches it covers and makes same-colour phrases the negatives."""
    z = head(feats)                                                   # B x P x E
    phr = F.normalize(phrase_emb, dim=-1)
    logits = scale * F.normalize(z, dim=-1) @ phr.t()                 # B x P x C
    dense = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    if n_obj_phrases is None:
        return dense
    # object level (RegionCLIP's region-concept contrast): pool the tokens over each object's mask and pick its
    # phrase among all object phrases, where same-colour/other-shape phrases are the hard negatives
    cover = targets[..., :n_obj_phrases]                              # B x P x K  (pairs are unique per image)
    mass = cover.sum(1)                                               # B x K
    pooled = torch.einsum("bpk,bpe->bke", cover, z) / mass.clamp(min=1e-6)[..., None]
    keep = mass > 0.5                                                 # objects covering at least half a patch
    obj_logits = scale * F.normalize(pooled[keep], dim=-1) @ phr[:n_obj_phrases].t()
    labels = keep.nonzero()[:, 1]
    return dense + F.cross_entropy(obj_logits, labels)


def _anisotropy(tokens: torch.Tensor) -> torch.Tensor:
    """How far the covariance of `tokens` (B x P x D, pooled over images and patches) is from a multiple of the
    identity: the mean squared entry of (C / mean eigenvalue - I). Zero when every direction varies alike."""
    x = tokens.reshape(-1, tokens.shape[-1])
    x = x - x.mean(0)
    cov = x.T @ x / max(1, len(x) - 1)
    eye = torch.eye(len(cov), device=cov.device)
    return ((cov / cov.diagonal().mean().clamp_min(1e-8) - eye) ** 2).mean()


# -------------------------------------------------------------------------------------------------- probes
def _ridge_fit(x: torch.Tensor, y: torch.Tensor, lam: float = 1.0):
    """Closed-form ridge regression (standardised inputs + bias) onto one-hot / soft targets; dual form when the
    features outnumber the samples. Returns what :func:`_ridge_apply` needs."""
    mu, sd = x.mean(0, keepdim=True), x.std(0, keepdim=True) + 1e-5
    xb = torch.cat([(x - mu) / sd, torch.ones(len(x), 1)], 1).double()
    n, d = xb.shape
    reg = lam * d ** 0.5
    if d <= n:
        w = torch.linalg.solve(xb.t() @ xb + reg * torch.eye(d, dtype=xb.dtype), xb.t() @ y.double())
    else:
        w = xb.t() @ torch.linalg.solve(xb @ xb.t() + reg * torch.eye(n, dtype=xb.dtype), y.double())
    return mu, sd, w


def _softmax_probe(x: torch.Tensor, y_soft: torch.Tensor, x_eval: torch.Tensor, steps: int = 150) -> torch.Tensor:
    """Multinomial logistic regression (full batch, Adam, fixed seed) on standardised features; returns the
    class probabilities of ``x_eval``."""
    mu, sd = x.mean(0, keepdim=True), x.std(0, keepdim=True) + 1e-5
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(x.shape[1], y_soft.shape[1])
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.01)
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    xs = (x - mu) / sd
    with torch.enable_grad():
        for _ in range(steps):
            loss = -(y_soft * F.log_softmax(lin(xs), -1)).sum(-1).mean() + 1e-4 * lin.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return F.softmax(lin((x_eval - mu) / sd), -1).detach()


def _ridge_apply(fit, x: torch.Tensor) -> torch.Tensor:
    mu, sd, w = fit
    return (torch.cat([(x - mu) / sd, torch.ones(len(x), 1)], 1).double() @ w).float()


@torch.no_grad()
def run_probes(vision_model, images_u8: torch.Tensor, scenes: list[dict], n_train: int, meta: dict,
               image_size: int, patch_size: int) -> dict:
    """Linear probes on frozen layer -2 patch tokens, fit on the first ``n_train`` images, scored on the rest.

    - ``patch_acc``: a softmax probe per patch token: what covers it (24 object phrases + 9 backgrounds).
    - ``presence_acc``: POPE-like, from that same patch probe: colour-shape pair present iff its best patch score
      passes a threshold (picked on the fit images); balanced accuracy over all 24 pairs of every image.
    - ``count_acc``: number of distinct colour-shape pairs among the patch probe's labels == number of objects.
    - ``shape_acc`` / ``position_acc``: shape / slot of each object, softmax probe on the tokens around its centre
      (3x3 of them, concatenated, on a fine grid; its own token when each slot has one cell).
    - ``color_acc``: colour of the object in each occupied slot, ridge on all patch tokens (position matters).
    """
    feats = torch.cat([patch_features(vision_model, normalize(images_u8[i:i + 256]))
                       for i in range(0, len(images_u8), 256)])  # N x P x D
    n, p, d = feats.shape
    tr, te = slice(0, n_train), slice(n_train, n)
    tgt = patch_targets(scenes, image_size, patch_size, meta)  # soft coverage, N x P x C
    lab = tgt.argmax(-1)
    scores = _softmax_probe(feats[tr].reshape(-1, d), tgt[tr].reshape(-1, tgt.shape[-1]),
                            feats.reshape(-1, d)).reshape(n, p, -1)
    res = {"patch_acc": (scores[te].argmax(-1) == lab[te]).float().mean().item()}
    n_pairs = len(meta["colors"]) * len(meta["shapes"])
    pres_score = scores[..., :n_pairs].amax(1)                 # N x 24
    present = tgt[..., :n_pairs].amax(1) > 0                    # N x 24

    def balanced(thr: float, rows: slice) -> float:
        pred, true = pres_score[rows] > thr, present[rows]
        tpr = (pred & true).sum() / true.sum().clamp(min=1)
        tnr = (~pred & ~true).sum() / (~true).sum().clamp(min=1)
        return (0.5 * (tpr + tnr)).item()

    thr = max((t / 20 for t in range(1, 20)), key=lambda t: balanced(t, tr))
    res["presence_acc"] = balanced(thr, te)
    # count = number of distinct colour-shape pairs among the patches' predicted labels
    pred_lab = scores[te].argmax(-1)
    n_obj = torch.tensor([len(sc["objects"]) for sc in scenes])[te]
    pred_cnt = torch.tensor([len({int(v) for v in row if v < n_pairs}) for row in pred_lab])
    res["count_acc"] = (pred_cnt == n_obj).float().mean().item()
    # shape and slot of each object from the tokens around its centre (what a projector could read): a 3x3
    # neighbourhood on a fine grid, the object's own token on a coarse one (one cell per slot)
    g = int(p ** 0.5)
    r = 1 if g >= 6 else 0
    grid = feats.reshape(n, g, g, d)
    xs, ys, slot_of, split = [], [], [], 0
    for i, sc in enumerate(scenes):
        if i == n_train:
            split = len(xs)
        for o in sc["objects"]:
            cx = min(max(int(o["cx"] // patch_size), r), g - 1 - r)
            cy = min(max(int(o["cy"] // patch_size), r), g - 1 - r)
            xs.append(grid[i, cy - r:cy + r + 1, cx - r:cx + r + 1].reshape(-1))
            ys.append(meta["shapes"].index(o["shape"]))
            slot_of.append(meta["positions"].index(o["position"]))
    xs, ys, slot_of = torch.stack(xs), torch.tensor(ys), torch.tensor(slot_of)
    for key, y, k in (("shape_acc", ys, len(meta["shapes"])), ("position_acc", slot_of, len(meta["positions"]))):
        pred = _softmax_probe(xs[:split], F.one_hot(y[:split], k).float(), xs[split:]).argmax(-1)
        res[key] = (pred == y[split:]).float().mean().item()
    flat = feats.reshape(n, -1)
    slots = meta["positions"]
    ncol = len(meta["colors"])
    slot_col = torch.full((n, len(slots)), ncol)  # ncol = empty slot
    for i, sc in enumerate(scenes):
        for o in sc["objects"]:
            slot_col[i, slots.index(o["position"])] = meta["colors"].index(o["color"])
    accs = []
    for j in range(len(slots)):
        w = _ridge_fit(flat[tr], F.one_hot(slot_col[tr, j], ncol + 1).float())
        pred = _ridge_apply(w, flat[te]).argmax(-1)
        occ = slot_col[te, j] < ncol
        accs.append((pred[occ] == slot_col[te, j][occ]).float())
    res["color_acc"] = torch.cat(accs).mean().item()
    return {k: round(v, 4) for k, v in res.items()}


@torch.no_grad()
def retrieval_top1(model, images_u8: torch.Tensor, text_ids: torch.Tensor) -> float:
    """Image -> caption top-1 among the held-out captions (exact caption of that image = correct)."""
    img = model.get_image_features(pixel_values=normalize(images_u8))
    txt = model.get_text_features(input_ids=text_ids, attention_mask=(text_ids != 0).long())
    img, txt = _features(img), _features(txt)
    sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()
    return round((sim.argmax(-1) == torch.arange(len(img))).float().mean().item(), 4)


def _features(x):
    """``get_*_features`` return a tensor in some transformers versions and a model output in others."""
    if isinstance(x, torch.Tensor):
        return x
    return x.pooler_output


# ------------------------------------------------------------------------------------------------ training
AUX_HEADS = ("none", "linear")


def _region_head(kind: str, width: int, embed_dim: int) -> nn.Module:
    """What maps a layer -2 patch token into the phrase space of the region loss. "linear" (default): LayerNorm +
    Linear, a head of its own that is thrown away after training. "none": the token itself, so the loss shapes the
    very vectors the VLM reads, and every attribute a phrase names gets a loud direction of its own in them. At the
    demo's settings (1,500 training scenes, `bench/demo_token_variance.py`) the share of the object tokens'
    variance that shape explains goes from 0.13 to 0.17 and slot from 0.06 to 0.15-0.17, while colour drops from
    0.30 to 0.21; the VLM trained on it scored within run-to-run noise of the default (BENCHMARKS.md)."""
    if kind == "linear":
        return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim))
    if kind == "none":
        if width != embed_dim:
            raise ValueError(f"aux_head 'none' needs the vision width ({width}) to equal the projection dim "
                             f"({embed_dim})")
        return nn.Identity()
    raise ValueError(f"aux_head must be one of {AUX_HEADS}, not {kind!r}")


def pretrain_tiny_clip(train_json: str | Path, image_folder: str | Path, out_dir: str | Path, *,
                       image_size: int = 64, patch_size: int = 8, steps: int = DEFAULT_STEPS, batch_size: int = 64,
                       lr: float = 5e-4, aux_weight: float = 1.0, num_heldout: int = 256, num_probe_train: int = 768,
                       seed: int = 0, num_threads: int = 2, scenes_json: str | Path | None = None,
                       max_seconds: float | None = None, bf16: bool | None = None, baseline_probes: bool = False,
                       object_loss: bool = True, located_phrases: bool = True, aux_head: str = "linear",
                       isotropy_weight: float = 0.0, quiet: bool = False, device: str = "cpu") -> Path:
    """Pre-train the tiny CLIP on ``train_json`` (LLaVA-558K style: the gpt turn is the caption; images relative
    to ``image_folder``) and save it to ``out_dir``. The last ``num_heldout`` samples are held out for the
    retrieval score and the probes. ``scenes_json`` (default ``image_folder/scenes.json`` when it exists) enables
    the auxiliary region loss and the probes. ``max_seconds`` (default: none, fully deterministic) stops training
    early once that much training time has passed, as a guard for time-boxed runs; the stats record the steps done.
    ``bf16`` (default: on a GPU, or when the CPU has native bf16 instructions) runs the forward pass under bf16
    autocast, about 1.3x faster on such a CPU; weights and optimizer stay fp32. ``device`` trains there ("cpu",
    "cuda"); the probes always run on the CPU. ``baseline_probes`` also probes the randomly initialised
    tower (stats key ``random_init``), to show what training added. ``isotropy_weight`` > 0 adds
    :func:`_anisotropy` of the layer -2 patch tokens to the loss, so that they vary alike in every direction.
    Writes ``clip_pretrain_stats.json``; returns
    ``out_dir``."""
    from transformers import CLIPImageProcessor, CLIPModel

    t0 = time.time()
    if bf16 is None:
        bf16 = device != "cpu" or cpu_has_bf16()
    torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if image_size % patch_size:
        raise ValueError(f"image size {image_size} px is not a multiple of the patch size {patch_size}")
    train_json, image_folder, out_dir = Path(train_json), Path(image_folder), Path(out_dir)
    samples = [s for s in json.loads(train_json.read_text()) if s.get("image")]
    captions = [next(t["value"] for t in s["conversations"] if t["from"] == "gpt") for s in samples]
    images = load_images([image_folder / s["image"] for s in samples], image_size)
    scenes = meta = None
    scenes_path = Path(scenes_json) if scenes_json else image_folder / "scenes.json"
    if scenes_path.exists():
        by_image = {sc["image"]: sc for sc in json.loads(scenes_path.read_text())}
        if all(s["image"] in by_image for s in samples):
            scenes = [by_image[s["image"]] for s in samples]
            meta = scenes_meta()
    n = len(samples)
    num_heldout = min(num_heldout, max(2, n // 5))
    n_fit = n - num_heldout
    vocab = build_vocab(captions[:n_fit])
    max_len = min(77, padded_length(captions))
    text_ids = encode_texts(captions, vocab, max_len)

    model = CLIPModel(tiny_clip_config(len(vocab), max_len, image_size, patch_size))
    model.train()
    params = list(model.parameters())
    head = phrase_ids = targets = None
    if scenes is not None and aux_weight > 0:
        width = model.config.vision_config.hidden_size
        head = _region_head(aux_head, width, model.config.projection_dim)
        params += list(head.parameters())
        phrases = _phrases(meta, located_phrases)
        # padded to their own length (the demo's: 8 tokens), not the captions' (32): the text tower encodes all
        # of them every step, and the padding was most of its work
        phrase_ids = encode_texts(phrases, vocab, min(max_len, padded_length(phrases)))
        targets = patch_targets(scenes[:n_fit], image_size, patch_size, meta, located_phrases)
        n_obj_phrases = len(phrases) - len(meta["textures"]) * len(meta["bg_colors"])
    model.to(device)
    if head is not None:
        head.to(device)
        phrase_ids = phrase_ids.to(device)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, int(0.05 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: (k + 1) / warmup if k < warmup else 0.5 * (1 + math.cos(math.pi * (k - warmup) / max(1, steps - warmup))))
    baseline = None
    if scenes is not None and baseline_probes:
        model.to("cpu").eval()
        baseline = _eval(model, images, text_ids, scenes, n_fit, num_probe_train, meta, image_size, patch_size)
        model.to(device).train()
    t_train = time.time()
    perm, pos, losses, steps_done = torch.randperm(n_fit, generator=gen), 0, [], 0
    bs = min(batch_size, n_fit)
    for step in range(steps):
        if pos + bs > n_fit:
            perm, pos = torch.randperm(n_fit, generator=gen), 0
        idx = perm[pos:pos + bs]
        pos += bs
        pix = normalize(images[idx]).to(device)
        ids = text_ids[idx].to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            vis = model.vision_model(pixel_values=pix,
                                     output_hidden_states=head is not None or bool(isotropy_weight))
            img_emb = model.visual_projection(vis.pooler_output)
            txt = model.text_model(input_ids=ids, attention_mask=(ids != 0).long())
            txt_emb = model.text_projection(txt.pooler_output)
            ph = None
            if head is not None:
                ph = model.text_projection(model.text_model(input_ids=phrase_ids,
                                                            attention_mask=(phrase_ids != 0).long()).pooler_output)
        scale = model.logit_scale.exp().clamp(max=100)
        loss = _contrastive(img_emb.float(), txt_emb.float(), scale)
        aux = torch.zeros((), device=device)
        if head is not None:
            aux = _aux_region_loss(head, vis.hidden_states[-2][:, 1:].float(), ph.float(), targets[idx].to(device),
                                   scale, n_obj_phrases if object_loss else None)
            loss = loss + aux_weight * aux
        if isotropy_weight:
            loss = loss + isotropy_weight * _anisotropy(vis.hidden_states[-2][:, 1:].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        steps_done = step + 1
        if not quiet and (step % 50 == 0 or step == steps - 1):
            print(f"[tiny_clip] step {step + 1}/{steps} loss {loss.item():.3f} (aux {aux.item():.3f}) "
                  f"{time.time() - t_train:.1f}s", file=sys.stderr)
        if max_seconds is not None and time.time() - t_train > max_seconds and steps_done < steps:
            if not quiet:
                print(f"[tiny_clip] stopping after {steps_done} steps: --max-seconds {max_seconds} reached",
                      file=sys.stderr)
            break
    train_seconds = time.time() - t_train
    model.to("cpu").eval()
    result = _eval(model, images, text_ids, scenes, n_fit, num_probe_train, meta, image_size, patch_size)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": image_size}, resample=3, do_center_crop=True,
        crop_size={"height": image_size, "width": image_size}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD), do_convert_rgb=True,
    ).save_pretrained(out_dir)
    atomic_write_json(out_dir / VOCAB_FILE, vocab)
    final = float(np.mean(losses[-10:])) if losses else float("nan")
    stats = {"steps": steps_done, "steps_planned": steps, "batch_size": bs, "seconds": round(time.time() - t0, 2),
             "train_seconds": round(train_seconds, 2), "final_loss": round(final, 4),
             "first_loss": round(losses[0], 4) if losses else None,
             "num_train_images": n_fit, "num_heldout": num_heldout, "aux_region_loss": head is not None,
             "located_phrases": head is not None and located_phrases,
             "aux_head": aux_head if head is not None else None, "isotropy_weight": isotropy_weight,
             "image_size": image_size, "patch_size": patch_size, "num_patches": (image_size // patch_size) ** 2,
             "lr": lr, "bf16": bf16, "num_threads": num_threads, "seed": seed, **result,
             "probe_acc": result.get("presence_acc", result["retrieval_top1"])}
    if baseline is not None:
        stats["random_init"] = baseline
    atomic_write_json(out_dir / STATS_FILE, stats)
    if not quiet:
        print(f"[tiny_clip] saved {out_dir}: {json.dumps({k: v for k, v in stats.items() if k != 'random_init'})}",
              file=sys.stderr)
        if baseline is not None:
            print(f"[tiny_clip] same probes at random init: {json.dumps(baseline)}", file=sys.stderr)
    return out_dir


def _eval(model, images, text_ids, scenes, n_fit, num_probe_train, meta, image_size, patch_size) -> dict:
    held = slice(n_fit, len(images))
    res = {"retrieval_top1": retrieval_top1(model, images[held], text_ids[held]),
           "retrieval_chance": round(1 / max(1, len(images) - n_fit), 4)}
    if scenes is not None:
        k = min(num_probe_train, n_fit)
        idx = list(range(n_fit - k, n_fit)) + list(range(n_fit, len(images)))  # probe: fit | held out
        res.update(run_probes(model.vision_model, images[idx], [scenes[i] for i in idx], k, meta,
                              image_size, patch_size))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Pre-train the demo's tiny CLIP vision tower on synthetic captions.")
    p.add_argument("--data", required=True, help="directory written by xmodelvlm.demo.synthetic_data")
    p.add_argument("--out", required=True, help="CLIP directory to write")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=None, help="default: the dataset's manifest image size")
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the region-phrase loss (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for the forward pass (default: if the CPU has native bf16)")
    p.add_argument("--no-object-loss", dest="object_loss", action="store_false")
    p.add_argument("--located-phrases", action=argparse.BooleanOptionalAction, default=True,
                   help="region phrases name the place too (\"a red circle on the left\")")
    p.add_argument("--aux-head", choices=AUX_HEADS, default="linear",
                   help="linear: the region loss reads the layer -2 tokens through a head (LayerNorm + Linear) that "
                        "is thrown away; none: it acts on the tokens themselves")
    p.add_argument("--isotropy-weight", type=float, default=0.0,
                   help="weight of a loss that makes the layer -2 tokens vary alike in every direction (0 = off)")
    p.add_argument("--baseline-probes", action="store_true", help="also probe the randomly initialised tower")
    p.add_argument("--max-seconds", type=float, default=None, help="stop training early after this many seconds")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default cpu)")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    data = Path(ns.data)
    from xmodelvlm.demo.synthetic_data import manifest_image_size

    size = ns.image_size if ns.image_size is not None else (manifest_image_size(data) or 64)
    if ns.isotropy_weight < 0:
        p.error(f"--isotropy-weight must be >= 0, got {ns.isotropy_weight}")
    if size % ns.patch_size:
        p.error(f"--patch-size {ns.patch_size} does not divide the image size {size}")
    pretrain_tiny_clip(data / "train" / "pretrain.json", data / "train", ns.out, image_size=size,
                       patch_size=ns.patch_size, steps=ns.steps, batch_size=ns.batch_size, aux_weight=ns.aux_weight,
                       lr=ns.lr, bf16=ns.bf16, baseline_probes=ns.baseline_probes, object_loss=ns.object_loss,
                       located_phrases=ns.located_phrases, aux_head=ns.aux_head, isotropy_weight=ns.isotropy_weight,
                       seed=ns.seed, num_threads=ns.threads,
                       max_seconds=ns.max_seconds, quiet=ns.quiet, device=ns.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
