"""Can the VLM's perception path see shape? A supervised reader on the demo's own path (not a test).

    python bench/demo_perception_probe.py CLIP_DIR|random DATA_DIR [STEPS=1500] [LAYER=-2]

The frozen tower's layer -2 patch tokens, grouped 4 at a time as XDP does (1x4 strips), then an MLP shaped like
the projector and a 2-layer transformer over the 16 tokens plus 5 slot queries, trained (AdamW, batch 64) on the
scene labels to give each slot's shape (or "empty") and colour; prints held-out accuracy on the last 500 images.
If this reads shape well while the trained VLM does not, the information reaches the LM's input and what is
missing is the training signal. `random` = a randomly initialised tower of the demo's size.
"""
import sys, json, time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1); torch.manual_seed(0)
from pathlib import Path
from transformers import CLIPVisionModel, CLIPVisionConfig
from xmodelvlm.demo.tiny_clip import load_images, normalize, tiny_clip_config
clip_dir, data = sys.argv[1], Path(sys.argv[2]); steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
layer = int(sys.argv[4]) if len(sys.argv) > 4 else -2
if clip_dir == "random":
    cfg = tiny_clip_config(100, 32).vision_config; m = CLIPVisionModel(cfg).eval()
else:
    m = CLIPVisionModel.from_pretrained(clip_dir).eval()
scenes = json.loads((data / "train" / "scenes.json").read_text())
t0 = time.time()
x = normalize(load_images([data / "train" / s["image"] for s in scenes], 64))
with torch.no_grad():
    f = torch.cat([m(pixel_values=x[i:i+250], output_hidden_states=True).hidden_states[layer][:, 1:] for i in range(0, len(x), 250)])
n, P, D = f.shape; f = f.reshape(n, P // 4, D * 4)
SH = ["circle", "square", "triangle", "star"]; CO = ["red", "green", "blue", "yellow", "purple", "orange"]; POS = ["left", "right", "top", "bottom", "center"]
ys = torch.full((n, 5), 4); yc = torch.full((n, 5), 6)
for i, s in enumerate(scenes):
    for o in s["objects"]:
        ys[i, POS.index(o["position"])] = SH.index(o["shape"]); yc[i, POS.index(o["position"])] = CO.index(o["color"])
mu, sd = f[:-500].mean((0, 1)), f[:-500].std((0, 1)) + 1e-5; z = (f - mu) / sd
class R(nn.Module):
    def __init__(s):
        super().__init__()
        s.proj = nn.Sequential(nn.Linear(z.shape[-1], 128), nn.Mish(), nn.Linear(128, 128))
        s.pos = nn.Parameter(torch.randn(P // 4 + 5, 128) * 0.02); s.q = nn.Parameter(torch.randn(5, 128) * 0.02)
        s.tf = nn.TransformerEncoder(nn.TransformerEncoderLayer(128, 4, 384, 0.0, batch_first=True, norm_first=True), 2)
        s.hs = nn.Linear(128, 5); s.hc = nn.Linear(128, 7)
    def forward(s, z):
        h = torch.cat([s.proj(z), s.q.expand(len(z), -1, -1)], 1) + s.pos
        h = s.tf(h)[:, -5:]
        return s.hs(h), s.hc(h)
net = R(); opt = torch.optim.AdamW(net.parameters(), 1e-3)
tr = n - 500
for step in range(1, steps + 1):
    idx = torch.randint(0, tr, (64,))
    a, b = net(z[idx]); loss = F.cross_entropy(a.reshape(-1, 5), ys[idx].reshape(-1)) + F.cross_entropy(b.reshape(-1, 7), yc[idx].reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 500 == 0 or step == steps:
        with torch.no_grad():
            a, b = net(z[tr:]); occ = ys[tr:] < 4
            sa = (a.argmax(-1) == ys[tr:])[occ].float().mean().item(); ca = (b.argmax(-1) == yc[tr:])[occ].float().mean().item()
            ea = ((a.argmax(-1) == 4) == ~occ).float().mean().item()
        print(f"{step} loss {loss.item():.3f} shape {sa:.3f} colour {ca:.3f} occupancy {ea:.3f} ({time.time()-t0:.0f}s)", flush=True)
