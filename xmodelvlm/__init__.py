"""Xmodel-VLM: train, evaluate and serve a small LLaVA-1.5-style vision-language model.

The seed's public names are kept so existing scripts run unchanged::

    from xmodelvlm import (load_pretrained_model, process_images, tokenizer_image_token, conv_templates,
                           IMAGE_TOKEN_INDEX, DEFAULT_IMAGE_TOKEN)
"""
from .constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from .data.conversation import Conversation, SeparatorStyle, conv_templates, get_conv_template
from .data.image import expand2square, load_image, process_images
from .data.tokenization import tokenizer_image_token
from .model import XmodelTokenizer, XmodelVLMConfig, XmodelVLMForCausalLM, load_tokenizer
from .model.builder import load_pretrained_model

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_IMAGE_TOKEN", "IGNORE_INDEX", "IMAGE_TOKEN_INDEX", "Conversation", "SeparatorStyle", "conv_templates",
    "get_conv_template", "expand2square", "load_image", "process_images", "tokenizer_image_token",
    "XmodelTokenizer", "XmodelVLMConfig", "XmodelVLMForCausalLM", "load_tokenizer", "load_pretrained_model",
]
