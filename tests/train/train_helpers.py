"""Helpers for the training tests: a tiny LM-only checkpoint in Xmodel-LM's layout, tiny LLaVA-format data (small
PNGs, caption and conversation files), and running train.py in a fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from xmodelvlm.utils import free_port  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[2]
COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "bar")


def write_lm_only_checkpoint(out_dir: Path, vlm, tokenizer_dir: Path) -> Path:
    """The tiny VLM's LM weights as an Xmodel-LM checkpoint (`model_type "xmodel"`, remote-code auto_map)."""
    from xmodelvlm.model.make_tiny import save_xmodel_lm
    return save_xmodel_lm(out_dir, vlm.state_dict(), vlm.config.to_dict(), tokenizer_dir)


def write_tiny_data(root: Path, num_images: int = 16, text_only: int = 4) -> dict:
    """PNGs of coloured shapes, a LLaVA-Pretrain-style caption file and a LLaVA-665K-style conversation file."""
    from PIL import Image, ImageDraw

    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    pretrain, instruct = [], []
    names = list(COLORS)
    for i in range(num_images):
        color, shape = names[i % len(names)], SHAPES[(i // len(names)) % len(SHAPES)]
        size = (40, 28) if i % 3 else (28, 28)      # some non-square, for the pad path
        image = Image.new("RGB", size, (245, 245, 245))
        box = (4, 4, 24, 24) if shape == "square" else (2, 10, 26, 18)
        ImageDraw.Draw(image).rectangle(box, fill=COLORS[color])
        name = f"{i:03d}.png"
        image.save(images / name)
        pretrain.append({"id": f"cap{i}", "image": name, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": f"a {color} {shape}."}]})
        instruct.append({"id": f"vqa{i}", "image": name, "conversations": [
            {"from": "human", "value": "What color is the shape?\n<image>"},
            {"from": "gpt", "value": f"It is {color}."},
            {"from": "human", "value": "Which shape is it?"},
            {"from": "gpt", "value": f"A {shape}."}]})
    for i in range(text_only):
        instruct.append({"id": f"text{i}", "conversations": [
            {"from": "human", "value": f"Say the number {i}."},
            {"from": "gpt", "value": f"The number is {i}."}]})
    (root / "pretrain.json").write_text(json.dumps(pretrain))
    (root / "instruct.jsonl").write_text("\n".join(json.dumps(r) for r in instruct) + "\n")
    return {"images": images, "pretrain": root / "pretrain.json", "instruct": root / "instruct.jsonl"}


def train_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("OMP_NUM_THREADS", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def run_train(args: list[str], timeout: int = 240, env: dict | None = None, check: bool = True,
              launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `python train.py ARGS` (or `LAUNCHER train.py ARGS`) in a fresh process."""
    cmd = (launcher or [sys.executable]) + [str(REPO / "train.py")] + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=REPO, env=env or train_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def stage1_args(assets, output_dir, *extra) -> list:
    return ["--model_name_or_path", assets["lm"], "--vision_tower", assets["clip"], "--version", "plain",
            "--data_path", assets["pretrain"], "--image_folder", assets["images"], "--tune_mm_mlp_adapter", "True",
            "--mm_projector_type", "xdpnetv10_4", "--output_dir", output_dir, "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-2", "--mm_projector_lr", "1e-2", "--lr_scheduler_type", "cosine",
            "--warmup_ratio", "0.1", "--weight_decay", "0.0", "--logging_steps", "1", "--save_strategy", "no",
            "--report_to", "none", "--use_cpu", "True", "--seed", "7", "--dataloader_num_workers", "0",
            "--disable_tqdm", "True", "--model_max_length", "64", *extra]


def stage2_args(assets, output_dir, *extra) -> list:
    return ["--model_name_or_path", assets["lm"], "--vision_tower", assets["clip"], "--version", "v1",
            "--data_path", assets["instruct"], "--image_folder", assets["images"], "--output_dir", output_dir,
            "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--lr_scheduler_type", "cosine",
            "--warmup_ratio", "0.03", "--weight_decay", "0.0", "--logging_steps", "1", "--report_to", "none",
            "--use_cpu", "True", "--seed", "7", "--dataloader_num_workers", "0", "--disable_tqdm", "True",
            "--model_max_length", "128", "--group_by_modality_length", "True", *extra]


def logged_losses(output_dir: Path) -> dict[int, float]:
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
