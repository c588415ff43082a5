"""MM-Vet: the `{"v1_<question_id>": answer}` file LLaVA's `convert_mmvet_for_eval.py` writes for the
official GPT-4 grader. Answers are open-ended and copied unmodified; a missing or failed answer is written
as "" so the grader sees every question (and scores it 0) instead of crashing on a missing key.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import submission_metrics, Answer, format_coverage, match_answers
from xmodelvlm.utils import atomic_write_json

RESULTS_FILE = "results.json"


def write_mmvet_results(questions: Sequence[Question], answers: Sequence[Answer], output_dir: Path) \
        -> dict[str, Any]:
    match = match_answers(questions, answers)
    results = {f"v1_{question.question_id}": prediction if prediction is not None else ""
               for question, prediction in match.predictions()}
    path = Path(output_dir) / RESULTS_FILE
    atomic_write_json(path, results, indent=2)
    return submission_metrics(match, path)


def summarize_mmvet(metrics: dict[str, Any]) -> str:
    return (f"mmvet: {metrics['num_answers']}/{metrics['num_questions']} answers -> {metrics['submission']} "
            f"(grade with the MM-Vet GPT-4 evaluator; {format_coverage(metrics)})")
