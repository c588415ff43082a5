"""Benchmark question readers: every benchmark's question file becomes a list of `Question`.

Each reader reproduces the user message LLaVA-1.5's answering scripts build (`model_vqa_loader`,
`model_vqa_science`, `model_vqa_mmbench`), without the `<image>` token: the answering engine adds the image
placeholder itself, and writes `Question.text` as the answers file's "prompt". Images are loaded lazily through
`ImageRef`, so reading 12k questions costs no image decoding.

Three formats:
- LLaVA JSONL (GQA, POPE, MME, TextVQA, VizWiz, MM-Vet): one `{"question_id", "image"?, "text", ...}` per line;
  the text already carries the benchmark's answer-format suffix and is used as is.
- ScienceQA conversation JSON (`llava_test_CQM-A.json`).
- MMBench TSV with base64 images.
"""
from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

from PIL import Image

from xmodelvlm.constants import DEFAULT_IMAGE_TOKEN
from xmodelvlm.errors import UserError
from xmodelvlm.utils import iter_jsonl

QuestionId = Union[int, str]

# The suffix LLaVA's `--single-pred-prompt` appends for multiple-choice sets (ScienceQA, MMBench).
OPTION_LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
# MMBench-CN's translation of that suffix (`--lang cn` in LLaVA's model_vqa_mmbench).
OPTION_LETTER_SUFFIX_CN = "\n请直接回答选项字母。"
# model_vqa_mmbench only ever looks at these four option columns.
MMBENCH_OPTION_LETTERS = ("A", "B", "C", "D")
# Cells pandas.read_table turns into NaN by default. LLaVA reads the TSV with pandas, so an option or hint
# spelled like this is "absent" in the official prompt; we mirror that to build identical prompts.
PANDAS_DEFAULT_NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
# Base64 images make MMBench cells far larger than csv's default 128 KiB field limit.
_TSV_FIELD_SIZE_LIMIT = 2**31 - 1


class ImageLoadError(Exception):
    """An image that is missing or cannot be decoded. The answering engine catches it, records the error in
    that answer's metadata and goes on; scorers then count the answer as wrong."""


@dataclass(frozen=True)
class ImageRef:
    """Where a question's image lives: a file (`path`) or base64-encoded bytes (`base64_data`, MMBench)."""

    question_id: QuestionId
    path: Path | None = None
    base64_data: str | None = None
    relpath: str | None = None  # the image field exactly as the question file writes it (VizWiz submission)

    @classmethod
    def from_file(cls, question_id: QuestionId, image_folder: Path, relpath: str) -> "ImageRef":
        return cls(question_id=question_id, path=Path(image_folder) / relpath, relpath=relpath)

    @classmethod
    def from_base64(cls, question_id: QuestionId, data: str) -> "ImageRef":
        return cls(question_id=question_id, base64_data=data)

    def describe(self) -> str:
        return str(self.path) if self.path is not None else "base64 image in the question file"

    def load(self) -> Image.Image:
        """Decode the image as RGB; raise `ImageLoadError` naming the question and the source on failure."""
        try:
            if self.path is not None:
                with Image.open(self.path) as opened:
                    opened.load()  # force the full decode now so a truncated file fails here, not later
                    return opened.convert("RGB")
            raw = base64.b64decode(self.base64_data or "", validate=False)
            with Image.open(io.BytesIO(raw)) as opened:
                opened.load()
                return opened.convert("RGB")
        except (OSError, ValueError, binascii.Error, Image.DecompressionBombError) as exc:
            # FileNotFoundError and PIL's UnidentifiedImageError are both OSErrors.
            reason = f"{type(exc).__name__}: {exc}"
            raise ImageLoadError(
                f"question {self.question_id!r}: cannot load image {self.describe()} ({reason})"
            ) from exc


@dataclass
class Question:
    question_id: QuestionId  # exactly as in the file (JSON type kept, so answers files round-trip)
    text: str                # the user message without "<image>", incl. the suffix; the answers file's "prompt"
    image: ImageRef | None   # None for text-only questions
    metadata: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# LLaVA JSONL question files
# ---------------------------------------------------------------------------------------------------------

def read_llava_jsonl(path: str | Path, image_folder: str | Path | None) -> list[Question]:
    """`{"question_id", "image"?, "text", "category"?, ...}` per line; keys other than question_id, text and
    image go to `metadata` (e.g. "category")."""
    path = Path(path)
    questions = []
    for line_number, record in _iter_jsonl_objects(path):
        question_id = _required_id(record, "question_id", path, f"line {line_number}")
        text = _required_str(record, "text", path, f"line {line_number}")
        image = None
        if record.get("image") is not None:
            image_name = _required_str(record, "image", path, f"line {line_number}")
            image = ImageRef.from_file(question_id, _image_folder_or_fail(image_folder, path), image_name)
        metadata = {k: v for k, v in record.items() if k not in ("question_id", "text", "image")}
        questions.append(Question(question_id=question_id, text=text, image=image, metadata=metadata))
    return questions


def _iter_jsonl_objects(path: Path) -> Iterator[tuple[int, dict]]:
    for line_number, record in iter_jsonl(path, not_found=f"question file not found: {path}",
                                          expectation="; expected one JSON object per line"):
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {line_number} is a JSON {type(record).__name__}, expected an object "
                            "with fields question_id and text")
        yield line_number, record


# ---------------------------------------------------------------------------------------------------------
# ScienceQA conversation JSON
# ---------------------------------------------------------------------------------------------------------

def read_sqa_conversations(path: str | Path, image_folder: str | Path | None) -> list[Question]:
    """`llava_test_CQM-A.json`: a JSON list of `{"id", "image"?, "conversations": [human, gpt]}`.

    As in LLaVA's model_vqa_science: text = first human value with "<image>" removed, stripped, plus the
    option-letter suffix. question_id = "id"."""
    path = Path(path)
    with _open_question_file(path) as handle:
        try:
            records = json.load(handle)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected the LLaVA "
                            "ScienceQA conversation list (llava_test_CQM-A.json)") from None
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a JSON list of conversations, found a JSON {type(records).__name__}")
    questions = []
    for position, record in enumerate(records):
        where = f"entry {position}"
        if not isinstance(record, dict):
            raise UserError(f"{path}: {where} is a JSON {type(record).__name__}, expected an object with "
                            "fields id and conversations")
        question_id = _required_id(record, "id", path, where)
        human_text = _first_human_value(record, path, where)
        text = human_text.replace(DEFAULT_IMAGE_TOKEN, "").strip() + OPTION_LETTER_SUFFIX
        image = None
        if record.get("image"):
            image_name = _required_str(record, "image", path, where)
            image = ImageRef.from_file(question_id, _image_folder_or_fail(image_folder, path), image_name)
        questions.append(Question(question_id=question_id, text=text, image=image, metadata={}))
    return questions


def _first_human_value(record: dict, path: Path, where: str) -> str:
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise UserError(f"{path}: {where} (id {record.get('id')!r}) has no field \"conversations\" "
                        "(a non-empty list of turns)")
    first = conversations[0]
    if not isinstance(first, dict) or not isinstance(first.get("value"), str):
        raise UserError(f"{path}: {where} (id {record.get('id')!r}): conversations[0] needs a string "
                        "field \"value\"")
    return first["value"]


# ---------------------------------------------------------------------------------------------------------
# MMBench TSV
# ---------------------------------------------------------------------------------------------------------

def read_mmbench_tsv(path: str | Path, lang: str = "en") -> list[Question]:
    """MMBench TSV (`index, question, hint, A, B, C, D, answer, category, image, ...`), one question per row.

    Prompt as model_vqa_mmbench builds it: [hint + "\\n"] + question + "\\nA. opt" per option + suffix. Options
    are taken from A to D up to the first absent one (LLaVA stops there). question_id = int(index); circular
    copies of a question are separate rows with index + k * 1e6."""
    if lang not in ("en", "cn"):
        raise ValueError(f"lang must be 'en' or 'cn', got {lang!r}")
    suffix = OPTION_LETTER_SUFFIX_CN if lang == "cn" else OPTION_LETTER_SUFFIX
    path = Path(path)
    questions = []
    for row_number, row in _iter_tsv_rows(path):
        where = f"row {row_number}"
        index = _mmbench_index(row, path, where)
        question = _required_cell(row, "question", path, where)
        image_data = _required_cell(row, "image", path, where)
        options = _mmbench_options(row)
        hint = row.get("hint")
        text = mmbench_prompt(question, None if _is_absent(hint) else hint, options, suffix)
        answer = row.get("answer")
        metadata = {
            "index": index,
            "options": options,
            "answer": None if _is_absent(answer) else answer,
            "category": row.get("category"),
            "l2_category": row.get("l2-category"),
            "split": row.get("split"),
            "question": question,
            "hint": None if _is_absent(hint) else hint,
            # every cell but the image, as pandas would read it (None = NaN), for the submission sheet
            "tsv_row": {column: _pandas_cell(value) for column, value in row.items() if column != "image"},
        }
        questions.append(Question(question_id=index, text=text,
                                  image=ImageRef.from_base64(index, image_data), metadata=metadata))
    return questions


def mmbench_prompt(question: str, hint: str | None, options: dict[str, str], suffix: str) -> str:
    text = question if hint is None else f"{hint}\n{question}"
    for letter, option in options.items():
        text += f"\n{letter}. {option}"
    return text + suffix


def read_mmbench_columns(path: str | Path) -> list[str]:
    """The TSV's header, so the submission writer can keep exactly the columns the file has."""
    with _open_question_file(Path(path)) as handle:
        header = next(csv.reader(handle, delimiter="\t"), None)
    return list(header or [])


def _iter_tsv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    csv.field_size_limit(_TSV_FIELD_SIZE_LIMIT)
    with _open_question_file(path) as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if not header:
            raise UserError(f"{path}: empty file; expected an MMBench TSV with a header row")
        for column in ("index", "question", "A", "B", "image"):
            if column not in header:
                raise UserError(f"{path}: header has no column \"{column}\"; expected an MMBench TSV "
                                "(index, question, hint, A, B, C, D, answer, category, image, ...)")
        for row_number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                raise UserError(f"{path}: row {row_number} (line {reader.line_num}) has {len(cells)} cells, "
                                f"the header has {len(header)}; the TSV is truncated or not tab-separated")
            yield row_number, dict(zip(header, cells))


def _mmbench_index(row: dict[str, str], path: Path, where: str) -> int:
    raw = row.get("index", "")
    try:
        return int(raw)
    except ValueError:
        try:
            as_float = float(raw)  # pandas writes integer indexes of float columns as "12.0"
        except ValueError:
            as_float = math.nan
        if as_float.is_integer():
            return int(as_float)
        raise UserError(f"{path}: {where}: field \"index\" is {raw!r}, expected an integer") from None


def _mmbench_options(row: dict[str, str]) -> dict[str, str]:
    options = {}
    for letter in MMBENCH_OPTION_LETTERS:
        value = row.get(letter)
        if _is_absent(value):
            break  # LLaVA's get_options stops at the first missing option
        options[letter] = value
    return options


def _is_absent(value: str | None) -> bool:
    """LLaVA's `is_none` after pandas parsing: NaN (pandas' NA spellings) or the strings 'nan'/'none'."""
    if value is None:
        return True
    return value in PANDAS_DEFAULT_NA_STRINGS or value.lower() in ("nan", "none")


def _pandas_cell(value: str | None) -> str | None:
    return None if value is None or value in PANDAS_DEFAULT_NA_STRINGS else value


def _required_cell(row: dict[str, str], column: str, path: Path, where: str) -> str:
    value = row.get(column)
    if value is None or value == "":
        raise UserError(f"{path}: {where}: field \"{column}\" is empty")
    return value


# ---------------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------------

def _open_question_file(path: Path):
    if not path.is_file():
        raise UserError(f"question file not found: {path}")
    return open(path, encoding="utf-8", newline="")


def _image_folder_or_fail(image_folder: str | Path | None, path: Path) -> Path:
    if image_folder is None:
        raise UserError(f"{path}: questions reference images but no image folder was given")
    return Path(image_folder)


def _required_id(record: dict, key: str, path: Path, where: str) -> QuestionId:
    if key not in record:
        raise UserError(f"{path}: {where} has no field \"{key}\"")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UserError(f"{path}: {where}: field \"{key}\" must be a string or an integer, "
                        f"got {json.dumps(value)}")
    return value


def _required_str(record: dict, key: str, path: Path, where: str) -> str:
    if key not in record:
        raise UserError(f"{path}: {where} has no field \"{key}\"")
    value = record[key]
    if not isinstance(value, str):
        raise UserError(f"{path}: {where}: field \"{key}\" must be a string, got {json.dumps(value)[:80]}")
    return value
