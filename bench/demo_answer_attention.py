"""Where does a demo VLM look when it answers? Attention of the answer position over the image tokens (not a test).

    python bench/demo_answer_attention.py CHECKPOINT DATA_DIR [--objects 3] [--scenes 60] [--families ...]

For held-out training scenes with `--objects` objects (the last 400 scenes of DATA_DIR/train/scenes.json), asks one
question per scene of each family (`color_at`, `shape_at`, `color_query`, `shape_query` by default) in the v1
short-answer format, runs the checkpoint with eager attention and prints, per family, the first-token accuracy and
for every layer x head the attention weight of the last prompt position (the one that predicts the answer) on the
asked object's own image token ("target") and on the image tokens of all objects ("objects"). With three objects,
a head that selects the asked object puts about all of its object mass on the target; one that spreads over
the objects puts a third there. The asked object's token is the patch cell holding its centre (the demo's
3x3 grid: `synthetic_data.cell_index`).
"""
import argparse
import json

import numpy as np
import torch
from PIL import Image

from xmodelvlm.constants import IMAGE_TOKEN_INDEX
from xmodelvlm.data.conversation import conv_templates
from xmodelvlm.data.image import process_images
from xmodelvlm.data.tokenization import tokenizer_image_token
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.model.builder import load_pretrained_model

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("data")
p.add_argument("--objects", type=int, default=3)
p.add_argument("--scenes", type=int, default=60)
p.add_argument("--families", default="color_at,shape_at,color_query,shape_query")
a = p.parse_args()
torch.set_num_threads(1)
tok, model, proc, _ = load_pretrained_model(a.checkpoint, device="cpu", dtype="float32")
for module in model.modules():  # attention weights need the eager implementation (SDPA does not return them)
    if getattr(getattr(module, "config", None), "_attn_implementation", None):
        module.config._attn_implementation = "eager"
side = model.get_vision_tower().config.image_size // model.get_vision_tower().config.patch_size
cell = model.get_vision_tower().config.patch_size
scenes = [s for s in json.load(open(f"{a.data}/train/scenes.json"))[-400:] if len(s["objects"]) == a.objects]
scenes = scenes[:a.scenes]
rng = np.random.default_rng(0)


def asked_object(family: str, scene: dict, question: str) -> dict:
    """The object a question names: by place (`*_at`), by shape (`color_query`) or by colour (`shape_query`)."""
    if family.endswith("_at"):
        key = lambda o: sd.POS_PHRASE[o["position"]]
    elif family == "color_query":
        key = lambda o: f" {o['shape']}"
    elif family == "shape_query":
        key = lambda o: f" {o['color']} "
    else:
        raise SystemExit(f"family {family!r}: only *_at, color_query and shape_query name one object")
    return next(o for o in scene["objects"] if key(o) in question)


for family in a.families.split(","):
    target_mass, object_mass, right = [], [], 0
    for s in scenes:
        scene = sd.Scene.from_json(s)
        if not sd.FAMILIES[family][1](scene):
            continue
        qa = sd.FAMILIES[family][0](scene, rng, popularity=sd.DEFAULT_POPULARITY)
        conv = conv_templates["v1"].copy()
        conv.append_message(conv.roles[0], f"<image>\n{qa.question}{sd.SHORT_ANSWER_SUFFIX}")
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tok, return_tensors="pt")[None]
        first_image_token = (ids[0] == IMAGE_TOKEN_INDEX).nonzero()[0, 0].item()
        image = process_images([Image.open(f"{a.data}/train/{s['image']}").convert("RGB")], proc, model.config)
        with torch.no_grad():
            out = model(input_ids=ids, images=image, output_attentions=True)
        right += tok.decode(out.logits[0, -1].argmax().item()).strip().lower() == qa.short
        target = first_image_token + sd.cell_index(asked_object(family, s, qa.question), cell, side)
        objects = [first_image_token + sd.cell_index(o, cell, side) for o in s["objects"]]
        target_mass.append([layer[0, :, -1, target].tolist() for layer in out.attentions])
        object_mass.append([layer[0, :, -1, objects].sum(-1).tolist() for layer in out.attentions])
    print(f"{family}: first-token accuracy {right / len(target_mass):.2f} over {len(target_mass)} scenes")
    print("  target  (layer x head):", np.round(np.mean(target_mass, 0), 2).tolist())
    print("  objects (layer x head):", np.round(np.mean(object_mass, 0), 2).tolist())
