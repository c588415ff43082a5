"""Partly reset a demo LM or VLM checkpoint, to ask what in it blocks learning (not a test).

    python bench/demo_reset_weights.py SRC DST MODE [ALPHA]

Copies the checkpoint directory SRC (a warmed-up LM in Xmodel-LM layout, or an assembled VLM checkpoint) to DST and
rewrites its `model.safetensors`; the vision tower is never touched. MODE:

- `query ALPHA`: every attention layer's q_proj times ALPHA, so the attention logits shrink by ALPHA (0: uniform
  causal attention at the start; the value/output paths, MLPs and embeddings stay as trained).
- `shrink-perturb ALPHA`: every LM matrix except the embeddings and lm_head becomes ALPHA x W + sqrt(1 - ALPHA) x
  N(0, 0.02) (Ash & Adams, "On warm-starting neural network training", 2020), a partial return to the random
  initialisation that keeps the direction of what was learned.
- `head-spread ALPHA`: the lm_head rows of the four shape answers ("Circle", ...) moved ALPHA times as far from their
  mean (they are nearly parallel after the text warm-up).
- `head-reinit`: lm_head drawn afresh from N(0, 0.02).
- `projector-reinit`: the XDP projector's matrices drawn afresh (PyTorch's default uniform bound), biases zero.

Seeded (0), so a mode and ALPHA always give the same weights. Used in BENCHMARKS.md ("A tower that keeps place and
shape", twelfth session) with `bench/demo_focused_finetune.py`.
"""
import argparse
import shutil
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import load_file, save_file

MODES = ("query", "shrink-perturb", "head-spread", "head-reinit", "projector-reinit")
SCALED_MODES = ("query", "shrink-perturb", "head-spread")  # the ones that take ALPHA
SHAPE_ANSWERS = ("Circle", "Square", "Triangle", "Star")


def in_lm(name: str) -> bool:
    return "vision_tower" not in name and "mm_projector" not in name


def is_lm_matrix(name: str, tensor: torch.Tensor) -> bool:
    return tensor.dim() == 2 and in_lm(name) and "embed_tokens" not in name and "lm_head" not in name


def reset(weights: dict[str, torch.Tensor], mode: str, alpha: float | None, tokenizer_model: Path) -> int:
    """Rewrites `weights` in place; returns how many tensors changed."""
    g = torch.Generator().manual_seed(0)
    changed = 0
    for name, w in weights.items():
        if mode == "query" and in_lm(name) and name.endswith("self_attn.q_proj.weight"):
            weights[name] = w * alpha
        elif mode == "shrink-perturb" and is_lm_matrix(name, w):
            weights[name] = alpha * w + (1 - alpha) ** 0.5 * 0.02 * torch.randn(w.shape, generator=g)
        elif mode == "head-reinit" and name == "lm_head.weight":
            weights[name] = 0.02 * torch.randn(w.shape, generator=g)
        elif mode == "projector-reinit" and "mm_projector" in name:
            bound = 1 / w.shape[-1] ** 0.5
            weights[name] = (torch.rand(w.shape, generator=g) * 2 - 1) * bound if w.dim() == 2 else torch.zeros_like(w)
        elif mode == "head-spread" and name == "lm_head.weight":
            sp = spm.SentencePieceProcessor(model_file=str(tokenizer_model))
            ids = [sp.piece_to_id("\u2581" + word) for word in SHAPE_ANSWERS]
            w = w.clone()
            mean = w[ids].mean(0, keepdim=True)
            w[ids] = mean + alpha * (w[ids] - mean)
            weights[name] = w
        else:
            continue
        changed += 1
    return changed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("mode", choices=MODES)
    p.add_argument("alpha", type=float, nargs="?")
    a = p.parse_args()
    if (a.alpha is None) != (a.mode not in SCALED_MODES):
        p.error(f"{a.mode} takes ALPHA" if a.alpha is None else f"{a.mode} takes no ALPHA")
    src, dst = Path(a.src), Path(a.dst)
    if not (src / "model.safetensors").is_file():
        p.error(f"{src} has no model.safetensors; give a checkpoint directory")
    weights = load_file(src / "model.safetensors")
    changed = reset(weights, a.mode, a.alpha, src / "tokenizer.model")
    if not changed:
        p.error(f"{a.mode} changes nothing in {src} (no matching tensors)")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    print(f"{dst}: {a.mode}{'' if a.alpha is None else f' {a.alpha:g}'} rewrote {changed} tensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
