#!/usr/bin/env python3
"""Where a training step's time goes: the same SST-2 batches, variants of one step, in one process.

    python bench/train_step.py [--data ../shared/data/sst2] [--batches 300] [--rounds 7]
                               [--config configs/sst2-gru.toml] [--write-docs]

The speed benchmark's model (rnn, tanh, 2 layers, hidden 128, embed 128, batch 64), or with
`--config` that config's model, one model and optimiser per variant. Each round runs every variant
over the same batches, in turns, so a slow spell of a shared machine hits them all; the table gives
each variant's fastest and median round. Variants: the embedding gradient dense or by rows
(`rnncli.optimizer.Gradients`), AdamW or `RowAdamW` (which updates only the rows a batch uses,
`rnncli.optimizer`), and the dropout masks (`rnncli.dropout.keep_mask`, on the embeddings, between
layers and before the head) drawn from uniform numbers (rnncli) or with `bernoulli_` (as
`nn.Dropout` draws). With `--config` (an rnn or gru model; the lstm always trains on torch's own
path), rnncli's step as it is against the same step through torch's own nn.RNN or nn.GRU instead of
`rnncli.recurrence`.
`--write-docs` also writes the table into its section of docs/results.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import docs  # bench/docs.py, beside this script
from rnncli import dropout
from rnncli.batching import training_batches
from rnncli.config import resolve
from rnncli.data import load_corpus
from rnncli.model import RNNClassifier
from rnncli.optimizer import Gradients, make_optimizer
from rnncli.tokenizer import encode, train_tokenizer

MODEL = {"cell": "rnn", "layers": 2, "hidden": 128, "embed": 128, "nonlinearity": "tanh", "weight_init": "default"}


def bernoulli_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor:
    """The same kind of mask drawn as `nn.Dropout` draws, with `bernoulli_`."""
    return torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(1 - p).div_(1 - p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--config", type=Path, help="a config whose model to time, fused against torch's own cell")
    docs.add_option(ap)
    a = ap.parse_args()

    config = resolve(a.config, {**({} if a.config else MODEL), "dataset": str(a.data), "device": "cpu"})
    if config.model.cell == "lstm":
        ap.error(f"{a.config}: an lstm trains on torch's own path either way; give an rnn or gru config")
    train = load_corpus(config.data, seed=0).splits["train"]
    tokenizer = train_tokenizer(train.texts, config.data.min_freq, config.data.max_vocab)
    encoded = encode(tokenizer, train.texts, config.data.max_length)
    labels = torch.from_numpy(train.labels)
    source = training_batches(encoded, padded=not config.model.bidirectional)  # as `rnncli train` reads them
    batches = list(source.batches(config.train.batch_size, np.random.default_rng(0)))[: a.batches]
    tokens = sum(int(encoded.lengths[idx].sum()) for idx, _, _ in batches)

    rnncli = "row gradient, RowAdamW, uniform masks (rnncli)"
    variants = {  # embedding gradient by rows, RowAdamW, dropout masks, rnncli.recurrence
        "dense gradient, AdamW, bernoulli_ masks": (False, False, bernoulli_mask, True),
        "row gradient, AdamW, bernoulli_ masks": (True, False, bernoulli_mask, True),
        "row gradient, RowAdamW, bernoulli_ masks": (True, True, bernoulli_mask, True),
        rnncli: (True, True, dropout.keep_mask, True),
    }
    if a.config:
        cell = {"rnn": "nn.RNN", "gru": "nn.GRU"}[config.model.cell]
        variants = {f"{a.config.name}: torch's {cell}": (True, True, dropout.keep_mask, False), rnncli: variants[rnncli]}
    steps = {}
    for name, (rows, lazy, _, fused) in variants.items():
        torch.manual_seed(0)
        model = RNNClassifier(config.model, vocab_size=tokenizer.get_vocab_size(), num_classes=2).train()
        model.fused = fused
        optimizer = make_optimizer(model, config, rows=lazy)
        steps[name] = (model, optimizer, Gradients(model, rows=rows, optimizer=optimizer))

    seconds: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(a.rounds):
            for name, (_, _, mask, _) in variants.items():
                dropout.keep_mask = mask
                model, optimizer, gradients = steps[name]
                start = time.perf_counter()
                for idx, ids, lengths in batches:  # ids (seq, batch), lengths (batch,) or None
                    loss = torch.nn.functional.cross_entropy(model(ids, lengths), labels[idx])
                    gradients.zero(ids)
                    loss.backward()
                    gradients.clip(config.train.clip)
                    optimizer.step()
                    gradients.zero_rows()
                    loss.item()
                gradients.catch_up()  # as at the end of an epoch
                seconds[name].append(time.perf_counter() - start)
    finally:
        dropout.keep_mask = variants[rnncli][2]

    model_name = a.config or "the speed benchmark's rnn"
    lines = [(f"{len(batches)} SST-2 batches ({tokens:,} tokens), {a.rounds} rounds, {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, model: {model_name}"),
             "| variant | fastest ms/step | median ms/step | tokens/s (fastest) |",
             "|---|---|---|---|"]
    for name, s in seconds.items():
        lines.append(f"| {name} | {min(s) / len(batches) * 1000:.2f} | {statistics.median(s) / len(batches) * 1000:.2f} "
                     f"| {tokens / min(s):,.0f} |")
    print("\n".join(lines))
    if a.write_docs:
        docs.write_section("bench/train_step.py" + (f" --config {a.config.name}" if a.config else ""), "\n".join(lines))


if __name__ == "__main__":
    main()
