"""`load_pretrained_model`: load a checkpoint as released (or as we save it) for inference and evaluation.

Which CLIP tower goes with the checkpoint is decided in `checkpoint.py` (an explicit `--vision-tower`, the
configured path if it exists, or the tower stored in the checkpoint).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from .checkpoint import check_model_dir
from .modeling import XmodelVLMForCausalLM
from .tokenizer import load_tokenizer
from .vision_tower import load_clip_processor, standard_clip_processor

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but no CUDA GPU is visible; use --device cpu")
    if device == "mps" and not _mps_available():
        raise UserError("--device mps asked for, but MPS is not available; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")
    return _DTYPES[dtype]


def _quantization_config(load_8bit: bool, load_4bit: bool, device: torch.device):
    if not (load_8bit or load_4bit):
        return None
    flag = "--load-8bit" if load_8bit else "--load-4bit"
    if device.type != "cuda":
        raise UserError(f"{flag} needs a CUDA GPU (bitsandbytes); drop the flag to run on {device.type}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError(f"{flag} needs bitsandbytes: pip install bitsandbytes") from None
    from transformers import BitsAndBytesConfig
    skip = ["mm_projector", "vision_tower", "lm_head"]
    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_use_double_quant=True,
                              bnb_4bit_quant_type="nf4", llm_int8_skip_modules=skip)


def image_processor_for(model: XmodelVLMForCausalLM, model_dir):
    """The CLIP directory's processor when there is one, else the checkpoint's own, else CLIP's standard one."""
    clip_dir = model.config.mm_vision_tower
    for directory in (clip_dir, model_dir):
        if directory and (Path(directory) / "preprocessor_config.json").is_file():
            return load_clip_processor(directory)
    return standard_clip_processor(model.get_vision_tower().config.image_size)


def load_pretrained_model(model_path, vision_tower: str | None = None, device="auto", dtype="auto",
                          load_8bit: bool = False, load_4bit: bool = False, model_base=None, model_name=None,
                          **_ignored):
    """→ (tokenizer, model, image_processor, context_len), the seed's contract.

    `model_base`/`model_name` are accepted for LLaVA-style callers; LoRA adapters are merged with
    `scripts/merge_lora.py` instead of at load time.
    """
    if model_base is not None:
        raise UserError("model_base (LoRA on a base model) is not loaded directly; merge the adapter first with "
                        "python scripts/merge_lora.py")
    model_dir = check_model_dir(model_path)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    quantization = _quantization_config(load_8bit, load_4bit, device)
    kwargs = {"quantization_config": quantization, "device_map": {"": device}} if quantization else {}
    model, info = XmodelVLMForCausalLM.from_pretrained(model_dir, vision_tower=vision_tower, dtype=torch_dtype,
                                                       output_loading_info=True, **kwargs)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise UserError(f"{model_dir} lacks {len(missing)} weights the model needs (e.g. {missing[0]}); "
                        "is it a complete Xmodel-VLM checkpoint?")
    if quantization is None:
        model.to(device)
    model.eval()
    tokenizer = load_tokenizer(model_dir)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    context_len = getattr(model.config, "tokenizer_model_max_length", None) or model.config.max_position_embeddings
    return tokenizer, model, image_processor_for(model, model_dir), context_len or 2048
