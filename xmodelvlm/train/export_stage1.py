"""Assemble "stage 1 alone" as a complete Xmodel-VLM checkpoint, so it can be evaluated like any other.

    python -m xmodelvlm.train.export_stage1 --model_name_or_path LM_DIR --vision_tower CLIP_DIR \\
        --pretrain_mm_mlp_adapter STAGE1_OUT/mm_projector.bin --output_dir STAGE1_FULL

Stage 1 saves only `mm_projector.bin` (+ its config.json). The model stage 2 starts from is the LM + the frozen CLIP
tower + that projector; this builds exactly that model with the trainer's own setup code
(`model_setup.build_model`, the same arguments `scripts/finetune.sh` passes) and saves it the way the trainer saves
a full checkpoint: `model.safetensors` (tower included), `config.json` (`use_cache` on), `generation_config.json`,
the tokenizer files and the CLIP `preprocessor_config.json`. `load_pretrained_model`, `inference.py` and the
benchmark scripts then take it as they take stage 2's output. The directory appears whole or not at all (written
beside it, then renamed).

The vision settings (feature layer, aspect-ratio mode, projector type) are read from the config.json stage 1 wrote
next to its projector, so the exported model sees images as stage 1 trained it to.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from ..errors import UserError, run_cli

logger = logging.getLogger("xmodelvlm.train")


def _stage1_settings(projector_path: Path) -> dict:
    """Fields of the config.json stage 1 saved beside its projector (empty when there is none)."""
    config_path = projector_path.parent / "config.json"
    if not config_path.is_file():
        return {}
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{config_path} is not readable JSON ({exc}); it is stage 1's config, rerun stage 1") from None


def build_stage1_model(lm_path, vision_tower, projector_path, model_max_length: int | None = None):
    """(model, tokenizer, image_processor): the LM + CLIP tower + stage-1 projector, as stage 2 builds it."""
    from ..data.dataset import DataArguments
    from .arguments import ModelArguments, TrainingArguments
    from .model_setup import build_model

    projector_path = Path(projector_path)
    if not projector_path.is_file():
        raise UserError(f"projector weights not found: {projector_path} (stage 1 writes OUTPUT_DIR/mm_projector.bin)")
    for flag, path in (("--model_name_or_path", lm_path), ("--vision_tower", vision_tower)):
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{flag} {path}: not a checkpoint directory (no config.json)")
    stage1 = _stage1_settings(projector_path)
    model_args = ModelArguments(
        model_name_or_path=str(lm_path), version="v1", vision_tower=str(vision_tower),
        pretrain_mm_mlp_adapter=str(projector_path), mm_projector_type=stage1.get("mm_projector_type"),
        mm_vision_select_layer=stage1.get("mm_vision_select_layer", -2),
        mm_vision_select_feature=stage1.get("mm_vision_select_feature", "patch"))
    # build_model never reads the data; DataArguments only needs a non-empty path list.
    data_args = DataArguments(data_path=[str(projector_path)],
                              image_aspect_ratio=stage1.get("image_aspect_ratio", "pad"))
    max_length = model_max_length or stage1.get("tokenizer_model_max_length") or 2048
    training_args = TrainingArguments(output_dir=str(projector_path.parent), use_cpu=True, report_to="none",
                                      model_max_length=int(max_length))
    return build_model(model_args, data_args, training_args)


def save_full_checkpoint(model, tokenizer, image_processor, output_dir) -> Path:
    """Write what `XmodelVLMTrainer` writes for a full checkpoint, atomically (a sibling temp dir, then rename)."""
    from ..model.tokenizer import save_tokenizer
    from .model_setup import get_vlm

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_dir.parent / f".{output_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vlm = get_vlm(model)
    use_cache, vlm.config.use_cache = vlm.config.use_cache, True  # trained with it off; inference wants it on
    try:
        vlm.save_pretrained(tmp)
    finally:
        vlm.config.use_cache = use_cache
    save_tokenizer(tokenizer, tmp)
    image_processor.save_pretrained(tmp)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    return output_dir


def export_stage1(lm_path, vision_tower, projector_path, output_dir, model_max_length: int | None = None) -> Path:
    """Build the stage-1 model and save it as a complete checkpoint in `output_dir`; returns `output_dir`."""
    model, tokenizer, image_processor = build_stage1_model(lm_path, vision_tower, projector_path, model_max_length)
    return save_full_checkpoint(model, tokenizer, image_processor, output_dir)


def main(argv: list[str] | None = None) -> int:
    from ..errors import ArgumentParser

    parser = ArgumentParser(prog="python -m xmodelvlm.train.export_stage1",
                            description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="the LM stage 1 ran on (Xmodel-LM layout)")
    parser.add_argument("--vision_tower", required=True, help="the CLIP directory stage 1 ran with")
    parser.add_argument("--pretrain_mm_mlp_adapter", required=True, help="stage 1's mm_projector.bin")
    parser.add_argument("--output_dir", required=True, help="where the complete checkpoint goes")
    parser.add_argument("--model_max_length", type=int, default=None,
                        help="recorded as tokenizer_model_max_length (default: stage 1's)")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO, stream=sys.stderr)
    out = export_stage1(args.model_name_or_path, args.vision_tower, args.pretrain_mm_mlp_adapter, args.output_dir,
                        args.model_max_length)
    print(f"wrote the stage-1 model as a complete checkpoint to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
