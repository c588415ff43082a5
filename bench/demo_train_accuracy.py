"""Does the stage-2 model answer its own training questions? (not a test)

    python bench/demo_train_accuracy.py CHECKPOINT DATA_DIR WORK_DIR [N=600]

Takes the first N conversations of DATA_DIR/train/instruct.json whose first turn is a short-answer question, lays
them out as a GQA-style evaluation set under WORK_DIR (links to the training images), answers them with the real
engine (`python -m xmodelvlm.eval.answer`, v1 prompts) and prints exact-match accuracy, overall and per question
template (colours, shapes, places and counts replaced by X). Low accuracy here means stage 2 under-fits; high
accuracy with low held-out scores would mean it memorises.
"""
import collections, json, os, re, sys
from pathlib import Path
from xmodelvlm.demo.synthetic_data import SHORT_ANSWER_SUFFIX
from xmodelvlm.eval import answer

checkpoint, data, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 600
root = work / "gqa"
(root / "data" / "images").mkdir(parents=True, exist_ok=True)
rows, truth = [], {}
for sample in json.loads((data / "train" / "instruct.json").read_text()):
    question = sample["conversations"][0]["value"].replace("<image>", "").strip()
    if "image" not in sample or not question.endswith(SHORT_ANSWER_SUFFIX.strip()):
        continue
    question = question[: -len(SHORT_ANSWER_SUFFIX)].strip()
    image_id = "t" + sample["id"]
    link = root / "data" / "images" / f"{image_id}.png"
    if not link.exists():
        os.symlink((data / "train" / sample["image"]).resolve(), link)
    qid = str(len(rows))
    rows.append({"question_id": qid, "image": link.name, "text": question + SHORT_ANSWER_SUFFIX})
    truth[qid] = (question, sample["conversations"][1]["value"].lower())
    if len(rows) == n:
        break
(root / "llava_gqa_testdev_balanced.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
answers = work / "answers.jsonl"
if answers.exists():
    answers.unlink()
answer.main(["--model-path", checkpoint, "--bench", "gqa", "--data-root", str(work), "--answers-file", str(answers),
             "--batch-size", "100", "--device", "cpu", "--no-progress"])
words = r"\b(red|green|blue|yellow|purple|orange|circle|square|triangle|star|left|right|top|bottom|center|one|two|" \
        r"three|four|noisy|plain|striped|white|gray|black)\b"
right = collections.defaultdict(list)
for line in answers.read_text().splitlines():
    a = json.loads(line)
    question, gold = truth[a["question_id"]]
    right[re.sub(words, "X", question)].append(a["text"].strip().lower().rstrip(".") == gold)
every = [r for rs in right.values() for r in rs]
print(f"training-question accuracy {sum(every) / len(every):.3f} ({len(every)} questions)")
for template, rs in sorted(right.items(), key=lambda kv: -len(kv[1]))[:22]:
    print(f"  {sum(rs) / len(rs):.2f} ({len(rs):3d}) {template}")
