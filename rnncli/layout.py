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
    return shapes | {"head.weight": (num_classes, out), "head.bias": (num_classes,)}
