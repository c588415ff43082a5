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

from demo_common import short_answer_turns
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
    return short_answer_turns(scene, rng, lo, hi, sd.TRAIN_FAMILY_WEIGHTS)


scenes = {s["image"]: s for s in json.loads((src / "train" / "scenes.json").read_text())}
data = json.loads((src / "train" / "instruct.json").read_text())
redrawn = 0
for sample in data:
    if "image" not in sample:
        continue
    conv = short_answer_conversation(sd.Scene.from_json(scenes[sample["image"]]), sd._rng(0, 77, int(Path(sample["image"]).stem)))
    if conv is not None:
        sample["conversations"] = conv
        redrawn += 1
(dst / "train" / "instruct.json").write_text(json.dumps(data))
print(f"{redrawn} conversations redrawn; {sum(len(s['conversations']) // 2 for s in data)} turns in all")
