"""`group_by_modality_length`: single-modality, length-grouped batches, deterministic in (seed, epoch)."""
from __future__ import annotations

import random

import pytest
import torch

from xmodelvlm.train.sampler import ModalityLengthGroupedSampler, modality_grouped_indices


def make_lengths(num_image=53, num_text=21, seed=0):
    rng = random.Random(seed)
    lengths = [rng.randint(150, 600) for _ in range(num_image)] + [-rng.randint(10, 300) for _ in range(num_text)]
    rng.shuffle(lengths)
    return lengths


def batches(order, size):
    return [order[i:i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("batch_size, world_size", [(4, 1), (2, 2), (3, 4)])
def test_batches_are_single_modality(batch_size, world_size):
    lengths = make_lengths()
    order = list(ModalityLengthGroupedSampler(lengths, batch_size, world_size, seed=3))
    assert sorted(order) == list(range(len(lengths)))          # every sample exactly once
    mixed = [b for b in batches(order, batch_size) if len({lengths[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 1                                     # only where the two leftovers meet
    if mixed:
        assert batches(order, batch_size).index(mixed[0]) >= (len(order) - 2 * batch_size * world_size) // batch_size


def test_megabatches_are_length_balanced_across_ranks():
    lengths = [10] * 8 + [1000] * 8                              # all images
    order = modality_grouped_indices(lengths, 2, 4, torch.Generator().manual_seed(0))
    for mega in batches(order, 8):
        per_rank = [sum(lengths[i] for i in chunk) for chunk in batches(mega, 2)]
        assert max(per_rank) - min(per_rank) <= 990            # never two long ones on one rank while another has none


def test_deterministic_by_seed_and_epoch():
    lengths = make_lengths()
    a = ModalityLengthGroupedSampler(lengths, 4, 2, seed=11)
    b = ModalityLengthGroupedSampler(lengths, 4, 2, seed=11)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(ModalityLengthGroupedSampler(lengths, 4, 2, seed=12)) != first


def test_one_modality_only_is_length_grouping():
    lengths = [5, 50, 500, 7, 70, 700, 9, 90]
    order = list(ModalityLengthGroupedSampler([-n for n in lengths], 2, 2, seed=0))
    assert sorted(order) == list(range(len(lengths)))


def padded_tokens(order, lengths, batch_size):
    return sum(len(b) * max(abs(lengths[i]) for i in b) for b in batches(order, batch_size))


@pytest.mark.parametrize("modalities", ["mixed", "images only"])
def test_length_group_steps_sorts_across_steps_and_pads_less(modalities):
    lengths = make_lengths(num_image=200, num_text=0 if modalities == "images only" else 64, seed=5)
    one = list(ModalityLengthGroupedSampler(lengths, 8, 1, seed=0))
    many = list(ModalityLengthGroupedSampler(lengths, 8, 1, seed=0, group_steps=100))
    assert sorted(many) == list(range(len(lengths)))           # every sample exactly once
    assert padded_tokens(many, lengths, 8) < 0.9 * padded_tokens(one, lengths, 8)
    mixed = [b for b in batches(many, 8) if len({lengths[i] > 0 for i in b}) > 1]
    assert len(mixed) <= 1
    # steps are cut from one sorted run: two full image steps never interleave in length ...
    spans = [(min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches(many, 8)
             if len(b) == 8 and all(lengths[i] > 0 for i in b)]
    assert all(a[1] <= b[0] or b[1] <= a[0] for k, a in enumerate(spans) for b in spans[k + 1:])
    # ... and they are shuffled afterwards, not run longest first
    maxima = [hi for _, hi in spans]
    assert maxima != sorted(maxima, reverse=True) and maxima != sorted(maxima)


def test_length_group_steps_one_is_llava_grouping_and_zero_is_refused():
    lengths = make_lengths()
    assert list(ModalityLengthGroupedSampler(lengths, 4, 2, seed=1, group_steps=1)) == \
        list(ModalityLengthGroupedSampler(lengths, 4, 2, seed=1))
    with pytest.raises(ValueError, match="positive"):
        ModalityLengthGroupedSampler(lengths, 4, 2, seed=1, group_steps=0)
    with pytest.raises(ValueError, match="group_steps"):
        modality_grouped_indices(lengths, 4, 2, torch.Generator(), group_steps=0)
