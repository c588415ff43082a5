"""Write a tiny random checkpoint in the released Xmodel_VLM layout (for smoke tests and CI).

    python -m xmodelvlm.model.make_tiny OUT_DIR [--clip-dir CLIP_OUT] [--no-tower-weights] [--tokenizer DIR]
    python -m xmodelvlm.model.make_tiny LM_DIR --lm-only        # a language-model-only Xmodel-LM checkpoint

The result has the released file set and fields: `config.json` (the released keys, `model_type "xmodelvlm"`,
`mm_projector_type "xdpnetv10_4"`, `mm_vision_tower` = a path that does not exist, no tower config),
`generation_config.json`, one `model.safetensors` with the released tensor names (the CLIP tower under its
transformers-4.x names), and the tokenizer files as shipped (`tokenizer_config.json` naming `XModelTokenizer`).
Only the sizes are tiny. `--clip-dir` also writes a matching whole-`CLIPModel` directory with its preprocessor
config, like `openai/clip-vit-large-patch14-336`. `--lm-only` writes a stage-1 starting point instead: the LM
alone in Xmodel-LM's layout (Llama tensor names, `model_type "xmodel"`, an `auto_map` naming remote code that is
never run).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from ..errors import UserError, run_cli
from .configuration import XmodelVLMConfig
from .modeling import XmodelVLMForCausalLM
from .tokenizer import find_sentencepiece_file
from .vision_tower import standard_clip_processor

AUTHORS_CLIP_PATH = "/data1/someone/LLaVA/llava/model/clip-vit-large-patch14-336/"
FIXTURE_TOKENIZER = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "xmodel_tokenizer"

# The released config.json's fields (SPEC §2) with tiny sizes; no `vision_config`, as released.
RELEASED_FIELDS = {
    "_name_or_path": "/data/models/e_line/xl/iter-0504000/",
    "architectures": ["XmodelLMForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_xmodel.XModelConfig",
                 "AutoModelForCausalLM": "modeling_xmodel.XModelForCausalLM"},
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
    "image_aspect_ratio": "pad", "initializer_range": 0.02, "max_position_embeddings": 32768,
    "mm_projector_lr": None, "mm_projector_type": "xdpnetv10_4", "mm_use_im_patch_token": False,
    "mm_use_im_start_end": False, "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2,
    "mm_vision_tower": AUTHORS_CLIP_PATH, "model_type": "xmodelvlm", "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False, "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right",
    "torch_dtype": "bfloat16", "transformers_version": "4.37.2", "tune_mm_mlp_adapter": False, "use_cache": True,
    "use_mm_proj": True, "vision_tower_type": "clip",
}
TINY_LM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
TINY_TOWER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=1, patch_size=7,
                  image_size=28, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32, num_channels=3)


def build_tiny_model(vocab_size: int, seed: int = 0, projector: str = "xdpnetv10_4") -> XmodelVLMForCausalLM:
    config = XmodelVLMConfig(vocab_size=vocab_size, vision_config=dict(TINY_TOWER), mm_projector_type=projector,
                             mm_vision_tower=AUTHORS_CLIP_PATH, pad_token_id=0, **TINY_LM)
    torch.manual_seed(seed)
    model = XmodelVLMForCausalLM(config)
    with torch.no_grad():  # HF's std-0.02 init makes near-uniform logits; spread them so greedy tokens differ
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return model.eval()


def _vocab_size(tokenizer_dir: Path) -> int:
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=str(find_sentencepiece_file(tokenizer_dir))).get_piece_size()


def _copy_tokenizer(source: Path, out_dir: Path) -> int:
    model_file = find_sentencepiece_file(source)
    shutil.copy(model_file, out_dir / model_file.name)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, out_dir / name)
    return _vocab_size(source)


def write_clip_dir(model: XmodelVLMForCausalLM, clip_dir: Path) -> None:
    """A whole CLIPModel directory whose vision weights equal the model's tower."""
    from transformers import CLIPConfig, CLIPModel

    vision = model.get_vision_tower().config.to_dict()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                vocab_size=128, max_position_embeddings=16, projection_dim=vision["projection_dim"])
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=vision["projection_dim"]))
    clip.vision_model.load_state_dict(model.get_vision_tower().clip.state_dict())
    clip.save_pretrained(clip_dir)
    standard_clip_processor(vision["image_size"]).save_pretrained(clip_dir)


XMODEL_LM_FIELDS = {  # Xmodel-LM's released config.json, sizes left to the caller
    "architectures": ["XModelForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_xmodel.XModelConfig",
                 "AutoModelForCausalLM": "modeling_xmodel.XModelForCausalLM"},
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "initializer_range": 0.02,
    "max_position_embeddings": 4096, "model_type": "xmodel", "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "tie_word_embeddings": False, "torch_dtype": "float32", "transformers_version": "4.38.1", "use_cache": True,
}
LM_SIZE_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads")


def save_xmodel_lm(out_dir, lm_state: dict, sizes: dict, tokenizer_dir) -> Path:
    """Write an LM-only checkpoint in Xmodel-LM's layout: `lm_state` with Llama names (`model.layers.*`,
    `lm_head.weight`), a config with `model_type "xmodel"`, and the tokenizer files from `tokenizer_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer(Path(tokenizer_dir), out_dir)
    state = {k: v.contiguous() for k, v in lm_state.items()
             if not k.startswith(("model.vision_tower.", "model.mm_projector."))}
    save_file(state, out_dir / "model.safetensors", metadata={"format": "pt"})
    config = dict(XMODEL_LM_FIELDS, **{k: sizes[k] for k in LM_SIZE_FIELDS})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return out_dir


def make_tiny_checkpoint(out_dir, tokenizer_dir=None, clip_dir=None, tower_weights: bool = True, seed: int = 0,
                         dtype: str = "float32") -> XmodelVLMForCausalLM:
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else FIXTURE_TOKENIZER
    if not tokenizer_dir.is_dir():
        raise UserError(f"tokenizer directory {tokenizer_dir} not found; pass --tokenizer DIR holding a "
                        "SentencePiece *.model (e.g. the released checkpoint's xmodel_32000.model)")
    vocab_size = _copy_tokenizer(tokenizer_dir, out_dir)
    model = build_tiny_model(vocab_size, seed)
    state = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in model.state_dict().items()
             if tower_weights or not k.startswith("model.vision_tower.")}
    save_file(state, out_dir / "model.safetensors", metadata={"format": "pt"})
    fields = dict(RELEASED_FIELDS, vocab_size=vocab_size, mm_hidden_size=TINY_TOWER["hidden_size"], **TINY_LM)
    (out_dir / "config.json").write_text(json.dumps(fields, indent=2) + "\n")
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "transformers_version": "4.37.2"}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if clip_dir:
        write_clip_dir(model, Path(clip_dir))
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--tokenizer", help=f"directory with the SentencePiece model (default: {FIXTURE_TOKENIZER})")
    parser.add_argument("--clip-dir", help="also write a matching whole-CLIPModel directory here")
    parser.add_argument("--no-tower-weights", action="store_true",
                        help="leave the CLIP tower out of model.safetensors (then loading needs --vision-tower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--lm-only", action="store_true",
                        help="write only the language model, in Xmodel-LM's layout (a stage-1 starting point)")
    args = parser.parse_args(argv)
    if args.lm_only:
        tokenizer_dir = Path(args.tokenizer) if args.tokenizer else FIXTURE_TOKENIZER
        if not tokenizer_dir.is_dir():
            raise UserError(f"tokenizer directory {tokenizer_dir} not found; pass --tokenizer DIR")
        vocab_size = _vocab_size(tokenizer_dir)
        model = build_tiny_model(vocab_size, args.seed)
        save_xmodel_lm(args.out_dir, model.state_dict(), model.config.to_dict(), tokenizer_dir)
        print(f"wrote a tiny Xmodel-LM (language model only) checkpoint to {args.out_dir}", file=sys.stderr)
        return 0
    make_tiny_checkpoint(args.out_dir, args.tokenizer, args.clip_dir, not args.no_tower_weights, args.seed, args.dtype)
    print(f"wrote a tiny Xmodel-VLM checkpoint in the released layout to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
