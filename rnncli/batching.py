"""Batches of texts for training and inference: of one length, sorted and padded, or packed.

An RNN over a padded batch either wastes steps on padding or needs packing. A training batch holds
texts of one exact length (`LengthBuckets`) where the model reads both directions, and texts of
neighbouring lengths, right-padded (`SortedBatches`), where it reads one: padding after a text can
never reach that text's own steps, and the pooling reads only those. Exact lengths give full
batches where each length has many texts (SST-2's phrases); on long reviews they give small ones,
where neighbouring lengths keep every batch full at under 1% padding.
A training run reads its batches from a batch source, `SplitBatches` (a split held in memory)
or `StreamBatches` (a stream, a buffer at a time), both `epoch(epoch, rng)` -> (ids, lengths, labels),
lengths None where every text of the batch is as long as the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from rnncli.tokenizer import Encoded

if TYPE_CHECKING:
    import torch


def _share(plan: list, part: int, parts: int) -> list:
    """Every parts-th batch of the plan from `part` on, for one of several data-parallel
    processes; the plan wraps around so that every part gets as many batches."""
    if parts == 1:
        return plan
    return (plan * parts)[: -(-len(plan) // parts) * parts][part::parts]


def padded_ids(enc: Encoded, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The texts `idx` right-padded with 0 (<pad>): ids (seq, batch) and lengths (batch,)."""
    lengths = enc.lengths[idx]
    cols = np.arange(int(lengths.max()))[None, :]
    gather = np.minimum(enc.starts[idx][:, None] + cols, len(enc.ids) - 1)  # (batch, seq)
    ids = np.where(cols < lengths[:, None], enc.ids[gather], 0)  # 0 = <pad>
    return np.ascontiguousarray(ids.T), lengths  # (seq, batch), (batch,)


class LengthBuckets:
    """Texts grouped by length: for each length L, their indices and an (n, L) array of ids."""

    def __init__(self, enc: Encoded):
        order = np.argsort(enc.lengths, kind="stable")
        sorted_lengths = enc.lengths[order]
        bounds = np.flatnonzero(np.diff(sorted_lengths)) + 1
        self.buckets: list[tuple[int, np.ndarray, np.ndarray]] = []
        for idx in np.split(order, bounds):
            if len(idx) == 0:
                continue
            length = int(enc.lengths[idx[0]])
            gather = enc.starts[idx][:, None] + np.arange(length)[None, :]  # (n, L)
            self.buckets.append((length, idx, enc.ids[gather]))
        self.size = len(enc)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None, part: int = 0, parts: int = 1
                ) -> Iterator[tuple[np.ndarray, torch.Tensor, None]]:
        """Yield (text indices, ids (seq, batch), None: no text is padded). With `rng`: shuffled
        within lengths and across batches.

        With `parts` > 1 this yields every parts-th batch from `part` on, for one of several
        data-parallel processes; the plan wraps around so every part gets as many batches.
        """
        import torch

        plan = []
        for b, (_, idx, _) in enumerate(self.buckets):
            rows = rng.permutation(len(idx)) if rng is not None else np.arange(len(idx))
            pieces = -(-len(idx) // batch_size)  # near-equal batches, none tiny
            plan.extend((b, chunk) for chunk in np.array_split(rows, pieces))
        if rng is not None:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        for b, rows in _share(plan, part, parts):
            _, idx, matrix = self.buckets[b]
            yield idx[rows], torch.from_numpy(np.ascontiguousarray(matrix[rows].T)), None  # (seq, batch)

    def num_batches(self, batch_size: int, parts: int = 1) -> int:
        """How many batches `batches(batch_size, parts=parts)` yields."""
        total = sum(-(-len(idx) // batch_size) for _, idx, _ in self.buckets)
        return -(-total // parts)


class SortedBatches:
    """Texts sorted by length and cut into batches of neighbouring lengths, right-padded with 0."""

    def __init__(self, enc: Encoded):
        self.enc = enc
        self.size = len(enc)

    def batches(self, batch_size: int, rng: np.random.Generator | None = None, part: int = 0, parts: int = 1
                ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
        """Yield (text indices, ids (seq, batch), lengths (batch,) or None where no text is padded).
        With `rng`: shuffled within lengths and across batches; `part`, `parts` as `LengthBuckets`."""
        import torch

        ties = rng.random(self.size) if rng is not None else np.zeros(self.size)
        order = np.lexsort((ties, self.enc.lengths))  # by length, in random order within one
        plan = np.array_split(order, -(-self.size // batch_size)) if self.size else []  # near-equal batches
        if rng is not None:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        for idx in _share(plan, part, parts):
            ids, lengths = padded_ids(self.enc, idx)
            padded = lengths.min() < len(ids)
            yield idx, torch.from_numpy(ids), torch.from_numpy(lengths) if padded else None  # lengths: int64

    def num_batches(self, batch_size: int, parts: int = 1) -> int:
        """How many batches `batches(batch_size, parts=parts)` yields."""
        batches = -(-self.size // batch_size)
        return -(-batches // parts)


def training_batches(enc: Encoded, padded: bool) -> LengthBuckets | SortedBatches:
    """The batches a training split is read in: padded ones where `padded` (a one-direction model)."""
    return SortedBatches(enc) if padded else LengthBuckets(enc)


class SplitBatches:
    """An in-memory training split: each epoch, its texts shuffled within lengths and batched
    (see `training_batches`). With `parts` data-parallel processes, each takes every parts-th batch
    from `part` on."""

    def __init__(self, enc: Encoded, labels: np.ndarray, batch_size: int, part: int = 0, parts: int = 1,
                 padded: bool = False):
        import torch

        self.buckets = training_batches(enc, padded)
        self.labels = torch.from_numpy(labels)  # (texts,)
        self.batch_size, self.part, self.parts = batch_size, part, parts
        self.num_batches: int | None = self.buckets.num_batches(batch_size, parts)

    def epoch(self, epoch: int, rng: np.random.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        for idx, ids, lengths in self.buckets.batches(self.batch_size, rng, part=self.part, parts=self.parts):
            yield ids, lengths, self.labels[idx]  # (seq, batch), (batch,) or None, (batch,)


class StreamBatches:
    """A streamed training split: each buffer of the stream grouped by length and shuffled. The
    stream's length is unknown, so `num_batches` is None."""

    num_batches: int | None = None

    def __init__(self, corpus, tokenizer, buffer: int, max_length: int, batch_size: int, seed: int,
                 part: int = 0, parts: int = 1, padded: bool = False):
        self.corpus, self.tokenizer = corpus, tokenizer
        self.buffer, self.max_length, self.batch_size, self.seed = buffer, max_length, batch_size, seed
        self.part, self.parts, self.padded = part, parts, padded

    def epoch(self, epoch: int, rng: np.random.Generator
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        import torch

        from rnncli.tokenizer import encode

        for chunk in self.corpus.chunks(self.buffer, self.seed, epoch, part=self.part, parts=self.parts):
            labels = torch.from_numpy(chunk.labels)
            enc = encode(self.tokenizer, chunk.texts, self.max_length)
            for idx, ids, lengths in training_batches(enc, self.padded).batches(self.batch_size, rng):
                yield ids, lengths, labels[idx]  # (seq, batch), (batch,) or None, (batch,)


def sorted_padded_batches(enc: Encoded, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Inference batches of neighbouring lengths, right-padded with 0: (indices, ids (seq, batch), lengths),
    as numpy arrays.

    Fewer, fuller batches than exact lengths; sorting keeps the padding small. For models whose
    outputs at a text's own steps never see the padding after it: one-direction torch models, and
    every exported one (see rnncli.export).
    """
    order = np.argsort(enc.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        yield idx, *padded_ids(enc, idx)  # (batch,), (seq, batch), (batch,)


def packed_batch(enc: Encoded, rows: np.ndarray) -> tuple[np.ndarray, torch.Tensor, list[int]]:
    """The texts at `rows` packed for `RNNClassifier.packed_logits`: (their order, longest first;
    ids (tokens,): step 0 of every text, then step 1 of those that long, ...; texts per step)."""
    import torch

    lengths = enc.lengths[rows]
    order = np.argsort(-lengths, kind="stable")
    ordered = lengths[order]
    sizes = len(rows) - np.cumsum(np.bincount(ordered, minlength=int(ordered[0]) + 1))[: int(ordered[0])]
    step = np.repeat(np.arange(len(sizes)), sizes)  # (tokens,) the step of each packed token
    text = np.arange(len(step)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # its text, in `order`
    ids = enc.ids[enc.starts[rows[order]][text] + step]
    return rows[order], torch.from_numpy(ids), sizes.tolist()
