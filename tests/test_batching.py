"""Training batches: every text once an epoch; texts of one length, or of neighbouring lengths
right-padded for a one-direction model (padding after a text never reaches its own steps)."""

import itertools

import numpy as np
import pytest

from rnncli.batching import LengthBuckets, SortedBatches, training_batches
from rnncli.tokenizer import Encoded


def encoded(lengths) -> Encoded:
    """Texts of the given lengths whose ids count up from 1 (0 is <pad>)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return Encoded(ids=np.arange(1, lengths.sum() + 1), starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]),
                   lengths=lengths, full_lengths=lengths)


LENGTHS = [7, 1, 3, 3, 5, 2, 7, 7, 4, 6, 1, 5, 3]  # 13 texts over 7 lengths: no length fills a batch of 3


def test_sorted_batches_are_full_batches_of_neighbouring_lengths_padded_with_zero():
    enc = encoded(LENGTHS)
    batches = list(SortedBatches(enc).batches(3, np.random.default_rng(5)))
    assert sorted(int(i) for idx, _, _ in batches for i in idx) == list(range(len(LENGTHS)))  # each text once
    assert sorted(len(idx) for idx, _, _ in batches) == [2, 2, 3, 3, 3]  # near-equal, none over 3
    spans = sorted((enc.lengths[idx].min(), enc.lengths[idx].max()) for idx, _, _ in batches)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # sorted by length: batches never overlap
    for idx, ids, lengths in batches:  # ids (seq, batch)
        assert ids.shape == (enc.lengths[idx].max(), len(idx))
        for j, i in enumerate(idx):
            n = enc.lengths[i]
            assert ids[:n, j].tolist() == enc.text(i).tolist()
            assert not ids[n:, j].any()  # <pad> after the text
        if lengths is None:  # no text padded
            assert (enc.lengths[idx] == len(ids)).all()
        else:
            assert lengths.tolist() == enc.lengths[idx].tolist()


def test_sorted_batches_shuffle_with_the_epoch_seed_and_share_out_between_processes():
    source = SortedBatches(encoded(LENGTHS))
    plan = lambda seed, **kw: [tuple(idx) for idx, _, _ in source.batches(3, np.random.default_rng(seed), **kw)]
    assert plan(1) == plan(1)
    assert plan(1) != plan(2)
    parts = [plan(1, part=p, parts=3) for p in range(3)]
    assert [len(p) for p in parts] == [source.num_batches(3, parts=3)] * 3  # equal steps: no process waits
    assert set().union(*map(set, parts)) == set(plan(1))
    assert list(source.batches(3)) and [tuple(i) for i, _, _ in source.batches(3)] == \
        [tuple(i) for i, _, _ in source.batches(3)]  # without rng: a fixed order


@pytest.mark.parametrize("padded, kind", [(True, SortedBatches), (False, LengthBuckets)])
def test_a_one_direction_model_trains_on_padded_batches(padded, kind):
    source = training_batches(encoded(LENGTHS), padded)
    assert isinstance(source, kind)
    assert source.num_batches(3) == len(list(source.batches(3)))
