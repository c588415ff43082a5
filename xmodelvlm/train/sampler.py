"""`group_by_modality_length`: batches of only-image or only-text samples, of similar length (LLaVA-1.5).

Indices are drawn as LLaVA's `LengthGroupedSampler(group_by_modality=True)` draws them: each modality is shuffled
and cut into megabatches of one optimizer step's samples (`per_device_batch × world_size × grad_accum`); a megabatch
is sorted by length and dealt into per-device batches of balanced total length; the full megabatches of both
modalities are shuffled together. Unlike LLaVA, the two modalities' leftover (partial) megabatches are not merged
and sorted by index: they go last, image leftovers then text leftovers, so at most one batch per epoch — the one
where the two leftovers meet — can mix modalities.

`group_steps` > 1 (`--length_group_steps`) sorts by length across that many steps' samples instead of one, as
transformers' `group_by_length` does across 50: each step then holds samples of similar length, so a batch pads
far less (with one step's samples, a single GPU's batch is simply a random batch). The steps are shuffled again
afterwards, so long and short steps alternate at random.

The order depends only on (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def _even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal `indices` (sorted longest first) into `num_chunks` equal-size chunks of balanced total length."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0] * num_chunks
    for index in indices:
        open_chunks = [c for c in range(num_chunks) if len(chunks[c]) < per_chunk]
        target = min(open_chunks, key=lambda c: totals[c])
        chunks[target].append(index)
        totals[target] += lengths[index]
    return chunks


def length_grouped_megabatches(lengths: Sequence[int], batch_size: int, world_size: int,
                               generator: torch.Generator, group_steps: int = 1) -> list[list[int]]:
    """Shuffle, cut into groups of `group_steps` optimizer steps' samples (`batch_size * world_size` each), sort each
    group by length, cut it into steps of consecutive lengths and deal each step into `world_size` per-device
    batches; returns one list per step (per-device batches concatenated). Only the last step can be partial."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * world_size
    steps = []
    for start in range(0, len(order), size * group_steps):
        group = sorted(order[start:start + size * group_steps], key=lambda i: lengths[i], reverse=True)
        for step_start in range(0, len(group), size):
            step = group[step_start:step_start + size]
            steps.append([i for chunk in _even_chunks(step, lengths, world_size) for i in chunk])
    return steps


def _shuffled(steps: list[list[int]], generator: torch.Generator) -> list[list[int]]:
    return [steps[k] for k in torch.randperm(len(steps), generator=generator).tolist()]


def modality_grouped_indices(modality_lengths: Sequence[int], batch_size: int, world_size: int,
                             generator: torch.Generator, group_steps: int = 1) -> list[int]:
    """Sample order for `modality_lengths` (+length: has an image, −length: text only)."""
    if group_steps < 1:
        raise ValueError(f"group_steps must be >= 1, got {group_steps}")
    lengths = [abs(int(n)) for n in modality_lengths]
    image_ids = [i for i, n in enumerate(modality_lengths) if n > 0]
    text_ids = [i for i, n in enumerate(modality_lengths) if n <= 0]
    size = batch_size * world_size
    if not image_ids or not text_ids:
        steps = length_grouped_megabatches(lengths, batch_size, world_size, generator, group_steps)
        if group_steps > 1:  # else each step is already a random draw; keep LLaVA's order
            full = [step for step in steps if len(step) == size]
            steps = _shuffled(full, generator) + [step for step in steps if len(step) != size]
        return [i for step in steps for i in step]
    full: list[list[int]] = []
    partial: list[list[int]] = []
    for ids in (image_ids, text_ids):
        sub_lengths = [lengths[i] for i in ids]
        for step in length_grouped_megabatches(sub_lengths, batch_size, world_size, generator, group_steps):
            (full if len(step) == size else partial).append([ids[j] for j in step])
    return [i for step in _shuffled(full, generator) + partial for i in step]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Deterministic in (seed, epoch); `set_epoch` is called by the Trainer (through accelerate) every epoch."""

    def __init__(self, modality_lengths: Sequence[int], batch_size: int, world_size: int, seed: int,
                 group_steps: int = 1):
        if batch_size <= 0 or world_size <= 0 or group_steps <= 0:
            raise ValueError("batch_size, world_size and group_steps must be positive")
        self.group_steps = group_steps
        self.modality_lengths = list(modality_lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.modality_lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(modality_grouped_indices(self.modality_lengths, self.batch_size, self.world_size, generator,
                                            self.group_steps))
