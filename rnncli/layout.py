"""The names and shapes of a classifier's weights, computed from its config alone.

A model folder is checked against this before torch is imported or anything is allocated, so a
`config.json` that promises more than its `model.safetensors` holds is refused in milliseconds.
tests/test_checkpoint.py ties it to `RNNClassifier.state_dict()` for every cell, direction,
depth and pooling.
"""

from __future__ import annotations

from rnncli.config import ModelConfig

GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # stacked weight blocks per cell, as nn.RNN/GRU/LSTM lay them out


def weight_shapes(config: ModelConfig, vocab_size: int, num_classes: int) -> dict[str, tuple[int, ...]]:
    """{state_dict key: shape} of `RNNClassifier(config, vocab_size, num_classes)`."""
    directions = 2 if config.bidirectional else 1
    rows = GATES[config.cell] * config.hidden
    out = config.hidden * directions
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (vocab_size, config.embed)}
    for layer in range(config.layers):
        inputs = config.embed if layer == 0 else out
        for suffix in ("", "_reverse")[:directions]:
            shapes[f"rnn.weight_ih_l{layer}{suffix}"] = (rows, inputs)
            shapes[f"rnn.weight_hh_l{layer}{suffix}"] = (rows, config.hidden)
            shapes[f"rnn.bias_ih_l{layer}{suffix}"] = (rows,)
            shapes[f"rnn.bias_hh_l{layer}{suffix}"] = (rows,)
    if config.pool == "attn":
        shapes |= {"attn.weight": (1, out), "attn.bias": (1,)}
    if config.ngrams:
        features = vocab_size + config.ngram_buckets
        shapes |= {"ngrams.weight": (features, num_classes), "ngrams.ratio": (features, num_classes)}
    return shapes | {"head.weight": (num_classes, out), "head.bias": (num_classes,)}


LM_CUTOFFS = (500, 2500, 12500)  # word ids where the adaptive softmax's head and its tail clusters split
LM_DIV = 2  # each tail cluster's projection is this many times narrower than the one before


def lm_cutoffs(vocab_size: int) -> list[int]:
    """The adaptive softmax's cutoffs for a vocabulary whose ids run most frequent first: the
    frequent words in the head, the rare ones in clusters that cost a token only when it is there."""
    return [c for c in LM_CUTOFFS if c < vocab_size - 1] or [max(1, vocab_size // 2)]


def lm_weight_shapes(config: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """{state_dict key: shape} of `lm.LanguageModel(config, vocab_size)`: the embedding, one
    one-direction stack per reading direction, and the adaptive softmax over the vocabulary."""
    rows = GATES[config.cell] * config.hidden
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (vocab_size, config.embed)}
    for stack in ("forward_rnn", "backward_rnn")[: 2 if config.bidirectional else 1]:
        for layer in range(config.layers):
            inputs = config.embed if layer == 0 else config.hidden
            shapes[f"{stack}.weight_ih_l{layer}"] = (rows, inputs)
            shapes[f"{stack}.weight_hh_l{layer}"] = (rows, config.hidden)
            shapes[f"{stack}.bias_ih_l{layer}"] = (rows,)
            shapes[f"{stack}.bias_hh_l{layer}"] = (rows,)
    cutoffs = [*lm_cutoffs(vocab_size), vocab_size]
    shapes["softmax.head.weight"] = (cutoffs[0] + len(cutoffs) - 1, config.hidden)
    for i in range(len(cutoffs) - 1):
        width = config.hidden // LM_DIV ** (i + 1)
        shapes[f"softmax.tail.{i}.0.weight"] = (width, config.hidden)
        shapes[f"softmax.tail.{i}.1.weight"] = (cutoffs[i + 1] - cutoffs[i], width)
    return shapes
