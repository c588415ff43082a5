"""What a checkpoint directory holds, and which CLIP tower goes with it.

The released `config.json` names the CLIP directory by an absolute path on the authors' machine, which never
exists for a user. The tower is resolved in this order:
1. an explicit `vision_tower` (`--vision-tower`): a CLIP ViT directory (config, weights, preprocessor config);
2. the configured `mm_vision_tower`, if it happens to exist;
3. the tower weights stored in the checkpoint itself (the released file holds them), with the tower config stored
   in our checkpoints or, for the released one, a config read off the stored tensor shapes (ViT-L/14-336) —
   said in one log line.
Neither → one error naming `--vision-tower`.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from transformers import CLIPVisionConfig

from ..errors import UserError
from .configuration import CLIP_VIT_L_336, XmodelVLMConfig
from .vision_tower import is_clip_directory, load_clip_vision_config

logger = logging.getLogger("xmodelvlm")

VISION_TOWER_PREFIX = "model.vision_tower."
_CLIP_PREFIX = VISION_TOWER_PREFIX + "vision_tower.vision_model."


def stored_tensor_files(model_dir: str | os.PathLike) -> dict[str, Path]:
    """Tensor name → the safetensors file holding it, for a single-file or sharded checkpoint."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model_dir / shard for name, shard in weight_map.items()}
    single = model_dir / "model.safetensors"
    if not single.is_file():
        return {}
    from safetensors import safe_open
    with safe_open(single, framework="pt") as f:
        return {name: single for name in f.keys()}


def stores_vision_tower(files: dict[str, Path]) -> bool:
    return any(name.startswith(VISION_TOWER_PREFIX) for name in files)


def infer_vision_config(files: dict[str, Path]) -> CLIPVisionConfig:
    """Rebuild the CLIP tower's config from the stored tensor shapes (for the released file: ViT-L/14-336).

    Heads are hidden/64, as in every OpenAI CLIP ViT; activation and epsilon are CLIP's."""
    from safetensors import safe_open

    def shape(name: str) -> list[int]:
        with safe_open(files[_CLIP_PREFIX + name], framework="pt") as f:
            return list(f.get_slice(_CLIP_PREFIX + name).get_shape())

    hidden, _, patch, _ = shape("embeddings.patch_embedding.weight")
    num_positions = shape("embeddings.position_embedding.weight")[0]
    layer_ids = {n[len(_CLIP_PREFIX):].split(".")[2] for n in files if n.startswith(_CLIP_PREFIX + "encoder.layers.")}
    fields = dict(CLIP_VIT_L_336)
    fields.update(hidden_size=hidden, patch_size=patch, num_hidden_layers=len(layer_ids),
                  intermediate_size=shape("encoder.layers.0.mlp.fc1.weight")[0],
                  num_attention_heads=max(1, hidden // 64),
                  image_size=math.isqrt(num_positions - 1) * patch)
    return CLIPVisionConfig(**fields)


def resolve_vision_tower(config: XmodelVLMConfig, model_dir: Path, vision_tower: str | None,
                         files: dict[str, Path]) -> str | None:
    """Set `config`'s tower config for the tower we will use; return the CLIP directory, or None when the
    checkpoint's own tower weights are used."""
    if vision_tower is not None:
        if not is_clip_directory(vision_tower):
            raise UserError(f"--vision-tower {vision_tower}: not a CLIP directory (no config.json there)")
        clip_dir = str(vision_tower)
    elif is_clip_directory(config.mm_vision_tower):
        clip_dir = config.mm_vision_tower
    else:
        clip_dir = None
    if clip_dir is not None:
        config.set_vision_tower_config(load_clip_vision_config(clip_dir))
        config.mm_vision_tower = clip_dir
        return clip_dir
    if not stores_vision_tower(files):
        raise UserError(f"no vision tower: the configured mm_vision_tower {config.mm_vision_tower!r} does not exist "
                        "and the checkpoint stores no tower weights; pass --vision-tower "
                        "/path/to/clip-vit-large-patch14-336")
    if config.vision_config:
        source = "the tower config stored in config.json"
    else:
        config.set_vision_tower_config(infer_vision_config(files))
        source = "a CLIP config read off the stored tensor shapes"
    logger.warning("vision tower: %s not found; using the tower weights stored in %s with %s "
                   "(pass --vision-tower to use a CLIP directory)", config.mm_vision_tower, model_dir, source)
    return None


def check_model_dir(model_path: str | os.PathLike) -> Path:
    model_dir = Path(model_path)
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir} (pass the checkpoint directory with --model-path)")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} has no config.json; is it a checkpoint directory? (a stage-1 output holding "
                        "only mm_projector.bin is loaded by stage 2 via --pretrain_mm_mlp_adapter)")
    return model_dir


def load_config(model_dir: Path) -> XmodelVLMConfig:
    try:
        raw = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{model_dir / 'config.json'} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if raw.get("model_type") != XmodelVLMConfig.model_type:
        raise UserError(f"{model_dir} holds a {raw.get('model_type')!r} model, not an Xmodel-VLM checkpoint "
                        f"(model_type {XmodelVLMConfig.model_type!r})")
    return XmodelVLMConfig.from_pretrained(model_dir)
