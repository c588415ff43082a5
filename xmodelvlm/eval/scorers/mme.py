"""MME: LLaVA's `convert_answer_to_mme.py` (ground-truth lookup) + the MME `eval_tool/calculation.py` score.

question_id is the image path ("artwork/images/10002.jpg"); the task is its first component and the
ground-truth file is `<task>/[questions_answers_YN/]<image stem>.txt`, lines `question\\tYes|No`. Each image
has two questions; per task, acc = right / questions, acc+ = images with both right / images, and the task's
score is 100 * (acc + acc+).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from xmodelvlm.errors import UserError
from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import Answer, format_coverage, match_answers

PERCEPTION_TASKS = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                    "artwork", "OCR")
COGNITION_TASKS = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
# LLaVA's question file replaces MME's " Please answer yes or no." by this short-answer instruction.
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
YES_NO_INSTRUCTION = "Please answer yes or no."


def parse_mme_prediction(text: str) -> str:
    """calculation.py's parse_pred_ans on the lowercased text: exactly "yes"/"no"; else "yes" in the first
    4 characters, then "no" there ("Not sure" -> "no", "Yes, ..." -> "yes"); else "other" (always wrong)."""
    lowered = text.lower()
    if lowered in ("yes", "no"):
        return lowered
    prefix = lowered[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


class GroundTruth:
    """Lazily reads `<task>/[questions_answers_YN/]<stem>.txt` files below MME_Benchmark_release_version."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._files: dict[tuple[str, str], dict[str, str]] = {}

    def answer(self, task: str, image_path: str, question_text: str) -> str:
        """The "yes"/"no" ground truth of a question, looked up the way convert_answer_to_mme.py does."""
        stem = image_path.split("/")[-1].split(".")[0]
        lines = self._lines(task, stem)
        for candidate in _ground_truth_question_candidates(question_text):
            if candidate in lines:
                return lines[candidate]
        raise UserError(f"MME ground truth {self._file(task, stem)} has no line for question "
                        f"{question_text!r} (image {image_path}); the MME_Benchmark_release_version folder does not "
                        "match llava_mme.jsonl")

    def _file(self, task: str, stem: str) -> Path:
        task_dir = self.root / task
        qa_dir = task_dir / "questions_answers_YN"
        return (qa_dir if qa_dir.is_dir() else task_dir) / f"{stem}.txt"

    def _lines(self, task: str, stem: str) -> dict[str, str]:
        if (task, stem) not in self._files:
            self._files[task, stem] = _read_ground_truth_file(self._file(task, stem))
        return self._files[task, stem]


def _read_ground_truth_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"MME ground-truth file not found: {path}; download MME_Benchmark_release_version and "
                        "place it under MME/")
    answers = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 2 or fields[1].lower() not in ("yes", "no"):
                raise UserError(f"{path}: line {line_number} should be 'question<TAB>Yes|No'")
            answers[fields[0]] = fields[1].lower()
    return answers


def _ground_truth_question_candidates(prompt: str) -> list[str]:
    """Map LLaVA's prompt back to MME's question text (convert_answer_to_mme.py): drop the short-answer
    instruction, add " Please answer yes or no."; some MME questions have a double space before "Please"."""
    question = prompt
    if SHORT_ANSWER_INSTRUCTION in question:
        question = question.replace(SHORT_ANSWER_INSTRUCTION, "").strip()
    if YES_NO_INSTRUCTION in question:
        return [question]
    return [f"{question} {YES_NO_INSTRUCTION}", f"{question}  {YES_NO_INSTRUCTION}"]


@dataclass
class TaskTally:
    correct: int = 0
    questions: int = 0
    other: int = 0  # predictions that are neither yes nor no (incl. missing/failed answers)
    correct_by_image: dict[str, list[bool]] = field(default_factory=lambda: defaultdict(list))

    def add(self, image: str, correct: bool, is_other: bool) -> None:
        self.questions += 1
        self.correct += correct
        self.other += is_other
        self.correct_by_image[image].append(correct)

    def metrics(self) -> dict[str, Any]:
        acc = self.correct / self.questions
        images_all_right = sum(all(marks) for marks in self.correct_by_image.values())
        acc_plus = images_all_right / len(self.correct_by_image)
        return {"score": 100 * (acc + acc_plus), "acc": 100 * acc, "acc_plus": 100 * acc_plus,
                "num_questions": self.questions, "num_images": len(self.correct_by_image), "other": self.other}


def score_mme(questions: Sequence[Question], answers: Sequence[Answer], ground_truth_root: Path) -> dict[str, Any]:
    """MME points: perception (max 2000) and cognition (max 800), summed over the tasks present."""
    # Two questions share an image path as question_id, so answers are told apart by their prompt too.
    match = match_answers(questions, answers, join_on_prompt=True)
    ground_truth = GroundTruth(ground_truth_root)
    tallies: dict[str, TaskTally] = defaultdict(TaskTally)
    for question, prediction in match.predictions():
        image_path = str(question.question_id)
        task = image_path.split("/")[0]
        expected = ground_truth.answer(task, image_path, question.text)
        parsed = "other" if prediction is None else parse_mme_prediction(prediction)
        tallies[task].add(image_path, correct=parsed == expected, is_other=parsed == "other")

    unknown_tasks = sorted(set(tallies) - set(PERCEPTION_TASKS) - set(COGNITION_TASKS))
    if unknown_tasks:
        raise UserError(f"MME questions name unknown task(s) {', '.join(unknown_tasks)}; question_id must start "
                        f"with one of {', '.join(PERCEPTION_TASKS + COGNITION_TASKS)}")
    details = {task: tallies[task].metrics() for task in PERCEPTION_TASKS + COGNITION_TASKS if task in tallies}
    metrics: dict[str, Any] = {
        "perception": sum(details[t]["score"] for t in PERCEPTION_TASKS if t in details),
        "cognition": sum(details[t]["score"] for t in COGNITION_TASKS if t in details),
        "tasks": {task: d["score"] for task, d in details.items()},
        "task_details": details,
    }
    metrics.update(match.coverage())
    return metrics


def summarize_mme(metrics: dict[str, Any]) -> str:
    return (f"mme: perception {metrics['perception']:.2f} | cognition {metrics['cognition']:.2f} | "
            f"{len(metrics['tasks'])} tasks ({format_coverage(metrics)})")
