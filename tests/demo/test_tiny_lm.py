"""The LM warm-up's batches: random by default, length-grouped with `group_steps` > 1."""
from __future__ import annotations

import random

import pytest

from xmodelvlm.demo.tiny_lm import PAD_ID, _batches


def docs(n=120, seed=0):
    rng = random.Random(seed)
    return [[7] * rng.randint(5, 90) for _ in range(n)]


def epoch_rows(encoded, batch_size, group_steps):
    """One epoch of batches (120 docs / batch 8 = 15 steps), each row's length recovered from its mask."""
    out = []
    for input_ids, mask, labels in _batches(encoded, batch_size, len(encoded) // batch_size, 0, group_steps):
        assert input_ids.shape == mask.shape == labels.shape and len(input_ids) == batch_size
        assert (labels[mask == 0] == -100).all() and (input_ids[mask == 0] == PAD_ID).all()
        out.append(mask.sum(1).tolist())
    return out


@pytest.mark.parametrize("group_steps", [1, 4, 15])
def test_an_epoch_uses_every_document_once(group_steps):
    encoded = docs()
    rows = epoch_rows(encoded, 8, group_steps)
    assert sorted(n for batch in rows for n in batch) == sorted(len(d) for d in encoded)


def test_length_grouping_pads_less_and_keeps_batches_shuffled():
    encoded = docs()
    padded = {g: sum(len(b) * max(b) for b in epoch_rows(encoded, 8, g)) for g in (1, 15)}
    assert padded[15] < 0.75 * padded[1]
    maxima = [max(b) for b in epoch_rows(encoded, 8, 15)]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
