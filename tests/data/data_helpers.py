"""Helpers to write LLaVA-format data files in the data-pipeline tests."""
from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def conv(*pairs, image: str | None = None, id=None) -> dict:
    """A LLaVA record: conv(("human", "q"), ("gpt", "a"), image="red.png", id=3)."""
    record = {"conversations": [{"from": role, "value": value} for role, value in pairs]}
    if id is not None:
        record["id"] = id
    if image is not None:
        record["image"] = image
    return record
