"""POPE: yes/no object hallucination, scored like LLaVA's `eval_pope.py`.

Labels live in `coco/coco_pope_<category>.json` (JSONL `{question_id, image, text, label}`); the k-th question
of a category in the question file pairs with the k-th label line (that is how the official scorer pairs
them). We check that each pair has the same question text so a mismatched label file fails loudly.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from xmodelvlm.errors import UserError
from xmodelvlm.utils import iter_jsonl
from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import Answer, format_coverage, match_answers

POPE_CATEGORIES = ("adversarial", "popular", "random")
# Exact (case-sensitive) words that make an answer "no". The official scorer checks exactly these three, so
# "NO", "Nope", "None" and "Not" all count as "yes"; we reproduce that so numbers match published ones.
NO_WORDS = ("No", "not", "no")


def parse_yes_no(text: str) -> str:
    """The official rule: keep the text before the first ".", drop ",", split on single spaces; any word
    exactly "No", "not" or "no" means "no", anything else (even "NO" or "") means "yes"."""
    first_sentence = text.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if any(word in NO_WORDS for word in words) else "yes"


@dataclass
class Confusion:
    """Counts with "yes" as the positive class. `invalid_*` are missing/failed answers (see `score_pope`)."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0
    invalid_yes_label: int = 0
    invalid_no_label: int = 0

    def add(self, label: str, prediction: str | None) -> None:
        if prediction is None:
            if label == "yes":
                self.invalid_yes_label += 1
            else:
                self.invalid_no_label += 1
        elif label == "yes":
            if prediction == "yes":
                self.tp += 1
            else:
                self.fn += 1
        elif prediction == "yes":
            self.fp += 1
        else:
            self.tn += 1

    def metrics(self) -> dict[str, Any]:
        total = self.tp + self.fp + self.tn + self.fn + self.invalid_yes_label + self.invalid_no_label
        # A missing answer to a "yes" question is a missed positive (FN); to a "no" question it is neither
        # a true negative nor a "yes" prediction. Either way it lowers accuracy.
        false_negatives = self.fn + self.invalid_yes_label
        precision = _ratio(self.tp, self.tp + self.fp)
        recall = _ratio(self.tp, self.tp + false_negatives)
        f1 = _ratio(2 * precision * recall, precision + recall)
        return {
            "accuracy": 100 * _ratio(self.tp + self.tn, total),
            "precision": 100 * precision,
            "recall": 100 * recall,
            "f1": 100 * f1,
            "yes_ratio": 100 * _ratio(self.tp + self.fp, total),
            "num_questions": total,
            "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn,
            "invalid": self.invalid_yes_label + self.invalid_no_label,
        }


def _ratio(numerator: float, denominator: float) -> float:
    # The official scorer divides by zero here (e.g. a model that never says "yes"); we report 0 instead.
    return numerator / denominator if denominator else 0.0


def read_pope_labels(path: Path) -> list[dict[str, Any]]:
    """A `coco_pope_<category>.json` label file: JSONL of `{question_id, text, label: "yes"|"no"}`."""
    not_found = (f"POPE label file not found: {path}; download the POPE annotations (output/coco/ of the POPE "
                 "repository) into pope/coco/")
    labels = []
    for line_number, record in iter_jsonl(path, not_found=not_found):
        if not isinstance(record, dict) or record.get("label") not in ("yes", "no"):
            raise UserError(f"{path}: line {line_number}: field \"label\" must be \"yes\" or \"no\"")
        labels.append(record)
    return labels


def score_pope(questions: Sequence[Question], answers: Sequence[Answer],
               label_files: Mapping[str, Path]) -> dict[str, Any]:
    """Per-category accuracy/precision/recall/F1/yes-ratio (percent) and their means over the categories
    present in the question file. Missing and failed answers count as wrong."""
    match = match_answers(questions, answers)
    positions_by_category: dict[str, list[int]] = {}
    for position, question in enumerate(match.questions):
        category = question.metadata.get("category")
        if category not in label_files:
            raise UserError(f"POPE question {question.question_id!r} has category {category!r}; expected one of "
                            f"{', '.join(sorted(label_files))}")
        positions_by_category.setdefault(category, []).append(position)

    per_category = {}
    for category in sorted(positions_by_category):
        positions = positions_by_category[category]
        labels = read_pope_labels(label_files[category])
        _check_labels_pair_with_questions(category, label_files[category], labels,
                                          [match.questions[p] for p in positions])
        confusion = Confusion()
        for position, label in zip(positions, labels):
            prediction = match.prediction(position)
            confusion.add(label["label"], None if prediction is None else parse_yes_no(prediction))
        per_category[category] = confusion.metrics()

    metrics: dict[str, Any] = {
        "f1": _mean(m["f1"] for m in per_category.values()),
        "accuracy": _mean(m["accuracy"] for m in per_category.values()),
        "yes_ratio": _mean(m["yes_ratio"] for m in per_category.values()),
    }
    metrics.update(per_category)
    metrics.update(match.coverage())
    return metrics


def _check_labels_pair_with_questions(category: str, path: Path, labels: list[dict], questions: list[Question]) \
        -> None:
    if len(labels) != len(questions):
        raise UserError(f"{path} has {len(labels)} labels but the question file has {len(questions)} "
                        f"'{category}' questions; they pair line by line, so use matching files")
    for line_number, (label, question) in enumerate(zip(labels, questions), start=1):
        label_text = label.get("text")
        if isinstance(label_text, str) and _first_line(label_text) != _first_line(question.text):
            raise UserError(f"{path}: label line {line_number} is for {label_text!r} but the {line_number}-th "
                            f"'{category}' question is {question.text.strip()[:80]!r}; the label file does "
                            "not match the question file")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return " ".join(lines[0].split()).lower() if lines else ""


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def summarize_pope(metrics: dict[str, Any]) -> str:
    return (f"pope: F1 {metrics['f1']:.2f} | acc {metrics['accuracy']:.2f} | yes {metrics['yes_ratio']:.1f}% "
            f"({format_coverage(metrics)})")
