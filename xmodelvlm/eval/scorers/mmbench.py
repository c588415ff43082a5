"""MMBench / MMBench-CN: the submission sheet LLaVA's `convert_mmbench_for_submission.py` writes, plus a
local CircularEval score when the TSV has answers (the dev split).

The official number is computed by the MMBench server from `submission.xlsx` (with a ChatGPT fallback for
answers it cannot parse). Locally we use this deterministic letter extraction (`extract_option_letter`):
1. the whole answer is a letter, optionally bracketed or followed by "." / ":" ("B", "B.", "(B)", "B)");
2. else the answer starts with a letter in brackets or followed by ".", ")" or ":" and a space/end
   ("B. A cat", "(B) a cat", "B: cat");
3. else it says "answer is B" / "Answer: B" (case-insensitive "answer", capital letter);
4. else the answer equals one option's text (case-insensitive, trimmed), or contains exactly one option's
   text;
5. else no letter (wrong).
The letter must be one of the row's present options. A bare capital word such as "A cat" is *not* read as a
letter (rule 1/2 need punctuation), because "A" there is an article.

CircularEval: circular copies of a question are rows whose index differ by multiples of 10^6, so rows are
grouped by `index % 1_000_000`, and a question counts only if every row of its group is right.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from xmodelvlm.eval.questions import Question
from xmodelvlm.eval.scorers.answers import Answer, format_coverage, match_answers
from xmodelvlm.eval.scorers.xlsx import xlsx_bytes
from xmodelvlm.utils import atomic_write_bytes

CIRCULAR_INDEX_STRIDE = 1_000_000
SUBMISSION_FILE = "submission.xlsx"
# convert_mmbench_for_submission drops these columns and inserts "prediction" at position 6, which gives
# index, question, A, B, C, D, prediction, answer, split for the dev TSV.
SUBMISSION_DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")
PREDICTION_COLUMN_POSITION = 6

_CLOSE = r"[.:：。．)）\]】]"
_BARE_LETTER = re.compile(r"[(（\[【]?([A-Z])[)）\]】]?[.:：。．]?")
_LEADING_LETTER = re.compile(r"[(（\[【]([A-Z])[)）\]】]|([A-Z])" + _CLOSE + r"(?:\s|$)")
_ANSWER_IS = re.compile(r"(?i:answer)(?: is)?\s*[:：]?\s*[(（]?([A-Z])\b")


def extract_option_letter(prediction: str, options: Mapping[str, str]) -> str | None:
    """The option letter a free-form answer names, or None (see the module docstring for the rule)."""
    text = prediction.strip()
    for letter in (_bare_letter(text), _leading_letter(text), _answer_is_letter(text)):
        if letter is not None:
            return letter if letter in options else None
    return _letter_by_option_text(text, options)


def _bare_letter(text: str) -> str | None:
    found = _BARE_LETTER.fullmatch(text)
    return found.group(1) if found else None


def _leading_letter(text: str) -> str | None:
    found = _LEADING_LETTER.match(text)
    return (found.group(1) or found.group(2)) if found else None


def _answer_is_letter(text: str) -> str | None:
    found = _ANSWER_IS.search(text)
    return found.group(1) if found else None


def _letter_by_option_text(text: str, options: Mapping[str, str]) -> str | None:
    lowered = text.lower()
    option_texts = {letter: str(option).strip().lower() for letter, option in options.items()}
    exact = [letter for letter, option in option_texts.items() if option and option == lowered]
    if len(exact) == 1:
        return exact[0]
    contained = [letter for letter, option in option_texts.items() if option and option in lowered]
    return contained[0] if len(contained) == 1 else None


def score_mmbench(questions: Sequence[Question], answers: Sequence[Answer], output_dir: Path,
                  tsv_columns: Sequence[str]) -> dict[str, Any]:
    """Write `output_dir/submission.xlsx`; return CircularEval accuracy (percent) when answers are known."""
    match = match_answers(questions, answers)
    write_submission(Path(output_dir) / SUBMISSION_FILE, match.predictions(), tsv_columns)
    metrics: dict[str, Any] = {"submission": str(Path(output_dir) / SUBMISSION_FILE)}
    metrics.update(circular_eval(match.predictions()))
    metrics.update(match.coverage())
    return metrics


def circular_eval(predictions: Iterable[tuple[Question, str | None]]) -> dict[str, Any]:
    """Group rows by index % 10^6; a group is right when all its rows are. Rows without a ground-truth
    answer (test split) are left out; with none at all, no accuracy is reported."""
    groups: dict[int, list[bool]] = defaultdict(list)
    category_of_group: dict[int, str] = {}
    for question, prediction in predictions:
        expected = question.metadata.get("answer")
        if expected is None:
            continue
        letter = None if prediction is None else extract_option_letter(prediction, question.metadata["options"])
        group = question.metadata["index"] % CIRCULAR_INDEX_STRIDE
        groups[group].append(letter == expected)
        category_of_group.setdefault(group, question.metadata.get("category") or "unknown")
    if not groups:
        return {"num_groups": 0}

    rows = [right for group in groups.values() for right in group]
    by_category: dict[str, list[bool]] = defaultdict(list)
    for group, results in groups.items():
        by_category[category_of_group[group]].append(all(results))
    return {
        "accuracy": 100 * sum(all(results) for results in groups.values()) / len(groups),
        "single_row_accuracy": 100 * sum(rows) / len(rows),
        "num_groups": len(groups),
        "num_rows_with_answer": len(rows),
        "category_accuracy": {category: 100 * sum(marks) / len(marks)
                              for category, marks in sorted(by_category.items())},
    }


def submission_columns(tsv_columns: Sequence[str]) -> list[str]:
    columns = [c for c in tsv_columns if c not in SUBMISSION_DROPPED_COLUMNS]
    columns.insert(min(PREDICTION_COLUMN_POSITION, len(columns)), "prediction")
    return columns


def write_submission(path: Path, predictions: Iterable[tuple[Question, str | None]],
                     tsv_columns: Sequence[str]) -> None:
    """One row per TSV row, in TSV order; the prediction is the raw answer text (empty when missing/failed),
    as upstream writes it."""
    columns = submission_columns(tsv_columns)
    rows = []
    for question, prediction in predictions:
        cells = dict(question.metadata.get("tsv_row", {}))
        cells["index"] = question.metadata["index"]
        cells["prediction"] = prediction
        rows.append([cells.get(column) for column in columns])
    atomic_write_bytes(path, xlsx_bytes(columns, rows))


def summarize_mmbench(metrics: dict[str, Any], name: str = "mmbench") -> str:
    accuracy = (f"CircularEval acc {metrics['accuracy']:.2f} | single-row acc {metrics['single_row_accuracy']:.2f}"
                if "accuracy" in metrics else "no answers in the TSV (test split): submit the sheet")
    return f"{name}: {accuracy} | wrote {metrics['submission']} ({format_coverage(metrics)})"
