"""VizWiz-VQA test: the EvalAI submission LLaVA's `convert_vizwiz_for_submission.py` writes.

Test answers are secret, so there is no local score: `answers_upload.json` = `[{"image", "answer"}]` in
question-file order, each answer passed through the VQA normalisation. Every test question must appear in
the upload; a missing or failed answer is uploaded as "" (which the server scores as wrong).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import submission_metrics, Answer, format_coverage, match_answers
from xmodelvlm.eval.scorers.vqa_normalize import normalize_vqa_answer
from xmodelvlm.utils import atomic_write_json

UPLOAD_FILE = "answers_upload.json"


def write_vizwiz_submission(questions: Sequence[Question], answers: Sequence[Answer], output_dir: Path) \
        -> dict[str, Any]:
    match = match_answers(questions, answers)
    upload = []
    for question, prediction in match.predictions():
        image_name = question.image.relpath if question.image is not None else ""
        upload.append({"image": image_name,
                       "answer": normalize_vqa_answer(prediction) if prediction is not None else ""})
    path = Path(output_dir) / UPLOAD_FILE
    atomic_write_json(path, upload, indent=None)
    return submission_metrics(match, path)


def summarize_vizwiz(metrics: dict[str, Any]) -> str:
    return (f"vizwiz: {metrics['num_answers']}/{metrics['num_questions']} answers -> {metrics['submission']} "
            f"(submit to EvalAI; {format_coverage(metrics)})")
