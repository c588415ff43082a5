"""Fixtures for the data-pipeline tests: the real tokenizer, a 28-px CLIP processor and LLaVA-format files."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tokenizer(real_tokenizer_dir):
    from xmodelvlm import load_tokenizer
    return load_tokenizer(real_tokenizer_dir)


@pytest.fixture(scope="session")
def image_processor():
    from xmodelvlm.model.vision_tower import standard_clip_processor
    return standard_clip_processor(28)


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """red.png (wide 40×20), blue.png (20×20), corrupt.png (not an image)."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(folder / "red.png")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(folder / "blue.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return folder
