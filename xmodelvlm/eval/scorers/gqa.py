"""GQA testdev-balanced, scored like LLaVA's `convert_gqa_for_eval.py` + GQA's `eval.py`.

Prediction = the answer with trailing "." removed, lowercased; exact match against the ground-truth answer.
Questions whose `types.structural` is "query" are "open", all others "binary".
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from xmodelvlm.errors import UserError
from xmodelvlm.utils import read_json_file
from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import Answer, format_coverage, match_answers


def normalize_gqa_prediction(text: str) -> str:
    # convert_gqa_for_eval: text.rstrip('.').lower() -- nothing else (no strip of spaces, no articles).
    return text.rstrip(".").lower()


def read_gqa_ground_truth(path: Path) -> dict[str, dict[str, Any]]:
    data = read_json_file(path, not_found=f"GQA ground truth not found: {path}; download "
                                          "testdev_balanced_questions.json (GQA questions1.2.zip) into gqa/data/")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected an object mapping question ids to questions")
    return data


def question_kind(entry: dict[str, Any]) -> str:
    structural = (entry.get("types") or {}).get("structural")
    return "open" if structural == "query" else "binary"


def score_gqa(questions: Sequence[Question], answers: Sequence[Answer], ground_truth_path: Path) -> dict[str, Any]:
    """Accuracy (percent) over the balanced questions of the question file, overall and binary/open."""
    match = match_answers(questions, answers)
    ground_truth = read_gqa_ground_truth(Path(ground_truth_path))
    tallies = {"all": [0, 0], "binary": [0, 0], "open": [0, 0]}  # [correct, total]
    for question, prediction in match.predictions():
        entry = ground_truth.get(str(question.question_id))
        if not isinstance(entry, dict) or "answer" not in entry:
            raise UserError(f"{ground_truth_path} has no question {question.question_id!r}; the ground truth does "
                            "not match the question file")
        if not entry.get("isBalanced", True):
            continue  # the official score counts balanced questions only
        correct = prediction is not None and normalize_gqa_prediction(prediction) == entry["answer"]
        for bucket in ("all", question_kind(entry)):
            tallies[bucket][0] += correct
            tallies[bucket][1] += 1
    metrics: dict[str, Any] = {
        "accuracy": _percent(*tallies["all"]),
        "binary": _percent(*tallies["binary"]),
        "open": _percent(*tallies["open"]),
        "num_binary": tallies["binary"][1],
        "num_open": tallies["open"][1],
    }
    metrics.update(match.coverage())
    return metrics


def _percent(correct: int, total: int) -> float:
    return 100 * correct / total if total else 0.0


def summarize_gqa(metrics: dict[str, Any]) -> str:
    return (f"gqa: acc {metrics['accuracy']:.2f} | binary {metrics['binary']:.2f} | open {metrics['open']:.2f} "
            f"({format_coverage(metrics)})")
