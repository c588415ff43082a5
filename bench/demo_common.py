"""What the demo benchmark scripts share (imported by them; `python bench/X.py` puts bench/ on the path).

- `between_class_share`: how much of a set of tokens' variance one attribute explains.
- `train_flags` / `stage1_flags`: `train.py` flags for the demo's stages, as `bench/demo_variant.py` runs them.
- `short_answer_turns`: a short-answer conversation of a chosen length about a scene.
- `pair_kind`: what a colour-shape pair shares with a scene's objects.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def between_class_share(x: np.ndarray, values: list) -> float:
    """Share of the total variance of rows `x` that the class means of `values` (one label per row) explain."""
    values = np.asarray(values)
    centred = x - x.mean(0)
    between = sum((values == v).sum() * (centred[values == v].mean(0) ** 2).sum() for v in set(values.tolist()))
    return float(between / (centred ** 2).sum())


def pair_kind(pairs: set[tuple[str, str]], colour: str, shape: str) -> str:
    """What the pair (colour, shape) shares with a scene whose objects are `pairs`: "present", or for an absent
    pair its "colour only", its "shape only", "both" (from two objects) or "neither"."""
    if (colour, shape) in pairs:
        return "present"
    same_colour, same_shape = any(c == colour for c, _ in pairs), any(s == shape for _, s in pairs)
    return {(True, False): "colour only", (False, True): "shape only", (True, True): "both"}.get(
        (same_colour, same_shape), "neither")


def train_flags(lm: Path, clip: Path, settings, device: str, seed: int | str | None = None,
                workers: int = 2, logging_steps: int = 50) -> list[str]:
    """The flags both stages share: the demo's projector and grouping, no checkpoints, float32 on a CPU (bf16 + tf32
    on a GPU). Env VISION_LAYER / WEIGHT_DECAY change `--mm_vision_select_layer` (-2) / `--weight_decay` (0);
    `seed` defaults to env TRAIN_SEED, else the `train_seed` setting."""
    prec = ["--bf16", "True", "--tf32", "True"] if device == "cuda" else ["--use_cpu", "True", "--bf16", "False"]
    seed = seed if seed is not None else os.environ.get("TRAIN_SEED", settings.train_seed)
    return ["--model_name_or_path", str(lm), "--vision_tower", str(clip), "--mm_projector_type", settings.projector,
            "--mm_vision_select_layer", os.environ.get("VISION_LAYER", "-2"), "--image_aspect_ratio", "pad", *prec,
            "--eval_strategy", "no", "--save_strategy", "no", "--weight_decay", os.environ.get("WEIGHT_DECAY", "0."),
            "--warmup_steps", "0.03", "--lr_scheduler_type", "cosine", "--logging_steps", str(logging_steps),
            "--model_max_length", "2048", "--gradient_checkpointing", "False",
            "--dataloader_num_workers", str(workers), "--report_to", "none", "--disable_tqdm", "True",
            "--seed", str(seed), "--length_group_steps", str(settings.length_group_steps)]


def stage1_flags(data: Path, output_dir: Path, settings) -> list[str]:
    """Stage 1's own flags: `plain` captions, projector only, the settings' epochs, batch and rate."""
    return ["--version", "plain", "--data_path", str(data / "train" / "pretrain.json"),
            "--image_folder", str(data / "train"), "--tune_mm_mlp_adapter", "True", "--group_by_length", "True",
            "--output_dir", str(output_dir), "--num_train_epochs", str(settings.stage1_epochs),
            "--per_device_train_batch_size", str(settings.stage1_batch), "--learning_rate", str(settings.stage1_lr),
            "--mm_projector_lr", str(settings.stage1_lr)]


def short_answer_turns(scene, rng: np.random.Generator, lo: int, hi: int, mix: dict[str, float],
                       image_after_prob: float = 0.1) -> list[dict]:
    """LO-HI (uniform) short-answer turns about `scene` drawn as the generator draws them: families from `mix`,
    distinct within the conversation until all have been asked, the short-answer suffix, the answer's short form;
    the image goes after the first question with `image_after_prob`, else before it."""
    from xmodelvlm.demo import synthetic_data as sd

    used, turns = set(), []
    for _ in range(int(rng.integers(lo, hi + 1))):
        fam, qa = sd.sample_qa(scene, rng, mix, sd.DEFAULT_POPULARITY, exclude=used)
        used.add(fam)
        turns.append([qa.question + sd.SHORT_ANSWER_SUFFIX, sd._cap(qa.short)])
    turns[0][0] = sd._image_turn(turns[0][0], rng, after_prob=image_after_prob)
    return [{"from": who, "value": text} for q, a in turns for who, text in (("human", q), ("gpt", a))]
