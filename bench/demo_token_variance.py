"""How much of the tower's token variance each scene attribute explains (not a test).

    python bench/demo_token_variance.py CLIP_DIR DATA_DIR [N_SCENES=1500]

Runs the frozen tower the way the VLM does (CLIPImageProcessor, layer -2, patch tokens) on the first N training
scenes of a demo dataset, takes each object's own token (the patch that holds its centre) and prints, for colour,
shape, slot, background colour and background texture, the between-class share of those tokens' total variance.
Linear probes say whether an attribute is in a token at all; this says how loud it is there, which is what a
freshly initialised projector and LM pick up first.
"""
import json, sys
import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionModel

from demo_common import between_class_share
from xmodelvlm.demo.synthetic_data import cell_index

torch.set_num_threads(1)
clip_dir, data = sys.argv[1], sys.argv[2]
n_scenes = int(sys.argv[3]) if len(sys.argv) > 3 else 1500
tower = CLIPVisionModel.from_pretrained(clip_dir).eval()
processor = CLIPImageProcessor.from_pretrained(clip_dir)
scenes = json.load(open(f"{data}/train/scenes.json"))[:n_scenes]
images = [Image.open(f"{data}/train/{s['image']}").convert("RGB") for s in scenes]
with torch.no_grad():
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    tokens = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
patch = tower.config.patch_size
side = tower.config.image_size // patch
rows, labels = [], {"colour": [], "shape": [], "slot": [], "bg colour": [], "bg texture": []}
for b, s in enumerate(scenes):
    for o in s["objects"]:  # the token of the patch that holds the object's centre
        rows.append(tokens[b, cell_index(o, patch, side)].numpy())
        for key, value in zip(labels, (o["color"], o["shape"], o["position"], s["bg_color"], s["bg_texture"])):
            labels[key].append(value)
x = np.stack(rows)
print(f"{len(x)} object tokens, width {x.shape[1]}, mean norm {np.linalg.norm(x, axis=1).mean():.1f}")
for key, values in labels.items():
    print(f"{key:11s} {between_class_share(x, values):.3f}")
