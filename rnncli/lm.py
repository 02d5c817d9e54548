"""The language model `rnncli pretrain` trains: the classifier's embedding and recurrent layers,
taught to predict each next word of unlabeled text.

A one-direction model reads a text forward and, at each step, scores the word after it. A
bidirectional one has a second stack that reads the text backwards and scores the word before
(as ELMo and ULMFiT do); the two stacks never see each other, as either would otherwise read the
very word it is asked for. Scoring 50,000 words at every step would cost more than the recurrence
itself, so the output is torch's adaptive softmax (Grave et al. 2017): the frequent words in one
small head, the rare ones in narrower clusters reached only through it.

`classifier_body` turns the weights into an `RNNClassifier`'s embedding and `rnn.*` entries, which
`rnncli train --init-from` starts from.
"""

from __future__ import annotations

import torch
from torch import nn

from rnncli import recurrence
from rnncli.config import ModelConfig
from rnncli.dropout import dropout, locked_dropout
from rnncli.layout import LM_DIV, lm_cutoffs
from rnncli.model import RECURRENT, init_recurrent

MIN_HIDDEN = 8  # the adaptive softmax's narrowest cluster is hidden // 8 wide


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig, vocab_size: int):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(vocab_size, config.embed, padding_idx=0)
        self.forward_rnn = self._stack(config)
        if config.bidirectional:
            self.backward_rnn = self._stack(config)
        self.softmax = nn.AdaptiveLogSoftmaxWithLoss(config.hidden, vocab_size, lm_cutoffs(vocab_size),
                                                     div_value=float(LM_DIV))

    @staticmethod
    def _stack(config: ModelConfig) -> nn.Module:
        extra = {"nonlinearity": config.nonlinearity} if config.cell == "rnn" else {}
        rnn = RECURRENT[config.cell](config.embed, config.hidden, num_layers=config.layers,
                                     dropout=config.dropout if config.layers > 1 else 0.0, **extra)
        init_recurrent(rnn, config.weight_init)
        return rnn

    @property
    def stacks(self) -> list[nn.Module]:
        return [self.forward_rnn] + ([self.backward_rnn] if self.config.bidirectional else [])

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        """ids (seq, batch) of texts all `seq` long, seq >= 2 -> (the summed negative log-likelihood
        of every word each direction predicts, how many words that is)."""
        p = self.config.dropout
        x = locked_dropout(self.embedding(ids), p, self.training)  # (seq, batch, embed)
        total, count = x.new_zeros(()), 0
        for d, rnn in enumerate(self.stacks):
            # forward: steps 0..seq-2 predict words 1..seq-1; backward: the same on the reversed text
            inputs, targets = (x.flip(0), ids.flip(0)) if d else (x, ids)
            if recurrence.supported(rnn, inputs):
                out = recurrence.run(rnn, inputs[:-1])[0]
            else:
                out = rnn(inputs[:-1])[0]  # (seq - 1, batch, hidden)
            out = dropout(out, p, self.training).reshape(-1, out.shape[-1])  # (words, hidden)
            scored = self.softmax(out, targets[1:].reshape(-1))
            total = total + scored.loss * len(out)
            count += len(out)
        return total, count

    def classifier_body(self) -> dict[str, torch.Tensor]:
        """The weights an `RNNClassifier` of the same [model] takes from this model: its embedding,
        and `rnn.*` laid out as one bidirectional module. Above the first layer, a bidirectional
        classifier's layer reads both directions' outputs; the columns that read the other
        direction, which the two stacks here never had, start at zero."""
        body = {"embedding.weight": self.embedding.weight.detach()}
        for d, rnn in enumerate(self.stacks):
            for name, p in rnn.named_parameters():
                p = p.detach()
                if name.startswith("weight_ih") and not name.endswith("_l0") and self.config.bidirectional:
                    blank = torch.zeros_like(p)  # (gates x hidden, hidden)
                    p = torch.cat([blank, p] if d else [p, blank], dim=1)  # (gates x hidden, 2 hidden)
                body[f"rnn.{name}{'_reverse' if d else ''}"] = p
        return body
