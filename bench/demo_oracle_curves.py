"""How fast does the demo's LM learn the question families from *perfect* image tokens? Learning curves (not a test).

    python bench/demo_oracle_curves.py OUT.json --lm LM_DIR|scratch [--shape-of LM_DIR] --data DATA_DIR
        [--turns file|LO-HI] [--families F1,F2] [--fresh 0|1] [--place 0|1] [--steps N] [--batch B] [--lr X]
        [--schedule cosine|const] [--eval-every K] [--seed S] [--device cpu|cuda]

Stage 2 without the eyes, as `bench/demo_oracle_tokens.py` sets it up: each of the 9 image tokens is a sum of
trainable embeddings of its 3x3 cell's ground truth (`train/scenes.json`: background colour and pattern, the cell's
place unless --place 0, and for an object its colour, shape and size), trained with the LM (loaded from LM_DIR, or
randomly initialised with "scratch", the demo LM's shape) on v1 conversations of images 0-3599 and the text-only
samples, batch B, AdamW, warm-up 3 % then cosine (or constant). `--turns file` trains on `train/instruct.json`;
`--turns LO-HI` on short-answer conversations of LO to HI turns drawn from the training mix for each image (new ones
every epoch with --fresh 1; with --families only those families, one repeating once all have been asked). Every
--eval-every steps: one single-turn question per GQA-mix family on each held-out
image (3600-3999), scored by its first answer token (teacher-forced); one JSON line per evaluation, all of them in
OUT.json. Tokens counted are the real (unpadded) ones, so rows with different conversation lengths compare by cost.
"""
import argparse, json, math, random, time
from collections import defaultdict
import numpy as np, torch, torch.nn as nn
from safetensors.torch import load_file
from xmodelvlm import load_tokenizer
from xmodelvlm.constants import IMAGE_TOKEN_INDEX, IGNORE_INDEX, DEFAULT_IMAGE_TOKEN
from xmodelvlm.data.masking import ConversationEncoder
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.demo.tiny_lm import build_lm

from demo_common import short_answer_turns

p = argparse.ArgumentParser(description="learning curves of the demo LM on perfect image tokens")
p.add_argument("out", help="JSON file for the arguments and the curve")
p.add_argument("--lm", required=True, help='warmed-up LM directory, or "scratch" (random init; needs --shape-of)')
p.add_argument("--shape-of", help="with --lm scratch: the LM directory whose config and tokenizer to use")
p.add_argument("--data", required=True, help="the demo's data directory (train/scenes.json, train/instruct.json)")
p.add_argument("--turns", default="file", help='"file" (train/instruct.json) or LO-HI short-answer turns per image')
p.add_argument("--fresh", type=int, default=0, help="with --turns LO-HI: 1 = new conversations every epoch")
p.add_argument("--families", help="with --turns LO-HI: train on these question families only (comma-separated)")
p.add_argument("--place", type=int, default=1, help="1 = each token includes an embedding of its cell")
p.add_argument("--steps", type=int, default=1580)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--warmup", type=float, default=0.03, help="share of the steps with a linear warm-up")
p.add_argument("--schedule", default="cosine", choices=("cosine", "const"))
p.add_argument("--eval-every", type=int, default=500)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
a = p.parse_args()
if a.families and (set(a.families.split(",")) - set(sd.TRAIN_FAMILY_WEIGHTS) or a.turns == "file"):
    p.error(f"--families takes names of {sorted(sd.TRAIN_FAMILY_WEIGHTS)}, with --turns LO-HI")
MIX = {f: sd.TRAIN_FAMILY_WEIGHTS[f] for f in a.families.split(",")} if a.families else sd.TRAIN_FAMILY_WEIGHTS
if a.lm == "scratch" and not a.shape_of:
    p.error("--lm scratch needs --shape-of LM_DIR (its config and tokenizer)")
torch.set_num_threads(a.threads); torch.manual_seed(a.seed); random.seed(a.seed)
dev = torch.device(a.device)
p_dir = a.lm if a.lm != "scratch" else a.shape_of
cfg = json.load(open(f"{p_dir}/config.json"))
shape = {k: cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                             "num_attention_heads", "num_key_value_heads")}
lm = build_lm(shape, seed=a.seed)
if a.lm != "scratch": lm.load_state_dict(load_file(f"{a.lm}/model.safetensors"))
lm.to(dev)
tok = load_tokenizer(p_dir)
enc = ConversationEncoder(tok, "v1")
scene_list = json.load(open(f"{a.data}/train/scenes.json"))
scenes = {s["image"]: s for s in scene_list}
COL = list(sd.COLORS); SH = list(sd.SHAPES); BGC = list(sd.BG_COLORS); BGT = list(sd.BG_TEXTURES); SZ = list(sd.SIZES)
H = shape["hidden_size"]
CELL_PX = (sd.manifest_image_size(a.data) or 48) / 3


class Oracle(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Embedding(len(COL), H); s.s = nn.Embedding(len(SH), H); s.z = nn.Embedding(len(SZ), H)
        s.cell = nn.Embedding(9, H); s.bgc = nn.Embedding(len(BGC), H); s.bgt = nn.Embedding(len(BGT), H)
        for e in (s.c, s.s, s.z, s.cell, s.bgc, s.bgt): nn.init.normal_(e.weight, std=0.5)

    def forward(s, sc):
        bgc = BGC.index(sc["bg_color"]); bgt = BGT.index(sc["bg_texture"])
        base = s.bgc.weight[bgc] + s.bgt.weight[bgt]
        toks = [base + (s.cell.weight[i] if a.place else 0) for i in range(9)]
        for o in sc["objects"]:
            i = sd.cell_index(o, CELL_PX, 3)
            toks[i] = toks[i] + s.c.weight[COL.index(o["color"])] + s.s.weight[SH.index(o["shape"])] + s.z.weight[SZ.index(o["size"])]
        return torch.stack(toks)


orc = Oracle().to(dev)


def encode(conv):
    e = enc([("human" if t["from"] == "human" else "gpt", t["value"]) for t in conv]); return e.input_ids, e.labels


data = json.load(open(f"{a.data}/train/instruct.json"))
train_imgs = [r["image"] for r in data if "image" in r and int(r["image"].split("/")[-1][:6]) < 3600]
text_recs = [r for r in data if "image" not in r]


_cache = {}


def make_epoch(ep):
    key = ep if a.fresh else 0
    if key not in _cache: _cache[key] = _make_epoch(key)
    return _cache[key]


def _make_epoch(ep):
    if a.turns == "file":
        recs = [r for r in data if "image" not in r or int(r["image"].split("/")[-1][:6]) < 3600]
        return [(encode(r["conversations"]), r.get("image")) for r in recs]
    lo, hi = map(int, a.turns.split("-"))
    out = []
    for i, img in enumerate(train_imgs):
        rng = np.random.default_rng([a.seed, ep if a.fresh else 0, i])
        conv = short_answer_turns(sd.Scene.from_json(scenes[img]), rng, lo, hi, MIX, image_after_prob=0.0)
        out.append((encode(conv), img))
    out += [(encode(r["conversations"]), None) for r in text_recs]
    return out


def build(batch):
    E = lm.model.embed_tokens; embs, labs = [], []
    for (ids, lab), img in batch:
        ids_t = torch.tensor(ids); lab_t = torch.tensor(lab)
        if img is None:
            embs.append(E(ids_t.to(dev))); labs.append(lab_t); continue
        k = int((ids_t == IMAGE_TOKEN_INDEX).nonzero()[0])
        pre, post = ids_t[:k], ids_t[k + 1:]
        embs.append(torch.cat([E(pre.to(dev)), orc(scenes[img]), E(post.to(dev))]))
        labs.append(torch.cat([lab_t[:k], torch.full((9,), IGNORE_INDEX), lab_t[k + 1:]]))
    L = max(len(x) for x in embs)
    X = torch.zeros(len(embs), L, H, device=dev); Y = torch.full((len(embs), L), IGNORE_INDEX); M = torch.zeros(len(embs), L, dtype=torch.long)
    for k, (e, l) in enumerate(zip(embs, labs)):
        X[k, :len(e)] = e; Y[k, :len(l)] = l; M[k, :len(e)] = 1
    return X, Y.to(dev), M.to(dev)


# held-out eval: one single-turn question per GQA family per image (images 3600-3999)
held = []
for img in [s["image"] for s in scene_list if int(s["image"].split("/")[-1][:6]) >= 3600]:
    sc = sd.Scene.from_json(scenes[img])
    for f_index, fam in enumerate(sd.GQA_FAMILY_WEIGHTS):
        fn, ok, _ = sd.FAMILIES[fam]
        if not ok(sc): continue
        rng = np.random.default_rng([777, f_index, int(img.split("/")[-1][:6])])
        qa = fn(sc, rng, popularity=sd.DEFAULT_POPULARITY)
        conv = [{"from": "human", "value": f"{DEFAULT_IMAGE_TOKEN}\n{qa.question}{sd.SHORT_ANSWER_SUFFIX}"},
                {"from": "gpt", "value": sd._cap(qa.short)}]
        held.append((fam, encode(conv), img))


def evaluate():
    lm.eval(); acc = defaultdict(list)
    with torch.no_grad():
        for i in range(0, len(held), 64):
            chunk = held[i:i + 64]
            X, Y, M = build([(e, img) for _, e, img in chunk])
            logits = lm(inputs_embeds=X, attention_mask=M).logits
            for j, (fam, _, _) in enumerate(chunk):
                sup = (Y[j] != IGNORE_INDEX).nonzero()
                k = int(sup[0])
                acc[fam].append(int(logits[j, k - 1].argmax() == Y[j, k]))
    lm.train()
    return {f: round(float(np.mean(v)), 3) for f, v in sorted(acc.items())}, round(float(np.mean([x for v in acc.values() for x in v])), 3)


params = [{"params": lm.parameters(), "lr": a.lr}, {"params": orc.parameters(), "lr": a.lr}]
opt = torch.optim.AdamW(params, weight_decay=0.0)
W = max(1, a.warmup * a.steps)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, s / W) * (0.5 * (1 + math.cos(math.pi * s / a.steps)) if a.schedule == "cosine" else 1.0))
t0 = time.time(); order = []; ep = 0; epoch_data = None; curve = []; ntok = 0
for step in range(a.steps):
    if not order:
        epoch_data = make_epoch(ep); ep += 1
        order = list(range(len(epoch_data))); random.shuffle(order)
    batch = [epoch_data[order.pop()] for _ in range(min(a.batch, len(order)))]
    X, Y, M = build(batch); ntok += int(M.sum())
    out = lm(inputs_embeds=X, attention_mask=M, labels=Y)
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(list(lm.parameters()) + list(orc.parameters()), 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
        fams, overall = evaluate()
        curve.append({"step": step + 1, "tokens": ntok, "loss": round(out.loss.item(), 3), "overall": overall, "fams": fams,
                      "t": round(time.time() - t0)})
        print(json.dumps(curve[-1]), flush=True)
json.dump({"args": vars(a), "curve": curve, "epochs": ep}, open(a.out, "w"))
