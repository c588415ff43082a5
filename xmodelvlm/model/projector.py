"""Vision-language projectors, looked up by exact name.

Every projector maps CLIP patch features `(B, P, C)` (P = a square number of patches) to LM embeddings
`(B, T, H)` and reports `num_tokens(P)`, the T it produces, so data and model agree on image length.

* `xdpnetv10_N` / `xdpnet` (N = 4): XDP, Xmodel-VLM's projector (SPEC §1). Concatenate N consecutive patch
  tokens (row-major, so N = 4 is a 1×4 horizontal strip of the grid), then Linear → Mish → Linear. 576 → 576/N.
* `linear`, `mlp2x_gelu`: LLaVA's projectors (one token per patch). State-dict names as LLaVA (`mm_projector.0`).
* `ldpnet`: MobileVLM's lightweight downsample projector (MLP, then two MobileNet inverted-residual blocks, the
  second with stride 2): 576 → 144.
* `ldpnetv2`: MobileVLM V2's LDPv2 (MLP, 2×2 average pooling, depthwise-conv positional encoding with a
  residual): 576 → 144.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _grid_side(num_patches: int) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise ValueError(f"expected a square grid of patches, got {num_patches}")
    return side


class XDPProjector(nn.Module):
    """XDP: downsample by concatenating `stride` consecutive tokens, then a two-layer MLP with Mish."""

    def __init__(self, mm_hidden_size: int, hidden_size: int, stride: int = 4):
        super().__init__()
        self.stride = stride
        self.mlp = nn.Sequential(
            nn.Linear(mm_hidden_size * stride, hidden_size), nn.Mish(), nn.Linear(hidden_size, hidden_size)
        )

    def num_tokens(self, num_patches: int) -> int:
        if num_patches % self.stride:
            raise ValueError(f"XDP stride {self.stride} does not divide {num_patches} patches")
        return num_patches // self.stride

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, num_patches, channels = features.shape
        grouped = features.reshape(batch, self.num_tokens(num_patches), channels * self.stride)
        return self.mlp(grouped)


class _TokenwiseSequential(nn.Sequential):
    """LLaVA's `linear` / `mlp2x_gelu`: applied per patch, one output token per patch."""

    def num_tokens(self, num_patches: int) -> int:
        return num_patches


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(8, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(F.relu(self.reduce(scale)))
        return x * F.hardsigmoid(scale)


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _InvertedResidual(nn.Module):
    """MobileNetV3 block with expansion 1, as MobileVLM's LDP uses it: depthwise 3×3 conv (with stride) → norm →
    hard-swish → squeeze-excite → pointwise conv → norm; residual when the shape is kept."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv_dw = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)
        self.norm_dw = _LayerNorm2d(channels)
        self.se = _SqueezeExcite(channels)
        self.conv_pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm_pw = _LayerNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.hardswish(self.norm_dw(self.conv_dw(x)))
        out = self.norm_pw(self.conv_pw(self.se(out)))
        return x + out if self.stride == 1 else out


def _to_grid(tokens: torch.Tensor) -> torch.Tensor:
    batch, num_patches, channels = tokens.shape
    side = _grid_side(num_patches)
    return tokens.transpose(1, 2).reshape(batch, channels, side, side)


def _to_tokens(grid: torch.Tensor) -> torch.Tensor:
    return grid.flatten(2).transpose(1, 2)


class LDPProjector(nn.Module):
    """MobileVLM's LDP: token-wise MLP, then two inverted-residual blocks (the second halves each side)."""

    def __init__(self, mm_hidden_size: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(mm_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        self.mb_block = nn.Sequential(_InvertedResidual(hidden_size, 1), _InvertedResidual(hidden_size, 2))

    def num_tokens(self, num_patches: int) -> int:
        return math.ceil(_grid_side(num_patches) / 2) ** 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return _to_tokens(self.mb_block(_to_grid(self.mlp(features))))


class LDPv2Projector(nn.Module):
    """MobileVLM V2's LDPv2: token-wise MLP, 2×2 average pooling, then a depthwise 3×3 conv added back
    (a positional-encoding generator)."""

    def __init__(self, mm_hidden_size: int, hidden_size: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(mm_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
        self.peg = nn.Conv2d(hidden_size, hidden_size, 3, padding=1, groups=hidden_size)

    def num_tokens(self, num_patches: int) -> int:
        return (_grid_side(num_patches) // 2) ** 2

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        grid = _to_grid(self.mlp(features))
        side = grid.shape[-1] // 2
        pooled = F.adaptive_avg_pool2d(grid, (side, side))
        return _to_tokens(pooled + self.peg(pooled))


ProjectorFactory = Callable[[int, int], nn.Module]

PROJECTORS: dict[str, ProjectorFactory] = {
    "xdpnet": lambda c, h: XDPProjector(c, h, stride=4),
    "linear": lambda c, h: _TokenwiseSequential(nn.Linear(c, h)),
    "mlp2x_gelu": lambda c, h: _TokenwiseSequential(nn.Linear(c, h), nn.GELU(), nn.Linear(h, h)),
    "ldpnet": LDPProjector,
    "ldpnetv2": LDPv2Projector,
}
_XDP_PATTERN = re.compile(r"xdpnetv10_([1-9][0-9]*)")


def known_projector_names() -> list[str]:
    return sorted(PROJECTORS) + ["xdpnetv10_N (N = tokens concatenated, e.g. xdpnetv10_4)"]


def build_projector(name: str, mm_hidden_size: int, hidden_size: int) -> nn.Module:
    """Build a projector by its exact name (no substring matching: `xdpnetv10_4x` is unknown, not XDP)."""
    if name in PROJECTORS:
        return PROJECTORS[name](mm_hidden_size, hidden_size)
    match = _XDP_PATTERN.fullmatch(name)
    if match:
        return XDPProjector(mm_hidden_size, hidden_size, stride=int(match.group(1)))
    raise ValueError(f"unknown mm_projector_type {name!r}; known: {', '.join(known_projector_names())}")
