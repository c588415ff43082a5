"""The frozen CLIP vision tower and its image processor.

Module layout mirrors the released checkpoint's tensor names, `model.vision_tower.vision_tower.vision_model.*`:
`CLIPVisionTower.vision_tower` holds transformers 5's `CLIPVisionModel` under `.vision_model` (in transformers 5
that class *is* the transformer; in 4.x it wrapped one under the same name), so the released names load as is
and what we save loads in the original code base too.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers.utils import is_torchvision_available

from ..errors import UserError
from ..utils import quiet_transformers

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_processor_class():
    """CLIP's image processor class: the PIL backend unless torchvision is installed (we do not require it)."""
    if not is_torchvision_available():
        try:
            from transformers import CLIPImageProcessorPil
            return CLIPImageProcessorPil
        except ImportError:  # transformers releases before the PIL/torchvision split
            pass
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor


def standard_clip_processor(image_size: int = 336):
    """The CLIP processor (SPEC §1): shortest edge → image_size (bicubic), centre crop, rescale, normalise."""
    return clip_processor_class()(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def is_clip_directory(path: str | os.PathLike | None) -> bool:
    return bool(path) and (Path(path) / "config.json").is_file()


def load_clip_processor(clip_dir: str | os.PathLike):
    if not (Path(clip_dir) / "preprocessor_config.json").is_file():
        raise UserError(f"{clip_dir} has no preprocessor_config.json; point --vision-tower at a full CLIP "
                        "directory such as openai/clip-vit-large-patch14-336")
    return clip_processor_class().from_pretrained(clip_dir)


def load_clip_vision_config(clip_dir: str | os.PathLike) -> CLIPVisionConfig:
    if not is_clip_directory(clip_dir):
        raise UserError(f"vision tower directory {clip_dir} does not exist or has no config.json; pass a "
                        "CLIP directory (openai/clip-vit-large-patch14-336) with --vision-tower")
    return CLIPVisionConfig.from_pretrained(clip_dir)


class _VisionModelHolder(nn.Module):
    """Only there to put `vision_model.` in the parameter names, as the released checkpoint has them."""

    def __init__(self, vision_model: CLIPVisionModel):
        super().__init__()
        self.vision_model = vision_model


class CLIPVisionTower(nn.Module):
    """Frozen CLIP ViT; returns the hidden states of `select_layer`, patch tokens only for `select_feature="patch"`."""

    def __init__(self, vision_config: CLIPVisionConfig, select_layer: int = -2, select_feature: str = "patch"):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {select_feature!r}")
        num_states = vision_config.num_hidden_layers + 1  # embeddings + one per layer, as output_hidden_states
        if not -num_states <= select_layer < num_states:
            raise ValueError(f"mm_vision_select_layer {select_layer} out of range for {num_states - 1} layers")
        self.select_layer = select_layer
        self.select_feature = select_feature
        # Layers after the selected one never influence the output: skip them (1/24 of the tower at -2).
        self.num_layers_run = select_layer % num_states
        self.vision_tower = _VisionModelHolder(CLIPVisionModel(vision_config))
        self.requires_grad_(False)

    @property
    def clip(self) -> CLIPVisionModel:
        return self.vision_tower.vision_model

    @property
    def config(self) -> CLIPVisionConfig:
        return self.clip.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.embeddings.patch_embedding.weight.dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        hidden = clip.pre_layrnorm(clip.embeddings(images.to(dtype=self.dtype)))
        for layer in clip.encoder.layers[: self.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden[:, 1:] if self.select_feature == "patch" else hidden

    def load_clip_weights(self, clip_dir: str | os.PathLike) -> None:
        """Copy the weights of a CLIP directory (a whole CLIPModel or a CLIPVisionModel checkpoint)."""
        with quiet_transformers():  # a whole CLIPModel also holds text weights: "unexpected" here is expected
            loaded = CLIPVisionModel.from_pretrained(clip_dir, dtype=self.dtype)
        missing, unexpected = self.clip.load_state_dict(loaded.state_dict(), strict=False)
        if missing or unexpected:
            raise UserError(f"CLIP weights in {clip_dir} do not fit the configured tower "
                            f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
