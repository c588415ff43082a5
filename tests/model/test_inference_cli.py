"""`inference.py` end to end on a tiny released-layout checkpoint, and its one-line errors."""
import subprocess
import sys

from pathlib import Path

import pytest
from PIL import Image

from xmodelvlm import conv_templates, load_pretrained_model, process_images, tokenizer_image_token
from xmodelvlm.errors import run_cli
from xmodelvlm.serve.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.radial_gradient("L").resize((48, 32)).convert("RGB").save(path)
    return path


def api_answer(checkpoint, image_file, question, max_new_tokens=10):
    tokenizer, model, processor, _ = load_pretrained_model(checkpoint, device="cpu")
    conv = conv_templates["v1"].copy()
    conv.append_message(conv.roles[0], "<image>\n" + question)
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt").unsqueeze(0)
    images = process_images([Image.open(image_file)], processor, model.config)
    out = model.generate(ids, images=images, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def run_inference(*args, stdin=None):
    return subprocess.run([sys.executable, str(REPO / "inference.py"), *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=REPO)


@pytest.mark.slow
def test_cli_answer_equals_python_api(tiny_checkpoint, image_file):
    result = run_inference("--model-path", tiny_checkpoint, "--image-file", image_file, "--prompt",
                           "What is in the image?", "--max-new-tokens", 10, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    expected = api_answer(tiny_checkpoint, image_file, "What is in the image?")
    assert expected and result.stdout.strip() == expected
    assert "vision tower" in result.stderr  # logs go to stderr, never stdout


@pytest.mark.slow
def test_interactive_chat_two_turns(tiny_checkpoint, image_file):
    result = run_inference("--model-path", tiny_checkpoint, "--image-file", image_file, "--max-new-tokens", 4,
                           stdin="What is it?\nAnd the colour?\n")
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()]) == 2


def run_main(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exit_info.value.code, err


@pytest.mark.parametrize("case", ["missing_model", "missing_image", "corrupt_image", "conv_mode", "bad_flag",
                                  "image_count"])
def test_user_errors_are_one_line_exit_2(case, tiny_checkpoint, image_file, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8garbage")
    base = ["--model-path", str(tiny_checkpoint), "--image-file", str(image_file), "--prompt", "hi"]
    argv, expected = {
        "missing_model": (["--model-path", str(tmp_path / "none"), "--prompt", "hi"], "model directory not found"),
        "missing_image": (base[:2] + ["--image-file", str(tmp_path / "x.png"), "--prompt", "hi"], "image file not found"),
        "corrupt_image": (base[:2] + ["--image-file", str(corrupt), "--prompt", "hi"], "cannot read image"),
        "conv_mode": (base + ["--conv-mode", "llava_v9"], "unknown conversation mode"),
        "bad_flag": (base + ["--temperatur", "0.2"], "unrecognized arguments"),
        "image_count": (base[:-1] + ["<image> and <image>?"], "2 <image> markers but 1"),
    }[case]
    code, err = run_main(argv + ["--device", "cpu"], capsys)
    lines = [line for line in err if not line.startswith(("Loading weights", "vision tower"))]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
