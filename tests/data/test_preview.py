"""`python -m xmodelvlm.data.preview`: marked text, --json, image-token count from the checkpoint, bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from data_helpers import conv, write_json

from xmodelvlm import IGNORE_INDEX, IMAGE_TOKEN_INDEX, tokenizer_image_token
from xmodelvlm.data.conversation import SYSTEM_V1
from xmodelvlm.data.preview import main
from xmodelvlm.errors import run_cli

RECORDS = [
    conv(("human", "What color?\n<image>"), ("gpt", "Red."), image="red.png", id="img-1"),
    conv(("human", "hi"), ("gpt", "hello"), ("human", "你好"), ("gpt", "你好！"), id="text-2"),
    conv(("human", "q"), ("gpt", "bad</s>"), id="bad-3"),
]


@pytest.fixture
def data_file(tmp_path, image_dir):
    return write_json(image_dir.parent / "data.json", RECORDS)


def test_text_output_marks_supervised_spans_and_images(data_file, image_dir, real_tokenizer_dir, capsys):
    assert main(["--data-path", str(data_file), "--image-folder", str(image_dir), "--tokenizer",
                 str(real_tokenizer_dir), "--num", "3"]) == 0
    out = capsys.readouterr().out
    assert "USER:<image×144> \nWhat color? ASSISTANT:[[ Red.</s>]]" in out
    assert "USER: hi ASSISTANT:[[ hello</s>]] USER: 你好 ASSISTANT:[[ 你好！</s>]]" in out
    assert "bad-3" in out and "special token in reply" in out
    assert "2 sample(s) shown, 1 would be skipped" in out


def test_json_output_is_ids_before_expansion_and_labels(data_file, image_dir, real_tokenizer_dir, tokenizer, capsys):
    assert main(["--data-path", str(data_file), "--image-folder", str(image_dir), "--tokenizer",
                 str(real_tokenizer_dir), "--num", "2", "--json"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["id"] for row in rows] == ["img-1", "text-2"]
    first = rows[0]
    assert first["input_ids"].count(IMAGE_TOKEN_INDEX) == 1 and len(first["labels"]) == len(first["input_ids"])
    prompt = SYSTEM_V1 + " USER: <image>\nWhat color? ASSISTANT: Red.</s>"
    assert first["input_ids"] == tokenizer_image_token(prompt, tokenizer)
    assert first["input_ids"][-3:] == first["labels"][-3:] == tokenizer.convert_tokens_to_ids(["▁Red", ".", "</s>"])
    assert set(first["labels"][:-3]) == {IGNORE_INDEX}
    assert "2 sample(s) shown" in captured.err                # the summary stays out of the JSON stream


def test_missing_image_is_a_note_not_an_error(data_file, real_tokenizer_dir, tmp_path, capsys):
    assert main(["--data-path", str(data_file), "--image-folder", str(tmp_path / "elsewhere"), "--tokenizer",
                 str(real_tokenizer_dir), "--num", "1"]) == 0
    out = capsys.readouterr().out
    assert "image not found" in out and "[[ Red.</s>]]" in out


def test_model_path_gives_tokenizer_and_image_token_count(data_file, image_dir, real_tokenizer_dir,
                                                        released_config_path, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(real_tokenizer_dir, checkpoint)
    config = json.loads(released_config_path.read_text())
    config["mm_projector_type"] = "xdpnetv10_1"                     # the older revision: 576 tokens
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert main(["--data-path", str(data_file), "--image-folder", str(image_dir), "--model-path", str(checkpoint),
                 "--num", "1"]) == 0
    assert "<image×576>" in capsys.readouterr().out


def test_truncation_flag_is_applied(data_file, image_dir, real_tokenizer_dir, capsys):
    assert main(["--data-path", str(data_file), "--image-folder", str(image_dir), "--tokenizer",
                 str(real_tokenizer_dir), "--num", "1", "--json", "--num-image-tokens", "4",
                 "--model-max-length", "48"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(row["input_ids"]) + 4 - 1 == 48 and row["labels"][-1] != IGNORE_INDEX


def test_plain_version(data_file, image_dir, real_tokenizer_dir, capsys):
    assert main(["--data-path", str(data_file), "--image-folder", str(image_dir), "--tokenizer",
                 str(real_tokenizer_dir), "--version", "plain", "--num", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["input_ids"][:2] == [1, IMAGE_TOKEN_INDEX] and row["labels"][:2] == [IGNORE_INDEX, IGNORE_INDEX]


def test_bad_input_is_one_line_and_exit_2(tmp_path, real_tokenizer_dir, repo_root):
    result = subprocess.run(
        [sys.executable, "-m", "xmodelvlm.data.preview", "--data-path", str(tmp_path / "missing.json"),
         "--tokenizer", str(real_tokenizer_dir)], capture_output=True, text=True, cwd=repo_root)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: data file not found: {tmp_path / 'missing.json'}"]


@pytest.mark.parametrize("argv, message", [
    (["--data-path", "x.json"], "--model-path"),
    (["--data-path", "x.json", "--tokenizer", "/nonexistent/tok"], "tokenizer directory not found"),
])
def test_bad_flags_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(main, argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_version_exits_2(data_file, real_tokenizer_dir, capsys):
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--data-path", str(data_file), "--tokenizer", str(real_tokenizer_dir), "--version", "v9"])
    assert info.value.code == 2 and "unknown conversation mode" in capsys.readouterr().err
