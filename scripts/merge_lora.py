#!/usr/bin/env python
"""Merge a LoRA run's adapter (and its non-LoRA trainables, e.g. the projector) into the base model and write a
full Xmodel-VLM checkpoint that `load_pretrained_model` / inference.py load directly.

    python scripts/merge_lora.py --model-path checkpoints/finetune-lora --model-base LM_OR_VLM_DIR \\
        --save-path checkpoints/finetune-merged [--vision-tower CLIP_DIR] [--dtype bfloat16]

`--model-base` is the LoRA run's `--model_name_or_path`; `--vision-tower` is needed when that base is an LM-only
checkpoint and the CLIP folder recorded in the LoRA run's config.json is not on this machine.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from xmodelvlm.errors import run_cli  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", required=True, help="the LoRA run's output_dir (adapter_config.json, ...)")
    parser.add_argument("--model-base", required=True, help="the LoRA run's --model_name_or_path")
    parser.add_argument("--save-path", required=True, help="where to write the merged checkpoint")
    parser.add_argument("--vision-tower", help="CLIP directory (default: the one the LoRA run recorded)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the saved weights (default float32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from xmodelvlm.train.lora import merge_lora_checkpoint
    out = merge_lora_checkpoint(args.model_path, args.model_base, args.save_path, args.vision_tower, args.dtype)
    print(f"wrote the merged checkpoint to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
