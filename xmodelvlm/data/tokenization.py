"""`tokenizer_image_token`: tokenize a prompt, turning each `<image>` into one IMAGE_TOKEN_INDEX placeholder."""
from __future__ import annotations

import torch

from ..constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def tokenizer_image_token(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX,
                          return_tensors: str | None = None):
    """LLaVA-1.5's rule: tokenize each chunk between `<image>`s on its own, keep one BOS at the very start,
    and put `image_token_index` between chunks."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    input_ids: list[int] = []
    if chunks and chunks[0] and chunks[0][0] == bos:
        input_ids.append(bos)
    for i, chunk in enumerate(chunks):
        if i:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[1:] if chunk and chunk[0] == bos else chunk)
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    if return_tensors is not None:
        raise ValueError(f"unsupported return_tensors {return_tensors!r}")
    return input_ids
