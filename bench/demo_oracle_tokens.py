"""Diagnostic (not a test): can the demo's warm-up LM learn the instruction mix from *perfect* image tokens?

    python bench/demo_oracle_tokens.py LM_DIR DATA_DIR STEPS sum|pair|both

Stage 2 without the eyes: the 9 image tokens are not the tower's but trainable embeddings of the scene's ground truth
(`train/scenes.json`), one per 3x3 cell: cell + background colour + pattern (+ size), plus for an object `sum` its
colour + shape embeddings, `pair` one embedding per colour-shape pair, `both` all three. The LM (loaded from the
demo's warm-up LM) and the embeddings train together on `train/instruct.json` (`v1`, the real ConversationEncoder
labels) at batch 16, lr 1e-3, warm-up 3 % then cosine, for STEPS steps, on images 0-3599 and the text-only
samples; then the first short-answer turn of 600 held-out images' conversations (3600-3999) is scored by its first
answer token, teacher-forced, per question type. One thread.
"""
import json, re, sys, time, math, random
from collections import defaultdict
import torch, torch.nn as nn
from safetensors.torch import load_file
from xmodelvlm import load_tokenizer
from xmodelvlm.constants import IMAGE_TOKEN_INDEX, IGNORE_INDEX
from xmodelvlm.data.masking import ConversationEncoder
from xmodelvlm.demo.synthetic_data import BG_COLORS, BG_TEXTURES, COLORS, SHAPES, SIZES, SLOT_XY
from xmodelvlm.demo.tiny_lm import build_lm
torch.set_num_threads(1); torch.manual_seed(0); random.seed(0)
LM = sys.argv[1]; DATA = sys.argv[2]; STEPS = int(sys.argv[3]); MODE = sys.argv[4]  # MODE: sum | pair | both
BS = 16
cfg = json.load(open(f"{LM}/config.json"))
lm = build_lm({k: cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads")}, seed=0)
lm.load_state_dict(load_file(f"{LM}/model.safetensors"))
tok = load_tokenizer(LM)
enc = ConversationEncoder(tok, "v1")
scenes = {s["image"]: s for s in json.load(open(f"{DATA}/train/scenes.json"))}
data = json.load(open(f"{DATA}/train/instruct.json"))
CELL = {slot: 3 * round(fy * 3 - 0.5) + round(fx * 3 - 0.5) for slot, (fx, fy) in SLOT_XY.items()}  # 3x3 grid
COL = list(COLORS); SH = list(SHAPES); BGC = list(BG_COLORS); BGT = list(BG_TEXTURES); SZ = list(SIZES)
H = cfg["hidden_size"]
class Oracle(nn.Module):
    def __init__(s):
        super().__init__()
        s.c = nn.Embedding(len(COL), H); s.s = nn.Embedding(len(SH), H); s.z = nn.Embedding(len(SZ), H)
        s.cell = nn.Embedding(9, H); s.bgc = nn.Embedding(len(BGC), H); s.bgt = nn.Embedding(len(BGT), H)
        s.pair = nn.Embedding(len(COL) * len(SH), H); s.empty = nn.Parameter(torch.zeros(H))
        for e in (s.c, s.s, s.z, s.cell, s.bgc, s.bgt, s.pair): nn.init.normal_(e.weight, std=0.5)
    def forward(s, sc):
        bgc = BGC.index(sc["bg_color"]); bgt = BGT.index(sc["bg_texture"])
        toks = [s.cell.weight[i] + s.bgc.weight[bgc] + s.bgt.weight[bgt] + s.empty for i in range(9)]
        for o in sc["objects"]:
            i = CELL[o["position"]]; ci = COL.index(o["color"]); si = SH.index(o["shape"])
            extra = ((s.pair.weight[ci * len(SH) + si] if MODE in ("pair", "both") else 0)
                     + (s.c.weight[ci] + s.s.weight[si] if MODE in ("sum", "both") else 0))
            toks[i] = toks[i] + extra + s.z.weight[SZ.index(o["size"])]
        return torch.stack(toks)
orc = Oracle()
def encode(rec):
    turns = [("human" if t["from"] == "human" else "gpt", t["value"]) for t in rec["conversations"]]
    e = enc(turns); return e.input_ids, e.labels
recs = [r for r in data if "image" in r]
train = [r for r in recs if int(r["image"].split("/")[-1][:6]) < 3600] + [r for r in data if "image" not in r]
held = [r for r in recs if int(r["image"].split("/")[-1][:6]) >= 3600]
enc_train = [(encode(r), r.get("image")) for r in train]
def build(batch):
    embs, labs = [], []
    E = lm.model.embed_tokens
    for (ids, lab), img in batch:
        parts, lparts = [], []
        for i, l in zip(ids, lab):
            if i == IMAGE_TOKEN_INDEX:
                parts.append(orc(scenes[img])); lparts += [IGNORE_INDEX] * 9
            else:
                parts.append(E(torch.tensor([i]))); lparts.append(l)
        embs.append(torch.cat(parts)); labs.append(torch.tensor(lparts))
    L = max(len(x) for x in embs)
    X = torch.zeros(len(embs), L, H); Y = torch.full((len(embs), L), IGNORE_INDEX); M = torch.zeros(len(embs), L, dtype=torch.long)
    for k, (e, l) in enumerate(zip(embs, labs)):
        X[k, :len(e)] = e; Y[k, :len(l)] = l; M[k, :len(e)] = 1
    return X, Y, M
params = [{"params": lm.parameters(), "lr": 1e-3}, {"params": orc.parameters(), "lr": 1e-3}]
opt = torch.optim.AdamW(params, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, s / (0.03 * STEPS)) * 0.5 * (1 + math.cos(math.pi * s / STEPS)))
t0 = time.time()
order = []
for step in range(STEPS):
    if not order: order = list(range(len(enc_train))); random.shuffle(order)
    batch = [enc_train[order.pop()] for _ in range(min(BS, len(order)))]
    X, Y, M = build(batch)
    out = lm(inputs_embeds=X, attention_mask=M, labels=Y)
    out.loss.backward(); torch.nn.utils.clip_grad_norm_(list(lm.parameters()) + list(orc.parameters()), 1.0)
    opt.step(); sched.step(); opt.zero_grad()
    if step % 100 == 0: print(step, round(out.loss.item(), 3), round(time.time() - t0), flush=True)
# held-out: first short-answer turn, teacher-forced first answer token
lm.eval(); acc = defaultdict(list)
def fam(q):
    for k, pat in [("exist_pair", r"^Is there an? \w+ \w+ in the image"), ("exist_shape", r"^Is there a \w+ in the image"),
                   ("color_query", r"^What color is the \w+\?"), ("shape_query", r"^What shape is the \w+ object"),
                   ("where", r"^Where is"), ("shape_at", r"^What shape is (on|at|in)"), ("color_at", r"^What color is the shape"),
                   ("verify_color", rf"^Is the \w+ ({'|'.join(COL)})\?"), ("count", r"^How many"),
                   ("verify_pos", r"^Is the [\w ]+ (on|at|in) the"), ("relation", r"(left of|above) the"), ("or", r" or an? ")]:
        if re.search(pat, q): return k
    return "other"
with torch.no_grad():
    for r in held[:600]:
        turns = r["conversations"]
        for i in range(0, len(turns), 2):
            q = turns[i]["value"]
            if "single word" not in q: continue
            sub = dict(r, conversations=turns[:i + 2])
            X, Y, M = build([(encode(sub), r["image"])])
            logits = lm(inputs_embeds=X, attention_mask=M).logits[0]
            # the last reply's first token: just after the last unsupervised position
            k = int((Y[0] == IGNORE_INDEX).nonzero().max()) + 1
            acc[fam(q.split("\n")[-2] if q.startswith("<image>") else q.split("\n")[0])].append(int(logits[k - 1].argmax() == Y[0, k]))
            break
tot = [x for v in acc.values() for x in v]
print(MODE, "overall", round(sum(tot) / len(tot), 3), {k: (round(sum(v) / len(v), 2), len(v)) for k, v in sorted(acc.items())}, "time", round(time.time() - t0))
