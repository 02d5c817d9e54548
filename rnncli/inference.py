"""The forward pass of inference, shared by `evaluate` and `predict`: logits for encoded texts in
input order, on the fastest path the model allows (packed texts, sorted padded batches, or
batches of one length)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from rnncli.batching import LengthBuckets, packed_batch, sorted_padded_batches
from rnncli.tokenizer import Encoded

# Below this many tokens a prediction runs on one CPU thread: a few texts are microseconds of
# arithmetic, while starting and waking torch's worker threads costs far more, most of all on a
# machine whose other cores are busy.
FEW_TOKENS = 4096


@contextlib.contextmanager
def one_thread(few: bool):
    """Run the block on one CPU thread when `few`; the thread count is restored after."""
    if not few:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


PACKED_TOKENS = 65536  # tokens per packed inference chunk: 32 MB per (tokens, 128) float tensor


def packed_chunks(enc: Encoded) -> list[np.ndarray]:
    """The texts in runs of at most PACKED_TOKENS tokens (a longer text alone), in input order."""
    ends = np.cumsum(enc.lengths)
    if ends[-1] <= PACKED_TOKENS:
        return [np.arange(len(enc))]
    cuts = np.searchsorted(ends, np.arange(PACKED_TOKENS, int(ends[-1]), PACKED_TOKENS), side="right")
    return np.split(np.arange(len(enc)), np.unique(cuts[(cuts > 0) & (cuts < len(enc))]))


@torch.inference_mode()
def logits_of(model, enc: Encoded, batch_size: int = 128, device=None, table=None) -> torch.Tensor:
    """Logits for every text, in input order: (texts, classes), float32 on the CPU. `table`: the
    model's `input_table()`, built once by a caller that keeps the model loaded."""
    device = device or next(model.parameters()).device
    was_training = model.training
    if was_training:  # a walk over every module each way: a tenth of a one-text call
        model.eval()
    out = torch.empty(len(enc), model.head.out_features)
    if getattr(model, "packable", False) and len(enc):
        # packed: no padding and few steps, so large chunks; bounded in tokens, since each layer's
        # output for the whole chunk is held at once: (tokens, hidden)
        if table is None:  # one lookup per token instead of a product, for the words these texts use
            words = np.flatnonzero(np.bincount(enc.ids, minlength=1))  # (words,) sorted
            table = model.input_table(int(enc.lengths.sum()), words)
        for chunk in packed_chunks(enc):
            idx, ids, sizes = packed_batch(enc, chunk)
            out[torch.from_numpy(idx)] = model.packed_logits(ids, sizes, table).float()  # (texts, classes)
    elif model.directions == 1:  # padding after a text cannot reach it: fewer, fuller batches
        for idx, ids, lengths in sorted_padded_batches(enc, batch_size):
            ids, lengths = torch.from_numpy(ids).to(device), torch.from_numpy(lengths)  # (seq, batch), (batch,)
            out[torch.from_numpy(idx)] = model(ids, lengths).float().cpu()  # (batch, classes)
    else:
        for idx, ids, _ in LengthBuckets(enc).batches(batch_size):
            out[torch.from_numpy(idx)] = model(ids.to(device)).float().cpu()  # (batch, classes)
    if was_training:
        model.train()
    return out


def probabilities(model, enc: Encoded, batch_size: int = 128, device=None, table=None) -> np.ndarray:
    """Class probabilities for every text, in input order: (texts, classes)."""
    device = device or next(model.parameters()).device
    with one_thread(device.type == "cpu" and enc.ids.size < FEW_TOKENS):
        return torch.softmax(logits_of(model, enc, batch_size, device, table), dim=1).numpy()
