"""Dropout for recurrent models: masks drawn cheaply, one per text for the sequence (locked), and
whole words read as <unk> (word dropout). Each returns its input unchanged outside training."""

from __future__ import annotations

import torch

from rnncli.tokenizer import PAD_ID, UNK_ID


def keep_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor:
    """1 / (1 - p) where a feature is kept, 0 where dropped; the scale is applied to the mask, which
    is smaller than the tensor it multiplies. Drawn from uniform numbers and a comparison: on the CPU
    `bernoulli_` (what `nn.Dropout` uses) takes about twice as long for the same mask."""
    return torch.rand(shape, dtype=like.dtype, device=like.device).ge_(p).div_(1 - p)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Plain dropout, one draw per element (as `nn.functional.dropout`), with `keep_mask`'s draws."""
    if not training or p == 0:
        return x
    return x * keep_mask(x.shape, p, x)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout with one mask per text, the same at every step (Gal & Ghahramani 2016).

    The usual RNN regulariser, and far cheaper on the CPU: (batch, features) random numbers
    instead of (seq, batch, features).
    """
    if not training or p == 0:
        return x
    return x * keep_mask((1, *x.shape[1:]), p, x)  # mask (1, batch, features)


def word_dropout(ids: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Read each token of ids (seq, batch) as <unk> with chance `p`; padding stays padding."""
    if not training or p == 0:
        return ids
    drop = (torch.rand(ids.shape, device=ids.device) < p) & (ids != PAD_ID)  # (seq, batch)
    return ids.masked_fill(drop, UNK_ID)
