"""Can a demo VLM learn one question family from where it stands? Fine-tune on that family alone (not a test).

    python bench/demo_focused_finetune.py CHECKPOINT DATA_DIR FAMILY[,FAMILY...] [--steps 500] [--objects N]
                                          [--lm-lr 1e-3] [--projector-lr 1e-4] [--threads 1] [--save DIR]

FAMILY is a question family of the generator (`shape_at`, `color_at`, `shape_query`, ...). Builds one short-answer
conversation per training scene (`--objects N`: only scenes with N objects; the last 300 are held out), trains the
checkpoint's projector and LM on them with the repo's dataset and collator (AdamW, constant rates, batch 16, tower
frozen) and prints every 50 steps the held-out accuracy of the answer's first token among the family's answers.
It separates "the tokens do not carry it" from "stage 2 never got to it": e.g. on the default run's stage 2,
`shape_at` is learned on one-object scenes and not at all on three-object ones, while `color_at` is learned on
three-object ones in 150 steps (BENCHMARKS.md, "Why naming a shape fails").
"""
import argparse
import json
import time

import numpy as np
import torch
from PIL import Image

from xmodelvlm.data.conversation import conv_templates
from xmodelvlm.data.dataset import DataArguments, make_supervised_data_module
from xmodelvlm.data.image import process_images
from xmodelvlm.data.tokenization import tokenizer_image_token
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.model.builder import load_pretrained_model

p = argparse.ArgumentParser()
p.add_argument("checkpoint")
p.add_argument("data")
p.add_argument("family", help="a question family of the generator, or several joined by commas (each training "
               "scene gets one of them at random; held-out accuracy is printed per family)")
p.add_argument("--steps", type=int, default=500)
p.add_argument("--objects", type=int, default=0, help="only scenes with this many objects (0: all)")
p.add_argument("--lm-lr", type=float, default=1e-3)
p.add_argument("--projector-lr", type=float, default=1e-4)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--save", help="write the fine-tuned checkpoint here at the end")
a = p.parse_args()
families = a.family.split(",")
unknown = [f for f in families if f not in sd.FAMILIES]
if unknown:
    p.error(f"unknown family {unknown[0]!r}; choose from {', '.join(sorted(sd.FAMILIES))}")
torch.set_num_threads(a.threads)
torch.manual_seed(0)
tokenizer, model, processor, _ = load_pretrained_model(a.checkpoint, device="cpu", dtype="float32")
scenes = json.load(open(f"{a.data}/train/scenes.json"))
scenes = [s for s, scene in ((s, sd.Scene.from_json(s)) for s in scenes)
          if all(sd.FAMILIES[f][1](scene) for f in families)]  # every family can be asked
if a.objects:
    scenes = [s for s in scenes if len(s["objects"]) == a.objects]
rng = np.random.default_rng(0)


def ask(scene_json: dict, family: str | None = None) -> sd.QA:
    family = family or families[int(rng.integers(len(families)))]
    scene = sd.Scene.from_json(scene_json)
    return sd.FAMILIES[family][0](scene, rng, popularity=sd.DEFAULT_POPULARITY)


def question(qa: sd.QA) -> str:
    return f"<image>\n{qa.question}{sd.SHORT_ANSWER_SUFFIX}"


rows = []
for i, scene in enumerate(scenes[:-300]):
    qa = ask(scene)
    rows.append({"id": str(i), "image": scene["image"], "conversations": [
        {"from": "human", "value": question(qa)}, {"from": "gpt", "value": sd._cap(qa.short)}]})
held = {f: [(s, ask(s, f)) for s in scenes[-300:]] for f in families}
train_json = f"/tmp/demo_focused_{'+'.join(families)}_{a.objects}.json"
json.dump(rows, open(train_json, "w"))
module = make_supervised_data_module(tokenizer, processor, DataArguments(data_path=[train_json],
                                     image_folder=f"{a.data}/train"), version="v1",
                                     num_image_tokens=model.num_image_tokens, model_max_length=2048,
                                     model_cfg=model.config)
dataset, collate = module["train_dataset"], module["data_collator"]
answers = {f: sorted({sd._cap(qa.short) for _, qa in held[f]}) for f in families}
answer_ids = {f: [tokenizer(w, add_special_tokens=False).input_ids[0] for w in answers[f]] for f in families}


@torch.no_grad()
def held_out_accuracy(family: str) -> float:
    """First-token accuracy among the answers the family's held-out questions have."""
    model.eval()
    right = 0
    for k in range(0, len(held[family]), 50):
        chunk = held[family][k:k + 50]
        prompts = []
        for _, qa in chunk:
            conv = conv_templates["v1"].copy()
            conv.append_message(conv.roles[0], question(qa))
            conv.append_message(conv.roles[1], None)
            prompts.append(tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt"))
        width = max(len(x) for x in prompts)
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, x in enumerate(prompts):  # left padding: the answer follows the last position
            ids[r, width - len(x):], mask[r, width - len(x):] = x, 1
        images = process_images([Image.open(f"{a.data}/train/{s['image']}").convert("RGB") for s, _ in chunk],
                                processor, model.config)
        logits = model(input_ids=ids, attention_mask=mask, images=images).logits[:, -1, answer_ids[family]]
        right += sum(answers[family][i] == sd._cap(qa.short)
                     for i, (_, qa) in zip(logits.argmax(1).tolist(), chunk))
    model.train()
    return right / len(held[family])


def held_out() -> str:
    return ", ".join(f"{f} {held_out_accuracy(f):.3f}" for f in held)  # each family once, also when named twice


for name, param in model.named_parameters():
    param.requires_grad_("vision_tower" not in name)
projector = [q for n, q in model.named_parameters() if "mm_projector" in n]
lm = [q for n, q in model.named_parameters() if "mm_projector" not in n and "vision_tower" not in n]
opt = torch.optim.AdamW([{"params": lm, "lr": a.lm_lr}, {"params": projector, "lr": a.projector_lr}],
                        weight_decay=0.0)
print(f"{a.family} ({a.objects or 'any'} objects) step 0: held-out {held_out()}", flush=True)
gen, t0 = torch.Generator().manual_seed(0), time.time()
for step in range(1, a.steps + 1):
    batch = collate([dataset[i] for i in torch.randint(len(dataset), (16,), generator=gen).tolist()])
    loss = model(**batch).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0:
        print(f"step {step}: loss {loss.item():.3f}, held-out {held_out()} ({time.time() - t0:.0f} s)", flush=True)
if a.save:
    model.save_pretrained(a.save)
    tokenizer.save_pretrained(a.save)
    processor.save_pretrained(a.save)
    print(f"saved the fine-tuned checkpoint to {a.save}")
