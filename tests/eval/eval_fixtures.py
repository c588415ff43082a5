"""Tiny synthetic benchmark files in the real LLaVA-1.5 `playground/data/eval/` layouts, for the eval tests.

Each `make_<bench>` writes the question file and the ground truth under `root` and returns the answers
(as answers-file records) whose expected scores the tests compute by hand.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

SQ = "\nAnswer the question using a single word or phrase."
LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def write_jsonl(path: Path, records: Iterable[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def png_bytes(size: tuple[int, int] = (4, 3), mode: str = "RGB", color: Any = (255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_image(path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(**kwargs))
    return path


def answer(question_id: Any, text: str, prompt: str | None = None, error: str | None = None) -> dict:
    """One answers-file record as the answering engine writes it."""
    metadata = {"error": error} if error is not None else {}
    record = {"question_id": question_id, "text": text, "answer_id": f"a{question_id}", "model_id": "test",
              "metadata": metadata}
    if prompt is not None:
        record["prompt"] = prompt
    return record


# ---------------------------------------------------------------------------------------------------------
# POPE
# ---------------------------------------------------------------------------------------------------------

# (category, object, label, answer text or None for no answer, error?)
POPE_CASES = [
    ("adversarial", "dog", "yes", "Yes, there is.", None),   # yes -> TP
    ("adversarial", "cat", "yes", "NO", None),               # "NO" is not an exact no-word -> yes -> TP
    ("adversarial", "car", "yes", "No.", None),              # no -> FN
    ("adversarial", "bus", "no", "None", None),              # "None" -> yes -> FP
    ("adversarial", "cup", "no", "Nope", None),              # "Nope" -> yes -> FP
    ("adversarial", "pen", "no", "There is not. Yes.", None),  # first sentence has "not" -> no -> TN
    ("popular", "dog", "yes", "yes", None),                  # TP
    ("popular", "cat", "no", "no", None),                    # TN
    ("popular", "car", "yes", None, None),                   # missing, label yes -> FN
    ("popular", "bus", "no", "yes", "image failed"),         # failed, label no -> wrong, not a yes
    ("random", "dog", "yes", "Yes", None),                   # TP
    ("random", "cat", "no", "not sure, no", None),           # "not" -> no -> TN
]


def make_pope(root: Path) -> list[dict]:
    questions, answers = [], []
    labels: dict[str, list[dict]] = {}
    for question_id, (category, obj, label, text, error) in enumerate(POPE_CASES, start=1):
        question = f"Is there a {obj} in the image?"
        image = f"COCO_val2014_{question_id:012d}.jpg"
        questions.append({"question_id": question_id, "image": image, "text": question + SQ, "category": category})
        labels.setdefault(category, []).append({"question_id": len(labels.get(category, [])) + 1,
                                                "image": image, "text": question, "label": label})
        if text is not None:
            answers.append(answer(question_id, text, prompt=question + SQ, error=error))
    write_jsonl(root / "pope/llava_pope_test.jsonl", questions)
    for category, records in labels.items():
        write_jsonl(root / f"pope/coco/coco_pope_{category}.json", records)
    (root / "pope/val2014").mkdir(parents=True, exist_ok=True)
    return answers


# ---------------------------------------------------------------------------------------------------------
# MME
# ---------------------------------------------------------------------------------------------------------

MME_YN = " Please answer yes or no."


def make_mme(root: Path) -> list[dict]:
    gt_root = root / "MME/MME_Benchmark_release_version"
    # artwork keeps images/ + questions_answers_YN/; code_reasoning keeps images and .txt side by side.
    write_image(gt_root / "artwork/images/10002.jpg")
    write_image(gt_root / "artwork/images/10003.jpg")
    write_image(gt_root / "code_reasoning/0020.png")
    (gt_root / "artwork/questions_answers_YN").mkdir(parents=True)
    (gt_root / "artwork/questions_answers_YN/10002.txt").write_text(
        f"Is this artwork created by Monet?{MME_YN}\tYes\nIs this artwork created by Dali?{MME_YN}\tNo\n")
    # The second question carries the double space before "Please" some MME files have.
    (gt_root / "artwork/questions_answers_YN/10003.txt").write_text(
        f"Is this a painting?{MME_YN}\tYes\nIs this a sculpture? {MME_YN}\tNo\n")
    (gt_root / "code_reasoning/0020.txt").write_text(
        f"Does the code print 3?{MME_YN}\tYes\nDoes the code print 4?{MME_YN}\tNo\n")
    cases = [  # (question_id, question, category, answer)
        ("artwork/images/10002.jpg", "Is this artwork created by Monet?", "artwork", "Yes, it is."),   # yes: right
        ("artwork/images/10002.jpg", "Is this artwork created by Dali?", "artwork", "Not sure"),       # no: right
        ("artwork/images/10003.jpg", "Is this a painting?", "artwork", "yes"),                         # right
        ("artwork/images/10003.jpg", "Is this a sculpture?", "artwork", "I think yes"),                # other
        ("code_reasoning/0020.png", "Does the code print 3?", "code_reasoning", "No"),                 # wrong
        ("code_reasoning/0020.png", "Does the code print 4?", "code_reasoning", "no"),                 # right
    ]
    questions = [{"question_id": qid, "image": qid, "text": q + SQ, "category": cat} for qid, q, cat, _ in cases]
    write_jsonl(root / "MME/llava_mme.jsonl", questions)
    return [answer(qid, text, prompt=q + SQ) for qid, q, _, text in cases]


# ---------------------------------------------------------------------------------------------------------
# ScienceQA
# ---------------------------------------------------------------------------------------------------------

# pid: (number of choices, right index, has image, prediction or None)
SQA_CASES = {
    "1": (3, 1, True, "B"),                                   # right
    "2": (2, 0, False, "A. The cat"),                         # "X. ..." form: right
    "3": (4, 2, True, "The answer is C."),                    # right
    "4": (2, 0, True, "C"),                                   # letter beyond the 2 choices: wrong
    "5": (3, 1, True, None),                                  # missing: wrong
    "6": (2, 1, False, "B."),                                 # "B." is no accepted form: wrong
    "7": (2, 0, True, "The answer is A. The answer is A."),  # two matches: wrong, even if both say A
}


def make_sqa(root: Path) -> list[dict]:
    base = root / "scienceqa"
    problems, conversations, answers = {}, [], []
    for pid, (num_choices, right, has_image, prediction) in SQA_CASES.items():
        choices = [f"choice {i}" for i in range(num_choices)]
        problems[pid] = {"question": f"Question {pid}?", "choices": choices, "answer": right,
                         "image": "image.png" if has_image else None, "split": "test"}
        options = " ".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))
        value = f"Context: none.\nQuestion: Question {pid}?\nOptions: {options}"
        entry = {"id": pid, "conversations": [
            {"from": "human", "value": ("<image>\n" + value) if has_image else value},
            {"from": "gpt", "value": f"The answer is {chr(65 + right)}."}]}
        if has_image:
            entry["image"] = f"{pid}/image.png"
            write_image(base / f"images/test/{pid}/image.png")
        conversations.append(entry)
        if prediction is not None:
            answers.append(answer(pid, prediction, prompt=value + LETTER_SUFFIX))
    problems["8"] = {"question": "train?", "choices": ["a", "b"], "answer": 0, "image": None, "split": "train"}
    write_json(base / "problems.json", problems)
    write_json(base / "pid_splits.json", {"train": ["8"], "test": list(SQA_CASES)})
    write_json(base / "llava_test_CQM-A.json", conversations)
    answers.append(answer("8", "A"))  # a train problem: not in the question file -> unknown
    return answers


# ---------------------------------------------------------------------------------------------------------
# TextVQA
# ---------------------------------------------------------------------------------------------------------

def textvqa_prompt(question: str, ocr: str = "SHOES, NIKE", ocr_first: bool = False) -> str:
    if ocr_first:
        return f"Reference OCR token: {ocr}\n{question}{SQ}"
    return f"{question}\nReference OCR token: {ocr}{SQ}"


# (image id, question, 10 human answers, prediction or None, ocr line first?)
TEXTVQA_CASES = [
    ("img1", "What is the brand?", ["nike"] * 2 + ["puma"] * 8, "Nike.", False),           # 2 of 10: 0.6
    ("img1", "How many people?", ["2"] * 10, "two", False),                                # number word: 1.0
    ("img2", "What does the sign say?", ["stop sign"] + ["stop"] * 9, "The STOP sign!", False),  # 0.3
    ("img3", "Whose shirt is it?", ["don't know"] * 3 + ["unknown"] * 7, "dont know", False),  # 0.9
    ("img3", "What is written?", ["hello"] * 10, None, False),                              # missing: 0
    ("img4", "What is she wearing?", ["t shirt"] * 10, "t-shirt", True),                    # 1.0
]
TEXTVQA_EXPECTED_ACCURACY = 100 * (0.6 + 1.0 + 0.3 + 0.9 + 0.0 + 1.0) / 6


def make_textvqa(root: Path) -> list[dict]:
    questions, annotations, answers = [], [], []
    for image_id, question, gt_answers, prediction, ocr_first in TEXTVQA_CASES:
        # The annotation keeps its own capitalisation; the join lowercases both sides.
        annotations.append({"image_id": image_id, "question": question, "answers": gt_answers})
        prompt = textvqa_prompt(question.lower(), ocr_first=ocr_first)
        questions.append({"question_id": image_id, "image": f"{image_id}.jpg", "text": prompt})
        if prediction is not None:
            answers.append(answer(image_id, prediction, prompt=prompt))
    write_jsonl(root / "textvqa/llava_textvqa_val_v051_ocr.jsonl", questions)
    write_json(root / "textvqa/TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": annotations})
    return answers


# ---------------------------------------------------------------------------------------------------------
# GQA
# ---------------------------------------------------------------------------------------------------------

# qid: (answer, structural type, balanced, prediction or None)
GQA_CASES = {
    "201": ("yes", "verify", True, "Yes."),     # binary, right
    "202": ("left", "query", True, "Left.."),   # open, right (all trailing dots go)
    "203": ("red", "query", True, "red "),      # open, wrong: spaces are not stripped
    "204": ("no", "logical", True, "yes"),      # binary, wrong
    "205": ("table", "query", True, None),      # open, missing
    "206": ("cup", "query", False, "cup"),      # unbalanced: not scored
}


def make_gqa(root: Path, ground_truth_at: str = "gqa/data/testdev_balanced_questions.json") -> list[dict]:
    ground_truth = {qid: {"imageId": f"n{qid}", "question": f"q{qid}?", "answer": gt,
                          "types": {"structural": kind, "semantic": "attr", "detailed": "x"},
                          "isBalanced": balanced}
                    for qid, (gt, kind, balanced, _) in GQA_CASES.items()}
    write_json(root / ground_truth_at, ground_truth)
    write_jsonl(root / "gqa/llava_gqa_testdev_balanced.jsonl",
                [{"question_id": qid, "image": f"n{qid}.jpg", "text": f"q{qid}?{SQ}"} for qid in GQA_CASES])
    return [answer(qid, pred, prompt=f"q{qid}?{SQ}") for qid, (_, _, _, pred) in GQA_CASES.items()
            if pred is not None]


# ---------------------------------------------------------------------------------------------------------
# MMBench
# ---------------------------------------------------------------------------------------------------------

MMBENCH_HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split"]


def mmbench_row(index: int, question: str, hint: str, options: list[str], answer_letter: str | None,
                category: str, image: str | None = None) -> dict[str, str]:
    row = {"index": str(index), "question": question, "hint": hint, "category": category,
           "image": image if image is not None else base64.b64encode(png_bytes()).decode(),
           "source": "synthetic", "l2-category": "perception", "comment": "nan", "split": "dev",
           "answer": answer_letter or ""}
    row.update(dict(zip("ABCD", options)))
    return row


def write_mmbench_tsv(path: Path, rows: list[dict[str, str]], header: list[str] = MMBENCH_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(row.get(column, "") for column in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


MMBENCH_ROWS = [
    # question 0 and its two circular copies: all right
    mmbench_row(0, "What color is the ball?", "nan", ["red", "blue", "green", ""], "B", "color"),
    mmbench_row(1_000_000, "What color is the ball?", "nan", ["blue", "green", "red", ""], "A", "color"),
    mmbench_row(2_000_000, "What color is the ball?", "nan", ["green", "red", "blue", ""], "C", "color"),
    # question 1 (C missing, so D is dropped too) and its copy: the copy is wrong
    mmbench_row(1, "Which animal is shown?", "Look closely.", ["cat", "dog", "nan", "bird"], "A", "animal"),
    mmbench_row(1_000_001, "Which animal is shown?", "Look closely.", ["dog", "cat", "nan", "bird"], "B", "animal"),
]
MMBENCH_PREDICTIONS = {0: "B", 1_000_000: "(A)", 2_000_000: "C. blue", 1: "A", 1_000_001: "dog"}


def make_mmbench(root: Path, name: str = "mmbench/mmbench_dev_20230712.tsv") -> list[dict]:
    write_mmbench_tsv(root / name, MMBENCH_ROWS)
    return [answer(index, text) for index, text in MMBENCH_PREDICTIONS.items()]


# ---------------------------------------------------------------------------------------------------------
# VizWiz and MM-Vet
# ---------------------------------------------------------------------------------------------------------

def make_vizwiz(root: Path) -> list[dict]:
    suffix = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SQ
    questions = [{"question_id": f"VizWiz_test_{i:08d}.jpg", "image": f"VizWiz_test_{i:08d}.jpg",
                  "text": f"What is this?{suffix}"} for i in range(3)]
    write_jsonl(root / "vizwiz/llava_test.jsonl", questions)
    return [answer("VizWiz_test_00000001.jpg", "Two dogs."), answer("VizWiz_test_00000000.jpg", "The Unanswerable")]


def make_mmvet(root: Path) -> list[dict]:
    questions = [{"question_id": i, "image": f"v1_{i}.png", "text": f"Question {i}?"} for i in range(3)]
    write_jsonl(root / "mm-vet/llava-mm-vet.jsonl", questions)
    return [answer(2, "Line one.\nLine two, kept as is. "), answer(0, "The answer is 42"),
            answer(1, "", error="image failed to load")]
