"""How fast can a fresh XDP projector learn to say each cell's shape from a tower's tokens? (not a test)

    python bench/demo_projector_regression.py CLIP_DIR LM_DIR DATA_DIR [white] [LR=2e-3]

Regresses the demo's projector (`xdpnetv10_1`, AdamW, batch 32) from the tower's layer -2 tokens of the first 3,500
training scenes onto each cell's vector as the `lm_corpus=grid` warm-up builds it (the mean of LM_DIR's embeddings
of the cell's words, `xmodelvlm.demo.tiny_lm.scene_cells`), and prints, at 50 / 125 / 250 / 500 / 1,000 steps, on
the last 500 scenes, how often the nearest of the four "size colour <shape>" vectors has the right shape. A
supervised upper bound on what stage 1 and 2 ask of the projector; `white` whitens the tokens first (their
covariance made the identity), which shows how much the tokens' conditioning slows it (BENCHMARKS.md, "A warm-up
that reads scene grids").
"""
import json
import sys
from types import SimpleNamespace

import sentencepiece as spm
import torch
from PIL import Image
from transformers import LlamaForCausalLM

from xmodelvlm.data.image import process_images
from xmodelvlm.demo.synthetic_data import SHAPES
from xmodelvlm.demo.tiny_lm import scene_cells
from xmodelvlm.model.projector import build_projector
from xmodelvlm.model.tokenizer import find_sentencepiece_file
from xmodelvlm.model.vision_tower import CLIPVisionTower, load_clip_processor, load_clip_vision_config

clip_dir, lm_dir, data = sys.argv[1:4]
white = len(sys.argv) > 4 and sys.argv[4] == "white"
lr = float(sys.argv[5]) if len(sys.argv) > 5 else 2e-3
torch.set_num_threads(2)
torch.manual_seed(0)
tower = CLIPVisionTower(load_clip_vision_config(clip_dir))
tower.load_clip_weights(clip_dir)
scenes = json.load(open(f"{data}/train/scenes.json"))
pixels = process_images([Image.open(f"{data}/train/{s['image']}").convert("RGB") for s in scenes],
                        load_clip_processor(clip_dir), SimpleNamespace(image_aspect_ratio="pad"))
with torch.no_grad():
    tokens = tower(pixels)
if white:
    flat = tokens.reshape(-1, tokens.shape[-1]).double()
    mean = flat.mean(0)
    eig, vec = torch.linalg.eigh(torch.cov((flat - mean).T))
    tokens = ((tokens.double() - mean) @ vec @ torch.diag((eig + 1e-3 * eig.max()) ** -0.5) @ vec.T).float()
embed = LlamaForCausalLM.from_pretrained(lm_dir).get_input_embeddings().weight.detach()
sp = spm.SentencePieceProcessor(model_file=str(find_sentencepiece_file(lm_dir)))
side = tower.config.image_size // tower.config.patch_size
cells = [scene_cells(s, side, tower.config.image_size) for s in scenes]


def cell_vector(words):
    return embed[[i for w in words for i in sp.encode(w)]].mean(0)


targets = torch.stack([torch.stack([cell_vector(c) for c in scene]) for scene in cells])
projector = build_projector("xdpnetv10_1", tokens.shape[-1], embed.shape[1])
optimizer = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.0)
n_fit = len(scenes) - 500


def shape_accuracy() -> float:
    right = total = 0
    with torch.no_grad():
        out = projector(tokens[n_fit:])
    for b, scene in enumerate(cells[n_fit:]):
        for k, words in enumerate(scene):
            if len(words) == 3:  # an object's cell: size, colour, shape
                options = torch.stack([cell_vector([words[0], words[1], s]) for s in SHAPES])
                right += SHAPES[int((options - out[b, k]).norm(dim=1).argmin())] == words[2]
                total += 1
    return right / total


for step in range(1, 1001):
    idx = torch.randint(0, n_fit, (32,))
    loss = ((projector(tokens[idx]) - targets[idx]) ** 2).sum(-1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step in (50, 125, 250, 500, 1000):
        print(f"step {step}: shape from the projected cell {shape_accuracy():.2f} (squared error {loss.item():.4f})",
              flush=True)
