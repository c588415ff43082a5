"""POPE answers of a demo run split by category and label (not a test).

    python bench/demo_pope_by_category.py POPE_DIR ANSWERS_JSONL

POPE_DIR is the demo's data/eval/pope (questions and coco/coco_pope_*.json labels); ANSWERS_JSONL an answers file
of `scripts/eval/pope.sh` (e.g. OUT_DIR/eval/answers/pope/stage2/answers.jsonl). Answers are read as yes / no by
the scorer's own rule (`parse_yes_no`). Prints right/total for each (category, label): a model that looks gets the
negatives of all three categories right; one that answers from the pair a question names gets only the category
whose negatives are always the same few pairs.

Then the negatives again, by what the absent pair shares with the scene (redrawn from the generator's POPE stream
with the seed and image size of POPE_DIR/../../manifest.json): its colour only, its shape only, both (from two
objects) or neither. A model that answers "is the colour there?" gets the colour-only and both kinds wrong; telling
them apart needs the colour and the shape found in one cell.
"""
import collections, json, re, sys
from pathlib import Path
from demo_common import pair_kind
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.eval.scorers.pope import POPE_CATEGORIES, parse_yes_no, read_pope_labels

pope, answers = Path(sys.argv[1]), Path(sys.argv[2])
labels = {}
for category in POPE_CATEGORIES:
    for row in read_pope_labels(pope / "coco" / f"coco_pope_{category}.json"):
        labels[(category, row["image"], row["text"])] = row["label"]
questions = {}
for line in (pope / "llava_pope_test.jsonl").read_text().splitlines():
    row = json.loads(line)
    questions[row["question_id"]] = row
manifest = json.loads((pope.parent.parent / "manifest.json").read_text())


def shared(image: str, question: str) -> str:
    """What the pair that `question` names shares with the objects of POPE image `image`."""
    index = int(re.search(r"(\d+)\.png$", image).group(1)) - 1  # COCO_val2014_<i + 1>.png
    scene = sd.sample_scene(sd._rng(manifest["seed"], sd.STREAM_POPE, index), manifest["image_size"])
    colour, shape = re.match(r"Is there an? (\w+) (\w+) in the image\?", question).groups()
    return pair_kind(scene.pairs(), colour, shape)


tally = collections.defaultdict(lambda: [0, 0])
kinds = collections.defaultdict(lambda: [0, 0])
for line in answers.read_text().splitlines():
    a = json.loads(line)
    q = questions[a["question_id"]]
    label = labels[(q["category"], q["image"], q["text"].split("\n")[0])]
    said = parse_yes_no(a["text"])
    tally[(q["category"], label)][0] += said == label
    tally[(q["category"], label)][1] += 1
    if label == "no":
        kind = shared(q["image"], q["text"].split("\n")[0])
        kinds[kind][0] += said == label
        kinds[kind][1] += 1
for (category, label), (right, total) in sorted(tally.items()):
    print(f"{category:12s} {label:3s} {right}/{total}")
print("negatives by what the absent pair shares with the scene:")
for kind in ("colour only", "shape only", "both", "neither"):
    right, total = kinds.get(kind, (0, 0))
    print(f"{kind:12s} {right}/{total}")
