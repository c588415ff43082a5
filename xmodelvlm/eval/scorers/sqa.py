"""ScienceQA-IMG, scored like LLaVA's `eval_science_qa.py` (`--options A B C D E`, split "test").

`accuracy` is over every problem of the test split; `img_accuracy` (what papers report as SQA-IMG) over the
test problems that have an image. Missing predictions are wrong in both. (Upstream, a missing prediction's
prompt is 'Unknown', so it silently drops out of the IMG denominator; we keep the denominator fixed.)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from xmodelvlm.errors import UserError
from xmodelvlm.utils import read_json_file
from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import Answer, format_coverage, match_answers

OPTION_LETTERS = ("A", "B", "C", "D", "E")
# "." is the regex wildcard here, as upstream: it needs any one character after the letter.
_ANSWER_IS_PATTERN = re.compile(r"The answer is ([A-Z]).")
FAILED = "FAILED"


def parse_sqa_letter(prediction: str) -> str:
    """The official parse: exactly "A".."E"; else "X. ..." (a letter A-E then ". "); else exactly one match
    of `The answer is ([A-Z]).`; else "FAILED"."""
    if prediction in OPTION_LETTERS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in OPTION_LETTERS and prediction[1:3] == ". ":
        return prediction[0]
    matches = _ANSWER_IS_PATTERN.findall(prediction)
    if len(matches) == 1:
        return matches[0]
    return FAILED


def predicted_choice_index(letter: str, num_choices: int) -> int:
    """get_pred_idx: the choice index of a letter, or -1 when it is not one of the first `num_choices`."""
    valid = OPTION_LETTERS[:num_choices]
    return valid.index(letter) if letter in valid else -1


def _load_json(path: Path, what: str) -> Any:
    return read_json_file(path, not_found=f"ScienceQA {what} not found: {path}; download it from the ScienceQA "
                                          "repository (data/scienceqa/) into scienceqa/")


def score_sqa(questions: Sequence[Question], answers: Sequence[Answer], problems_path: Path,
              pid_splits_path: Path, split: str = "test") -> dict[str, Any]:
    match = match_answers(questions, answers)
    problems = _load_json(Path(problems_path), "problems.json")
    splits = _load_json(Path(pid_splits_path), "pid_splits.json")
    if not isinstance(splits, dict) or split not in splits:
        raise UserError(f"{pid_splits_path}: has no split {split!r}")

    prediction_by_id = {str(q.question_id): prediction for q, prediction in match.predictions()}
    has_image_by_id = {str(q.question_id): q.image is not None for q in match.questions}
    correct = total = img_correct = img_total = 0
    for problem_id in splits[split]:
        problem = problems.get(problem_id) if isinstance(problems, dict) else None
        if not isinstance(problem, dict) or "answer" not in problem or "choices" not in problem:
            raise UserError(f"{problems_path}: problem {problem_id!r} (in the {split} split) is missing or has no "
                            "\"answer\"/\"choices\"")
        prediction = prediction_by_id.get(problem_id)
        letter = FAILED if prediction is None else parse_sqa_letter(prediction)
        is_correct = predicted_choice_index(letter, len(problem["choices"])) == problem["answer"]
        # The question file decides "has an image" (LLaVA's prompt gets "<image>" iff the entry has one);
        # problems.json's "image" field is the fallback for problems absent from the question file.
        has_image = has_image_by_id.get(problem_id, bool(problem.get("image")))
        total += 1
        correct += is_correct
        img_total += has_image
        img_correct += is_correct and has_image

    metrics: dict[str, Any] = {
        "accuracy": 100 * correct / total if total else 0.0,
        "img_accuracy": 100 * img_correct / img_total if img_total else 0.0,
        "num_problems": total,
        "num_img_problems": img_total,
        "correct": correct,
        "img_correct": img_correct,
    }
    coverage = match.coverage()
    # Problems of the split that the question file does not contain have no answer either.
    not_in_question_file = [pid for pid in splits[split] if pid not in prediction_by_id]
    if not_in_question_file:
        metrics["not_in_question_file"] = len(not_in_question_file)
    metrics.update(coverage)
    return metrics


def summarize_sqa(metrics: dict[str, Any]) -> str:
    return (f"sqa: IMG acc {metrics['img_accuracy']:.2f} | acc {metrics['accuracy']:.2f} "
            f"({format_coverage(metrics)})")
