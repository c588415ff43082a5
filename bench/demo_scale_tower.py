"""A demo tower whose hidden states are scaled by a constant (not a test).

    python bench/demo_scale_tower.py CLIP_DIR OUT_DIR SCALE

Copies the tiny CLIP in CLIP_DIR to OUT_DIR with the vision encoder's pre-layer-norm and each layer's output
projections (attention out_proj, MLP fc2; weights and biases) multiplied by SCALE. Every layer norm inside is
scale-invariant, so this multiplies every hidden state, the layer -2 tokens the VLM reads included, by SCALE and
leaves the CLIP's own outputs as they were (up to the norms' epsilon). With 0.1 the demo's image tokens come out of
a fresh projector at about the scale of the LM's word embeddings (BENCHMARKS.md, eleventh session).
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import CLIPModel

src, dst, scale = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
shutil.copytree(src, dst, dirs_exist_ok=True)
model = CLIPModel.from_pretrained(src)
vision = model.vision_model
with torch.no_grad():
    vision.pre_layrnorm.weight.mul_(scale)
    vision.pre_layrnorm.bias.mul_(scale)
    for layer in vision.encoder.layers:
        for linear in (layer.self_attn.out_proj, layer.mlp.fc2):
            linear.weight.mul_(scale)
            linear.bias.mul_(scale)
model.save_pretrained(dst)
print(f"{dst}: hidden states x {scale}")
