"""POPE answers of a demo run split by category and label (not a test).

    python bench/demo_pope_by_category.py POPE_DIR ANSWERS_JSONL

POPE_DIR is the demo's data/eval/pope (questions and coco/coco_pope_*.json labels); ANSWERS_JSONL an answers file
of `scripts/eval/pope.sh` (e.g. OUT_DIR/eval/answers/pope/stage2/answers.jsonl). Answers are read as yes / no by
the scorer's own rule (`parse_yes_no`). Prints right/total for each (category, label): a model that looks gets the
negatives of all three categories right; one that answers from the pair a question names gets only the category
whose negatives are always the same few pairs.
"""
import collections, json, sys
from pathlib import Path
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
tally = collections.defaultdict(lambda: [0, 0])
for line in answers.read_text().splitlines():
    a = json.loads(line)
    q = questions[a["question_id"]]
    label = labels[(q["category"], q["image"], q["text"].split("\n")[0])]
    said = parse_yes_no(a["text"])
    tally[(q["category"], label)][0] += said == label
    tally[(q["category"], label)][1] += 1
for (category, label), (right, total) in sorted(tally.items()):
    print(f"{category:12s} {label:3s} {right}/{total}")
