"""LoRA / QLoRA on the language model (never the vision tower or the projector), saving, and merging.

A LoRA run's output folder holds the adapter (`adapter_config.json`, `adapter_model.safetensors`), the
non-LoRA trainables (the projector, plus any other trained parameter) as `non_lora_trainables.bin`, and the VLM
`config.json`. `merge_lora_checkpoint` (scripts/merge_lora.py) folds them into the base model and writes a full
checkpoint that `load_pretrained_model` loads directly.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .model_setup import gathered, get_vlm, is_projector_param, is_tower_param, projector_key

logger = logging.getLogger("xmodelvlm.train")

NON_LORA_FILE = "non_lora_trainables.bin"
_PEFT_PREFIX = "base_model.model."


def lm_linear_target_regex(model: nn.Module) -> str:
    """A regex (PEFT full-matches it against module names) selecting the decoder layers' linear layers only.

    Plain suffix names (`q_proj`) would also hit the CLIP tower's attention, which has the same names."""
    leaves = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and re.match(r"model\.layers\.\d+\.", name):
            leaves.add(name.split(".", 3)[3])   # e.g. "self_attn.q_proj", "mlp.down_proj"
    if not leaves:
        raise UserError("found no linear layers in the LM's decoder layers to put LoRA adapters on")
    alternatives = "|".join(re.escape(leaf) for leaf in sorted(leaves))
    return rf"model\.layers\.\d+\.(?:{alternatives})"


def apply_lora(model, training_args):
    """Wrap `model` with LoRA adapters on the LM's linear layers; the projector stays trainable (unless frozen)."""
    from peft import LoraConfig, get_peft_model

    if training_args.bits in (4, 8):
        from peft import prepare_model_for_kbit_training
        checkpointing = getattr(training_args, "activation_checkpointing", None) or training_args.gradient_checkpointing
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(checkpointing))
    config = LoraConfig(
        r=training_args.lora_r,
        lora_alpha=training_args.lora_alpha,
        lora_dropout=training_args.lora_dropout,
        bias=training_args.lora_bias,
        target_modules=lm_linear_target_regex(model),
        task_type="CAUSAL_LM",
    )
    projector_trainable = {name: p.requires_grad for name, p in model.named_parameters() if is_projector_param(name)}
    peft_model = get_peft_model(model, config)
    # get_peft_model freezes everything that is not an adapter (and, with bias="all", thaws every bias, the
    # tower's included): give the projector its flag back and keep the tower frozen.
    for name, param in peft_model.named_parameters():
        if is_projector_param(name):
            param.requires_grad_(projector_trainable.get(name[len(_PEFT_PREFIX):], True))
        elif is_tower_param(name):
            param.requires_grad_(False)
    logger.info("LoRA r=%d alpha=%d dropout=%g on %s", config.r, config.lora_alpha, config.lora_dropout,
                config.target_modules)
    return peft_model


def _cpu_copy(param: torch.Tensor) -> torch.Tensor:
    with gathered([param]):
        return param.detach().cpu().clone()


def lora_state_dict(model, bias: str = "none") -> dict[str, torch.Tensor]:
    """The adapter weights (and LoRA biases as `bias` says), gathered, named as PEFT names them in the model."""
    named = list(model.named_parameters())
    if bias == "none":
        keep = {k for k, _ in named if "lora_" in k}
    elif bias == "all":
        keep = {k for k, _ in named if "lora_" in k or k.endswith(".bias")}
    else:  # lora_only: biases of the layers that carry an adapter
        adapted = {k.split("lora_")[0] for k, _ in named if "lora_" in k}
        keep = {k for k, _ in named if "lora_" in k or (k.endswith(".bias") and k[:-len("bias")] in adapted)}
    return {k: _cpu_copy(p) for k, p in named if k in keep}


def non_lora_trainables(model) -> dict[str, torch.Tensor]:
    """Every trained non-adapter parameter plus the whole projector, gathered, named `model.*` as in the base."""
    out = {}
    for name, param in model.named_parameters():
        if "lora_" in name or not (param.requires_grad or is_projector_param(name)):
            continue
        key = name[len(_PEFT_PREFIX):] if name.startswith(_PEFT_PREFIX) else name
        key = key.replace(".base_layer.", ".")   # a LoRA-wrapped layer's own bias, named as in the base model
        out[projector_key(key) or key] = _cpu_copy(param)
    return out


def save_lora_checkpoint(model, output_dir: str | os.PathLike, bias: str, is_main: bool) -> None:
    """Adapter + `non_lora_trainables.bin` + the VLM config.json (all ranks call: ZeRO-3 gathers collectively)."""
    adapter = lora_state_dict(model, bias)
    extra = non_lora_trainables(model)
    if not is_main:
        return
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # save_embedding_layers=False: the embeddings are never adapted (and PEFT would re-read the base config).
    model.save_pretrained(output_dir, state_dict=adapter, save_embedding_layers=False)
    get_vlm(model).config.save_pretrained(output_dir)
    tmp = output_dir / f".{NON_LORA_FILE}.tmp"
    torch.save(extra, tmp)
    os.replace(tmp, output_dir / NON_LORA_FILE)


def load_non_lora_trainables(model, path: str | os.PathLike) -> None:
    """Load `non_lora_trainables.bin` into a base (not PEFT-wrapped) VLM or a PEFT-wrapped one."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} not found: a LoRA output folder holds non_lora_trainables.bin next to the "
                        "adapter") from None
    vlm = get_vlm(model)
    params = dict(vlm.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise UserError(f"{path} holds weights the model lacks (e.g. {missing[0]}); wrong --model-base?")
    with torch.no_grad():
        for key, value in state.items():
            with gathered([params[key]], modifier_rank=0):
                params[key].copy_(value.to(params[key].dtype))
    logger.info("loaded %d non-LoRA tensors from %s", len(state), path)


def merge_lora_checkpoint(model_path: str | os.PathLike, model_base: str | os.PathLike,
                          save_path: str | os.PathLike, vision_tower: str | None = None,
                          dtype: str = "float32") -> Path:
    """LoRA output folder + its base → a full Xmodel-VLM checkpoint (what `load_pretrained_model` loads).

    `model_base` is the run's `--model_name_or_path` (an LM-only checkpoint or a full Xmodel-VLM one); the CLIP
    tower comes from `vision_tower`, else the folder recorded in the LoRA run's config, else the base's stored
    tower weights."""
    from peft import PeftModel

    from ..model.builder import image_processor_for
    from ..model.checkpoint import VISION_TOWER_PREFIX, load_config
    from ..model.modeling import XmodelVLMForCausalLM
    from ..model.tokenizer import find_sentencepiece_file, load_tokenizer, save_tokenizer
    from .model_setup import LM_MODEL_TYPES, PROJECTOR_PREFIX, read_config_json

    lora_dir, base_dir, save_dir = Path(model_path), Path(model_base), Path(save_path)
    for flag, path in (("--model-path", lora_dir), ("--model-base", base_dir)):
        if not path.is_dir():
            raise UserError(f"{flag} {path}: no such directory")
    if not (lora_dir / "adapter_config.json").is_file():
        raise UserError(f"{lora_dir} has no adapter_config.json; pass the output_dir of a --lora_enable run")
    if save_dir.resolve() in (lora_dir.resolve(), base_dir.resolve()):
        raise UserError("--save-path must differ from --model-path and --model-base")
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise UserError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")

    config = load_config(lora_dir)
    base_type = read_config_json(base_dir).get("model_type")
    if base_type not in LM_MODEL_TYPES + (config.model_type,):
        raise UserError(f"--model-base {base_dir} holds a {base_type!r} model; pass the LoRA run's "
                        "--model_name_or_path (an Xmodel-LM / Llama or Xmodel-VLM checkpoint)")
    model, info = XmodelVLMForCausalLM.from_pretrained(base_dir, config=config, vision_tower=vision_tower,
                                                       dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith((VISION_TOWER_PREFIX, PROJECTOR_PREFIX))]
    if missing:
        raise UserError(f"--model-base {base_dir} lacks {len(missing)} LM weights (e.g. {missing[0]}); is it the "
                        "LoRA run's base checkpoint?")
    load_non_lora_trainables(model, lora_dir / NON_LORA_FILE)
    model = PeftModel.from_pretrained(model, lora_dir).merge_and_unload()
    model.config.use_cache = True
    model.to(torch_dtype)
    save_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(save_dir)
    tokenizer_dir = lora_dir
    try:
        find_sentencepiece_file(lora_dir)
    except UserError:
        tokenizer_dir = base_dir
    save_tokenizer(load_tokenizer(tokenizer_dir), save_dir)
    image_processor_for(model, base_dir).save_pretrained(save_dir)
    logger.info("merged %s into %s → %s", lora_dir, base_dir, save_dir)
    return save_dir
