"""Build the model to train from its starting point, and decide which parameters train.

Starting points (`--model_name_or_path`):
* an LM-only checkpoint: Xmodel-LM's layout (Llama weights, `config.json` with `model_type "xmodel"` and remote code
  we never run — only its JSON fields are read) or any Llama checkpoint (`model_type "llama"`). The CLIP tower
  (`--vision_tower`) and a fresh projector are added; the LM weights load through
  `XmodelVLMForCausalLM.from_pretrained(lm_dir, config=vlm_config)`, and anything missing besides the tower and
  the projector is an error.
* a full Xmodel-VLM checkpoint (`model_type "xmodelvlm"`, e.g. stage 2's output): training continues from it.

Stage 2 starts the projector from stage 1's `mm_projector.bin` (`--pretrain_mm_mlp_adapter`). All weights are loaded
before DeepSpeed wraps the model, with ZeRO-3's load-time partitioning switched off (each process holds the full
1.4B model in host memory once, then DeepSpeed partitions it), so the tower, projector and LM loads are plain
`load_state_dict` calls; `gathered()` still covers partitioned parameters for code that runs after wrapping.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..model.builder import image_processor_for
from ..model.checkpoint import VISION_TOWER_PREFIX, load_config
from ..model.configuration import XmodelVLMConfig
from ..model.modeling import XmodelVLMForCausalLM
from ..model.projector import build_projector
from ..model.tokenizer import load_tokenizer
from ..model.vision_tower import load_clip_vision_config

logger = logging.getLogger("xmodelvlm.train")

LM_MODEL_TYPES = ("xmodel", "llama")
PROJECTOR_PREFIX = "model.mm_projector."
PROJECTOR_FILE = "mm_projector.bin"
DEFAULT_PROJECTOR = "xdpnetv10_4"
# Fields of an LM config.json that are bookkeeping, not architecture.
_NON_ARCH_KEYS = ("auto_map", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
                  "_name_or_path")


# ---------------------------------------------------------------------------------------------------------------
# ZeRO-3 helpers


def is_partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


@contextlib.contextmanager
def gathered(params, modifier_rank: int | None = None):
    """Full values of ZeRO-3-partitioned `params` inside the block (a no-op for ordinary tensors).

    With `modifier_rank` set, what that rank writes into them is scattered back on exit."""
    params = [p for p in params if is_partitioned(p)]
    if not params:
        yield
        return
    import deepspeed
    with deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank):
        yield


@contextlib.contextmanager
def zero3_load_partitioning_disabled():
    """Load weights whole even when a ZeRO-3 config is active (transformers would otherwise build the model under
    `deepspeed.zero.Init`, leaving every parameter an empty shard before we can copy the tower and projector in)."""
    try:
        from transformers.integrations import deepspeed as hf_ds
    except ImportError:  # pragma: no cover - transformers without the DeepSpeed integration
        yield
        return
    ref = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


# ---------------------------------------------------------------------------------------------------------------
# Configs


def read_config_json(model_dir: str | os.PathLike) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{model_dir} has no config.json; pass a checkpoint directory with --model_name_or_path")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _round_up(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - n % k


def lm_config_fields(raw: dict) -> dict:
    """The Llama fields of an LM-only config.json (Xmodel-LM's or Llama's), defaults filled in by `LlamaConfig`."""
    from transformers import LlamaConfig

    fields = {k: v for k, v in raw.items() if k not in _NON_ARCH_KEYS}
    if fields.get("intermediate_size") is None and "hidden_size" in fields:
        # Xmodel-LM's config class derives it like this when the JSON leaves it out.
        fields["intermediate_size"] = _round_up(int(8 * fields["hidden_size"] / 3), 256)
    try:
        llama = LlamaConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise UserError(f"the LM config.json does not describe a Llama-architecture model: {exc}") from None
    return {k: v for k, v in llama.to_dict().items() if k not in _NON_ARCH_KEYS}


def projector_type_beside(adapter_path: str | None) -> str | None:
    """`mm_projector_type` of the config.json stage 1 wrote next to its mm_projector.bin, if any."""
    if not adapter_path:
        return None
    config_path = Path(adapter_path).parent / "config.json"
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("mm_projector_type")
    except (json.JSONDecodeError, OSError):
        return None


def _canonical_projector(name: str) -> str:
    return "xdpnetv10_4" if name == "xdpnet" else name


def resolve_projector_type(model_args, checkpoint_type: str | None = None) -> str:
    beside = projector_type_beside(model_args.pretrain_mm_mlp_adapter)
    wanted = model_args.mm_projector_type or beside or checkpoint_type or DEFAULT_PROJECTOR
    for source, other in (("--pretrain_mm_mlp_adapter's config.json", beside), ("the checkpoint", checkpoint_type)):
        if other and _canonical_projector(other) != _canonical_projector(wanted):
            raise UserError(f"--mm_projector_type {wanted} does not match {source} ({other}); drop the flag or pass "
                            f"--mm_projector_type {other}")
    try:
        build_projector(wanted, 8, 8)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return wanted


# ---------------------------------------------------------------------------------------------------------------
# Building


def _quantization_config(training_args):
    """bitsandbytes config for QLoRA (`--bits 4|8`); the tower, projector and lm_head stay unquantized."""
    if training_args.bits == 16:
        return None
    if not torch.cuda.is_available():
        raise UserError(f"--bits {training_args.bits} (QLoRA) needs a CUDA GPU and bitsandbytes; use --bits 16 here")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"--bits {training_args.bits} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if training_args.bf16 else (torch.float16 if training_args.fp16 else torch.float32)
    skip = ["vision_tower", "mm_projector", "lm_head"]
    if training_args.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip, llm_int8_threshold=6.0)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                              bnb_4bit_use_double_quant=training_args.double_quant,
                              bnb_4bit_quant_type=training_args.quant_type, llm_int8_skip_modules=skip)


def _from_pretrained(model_dir, config, training_args, model_args, vision_tower: str | None):
    """`XmodelVLMForCausalLM.from_pretrained` in fp32, the tower from `vision_tower` / the config / the checkpoint."""
    kwargs = {"dtype": torch.float32, "vision_tower": vision_tower}  # fp32 master weights; bf16/fp16 come from amp or DeepSpeed
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization = _quantization_config(training_args)
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": training_args.device})
        kwargs["dtype"] = quantization.bnb_4bit_compute_dtype if training_args.bits == 4 else torch.float16
    with zero3_load_partitioning_disabled():
        try:
            return XmodelVLMForCausalLM.from_pretrained(model_dir, config=config, output_loading_info=True, **kwargs)
        except OSError as exc:
            raise UserError(f"cannot load weights from {model_dir}: {' '.join(str(exc).split())[:300]}") from None


def _check_missing(model_dir, missing: list[str], allowed_prefixes: tuple[str, ...]) -> None:
    unexpected_missing = [k for k in missing if not k.startswith(allowed_prefixes)]
    if unexpected_missing:
        raise UserError(f"{model_dir} lacks {len(unexpected_missing)} weights the model needs "
                        f"(e.g. {unexpected_missing[0]}); is it a complete Llama / Xmodel-LM checkpoint?")


def _apply_mm_settings(config: XmodelVLMConfig, model_args, data_args, training_args) -> None:
    config.image_aspect_ratio = data_args.image_aspect_ratio
    config.mm_use_im_start_end = False
    config.mm_use_im_patch_token = False
    config.use_cache = False
    # Recorded as LLaVA does, so inference knows the training context.
    config.tokenizer_model_max_length = training_args.model_max_length
    config.tokenizer_padding_side = "right"
    config.tune_mm_mlp_adapter = bool(model_args.tune_mm_mlp_adapter)
    config.mm_projector_lr = training_args.mm_projector_lr
    config.use_mm_proj = True


def build_from_lm(model_args, data_args, training_args, raw: dict):
    """LM-only checkpoint + CLIP directory → VLM with a fresh (or stage-1) projector."""
    lm_dir = model_args.model_name_or_path
    if not model_args.vision_tower:
        raise UserError(f"{lm_dir} is a language model only (model_type {raw.get('model_type')!r}); pass the CLIP "
                        "directory with --vision_tower /path/to/clip-vit-large-patch14-336")
    vision_config = load_clip_vision_config(model_args.vision_tower)
    config = XmodelVLMConfig(
        **lm_config_fields(raw),
        mm_vision_tower=str(model_args.vision_tower),
        vision_tower_type=model_args.vision_tower_type,
        mm_projector_type=resolve_projector_type(model_args),
        mm_vision_select_layer=-2 if model_args.mm_vision_select_layer is None else model_args.mm_vision_select_layer,
        mm_vision_select_feature=model_args.mm_vision_select_feature or "patch",
    )
    config.set_vision_tower_config(vision_config)
    _apply_mm_settings(config, model_args, data_args, training_args)
    model, info = _from_pretrained(lm_dir, config, training_args, model_args, model_args.vision_tower)
    _check_missing(lm_dir, info["missing_keys"], (VISION_TOWER_PREFIX, PROJECTOR_PREFIX))
    logger.info("built a VLM from the LM in %s + the CLIP tower in %s (projector %s, %s)", lm_dir,
                model_args.vision_tower, config.mm_projector_type,
                "from " + model_args.pretrain_mm_mlp_adapter if model_args.pretrain_mm_mlp_adapter else "fresh")
    return model, image_processor_for(model, lm_dir)


def build_from_vlm(model_args, data_args, training_args):
    """A full Xmodel-VLM checkpoint: continue training it."""
    model_dir = Path(model_args.model_name_or_path)
    config = load_config(model_dir)
    resolve_projector_type(model_args, checkpoint_type=config.mm_projector_type)
    for flag, value, current in (("mm_vision_select_layer", model_args.mm_vision_select_layer,
                                  config.mm_vision_select_layer),
                                 ("mm_vision_select_feature", model_args.mm_vision_select_feature,
                                  config.mm_vision_select_feature)):
        if value is not None and value != current:
            raise UserError(f"--{flag} {value} differs from the checkpoint's {current}; a trained model keeps its "
                            "feature layer (drop the flag)")
    _apply_mm_settings(config, model_args, data_args, training_args)
    model, info = _from_pretrained(model_dir, config, training_args, model_args, model_args.vision_tower)
    allowed = (VISION_TOWER_PREFIX, PROJECTOR_PREFIX) if model_args.pretrain_mm_mlp_adapter else (VISION_TOWER_PREFIX,)
    _check_missing(model_dir, info["missing_keys"], allowed)
    logger.info("continuing from the Xmodel-VLM checkpoint %s", model_dir)
    return model, image_processor_for(model, model_dir)


def build_model(model_args, data_args, training_args):
    """→ (model, tokenizer, image_processor), weights loaded, trainable parameters set, LoRA applied if asked."""
    raw = read_config_json(model_args.model_name_or_path)
    model_type = raw.get("model_type")
    if model_type == XmodelVLMConfig.model_type:
        model, image_processor = build_from_vlm(model_args, data_args, training_args)
    elif model_type in LM_MODEL_TYPES:
        model, image_processor = build_from_lm(model_args, data_args, training_args, raw)
    else:
        raise UserError(f"{model_args.model_name_or_path} holds a {model_type!r} model; pass an Xmodel-LM / Llama "
                        "checkpoint (with --vision_tower) or an Xmodel-VLM checkpoint")
    if model_args.pretrain_mm_mlp_adapter:
        load_projector_weights(model, model_args.pretrain_mm_mlp_adapter)
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_max_length=training_args.model_max_length,
                               padding_side="right")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    configure_trainable_parameters(model, model_args, training_args)
    if training_args.lora_enable:
        from .lora import apply_lora
        model = apply_lora(model, training_args)
    return model, tokenizer, image_processor


# ---------------------------------------------------------------------------------------------------------------
# Projector weights


def projector_key(name: str) -> str | None:
    """`model.mm_projector.*` for any spelling of a projector parameter name (PEFT-wrapped, LLaVA's), else None."""
    marker = "mm_projector."
    at = name.find(marker)
    return None if at < 0 else PROJECTOR_PREFIX + name[at + len(marker):]


def read_projector_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"projector weights not found: {path}") from None
    except Exception as exc:  # pickle / zip errors: the file is not a torch state dict
        raise UserError(f"cannot read projector weights {path}: {exc}") from None
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a state dict of projector weights")
    projector = {projector_key(k): v for k, v in state.items() if projector_key(k)}
    if not projector:
        raise UserError(f"{path} holds no model.mm_projector.* weights (keys: {', '.join(list(state)[:3])})")
    return projector


def load_projector_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Copy stage 1's `mm_projector.bin` into the model's projector (also when ZeRO-3 has partitioned it)."""
    state = read_projector_file(path)
    projector = get_vlm(model).model.mm_projector
    local = {k[len(PROJECTOR_PREFIX):]: v for k, v in state.items()}
    expected = dict(projector.state_dict())
    missing = sorted(set(expected) - set(local))
    unexpected = sorted(set(local) - set(expected))
    if missing or unexpected:
        raise UserError(f"{path} does not fit the {get_vlm(model).config.mm_projector_type} projector (missing "
                        f"{missing[:2]}, unexpected {unexpected[:2]}); pass the matching --mm_projector_type")
    params = list(projector.parameters())
    with gathered(params, modifier_rank=0):
        for name, tensor in projector.state_dict().items():
            if tuple(tensor.shape) != tuple(local[name].shape) and not is_partitioned(tensor):
                raise UserError(f"{path}: {name} has shape {tuple(local[name].shape)}, the model's is "
                                f"{tuple(tensor.shape)} (different LM or CLIP size?)")
        projector.load_state_dict({k: v.to(expected[k].dtype) for k, v in local.items()})
    logger.info("loaded the projector (%d tensors) from %s", len(local), path)


def projector_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The projector's weights as CPU tensors named `model.mm_projector.*` (gathered under ZeRO-3)."""
    out = {}
    for name, param in get_vlm(model).model.mm_projector.named_parameters():
        with gathered([param]):
            out[PROJECTOR_PREFIX + name] = param.detach().cpu().clone()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Trainable parameters


def get_vlm(model: nn.Module) -> XmodelVLMForCausalLM:
    """The `XmodelVLMForCausalLM` inside a PEFT / DeepSpeed / DDP wrapper."""
    seen = 0
    while not isinstance(model, XmodelVLMForCausalLM) and seen < 6:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        else:
            break
        seen += 1
    if not isinstance(model, XmodelVLMForCausalLM):
        raise TypeError(f"expected an XmodelVLMForCausalLM, got {type(model).__name__}")
    return model


def is_projector_param(name: str) -> bool:
    return "mm_projector." in name


def is_tower_param(name: str) -> bool:
    return "vision_tower." in name


def configure_trainable_parameters(model: XmodelVLMForCausalLM, model_args, training_args) -> None:
    """Stage 1 (`tune_mm_mlp_adapter`): projector only. Stage 2: projector + LM. The tower is always frozen;
    `freeze_backbone` freezes the LM, `freeze_mm_mlp_adapter` the projector; LoRA trains adapters instead of the LM
    (applied after this)."""
    train_lm = not (model_args.tune_mm_mlp_adapter or model_args.freeze_backbone or training_args.lora_enable)
    train_projector = not training_args.freeze_mm_mlp_adapter
    for name, param in model.named_parameters():
        if is_tower_param(name):
            param.requires_grad_(False)
        elif is_projector_param(name):
            param.requires_grad_(train_projector)
        else:
            param.requires_grad_(train_lm)
    if not training_args.lora_enable and not any(p.requires_grad for p in model.parameters()):
        raise UserError("nothing to train: --freeze_mm_mlp_adapter with --tune_mm_mlp_adapter/--freeze_backbone "
                        "freezes every parameter")


def describe_trainable(model: nn.Module) -> str:
    groups = {"vision tower": [0, 0], "projector": [0, 0], "LM": [0, 0]}
    for name, param in model.named_parameters():
        part = "vision tower" if is_tower_param(name) else "projector" if is_projector_param(name) else "LM"
        groups[part][0] += param.numel() if not is_partitioned(param) else param.ds_numel
        groups[part][1] += (param.numel() if not is_partitioned(param) else param.ds_numel) * param.requires_grad
    return ", ".join(f"{part} {train / 1e6:.2f}M/{total / 1e6:.2f}M trainable" for part, (total, train) in
                     groups.items())
