"""Shared fixtures: the real tokenizer files from ../shared/fixtures and tiny checkpoints in the released layout."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
REAL_TOKENIZER = FIXTURES / "xmodel_tokenizer"
RELEASED_CONFIG = FIXTURES / "xmodel_vlm_released_config.json"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def real_tokenizer_dir() -> Path:
    if not REAL_TOKENIZER.is_dir():
        pytest.skip(f"the released tokenizer files are not at {REAL_TOKENIZER} (shared fixtures absent)")
    return REAL_TOKENIZER


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """The real tokenizer when the shared fixtures are here; else a small one trained on the spot."""
    if REAL_TOKENIZER.is_dir():
        return REAL_TOKENIZER
    from xmodelvlm.demo.tiny_tokenizer import train_tokenizer
    from xmodelvlm.data.conversation import SYSTEM_V1
    texts = [SYSTEM_V1, "USER: ASSISTANT: What is in the image? A red circle on the left.",
             "Answer the question using a single word or phrase.", "你好，世界"] * 50
    return Path(train_tokenizer(texts, tmp_path_factory.mktemp("tok")).parent)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tiny_tokenizer_dir):
    """(released-layout checkpoint with tower weights, same without tower weights, matching CLIP directory)."""
    from xmodelvlm.model.make_tiny import make_tiny_checkpoint
    root = tmp_path_factory.mktemp("tiny")
    full, towerless, clip = root / "ckpt", root / "ckpt_no_tower", root / "clip"
    make_tiny_checkpoint(full, tiny_tokenizer_dir, clip_dir=clip)
    make_tiny_checkpoint(towerless, tiny_tokenizer_dir, tower_weights=False)
    return full, towerless, clip


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoints) -> Path:
    return tiny_checkpoints[0]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def released_config_path() -> Path:
    if not RELEASED_CONFIG.is_file():
        pytest.skip(f"released config fixture absent ({RELEASED_CONFIG})")
    return RELEASED_CONFIG
