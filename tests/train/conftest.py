"""Fixtures for the training tests (helpers live in train_helpers.py)."""
from __future__ import annotations

import pytest

from train_helpers import write_lm_only_checkpoint, write_tiny_data


@pytest.fixture(scope="session")
def train_assets(tmp_path_factory, tiny_tokenizer_dir):
    """{lm, clip, vlm, images, pretrain, instruct}: paths shared by the training tests."""
    from xmodelvlm.model.make_tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("train_assets")
    vlm = make_tiny_checkpoint(root / "vlm", tiny_tokenizer_dir, clip_dir=root / "clip")
    lm = write_lm_only_checkpoint(root / "lm", vlm, tiny_tokenizer_dir)
    data = write_tiny_data(root / "data")
    return {"lm": lm, "clip": root / "clip", "vlm": root / "vlm", **data}
