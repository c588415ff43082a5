"""Reading answers files and joining them to questions, independent of line order and chunking.

An answers file is JSONL, one `{question_id, prompt, text, answer_id, model_id, metadata}` per line (several
chunk files may be given). Answers are joined to questions by `question_id`, and additionally by the prompt
text where question ids are not unique (MME: the image path; TextVQA: the image id) — never by line position,
so the order of lines and the way answering was chunked never change a score.

Bookkeeping every scorer reports (and the CLI prints):
- missing:   questions without an answer (scored as wrong, as the official scorers would count them);
- unknown:   answers whose question_id (+prompt) matches no question (ignored for the score);
- duplicate: extra answers for an already answered question. The last one wins, as in the official scorers
             that build a `{question_id: answer}` dict (GQA, ScienceQA, VizWiz);
- failed:    answers whose metadata has an "error" key (the image failed to load): scored as wrong.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence, Union

from xmodelvlm.errors import UserError
from xmodelvlm.eval.questions import Question, QuestionId

PathLike = Union[str, Path]
# How many example ids metrics.json lists for each kind of problem.
MAX_EXAMPLE_IDS = 5


@dataclass
class Answer:
    question_id: QuestionId
    text: str
    prompt: str | None
    metadata: dict[str, Any]
    source: str  # "file:line", for messages

    @property
    def failed(self) -> bool:
        """The answering engine could not produce a real answer (e.g. the image did not load)."""
        return "error" in self.metadata


def read_answers(paths: PathLike | Sequence[PathLike]) -> list[Answer]:
    """Read one answers file or several chunk files, in the given order."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserError("no answers file given")
    answers: list[Answer] = []
    for path in paths:
        answers.extend(_read_answers_file(Path(path)))
    return answers


def _read_answers_file(path: Path) -> Iterator[Answer]:
    if not path.is_file():
        raise UserError(f"answers file not found: {path}; run the answering step for this benchmark first "
                        "(or fix the --answers path)")
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                yield _parse_answer_line(line, f"{path}:{line_number}")


def _parse_answer_line(line: str, source: str) -> Answer:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source}: not valid JSON ({exc.msg}); answers files have one JSON object per line") \
            from None
    if not isinstance(record, dict):
        raise UserError(f"{source}: expected a JSON object, found a JSON {type(record).__name__}")
    if "question_id" not in record:
        raise UserError(f"{source}: answer has no field \"question_id\"")
    question_id = record["question_id"]
    if isinstance(question_id, bool) or not isinstance(question_id, (int, str)):
        raise UserError(f"{source}: field \"question_id\" must be a string or an integer")
    text = record.get("text")
    if not isinstance(text, str):
        raise UserError(f"{source}: answer needs a string field \"text\" (the model's answer)")
    prompt = record.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise UserError(f"{source}: field \"prompt\" must be a string")
    metadata = record.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise UserError(f"{source}: field \"metadata\" must be a JSON object")
    return Answer(question_id=question_id, text=text, prompt=prompt, metadata=metadata, source=source)


@dataclass
class AnswerMatch:
    """The outcome of joining answers to questions. `answers[i]` is the answer of `questions[i]` or None."""

    questions: list[Question]
    answers: list[Answer | None]
    unknown: list[Answer] = field(default_factory=list)
    duplicates: list[Answer] = field(default_factory=list)

    def pairs(self) -> Iterator[tuple[Question, Answer | None]]:
        return zip(self.questions, self.answers)

    def prediction(self, position: int) -> str | None:
        """The answer text of `questions[position]`, or None when it is missing or failed (scored wrong)."""
        answer = self.answers[position]
        if answer is None or answer.failed:
            return None
        return answer.text

    def predictions(self) -> Iterator[tuple[Question, str | None]]:
        for position, question in enumerate(self.questions):
            yield question, self.prediction(position)

    @property
    def missing(self) -> list[Question]:
        return [q for q, a in self.pairs() if a is None]

    @property
    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a is not None and a.failed]

    def coverage(self) -> dict[str, Any]:
        """Counts for metrics.json, with a few example question ids for each non-zero problem."""
        problems = {
            "missing": [q.question_id for q in self.missing],
            "unknown": [a.question_id for a in self.unknown],
            "duplicate": [a.question_id for a in self.duplicates],
            "failed": [a.question_id for a in self.failed],
        }
        report: dict[str, Any] = {"num_questions": len(self.questions),
                                  "num_answered": sum(a is not None for a in self.answers)}
        report.update({kind: len(ids) for kind, ids in problems.items()})
        examples = {kind: ids[:MAX_EXAMPLE_IDS] for kind, ids in problems.items() if ids}
        if examples:
            report["examples"] = examples
        return report


def match_answers(questions: Sequence[Question], answers: Iterable[Answer], *,
                  join_on_prompt: bool = False) -> AnswerMatch:
    """Join answers to questions by question_id, plus the prompt when `join_on_prompt` or when the question
    ids are not unique. Several identical questions (same key) take that key's answers in order; answers
    beyond their number are duplicates, and the last ones win."""
    questions = list(questions)
    answers = list(answers)
    ids_unique = len({_id_key(q.question_id) for q in questions}) == len(questions)
    use_prompt = join_on_prompt or not ids_unique

    positions_by_key: dict[tuple, list[int]] = defaultdict(list)
    for position, question in enumerate(questions):
        positions_by_key[_join_key(question.question_id, question.text, use_prompt)].append(position)

    answers_by_key: dict[tuple, list[Answer]] = defaultdict(list)
    unknown: list[Answer] = []
    for answer in answers:
        if use_prompt and answer.prompt is None:
            raise UserError(f"{answer.source}: answer has no field \"prompt\"; it is needed to tell apart "
                            f"questions that share question_id {answer.question_id!r}")
        key = _join_key(answer.question_id, answer.prompt, use_prompt)
        (answers_by_key[key] if key in positions_by_key else unknown).append(answer)

    matched: list[Answer | None] = [None] * len(questions)
    duplicates: list[Answer] = []
    for key, key_answers in answers_by_key.items():
        positions = positions_by_key[key]
        surplus = len(key_answers) - len(positions)
        if surplus > 0:
            duplicates.extend(key_answers[:surplus])
            key_answers = key_answers[surplus:]  # the last answers win
        for position, answer in zip(positions, key_answers):
            matched[position] = answer
    return AnswerMatch(questions=questions, answers=matched, unknown=unknown, duplicates=duplicates)


def _id_key(question_id: QuestionId) -> tuple[str, QuestionId]:
    # The JSON type is part of the key: the answers file must echo the id exactly as the question file has it.
    return (type(question_id).__name__, question_id)


def _join_key(question_id: QuestionId, prompt: str | None, use_prompt: bool) -> tuple:
    if use_prompt:
        return _id_key(question_id) + ((prompt or "").strip(),)
    return _id_key(question_id)


def format_coverage(metrics: dict[str, Any]) -> str:
    """"missing 0" plus any other non-zero problem count, for the one-line summaries."""
    parts = [f"missing {metrics.get('missing', 0)}"]
    for kind in ("unknown", "duplicate", "failed"):
        if metrics.get(kind):
            parts.append(f"{kind} {metrics[kind]}")
    return ", ".join(parts)


def coverage_warnings(metrics: dict[str, Any]) -> list[str]:
    """Human-readable warnings for metrics with missing/unknown/duplicate/failed answers."""
    examples = metrics.get("examples", {})
    explanations = {
        "missing": "questions have no answer; they count as wrong",
        "unknown": "answers match no question; they are ignored",
        "duplicate": "answers repeat an answered question; the last answer of each question is used",
        "failed": "answers record an error (e.g. the image did not load); they count as wrong",
    }
    lines = []
    for kind, explanation in explanations.items():
        count = metrics.get(kind, 0)
        if count:
            shown = ", ".join(json.dumps(x, ensure_ascii=False) for x in examples.get(kind, []))
            lines.append(f"warning: {count} {explanation} (e.g. question_id {shown})")
    return lines


def submission_metrics(match: AnswerMatch, path) -> dict[str, Any]:
    """Metrics of a server-scored benchmark (VizWiz, MM-Vet): how many questions got an answer, where the
    submission file is, and the coverage counts (missing / unknown / duplicate / failed)."""
    metrics: dict[str, Any] = {"num_answers": sum(p is not None for _, p in match.predictions()),
                               "submission": str(path)}
    metrics.update(match.coverage())
    return metrics
