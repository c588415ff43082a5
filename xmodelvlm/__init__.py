"""Xmodel-VLM: train, evaluate and serve a small LLaVA-1.5-style vision-language model.

The seed's public names are kept so existing scripts run unchanged::

    from xmodelvlm import (load_pretrained_model, process_images, tokenizer_image_token, conv_templates,
                           IMAGE_TOKEN_INDEX, DEFAULT_IMAGE_TOKEN)

They are imported on first use (PEP 562), so the command-line tools that need no model (merging and scoring
answers, the data generator) start without loading torch and transformers.
"""
from importlib import import_module

from .constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX

__version__ = "0.1.0"

# public name -> the module (relative to this package) that defines it
_LAZY = {
    "Conversation": ".data.conversation", "SeparatorStyle": ".data.conversation",
    "conv_templates": ".data.conversation", "get_conv_template": ".data.conversation",
    "expand2square": ".data.image", "load_image": ".data.image", "process_images": ".data.image",
    "tokenizer_image_token": ".data.tokenization",
    "XmodelTokenizer": ".model", "XmodelVLMConfig": ".model", "XmodelVLMForCausalLM": ".model",
    "load_tokenizer": ".model", "load_pretrained_model": ".model.builder",
}

__all__ = ["DEFAULT_IMAGE_TOKEN", "IGNORE_INDEX", "IMAGE_TOKEN_INDEX", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
