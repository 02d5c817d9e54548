"""A bag of word n-grams beside the recurrent layers (`--ngrams`): NBSVM (Wang & Manning 2012) as a
branch of the classifier. It learns on a loss of its own, beside the head's, and the model's answer
adds the two's log probabilities (`model.join`).

Each n-gram of up to `n` words is one feature, read at the token it ends on: a single word is its
own id, a longer one is hashed into `buckets` rows after the vocabulary's. A feature's term for
a class is a learned weight times its naive Bayes log-count ratio: how much more often the texts
of that class hold it than the other texts do, counted in train before training. On long reviews
such a bag is as strong as the recurrent layers, and the two err on different texts.

Feature 0 (the padding id) has ratio 0, so a position that ends no n-gram of some length reads
feature 0 and adds nothing. Texts are laid out as rows with `prev`, each row's previous token in
the same text (-1 at a text's first token): padded batches and packed ones share one code path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rnncli.errors import RnncliError

PRIME = 1_000_003  # the hash's multiplier, a prime
TABLE_LIMIT = 1 << 25  # the most entries (features x classes) the bag's weight may hold: 128 MB in fp32


class NgramBag(nn.Module):
    def __init__(self, n: int, vocab_size: int, buckets: int, num_classes: int):
        super().__init__()
        self.n, self.vocab_size, self.buckets = n, vocab_size, buckets
        features = vocab_size + buckets
        if features * num_classes > TABLE_LIMIT:
            raise RnncliError(f"--ngram-buckets {buckets} with {vocab_size} words and {num_classes} classes makes a "
                              f"table of {features * num_classes:,} weights (at most {TABLE_LIMIT:,}): use fewer buckets")
        self.weight = nn.Parameter(torch.zeros(features, num_classes))
        self.register_buffer("ratio", torch.zeros(features, num_classes))  # see `fit_ratios`

    def features(self, ids: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """ids (rows,) and prev (rows,) -> (n, rows): the feature of the k+1-word n-gram ending at each row."""
        safe = prev.clamp_min(0)  # (rows,)
        feats, hashed, valid = [ids], ids, prev >= 0  # (rows,) each
        for _ in range(1, self.n):
            hashed = (hashed[safe] * PRIME + ids) % self.buckets  # (rows,)
            feats.append(torch.where(valid, hashed + self.vocab_size, 0))
            valid = valid & valid[safe]  # the next length needs one more token before
        return torch.stack(feats)  # (n, rows)

    def row_terms(self, ids: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """ids (rows,), prev (rows,) -> (rows, classes): the terms of the n-grams ending at each row."""
        feats = self.features(ids, prev)  # (n, rows)
        return (self.weight[feats] * self.ratio[feats]).sum(0)  # (rows, classes)

    def step_terms(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (seq, batch) -> (seq, batch, classes): the terms of the n-grams ending at each step."""
        seq, batch = ids.shape
        return self.row_terms(ids.reshape(-1), padded_prev(seq, batch, ids.device)).reshape(seq, batch, -1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ids (seq, batch), lengths (batch,) or None where no text is padded -> (batch, classes)."""
        terms = self.step_terms(ids)  # (seq, batch, classes)
        if lengths is not None:
            valid = torch.arange(ids.shape[0], device=ids.device)[:, None] < lengths.to(ids.device)[None, :]  # (seq, batch)
            terms = terms * valid[..., None]
        return terms.sum(0)  # (batch, classes)

    @torch.no_grad()
    def fit_ratios(self, ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
        """Set `ratio` from the training texts (flat `ids`, each text at starts[i] for lengths[i]
        tokens) and their labels: per class, log(p / |p|) - log(q / |q|), where p counts the texts
        of that class holding each feature and q the other texts, both plus one (one-vs-rest)."""
        text = np.repeat(np.arange(len(lengths)), lengths)  # (tokens,) the text of each token
        offset = np.arange(len(text)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (tokens,) its position there
        flat = torch.from_numpy(ids[starts[text] + offset])  # (tokens,)
        prev = torch.from_numpy(np.where(offset > 0, np.arange(len(text)) - 1, -1))  # (tokens,)
        size = self.weight.shape[0]
        feats = self.features(flat, prev).reshape(-1)  # (n x tokens,)
        texts = torch.from_numpy(text).repeat(self.n)  # (n x tokens,)
        pairs = torch.unique(texts * size + feats)  # each (text, feature) once
        label = torch.from_numpy(labels)[pairs // size]  # (pairs,)
        counts = torch.zeros(self.weight.shape[1], size, dtype=torch.float64)
        counts.index_put_((label, pairs % size), torch.ones(len(pairs), dtype=torch.float64), accumulate=True)
        p = counts + 1  # (classes, features)
        q = counts.sum(0) - counts + 1  # (classes, features)
        ratio = (p / p.sum(1, keepdim=True)).log() - (q / q.sum(1, keepdim=True)).log()  # (classes, features)
        ratio[:, 0] = 0  # padding, and positions that end no n-gram of a length
        self.ratio.copy_(ratio.T.to(self.ratio.dtype))


def padded_prev(seq: int, batch: int, device) -> torch.Tensor:
    """Each row's previous token in a (seq, batch) batch flattened step-major: (seq x batch,)."""
    rows = torch.arange(seq * batch, device=device)
    return torch.where(rows >= batch, rows - batch, -1)
