"""A copy of a demo dataset whose short-answer conversations have more turns (how "more turns" was measured; not a test).

    python bench/demo_more_turns.py SRC_DATA DST_DATA LO HI

DST_DATA links to SRC_DATA's images, captions, scenes and evaluation sets, and gets its own `train/instruct.json`:
for each image, a draw of its own (the generator's share, `VQA_SHARE`, of them) replaces the image's conversation by
a short-answer one of LO to HI turns (uniform) from the training mix, drawn as the generator draws them (distinct
families within a conversation, the image before the first question 90 % of the time, the answer in the short
form); the other images keep the generator's conversation (free-form, or short-answer of 1-4 turns), and the
text-only samples stay as they are. Use it as BASE/data<N>px<size> for `bench/demo_variant.py`, beside the tokenizer
of SRC's run.
"""
import json
import os
import sys
from pathlib import Path

from xmodelvlm.demo import synthetic_data as sd

src, dst, lo, hi = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
(dst / "train").mkdir(parents=True, exist_ok=True)
for rel in ("eval", "manifest.json", "train/images", "train/pretrain.json", "train/scenes.json"):
    if not (dst / rel).exists():
        os.symlink(src / rel, dst / rel)


def short_answer_conversation(scene, rng):
    """LO-HI short-answer turns about `scene`, or None where the draw makes this image's conversation free-form."""
    if float(rng.random()) >= sd.VQA_SHARE:
        return None
    used, turns = set(), []
    for _ in range(int(rng.integers(lo, hi + 1))):
        fam, qa = sd.sample_qa(scene, rng, sd.TRAIN_FAMILY_WEIGHTS, sd.DEFAULT_POPULARITY, exclude=used)
        used.add(fam)
        turns.append([qa.question + sd.SHORT_ANSWER_SUFFIX, sd._cap(qa.short)])
    turns[0][0] = sd._image_turn(turns[0][0], rng, after_prob=0.1)
    return [{"from": who, "value": text} for q, a in turns for who, text in (("human", q), ("gpt", a))]


scenes = {s["image"]: s for s in json.loads((src / "train" / "scenes.json").read_text())}
data = json.loads((src / "train" / "instruct.json").read_text())
redrawn = 0
for sample in data:
    if "image" not in sample:
        continue
    js = scenes[sample["image"]]
    scene = sd.Scene(bg_color=js["bg_color"], bg_texture=js["bg_texture"],
                     objects=[sd.Obj(**{k: o[k] for k in sd.Obj.__dataclass_fields__}) for o in js["objects"]])
    conv = short_answer_conversation(scene, sd._rng(0, 77, int(Path(sample["image"]).stem)))
    if conv is not None:
        sample["conversations"] = conv
        redrawn += 1
(dst / "train" / "instruct.json").write_text(json.dumps(data))
print(f"{redrawn} conversations redrawn; {sum(len(s['conversations']) // 2 for s in data)} turns in all")
