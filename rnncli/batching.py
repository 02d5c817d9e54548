"""Batches of texts that all have the same length, for training; padded or packed ones for inference.

An RNN over a padded batch either wastes steps on padding or needs packing; grouping texts by their
exact token count needs neither, and the batch is one slice of a ready (texts, length) array.
A training run reads its batches from a batch source, `SplitBatches` (a split held in memory)
or `StreamBatches` (a stream, a buffer at a time), both `epoch(epoch, rng)` -> (ids, labels).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from rnncli.tokenizer import Encoded

if TYPE_CHECKING:
    import torch


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
                ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield (text indices, ids (seq, batch)). With `rng`: shuffled within lengths and across batches.

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
        if parts > 1:
            plan = (plan * parts)[: -(-len(plan) // parts) * parts][part::parts]
        for b, rows in plan:
            _, idx, matrix = self.buckets[b]
            yield idx[rows], torch.from_numpy(np.ascontiguousarray(matrix[rows].T))  # (seq, batch)

    def num_batches(self, batch_size: int, parts: int = 1) -> int:
        """How many batches `batches(batch_size, parts=parts)` yields."""
        total = sum(-(-len(idx) // batch_size) for _, idx, _ in self.buckets)
        return -(-total // parts)


class SplitBatches:
    """An in-memory training split: each epoch, its texts shuffled within lengths and batched.
    With `parts` data-parallel processes, each takes every parts-th batch from `part` on."""

    def __init__(self, enc: Encoded, labels: np.ndarray, batch_size: int, part: int = 0, parts: int = 1):
        import torch

        self.buckets = LengthBuckets(enc)
        self.labels = torch.from_numpy(labels)  # (texts,)
        self.batch_size, self.part, self.parts = batch_size, part, parts
        self.num_batches: int | None = self.buckets.num_batches(batch_size, parts)

    def epoch(self, epoch: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx, ids in self.buckets.batches(self.batch_size, rng, part=self.part, parts=self.parts):
            yield ids, self.labels[idx]  # (seq, batch), (batch,)


class StreamBatches:
    """A streamed training split: each buffer of the stream grouped by length and shuffled. The
    stream's length is unknown, so `num_batches` is None."""

    num_batches: int | None = None

    def __init__(self, corpus, tokenizer, buffer: int, max_length: int, batch_size: int, seed: int,
                 part: int = 0, parts: int = 1):
        self.corpus, self.tokenizer = corpus, tokenizer
        self.buffer, self.max_length, self.batch_size, self.seed = buffer, max_length, batch_size, seed
        self.part, self.parts = part, parts

    def epoch(self, epoch: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        import torch

        from rnncli.tokenizer import encode

        for chunk in self.corpus.chunks(self.buffer, self.seed, epoch, part=self.part, parts=self.parts):
            labels = torch.from_numpy(chunk.labels)
            enc = encode(self.tokenizer, chunk.texts, self.max_length)
            for idx, ids in LengthBuckets(enc).batches(self.batch_size, rng):
                yield ids, labels[idx]  # (seq, batch), (batch,)


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
        lengths = enc.lengths[idx]
        width = int(lengths.max())
        cols = np.arange(width)[None, :]
        gather = np.minimum(enc.starts[idx][:, None] + cols, len(enc.ids) - 1)  # (batch, seq)
        ids = np.where(cols < lengths[:, None], enc.ids[gather], 0)  # 0 = <pad>
        yield idx, np.ascontiguousarray(ids.T), lengths  # (batch,), (seq, batch), (batch,)


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
