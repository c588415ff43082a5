"""TextVQA val, scored like LLaVA's `eval_textvqa.py` + `m4c_evaluator.TextVQAAccuracyEvaluator`.

question_id is the image id (not unique), so answers are joined to questions by (question_id, prompt), and
questions to the ground truth by (image id, lowercased question) where the question is extracted from the
prompt as LLaVA's `prompt_processor` does.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from xmodelvlm.errors import UserError
from xmodelvlm.utils import read_json_file
from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import Answer, format_coverage, match_answers
from xmodelvlm.eval.scorers.vqa_normalize import soft_scores, normalize_vqa_answer

_OCR_TOKENS_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str) -> str:
    """LLaVA's prompt_processor, lowercased result:
    - "OCR tokens: ... Question: <q> Short answer:" -> <q>;
    - three lines with "Reference OCR token: " -> the first line, or the second when the prompt starts with
      the OCR line;
    - two lines (question + instruction) -> the first line.
    Upstream asserts on anything else; we fall back to the first line (the question comes first in every
    LLaVA TextVQA prompt), so an unexpected prompt still finds its ground truth or fails with a clear message."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        found = _OCR_TOKENS_QUESTION.search(prompt)
        if found:
            return found.group(1).lower()
    if "Reference OCR token: " in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith("Reference OCR token:") else lines[0]).lower()
    return lines[0].lower()


def read_textvqa_annotations(path: Path) -> dict[tuple[str, str], list[str]]:
    """`TextVQA_0.5.1_val.json` -> {(image_id, lowercased question): the 10 human answers}."""
    data = read_json_file(path, not_found=f"TextVQA annotations not found: {path}; download "
                                          "TextVQA_0.5.1_val.json from the TextVQA site into textvqa/")
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected an object with a \"data\" list (TextVQA_0.5.1_val.json)")
    annotations = {}
    for position, entry in enumerate(entries):
        try:
            key = (str(entry["image_id"]), entry["question"].lower())
            answers = list(entry["answers"])
        except (KeyError, TypeError, AttributeError):
            raise UserError(f"{path}: data[{position}] needs fields image_id, question and answers") from None
        annotations[key] = answers
    return annotations


def score_textvqa(questions: Sequence[Question], answers: Sequence[Answer], annotation_path: Path) \
        -> dict[str, Any]:
    """Mean VQA soft accuracy (percent) over all questions of the question file; missing answers score 0."""
    match = match_answers(questions, answers, join_on_prompt=True)
    annotations = read_textvqa_annotations(Path(annotation_path))
    total_score = 0.0
    for question, prediction in match.predictions():
        key = (str(question.question_id), question_from_prompt(question.text))
        if key not in annotations:
            raise UserError(f"{annotation_path} has no question {key[1]!r} for image {key[0]!r}; the annotation "
                            "file does not match the question file")
        if prediction is not None:
            total_score += soft_scores(annotations[key]).get(normalize_vqa_answer(prediction), 0.0)
    num_questions = len(match.questions)
    metrics: dict[str, Any] = {"accuracy": 100 * total_score / num_questions if num_questions else 0.0}
    metrics.update(match.coverage())
    return metrics


def summarize_textvqa(metrics: dict[str, Any]) -> str:
    return f"textvqa: acc {metrics['accuracy']:.2f} ({format_coverage(metrics)})"
