"""`XmodelVLMForCausalLM`: CLIP tower → projector → Llama decoder, as one transformers `PreTrainedModel`.

Inputs follow LLaVA-1.5: each image is ONE placeholder id `IMAGE_TOKEN_INDEX` (-200) in `input_ids`, and
`images` is a `(N, 3, H, W)` tensor with one image per placeholder, in row-major order over the batch. The model
replaces every placeholder by that image's projected features (`num_image_tokens` of them), re-padding the batch
on the side it came padded from, so every row sees exactly what it would see alone.

State-dict names equal the released checkpoint's: `model.layers.*` / `model.embed_tokens` / `model.norm` /
`lm_head` (Llama), `model.mm_projector.*`, `model.vision_tower.vision_tower.vision_model.*` (CLIP).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import LlamaForCausalLM, LlamaModel
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from ..constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from ..utils import quiet_transformers
from .checkpoint import (VISION_TOWER_PREFIX, check_model_dir, load_config, resolve_vision_tower,
                         stored_tensor_files, stores_vision_tower)
from .configuration import XmodelVLMConfig
from .projector import build_projector
from .vision_tower import CLIPVisionTower


@dataclass
class MultimodalInputs:
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None


class XmodelVLMModel(LlamaModel):
    """The Llama decoder with the vision tower and the projector attached (names as released)."""

    config_class = XmodelVLMConfig

    def __init__(self, config: XmodelVLMConfig):
        super().__init__(config)
        self.vision_tower = CLIPVisionTower(
            config.vision_tower_config(), config.mm_vision_select_layer, config.mm_vision_select_feature
        )
        self.mm_projector = build_projector(config.mm_projector_type, config.mm_hidden_size, config.hidden_size)
        self.post_init()


def _padding_side(attention_mask: torch.Tensor) -> str:
    return "left" if bool((attention_mask[:, 0] == 0).any()) else "right"


def _positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class XmodelVLMForCausalLM(LlamaForCausalLM):
    config_class = XmodelVLMConfig
    config: XmodelVLMConfig
    _no_split_modules = ["LlamaDecoderLayer", "CLIPEncoderLayer"]

    def __init__(self, config: XmodelVLMConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = XmodelVLMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, vision_tower: str | None = None, **kwargs):
        """transformers' `from_pretrained`, plus the CLIP tower (see `checkpoint.py`): an explicit `vision_tower`,
        the configured CLIP directory if it exists, or the tower stored in the checkpoint. Works as is on the
        released checkpoint, also through `AutoModelForCausalLM` after `import xmodelvlm`."""
        model_dir = Path(str(pretrained_model_name_or_path))
        if not model_dir.is_dir():
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        config = kwargs.pop("config", None) or load_config(check_model_dir(model_dir))
        files = stored_tensor_files(model_dir)
        has_tower = stores_vision_tower(files)
        clip_dir = None
        if vision_tower is not None or not config.vision_config or not has_tower:
            clip_dir = resolve_vision_tower(config, model_dir, vision_tower, files)
        want_info = kwargs.pop("output_loading_info", False)
        with quiet_transformers() if not has_tower else contextlib.nullcontext():  # tower keys absent by design
            model, info = super().from_pretrained(model_dir, *model_args, config=config, output_loading_info=True,
                                                  **kwargs)
        if not has_tower:
            model.get_vision_tower().load_clip_weights(clip_dir)
            info["missing_keys"] = type(info["missing_keys"])(
                k for k in info["missing_keys"] if not k.startswith(VISION_TOWER_PREFIX))
        return (model, info) if want_info else model

    # ---- parts -------------------------------------------------------------------------------------------
    def get_model(self) -> XmodelVLMModel:
        return self.model

    def get_vision_tower(self) -> CLIPVisionTower:
        return self.model.vision_tower

    @property
    def mm_projector(self) -> nn.Module:
        return self.model.mm_projector

    @property
    def num_image_tokens(self) -> int:
        """Tokens one image occupies in the LM sequence (144 for the released model)."""
        return self.mm_projector.num_tokens(self.get_vision_tower().num_patches)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels → (N, num_image_tokens, hidden) LM embeddings."""
        features = self.get_vision_tower()(images)
        projector_dtype = next(self.mm_projector.parameters()).dtype
        return self.mm_projector(features.to(projector_dtype))

    # ---- placeholder expansion ---------------------------------------------------------------------------
    def prepare_multimodal_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        images: torch.Tensor | list[torch.Tensor] | None,
        padding_side: str | None = None,
    ) -> MultimodalInputs:
        """Replace each -200 placeholder by its image's features; expand mask, labels and positions to match."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()
        is_image = input_ids == IMAGE_TOKEN_INDEX
        num_placeholders = int(is_image.sum())
        images = _stack_images(images)
        num_images = 0 if images is None else images.shape[0]
        if num_placeholders != num_images:
            raise ValueError(f"input_ids hold {num_placeholders} image placeholders ({IMAGE_TOKEN_INDEX}) but "
                             f"{num_images} images were given; pass one image per placeholder, in order")
        if bool((is_image & ~keep).any()):
            raise ValueError("an image placeholder lies under attention_mask == 0 (in the padding)")
        image_features = self.encode_images(images) if num_images else None
        image_len = self.num_image_tokens

        span = torch.where(is_image, image_len, 1) * keep          # slots each token takes; padding takes none
        lengths = span.sum(1)
        total = int(lengths.max())
        side = padding_side or _padding_side(attention_mask)
        offset = (total - lengths) if side == "left" else torch.zeros_like(lengths)
        start = span.cumsum(1) - span + offset[:, None]            # first slot of each token in the new row

        embed = self.get_input_embeddings()
        text = keep & ~is_image
        rows, cols = text.nonzero(as_tuple=True)
        text_embeds = embed(input_ids[rows, cols])
        batch = input_ids.shape[0]
        inputs_embeds = text_embeds.new_zeros(batch, total, text_embeds.shape[-1])
        inputs_embeds[rows, start[rows, cols]] = text_embeds
        if image_features is not None:
            image_rows, image_cols = is_image.nonzero(as_tuple=True)   # row-major: the order images are given in
            slots = start[image_rows, image_cols][:, None] + torch.arange(image_len, device=input_ids.device)
            inputs_embeds[image_rows[:, None], slots] = image_features.to(inputs_embeds.dtype)

        positions = torch.arange(total, device=input_ids.device)[None]
        new_mask = (positions >= offset[:, None]) & (positions < (offset + lengths)[:, None])
        new_labels = None
        if labels is not None:
            new_labels = torch.full((batch, total), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            new_labels[rows, start[rows, cols]] = labels[rows, cols]
        new_mask = new_mask.to(attention_mask.dtype)
        return MultimodalInputs(inputs_embeds, new_mask, _positions_from_mask(new_mask), new_labels)

    # ---- forward / generate ------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes=None,  # accepted for LLaVA-family call compatibility; images are already square-processed
        **kwargs,
    ):
        needs_merge = inputs_embeds is None and input_ids is not None and (
            images is not None or bool((input_ids == IMAGE_TOKEN_INDEX).any())
        )
        if needs_merge:
            merged = self.prepare_multimodal_inputs(input_ids, attention_mask, labels, images)
            input_ids, inputs_embeds = None, merged.inputs_embeds
            attention_mask, labels = merged.attention_mask, merged.labels
            position_ids = merged.position_ids if position_ids is None else position_ids
        elif position_ids is None and attention_mask is not None and not _has_cached_tokens(kwargs):
            # Left-padded rows must start at position 0, as they would alone.
            position_ids = _positions_from_mask(attention_mask)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            **kwargs,
        )

    @torch.no_grad()
    def generate(self, inputs: torch.Tensor | None = None, images=None, attention_mask=None, image_sizes=None,
                 **kwargs):
        """`generate(input_ids, images=...)` → prompt ids followed by the new tokens (as LLaVA/MobileVLM return).

        The prompt (with images expanded) is embedded once, left-padded, and decoded with the KV cache.
        """
        input_ids = inputs if inputs is not None else kwargs.pop("input_ids", None)
        if input_ids is None or "inputs_embeds" in kwargs:
            return super().generate(inputs=inputs, attention_mask=attention_mask, **kwargs)
        if attention_mask is None:
            attention_mask = self._infer_attention_mask(input_ids)
        merged = self.prepare_multimodal_inputs(input_ids, attention_mask, None, images, padding_side="left")
        output = super().generate(inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask,
                                  **kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        prompt = input_ids.repeat_interleave(sequences.shape[0] // input_ids.shape[0], dim=0)
        full = torch.cat([prompt.to(sequences.device), sequences], dim=1)
        if isinstance(output, torch.Tensor):
            return full
        output.sequences = full
        return output

    def _infer_attention_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        pad = self.generation_config.pad_token_id
        if pad is None:
            pad = self.config.pad_token_id
        special = {self.config.bos_token_id, self.config.eos_token_id}
        if pad is not None and pad not in special and bool((input_ids == pad).any()):
            return (input_ids != pad).long()
        return torch.ones_like(input_ids)


def _has_cached_tokens(kwargs: dict) -> bool:
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    return cache is not None and cache.get_seq_length() > 0


def _stack_images(images) -> torch.Tensor | None:
    if images is None:
        return None
    if isinstance(images, (list, tuple)):
        if not images:
            return None
        images = torch.cat([img if img.dim() == 4 else img.unsqueeze(0) for img in images], dim=0)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    return images
