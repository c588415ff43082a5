"""The demo's training conversations redrawn with harder presence negatives (not a test).

    python bench/demo_hard_negatives.py DATA_DIR OUT_DATA_DIR SAME_COLOUR_SHARE EXIST_SHAPE_WEIGHT

Writes OUT_DATA_DIR/train/instruct.json: the conversations of DATA_DIR's images drawn again by the generator
(same seed streams), except that a "no" to "is there a <colour> <shape>?" names, with probability
SAME_COLOUR_SHARE, an absent pair whose colour is present (only the shape tells it apart), and "is there a
<shape>?" has weight EXIST_SHAPE_WEIGHT in the mix. Everything else (images, captions, scenes, eval sets) is
linked from DATA_DIR. With 0 and 1.0 the file equals DATA_DIR's. Used by BENCHMARKS.md, eleventh session.
"""
import json
import os
import sys
from collections import Counter
from pathlib import Path

from xmodelvlm.demo import synthetic_data as sd

src, dst = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
same_colour_share, exist_shape_weight = float(sys.argv[3]), float(sys.argv[4])
(dst / "train").mkdir(parents=True, exist_ok=True)
for rel in ("train/images", "train/pretrain.json", "train/scenes.json", "eval", "manifest.json"):
    if not (dst / rel).exists():
        os.symlink(src / rel, dst / rel)
default_absent_pair = sd._absent_pair


def qa_exist_pair(scene, rng, want=None, neg_mode=None, popularity=None):
    if sd._yn(want, rng):
        obj = sd._pick(rng, scene.objects)
        color, shape, answer = obj.color, obj.shape, "yes"
    else:
        present = scene.pairs()
        same_colour = [(c, s) for c in sorted({c for c, _ in present}) for s in sd.SHAPES if (c, s) not in present]
        if neg_mode is None and same_colour_share > 0 and same_colour and rng.random() < same_colour_share:
            color, shape = sd._pick(rng, same_colour)
        else:
            mode = neg_mode or sd._pick(rng, sd.POPE_CATEGORIES)
            color, shape = default_absent_pair(scene, rng, mode, popularity or sd.DEFAULT_POPULARITY)
        answer = "no"
    long = (f"Yes, there is {sd._a(color)} {shape} in the image." if answer == "yes"
            else f"No, there is no {color} {shape} in the image.")
    return sd.QA(sd.exist_question(color, shape), answer, long, "verify", "obj", "existAttr")


sd.FAMILIES["exist_pair"] = (qa_exist_pair,) + sd.FAMILIES["exist_pair"][1:]
sd.TRAIN_FAMILY_WEIGHTS["exist_shape"] = exist_shape_weight
seed = json.loads((src / "manifest.json").read_text()).get("seed", 0)
scenes = [sd.Scene.from_json(s) for s in json.loads((src / "train" / "scenes.json").read_text())]
freq = Counter((o.color, o.shape) for s in scenes for o in s.objects)
popularity = sorted(((c, s) for c in sd.COLORS for s in sd.SHAPES), key=lambda p: (-freq[p], p))
records = []
for record in json.loads((src / "train" / "instruct.json").read_text()):
    if record.get("image"):
        i = int(record["id"])
        record = {**record, "conversations": sd.instruct_conversation(scenes[i], sd._rng(seed, sd.STREAM_TRAIN_TEXT, i),
                                                                     popularity)}
    records.append(record)
(dst / "train" / "instruct.json").write_text(json.dumps(records))
print(f"{len(records)} samples -> {dst / 'train' / 'instruct.json'}")
