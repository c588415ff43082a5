"""Small I/O helpers: atomic writes and line-appending, so an interrupted run never leaves a corrupt file."""
from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


class quiet_transformers:
    """Silence transformers' warnings (e.g. a load report listing keys we know are absent) inside a block."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging
        self._logging = hf_logging
        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        self._logging.set_verbosity(self._level)
        return False


def read_json_file(path: str | os.PathLike, not_found: str | None = None) -> Any:
    """Parse a JSON file. A missing file raises `UserError(not_found)` (or a plain "not found" line), bad JSON a
    `UserError` naming the file and line — the user can fix both."""
    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(not_found or f"file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def iter_jsonl(path: str | os.PathLike, not_found: str | None = None, expectation: str = ""):
    """Yield `(line_number, value)` for each non-blank line of a JSON Lines file; a missing file or a line that is
    not JSON raises `UserError` naming the file and line (`expectation` is appended to say what was wanted)."""
    from .errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(not_found or f"file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {line_number} is not valid JSON ({exc.msg}){expectation}") from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a torch.distributed rendezvous (MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
