"""Answers files: read them (tolerating the half-written last line of a killed run), put them in question order,
and merge the chunk files of a multi-GPU run into one file.

    python -m xmodelvlm.eval.merge --bench pope --data-root playground/data/eval \
        --chunks answers/pope/chunks/4_*.jsonl --output answers/pope/merged.jsonl

Answers are matched to questions by `question_id`, plus the prompt where the benchmark's question ids are not
unique (MME: the image path; TextVQA: the image id) — the same rule the scorers use, so the merged file scores
exactly as the chunk files do. The merged file is written atomically, in question-file order; duplicates (the
last answer of a question wins, as in the scorers), missing questions and answers that match no question are
reported on stderr.
"""
from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from xmodelvlm.errors import UserError, run_cli
from xmodelvlm.eval.questions import Question, QuestionId
from xmodelvlm.utils import atomic_write_text

MAX_EXAMPLES = 5


@dataclass
class AnswerLine:
    """One answer as read from a file: the parsed record and the exact line (rewritten byte for byte)."""

    record: dict
    line: str  # without the trailing newline
    source: str  # "file:line", for messages

    @property
    def failed(self) -> bool:
        return "error" in (self.record.get("metadata") or {})


@dataclass
class AnswersRead:
    answers: list[AnswerLine]
    dropped_tail: str | None = None  # the half-written last line of a killed run, dropped


def read_answer_lines(path: str | Path) -> AnswersRead:
    """Read an answers JSONL file. A last line without its newline that does not parse is the half-written line
    of a killed run: it is dropped (and returned, so the caller can say so). Any other bad line is an error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"answers file not found: {path}")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    answers = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            answers.append(_parse_answer_line(line, f"{path}:{number}"))
    dropped = None
    if tail.strip():
        try:
            answers.append(_parse_answer_line(tail, f"{path}:{len(lines) + 1}"))
        except UserError:
            dropped = tail.decode("utf-8", errors="replace")
    return AnswersRead(answers=answers, dropped_tail=dropped)


def _parse_answer_line(line: bytes, source: str) -> AnswerLine:
    try:
        text = line.decode("utf-8")
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{source}: not a valid JSON line ({exc}); an answers file has one JSON object per line — "
                        "fix or delete that line") from None
    if not isinstance(record, dict) or "question_id" not in record or not isinstance(record.get("text"), str):
        raise UserError(f"{source}: expected an answer object with fields \"question_id\" and \"text\"")
    return AnswerLine(record=record, line=text.rstrip("\r"), source=source)


def ids_are_unique(questions: Sequence[Question]) -> bool:
    return len({_id_key(q.question_id) for q in questions}) == len(questions)


def _id_key(question_id: QuestionId) -> tuple:
    return (type(question_id).__name__, question_id)


def answer_key(question_id: QuestionId, prompt: str | None, use_prompt: bool) -> tuple:
    """What identifies a question's answer: its id, plus its prompt when ids are not unique (as the scorers)."""
    key = _id_key(question_id)
    return key + ((prompt or "").strip(),) if use_prompt else key


def question_key(question: Question, use_prompt: bool) -> tuple:
    return answer_key(question.question_id, question.text, use_prompt)


def record_key(record: dict, use_prompt: bool) -> tuple:
    return answer_key(record["question_id"], record.get("prompt"), use_prompt)


@dataclass
class OrderedAnswers:
    """Answers in question order (`ordered[i]` answers `questions[i]`, None = missing), plus the leftovers."""

    ordered: list[AnswerLine | None]
    duplicates: list[AnswerLine] = field(default_factory=list)
    unknown: list[AnswerLine] = field(default_factory=list)

    @property
    def missing_positions(self) -> list[int]:
        return [i for i, answer in enumerate(self.ordered) if answer is None]

    def lines(self, keep_unknown: bool = True) -> list[str]:
        """The file's lines: answers in question order, then (optionally) the answers that match no question."""
        lines = [answer.line for answer in self.ordered if answer is not None]
        return lines + [answer.line for answer in self.unknown] if keep_unknown else lines


def order_answers(questions: Sequence[Question], answers: Iterable[AnswerLine], use_prompt: bool) -> OrderedAnswers:
    """Match answers to questions by key. Questions sharing a key take its answers in order; when there are more
    answers than questions for a key, the last ones win and the earlier ones are duplicates."""
    positions: dict[tuple, list[int]] = defaultdict(list)
    for position, question in enumerate(questions):
        positions[question_key(question, use_prompt)].append(position)
    by_key: dict[tuple, list[AnswerLine]] = defaultdict(list)
    unknown = []
    for answer in answers:
        key = record_key(answer.record, use_prompt)
        (by_key[key] if key in positions else unknown).append(answer)
    ordered: list[AnswerLine | None] = [None] * len(questions)
    duplicates = []
    for key, key_answers in by_key.items():
        surplus = len(key_answers) - len(positions[key])
        if surplus > 0:
            duplicates.extend(key_answers[:surplus])
            key_answers = key_answers[surplus:]
        for position, answer in zip(positions[key], key_answers):
            ordered[position] = answer
    return OrderedAnswers(ordered=ordered, duplicates=duplicates, unknown=unknown)


def write_answer_lines(path: str | Path, lines: Sequence[str]) -> None:
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def expand_chunk_paths(patterns: Sequence[str]) -> list[Path]:
    """Chunk files as given; a pattern that is not a file is globbed (sorted by the numbers in the name)."""
    paths: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_file():
            paths.append(Path(pattern))
            continue
        matches = sorted(glob.glob(pattern), key=_natural_key)
        if not matches:
            raise UserError(f"no answers file matches {pattern!r}; check the --chunks paths")
        paths.extend(Path(m) for m in matches)
    return paths


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def merge_answer_files(questions: Sequence[Question], chunk_paths: Sequence[Path], output: str | Path,
                       require_complete: bool = False) -> OrderedAnswers:
    """Concatenate chunk files, order the answers as the questions, write `output` atomically, report problems."""
    answers: list[AnswerLine] = []
    for path in chunk_paths:
        read = read_answer_lines(path)
        if read.dropped_tail is not None:
            print(f"warning: {path}: dropped a half-written last line (a killed run); rerun that chunk to answer "
                  "its question", file=sys.stderr)
        answers.extend(read.answers)
    use_prompt = not ids_are_unique(questions)
    result = order_answers(questions, answers, use_prompt)
    missing = result.missing_positions
    problems = {
        "missing": [questions[i].question_id for i in missing],
        "duplicate": [a.record["question_id"] for a in result.duplicates],
        "unknown": [a.record["question_id"] for a in result.unknown],
    }
    if require_complete and missing:
        raise UserError(f"{len(missing)} of {len(questions)} questions have no answer in the chunk files "
                        f"(e.g. question_id {_examples(problems['missing'])}); rerun the answering step, it resumes")
    write_answer_lines(output, result.lines())
    explanations = {"missing": "questions have no answer (they score as wrong)",
                    "duplicate": "answers repeat an answered question (the last one is kept)",
                    "unknown": "answers match no question (kept at the end; scorers ignore them)"}
    for kind, ids in problems.items():
        if ids:
            print(f"warning: {len(ids)} {explanations[kind]}, e.g. question_id {_examples(ids)}", file=sys.stderr)
    print(f"merged {len(answers)} answers from {len(chunk_paths)} file(s) into {output}: "
          f"{len(questions) - len(missing)}/{len(questions)} questions answered", file=sys.stderr)
    return result


def _examples(ids: Sequence) -> str:
    return ", ".join(json.dumps(x, ensure_ascii=False) for x in ids[:MAX_EXAMPLES])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from xmodelvlm.eval.benchmarks import BENCHMARKS, DEFAULT_DATA_ROOT

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", required=True, help=f"one of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--question-file", default=None, help="the question file answered, if not the default")
    parser.add_argument("--chunks", nargs="+", required=True, help="chunk answer files, or glob patterns")
    parser.add_argument("--output", type=Path, required=True, help="merged answers file (written atomically)")
    parser.add_argument("--require-complete", action="store_true",
                        help="fail (exit 2) instead of writing a file with unanswered questions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> OrderedAnswers:
    from xmodelvlm.eval.benchmarks import get_benchmark

    args = parse_args(argv)
    benchmark = get_benchmark(args.bench)
    questions = benchmark.read_questions(args.data_root, args.question_file)
    return merge_answer_files(questions, expand_chunk_paths(args.chunks), args.output, args.require_complete)


if __name__ == "__main__":
    run_cli(main)
