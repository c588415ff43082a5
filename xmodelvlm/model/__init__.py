"""The Xmodel-VLM model: config, CLIP tower, projectors, tokenizer, and the loader."""
from transformers import AutoConfig, AutoModelForCausalLM

from .configuration import XmodelVLMConfig
from .modeling import XmodelVLMForCausalLM, XmodelVLMModel
from .projector import build_projector, known_projector_names
from .tokenizer import XmodelTokenizer, load_tokenizer

AutoConfig.register(XmodelVLMConfig.model_type, XmodelVLMConfig, exist_ok=True)
AutoModelForCausalLM.register(XmodelVLMConfig, XmodelVLMForCausalLM, exist_ok=True)

__all__ = [
    "XmodelVLMConfig", "XmodelVLMForCausalLM", "XmodelVLMModel", "XmodelTokenizer",
    "build_projector", "known_projector_names", "load_tokenizer",
]
