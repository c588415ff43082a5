"""Fixtures for the benchmark reader/scorer tests (the file writers live in eval_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty LLaVA-1.5-style `playground/data/eval` folder."""
    root = tmp_path / "playground" / "data" / "eval"
    root.mkdir(parents=True)
    return root
