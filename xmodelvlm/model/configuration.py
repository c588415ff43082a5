"""`XmodelVLMConfig`: the Llama decoder's fields plus the multimodal (`mm_*`) fields, flat, as released.

The released `config.json` is a flat Llama config with `model_type "xmodelvlm"` and LLaVA's `mm_*` fields
(SPEC §2); it names the CLIP directory by an absolute path on the authors' machine. We add one field of our own,
`vision_config` (the CLIP vision tower's config as a dict), so a checkpoint can rebuild its tower without the CLIP
directory; when it is absent the standard ViT-L/14-336 constants apply.
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig, LlamaConfig

# openai/clip-vit-large-patch14-336 (SPEC §1): used when neither a CLIP directory nor `vision_config` is at hand.
CLIP_VIT_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_channels=3,
    patch_size=14,
    image_size=336,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
)


@strict
class XmodelVLMConfig(LlamaConfig):
    model_type = "xmodelvlm"

    mm_vision_tower: str | None = None
    vision_tower_type: str = "clip"
    mm_hidden_size: int | None = None
    mm_projector_type: str = "xdpnetv10_4"
    mm_vision_select_layer: int = -2
    mm_vision_select_feature: str = "patch"
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    image_aspect_ratio: str = "pad"
    vision_config: dict | None = None

    def __post_init__(self, **kwargs):
        kwargs.pop("auto_map", None)  # the released config points at remote code we never run
        super().__post_init__(**kwargs)
        if self.mm_hidden_size is None:
            self.mm_hidden_size = self.vision_tower_config().hidden_size

    def vision_tower_config(self) -> CLIPVisionConfig:
        """The CLIP vision tower's config: the stored one, else the ViT-L/14-336 constants."""
        fields = dict(self.vision_config) if self.vision_config else dict(CLIP_VIT_L_336)
        for key in ("model_type", "transformers_version", "architectures", "dtype", "torch_dtype"):
            fields.pop(key, None)
        return CLIPVisionConfig(**fields)

    def set_vision_tower_config(self, vision_config: CLIPVisionConfig) -> None:
        keys = set(CLIP_VIT_L_336) | {"attention_dropout", "initializer_range", "initializer_factor"}
        full = vision_config.to_dict()
        self.vision_config = {k: full[k] for k in sorted(keys) if k in full}
        self.mm_hidden_size = vision_config.hidden_size
