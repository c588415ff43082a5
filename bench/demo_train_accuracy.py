"""Does the stage-2 model answer its own training questions? (not a test)

    python bench/demo_train_accuracy.py CHECKPOINT DATA_DIR WORK_DIR [N=600]

Takes the first N conversations of DATA_DIR/train/instruct.json whose first turn is a short-answer question, lays
them out as a GQA-style evaluation set under WORK_DIR (links to the training images), answers them with the real
engine (`python -m xmodelvlm.eval.answer`, v1 prompts) and prints accuracy as the GQA scorer counts it (exact
match after `normalize_gqa_prediction`), overall and per question
template (colours, shapes, places and counts replaced by X), then the presence questions ("is there a <colour>
<shape>?") split by what the asked pair shares with the objects present. Low accuracy here means stage 2
under-fits; high accuracy with low held-out scores would mean it memorises.
"""
import collections, json, os, re, sys
from pathlib import Path
from xmodelvlm.demo import synthetic_data as sd
from xmodelvlm.eval import answer
from xmodelvlm.eval.scorers.gqa import normalize_gqa_prediction

checkpoint, data, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 600
root = work / "gqa"
(root / "data" / "images").mkdir(parents=True, exist_ok=True)
rows, truth, image_of = [], {}, {}
for sample in json.loads((data / "train" / "instruct.json").read_text()):
    question = sample["conversations"][0]["value"].replace("<image>", "").strip()
    if "image" not in sample or not question.endswith(sd.SHORT_ANSWER_SUFFIX.strip()):
        continue
    question = question[: -len(sd.SHORT_ANSWER_SUFFIX)].strip()
    image_id = "t" + sample["id"]
    link = root / "data" / "images" / f"{image_id}.png"
    if not link.exists():
        os.symlink((data / "train" / sample["image"]).resolve(), link)
    qid = str(len(rows))
    rows.append({"question_id": qid, "image": link.name, "text": question + sd.SHORT_ANSWER_SUFFIX})
    truth[qid] = (question, sample["conversations"][1]["value"].lower())
    image_of[qid] = sample["image"]
    if len(rows) == n:
        break
(root / "llava_gqa_testdev_balanced.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
answers = work / "answers.jsonl"
if answers.exists():
    answers.unlink()
answer.main(["--model-path", checkpoint, "--bench", "gqa", "--data-root", str(work), "--answers-file", str(answers),
             "--batch-size", "100", "--device", "cpu", "--no-progress"])
scene_words = [*sd.COLORS, *sd.SHAPES, *sd.POSITIONS, *sd.BG_TEXTURES, *sd.BG_COLORS, *sd.NUM_WORDS.values()]
words = r"\b(" + "|".join(scene_words) + r")\b"
# the generator's own presence question for every pair, so its wording lives in one place
presence_pair = {sd.exist_question(c, s): (c, s) for c in sd.COLORS for s in sd.SHAPES}
objects = {s["image"]: s["objects"] for s in json.loads((data / "train" / "scenes.json").read_text())}


def presence_kind(question: str, gold: str, scene_objects: list[dict]) -> str | None:
    """For "is there a <colour> <shape>?": "present", or what the absent pair shares with the objects present."""
    if question not in presence_pair:
        return None
    if gold == "yes":
        return "present"
    asked_colour, asked_shape = presence_pair[question]
    colour = any(o["color"] == asked_colour for o in scene_objects)
    shape = any(o["shape"] == asked_shape for o in scene_objects)
    return "absent, " + {(True, True): "its colour and its shape present (on different objects)",
                         (True, False): "its colour present", (False, True): "its shape present",
                         (False, False): "nothing shared"}[colour, shape]


right, by_kind = collections.defaultdict(list), collections.defaultdict(list)
for line in answers.read_text().splitlines():
    a = json.loads(line)
    question, gold = truth[a["question_id"]]
    ok = normalize_gqa_prediction(a["text"]) == gold
    right[re.sub(words, "X", question)].append(ok)
    kind = presence_kind(question, gold, objects[image_of[a["question_id"]]])
    if kind:
        by_kind[kind].append(ok)
every = [r for rs in right.values() for r in rs]
print(f"training-question accuracy {sum(every) / len(every):.3f} ({len(every)} questions)")
for template, rs in sorted(right.items(), key=lambda kv: -len(kv[1]))[:22]:
    print(f"  {sum(rs) / len(rs):.2f} ({len(rs):3d}) {template}")
print("presence questions by what the asked pair shares with the objects present:")
for kind, rs in sorted(by_kind.items()):
    print(f"  {sum(rs) / len(rs):.2f} ({len(rs):3d}) {kind}")
