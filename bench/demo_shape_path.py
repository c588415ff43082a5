"""How loud colour, shape and slot are at each point of a demo VLM's image path (not a test).

    python bench/demo_shape_path.py CHECKPOINT DATA_DIR [N_SCENES=1200]

CHECKPOINT is a full demo checkpoint (OUT/checkpoints/stage1 or stage2). On the last N training scenes of DATA_DIR
it takes each object's own token (the patch that holds its centre) at the tower's output (the layer the VLM
reads), at the projector's output (the LM's input) and after each LM layer (the image tokens fed after `<s>`),
and prints per attribute the between-class share of the tokens' variance ("var") and a held-out linear probe
("probe": the tower probes' logistic regression, 70/30 split of the objects). A probe says whether an attribute is
there at all; the share says how loud it is, which is what decides whether stage 2 learns to read it
(BENCHMARKS.md, "Why naming a shape fails").
"""
import json
import sys

import torch
import torch.nn.functional as F
from PIL import Image

from demo_common import between_class_share
from xmodelvlm.demo.synthetic_data import cell_index
from xmodelvlm.data.image import process_images
from xmodelvlm.demo.tiny_clip import _softmax_probe
from xmodelvlm.model.builder import load_pretrained_model

torch.set_num_threads(2)
torch.manual_seed(0)
checkpoint, data = sys.argv[1], sys.argv[2]
n_scenes = int(sys.argv[3]) if len(sys.argv) > 3 else 1200
tokenizer, model, processor, _ = load_pretrained_model(checkpoint, device="cpu", dtype="float32")
scenes = json.load(open(f"{data}/train/scenes.json"))[-n_scenes:]
pixels = process_images([Image.open(f"{data}/train/{s['image']}").convert("RGB") for s in scenes], processor,
                        model.config)
tower = model.get_vision_tower()
with torch.no_grad():
    features = tower(pixels)
    projected = model.mm_projector(features)
    bos = model.get_input_embeddings()(torch.tensor([[tokenizer.bos_token_id]])).expand(len(scenes), 1, -1)
    hidden = model.model(inputs_embeds=torch.cat([bos, projected], 1), output_hidden_states=True).hidden_states
points = {"tower": features, "projector": projected}
points.update({f"LM layer {i}": h[:, 1:] for i, h in enumerate(hidden[1:], 1)})

patch = model.get_vision_tower().config.patch_size
side = model.get_vision_tower().config.image_size // patch
rows, cols, labels = [], [], {"colour": [], "shape": [], "slot": []}
for b, scene in enumerate(scenes):
    for o in scene["objects"]:
        rows.append(b)
        cols.append(cell_index(o, patch, side))
        for key, value in zip(labels, (o["color"], o["shape"], o["position"])):
            labels[key].append(value)


def probe(x: torch.Tensor, values: list) -> float:
    """Held-out accuracy of the tower probes' logistic regression (`tiny_clip._softmax_probe`), 70/30 split."""
    classes = sorted(set(values))
    y = torch.tensor([classes.index(v) for v in values])
    cut = int(len(x) * 0.7)
    proba = _softmax_probe(x[:cut], F.one_hot(y[:cut], len(classes)).float(), x[cut:], steps=300)
    return (proba.argmax(1) == y[cut:]).float().mean().item()


for name, tokens in points.items():
    x = tokens[torch.tensor(rows), torch.tensor(cols)].detach()
    line = [f"{name:10s} norm {x.norm(dim=1).mean():5.1f}"]
    for key, values in labels.items():
        line.append(f"{key} var {between_class_share(x.numpy(), values):.2f} probe {probe(x, values):.2f}")
    print(" | ".join(line), flush=True)
