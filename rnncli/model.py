"""The classifier: token ids -> embedding -> recurrent layers -> pooling over valid steps -> linear head,
and with `--ngrams` a bag of word n-grams beside them (rnncli.ngrams).

Tensors are seq-first, as in PyTorch's default: ids are (seq, batch). Texts shorter than the batch
are right-padded with id 0; padding never changes a text's result (masks for the forward direction,
packed sequences for the backward one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnncli import recurrence
from rnncli.config import ModelConfig
from rnncli.dropout import dropout, locked_dropout, word_dropout
from rnncli.ngrams import NgramBag

RECURRENT = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}

# Gradients that fade over many steps, and AdamW's moments for words a batch has not used in a
# while, decay into denormal floats, which make CPU arithmetic some 20x slower; flushing them to zero
# changes no result that matters. The flag is per thread and torch's worker threads copy it from
# the thread that starts them, so it is set here, on import, before any parallel op starts them.
torch.set_flush_denormal(True)

TABLE_BYTES = 1 << 28  # the largest first-layer lookup table inference builds (see `input_table`)


@dataclass
class InputTable:
    """The first layer's input terms for a set of words (see `RNNClassifier.input_table`): rows
    (dirs, words, gates x hidden), and `slot` (vocab,) each word id's row, None where the rows are
    the whole vocabulary in id order."""

    rows: torch.Tensor
    slot: torch.Tensor | None = None

    def positions(self, ids: torch.Tensor) -> torch.Tensor:
        """(tokens,) word ids -> (tokens,) their rows."""
        return ids if self.slot is None else self.slot.index_select(0, ids)


def init_recurrent(rnn: nn.Module, how: str) -> None:
    """W_hh per gate block as `--weight-init` asks: orthogonal, or identity, which lets a relu RNN
    carry its state unchanged at first (Le et al. 2015); `default` keeps PyTorch's."""
    if how == "default":
        return
    for name, p in rnn.named_parameters():
        if name.startswith("weight_hh"):
            for gate in p.data.chunk(p.shape[0] // p.shape[1]):  # one (hidden, hidden) block per gate
                if how == "identity":
                    nn.init.eye_(gate)
                else:
                    nn.init.orthogonal_(gate)
        elif name.startswith("bias") and how == "identity":
            nn.init.zeros_(p)


def join(head: torch.Tensor, bag: torch.Tensor) -> torch.Tensor:
    """The answer of two models trained apart, the head and the n-gram bag: the sum of their log
    probabilities, as logits (..., classes)."""
    return head.log_softmax(-1) + bag.log_softmax(-1)


class RNNClassifier(nn.Module):
    fused = True  # rnncli.recurrence on CPU: rnn and gru training, packed inference for every cell

    def __init__(self, config: ModelConfig, vocab_size: int, num_classes: int):
        super().__init__()
        self.config = config
        self.directions = 2 if config.bidirectional else 1
        extra = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
        self.embedding = nn.Embedding(vocab_size, config.embed, padding_idx=0)
        self.rnn = RECURRENT[config.cell](
            config.embed, config.hidden, num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional, **extra,
        )
        if config.pool == "attn":
            self.attn = nn.Linear(config.hidden * self.directions, 1)  # one score per step's output
        self.head = nn.Linear(config.hidden * self.directions, num_classes)
        if config.ngrams:
            self.ngrams = NgramBag(config.ngrams, vocab_size, config.ngram_buckets, num_classes)
        init_recurrent(self.rnn, config.weight_init)
        self.embedding.weight.requires_grad_(not config.freeze_vectors)

    def encode(self, ids: torch.Tensor, lengths: torch.Tensor | None = None, perturb: torch.Tensor | None = None):
        """Run the recurrent layers; returns `out` (seq, batch, hidden x dirs) and the final state.
        `perturb` (seq, batch, embed) is added to the embedded words (adversarial training)."""
        ids = word_dropout(ids, self.config.word_dropout, self.training)  # (seq, batch)
        x = self.embedding(ids)  # (seq, batch, embed)
        if perturb is not None:
            x = x + perturb
        x = locked_dropout(x, self.config.dropout, self.training)  # (seq, batch, embed)
        padded = lengths is not None and bool((lengths < ids.shape[0]).any())
        if self.directions == 2 and padded:
            # The backward direction would start on padding: pack so it starts on each text's last token.
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            out, state = self.rnn(packed)
            out, _ = pad_packed_sequence(out, total_length=ids.shape[0])  # (seq, batch, hidden x dirs)
            return out, state
        if self.fused and recurrence.supported(self.rnn, x):
            return recurrence.run(self.rnn, x)  # out: (seq, batch, hidden x dirs); h_n: (layers x dirs, batch, hidden)
        return self.rnn(x)

    def pool(self, out: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """One vector per text from the valid steps of `out`: (seq, batch, H) -> (batch, H)."""
        seq, batch, width = out.shape
        if lengths is None and self.config.pool == "last" and self.directions == 1:
            return out[-1]  # every text ends at the last step: (batch, H)
        if lengths is None:
            lengths = torch.full((batch,), seq, dtype=torch.long, device=out.device)
        lengths = lengths.to(out.device)
        if self.config.pool == "last":
            last = out[lengths - 1, torch.arange(batch, device=out.device)]  # (batch, H x dirs)
            if self.directions == 1:
                return last
            hidden = width // 2
            # forward direction ends at the last token; backward direction ends at the first
            return torch.cat([last[:, :hidden], out[0, :, hidden:]], dim=1)  # (batch, 2H)
        valid = torch.arange(seq, device=out.device)[:, None] < lengths[None, :]  # (seq, batch)
        if self.config.pool == "attn":
            return (out * self.attention(out, valid)[..., None]).sum(0)  # (batch, H)
        if self.config.pool == "mean":
            summed = (out * valid[..., None]).sum(0)  # (batch, H)
            return summed / lengths[:, None].to(out.dtype)
        return out.masked_fill(~valid[..., None], float("-inf")).max(0).values  # (batch, H)

    def attention(self, out: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """How much of `attn` pooling each step gets: out (seq, batch, H) -> weights (seq, batch), each
        text's summing to 1 over its valid steps. The text decides which of its steps matter."""
        score = self.attn(out).squeeze(-1)  # (seq, batch)
        if valid is not None:
            score = score.masked_fill(~valid, float("-inf"))
        return score.softmax(0)  # (seq, batch)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None,
                perturb: torch.Tensor | None = None, parts: bool = False):
        """ids (seq, batch), lengths (batch,) or None when no text is padded -> logits (batch, classes);
        `perturb`: see `encode`. `parts`: the head's logits and the n-gram bag's apart (`--ngrams`),
        each trained on its own loss."""
        out, _ = self.encode(ids, lengths, perturb)
        pooled = dropout(self.pool(out, lengths), self.config.dropout, self.training)  # (batch, H x dirs)
        if parts:
            return self.head(pooled), self.ngrams(ids, lengths)  # (batch, classes) each
        return self.answer(pooled, ids, lengths)  # (batch, classes)

    def answer(self, pooled: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The head's logits for pooled (batch, H x dirs), joined with the n-gram bag's for the texts
        ids (seq, batch) where the model has one (`--ngrams`): (batch, classes)."""
        logits = self.head(pooled)  # (batch, classes)
        return logits if self.config.ngrams == 0 else join(logits, self.ngrams(ids, lengths))

    @property
    def packable(self) -> bool:
        """Whether `packed_logits` serves this model: every cell and direction, on the CPU."""
        return self.fused and self.head.weight.device.type == "cpu"

    @torch.inference_mode()
    def input_table(self, tokens: int | None = None, words: np.ndarray | None = None) -> InputTable | None:
        """The first layer's input terms E W_ih^T + b per direction for every word of the vocabulary,
        or for `words` alone (sorted ids), so that inference on `tokens` tokens looks each one up
        instead of multiplying it. None where that would cost more than it saves (no more tokens
        than the table has words) or hold more than TABLE_BYTES; `tokens` None: wherever it fits,
        for a model kept loaded for many calls."""
        vocab = self.embedding.num_embeddings
        count, width = vocab if words is None else len(words), self.rnn.weight_ih_l0.shape[0]
        few = tokens is not None and tokens <= count
        if few or self.directions * count * width * self.embedding.weight.element_size() > TABLE_BYTES:
            return None
        embedded, slot = self.embedding.weight, None
        if words is not None:  # only the rows a call reads: a one-off evaluation's few thousand words
            index = torch.from_numpy(words)
            embedded = embedded.index_select(0, index)  # (words, embed)
            slot = torch.full((vocab,), -1, dtype=torch.long).index_put_((index,), torch.arange(count))
        rows = embedded.new_empty(self.directions, count, width)  # (dirs, words, gates x hidden)
        for d, suffix in enumerate(["_l0", "_l0_reverse"][: self.directions]):
            recurrence.input_terms(self.rnn, suffix, embedded, out=rows[d])
        return InputTable(rows, slot)

    @torch.inference_mode()
    def packed_logits(self, ids: torch.Tensor, batch_sizes: list[int], table: InputTable | None = None
                      ) -> torch.Tensor:
        """Inference on packed texts (see `recurrence.run_packed`): ids (tokens,) -> logits (texts,
        classes), texts in the packed order, longest first. `table`: see `input_table`."""
        texts = batch_sizes[0]
        packed = recurrence.Packed(batch_sizes)
        if table is None:
            out = recurrence.run_packed(self.rnn, self.embedding(ids), packed)  # (tokens, hidden x dirs)
        else:
            out = recurrence.run_packed(self.rnn, None, packed, table=(table.rows, table.positions(ids)))
        if self.config.pool == "last":
            pooled = out.index_select(0, packed.last_rows())  # (texts, hidden x dirs)
            if self.directions == 2:  # the backward direction ends on each text's first token
                hidden = out.shape[1] // 2
                pooled = torch.cat([pooled[:, :hidden], out[:texts, hidden:]], dim=1)  # (texts, 2 hidden)
        else:
            text_of = packed.text  # (tokens,)
            pooled = out.new_zeros(texts, out.shape[1])
            if self.config.pool == "attn":  # a softmax within each text's own tokens
                score = self.attn(out).squeeze(1)  # (tokens,)
                top = score.new_full((texts,), float("-inf")).scatter_reduce_(0, text_of, score, "amax")
                weight = (score - top[text_of]).exp()  # (tokens,)
                total = weight.new_zeros(texts).index_add_(0, text_of, weight)  # (texts,)
                pooled.index_add_(0, text_of, out.mul_((weight / total[text_of])[:, None]))  # out is not read again
            elif self.config.pool == "mean":
                pooled.index_add_(0, text_of, out).div_(packed.lengths[:, None].to(out.dtype))
            else:
                pooled.fill_(float("-inf")).scatter_reduce_(0, text_of[:, None].expand_as(out), out, "amax")
        logits = self.head(pooled)  # (texts, classes)
        if self.config.ngrams:
            terms = self.ngrams.row_terms(ids, packed.prev_rows())  # (tokens, classes)
            logits = join(logits, torch.zeros_like(logits).index_add_(0, packed.text, terms))
        return logits

    def step_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits after every prefix, read from `out` at each step: (seq, batch, classes).

        Meaningful only for a one-directional model pooled at the last step, where the logits
        at step t are exactly what the model would answer for the text cut after token t.
        """
        out, _ = self.encode(ids)
        logits = self.head(out)  # (seq, batch, classes)
        if self.config.ngrams:  # the n-grams read so far
            logits = join(logits, self.ngrams.step_terms(ids).cumsum(0))  # (seq, batch, classes)
        return logits

    @property
    def explainable(self) -> bool:
        """Whether `predict --explain` can show how this model reads a text (`ModelConfig.explainable`)."""
        return self.config.explainable
