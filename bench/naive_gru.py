#!/usr/bin/env python3
"""A plain nn.GRU sentiment classifier, written as a tutorial would: the baseline for rnncli's GRU configs.

    python bench/naive_gru.py DATA_DIR [--layers 1] [--hidden 128] [--embed 100] [--bidir]
                              [--pool attn|mean|last] [--epochs 1] [--batch 64] [--lr 2e-3]
                              [--dropout 0.5] [--maxlen 256]

The same shape as ../shared/bench/naive_rnn.py (regex tokens, a Counter vocabulary, padded batches
sorted by length and packed, Adam on dense embedding gradients, gradient clipping), with the pooling
rnncli's GRU configs use: attention or the mean over each text's own steps of the padded outputs.
It prints what naive_rnn.py prints, one line per epoch: loss, seconds, training tokens/s, and
accuracy with predictions/s on each evaluation split, so bench/speed.py reads both alike.
"""
import argparse
import collections
import random
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

TOKEN = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def load(path):
    t = pq.read_table(path).to_pydict()
    col = "sentence" if "sentence" in t else "text"
    return [TOKEN.findall(s.lower()) for s in t[col]], t["label"]


class Net(nn.Module):
    def __init__(self, vocab, embed, hidden, layers, classes, bidir, pool, dropout):
        super().__init__()
        width = hidden * (2 if bidir else 1)
        self.emb = nn.Embedding(vocab, embed, padding_idx=0)
        self.gru = nn.GRU(embed, hidden, layers, dropout=dropout if layers > 1 else 0.0, bidirectional=bidir)
        self.attn = nn.Linear(width, 1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, classes)
        self.bidir, self.pool = bidir, pool

    def forward(self, x, lengths):  # x: (seq, batch)
        packed = pack_padded_sequence(self.drop(self.emb(x)), lengths, enforce_sorted=False)
        out, h = self.gru(packed)
        if self.pool == "last":
            top = torch.cat([h[-2], h[-1]], 1) if self.bidir else h[-1]
            return self.head(self.drop(top))
        out, _ = pad_packed_sequence(out)  # (seq, batch, width), zeros past each text's end
        valid = torch.arange(out.shape[0])[:, None] < lengths[None, :]  # (seq, batch)
        if self.pool == "mean":
            pooled = out.sum(0) / lengths[:, None]
        else:
            score = self.attn(out).squeeze(-1).masked_fill(~valid, float("-inf"))  # (seq, batch)
            pooled = (out * score.softmax(0)[..., None]).sum(0)
        return self.head(self.drop(pooled))


def batches(xs, ys, size, shuffle, maxlen):
    order = sorted(range(len(xs)), key=lambda i: len(xs[i]))
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    if shuffle:
        random.shuffle(chunks)
    for c in chunks:
        seqs = [xs[i][:maxlen] or [1] for i in c]
        x = torch.zeros(max(map(len, seqs)), len(c), dtype=torch.long)
        for j, s in enumerate(seqs):
            x[:len(s), j] = torch.tensor(s)
        yield x, torch.tensor([len(s) for s in seqs]), torch.tensor([ys[i] for i in c])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--embed", type=int, default=100)
    ap.add_argument("--bidir", action="store_true")
    ap.add_argument("--pool", choices=["attn", "mean", "last"], default="attn")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--maxlen", type=int, default=256)
    a = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    data = Path(a.data)
    xtr, ytr = load(data / "train.parquet")
    evals = {p.stem: load(p) for p in (data / "validation.parquet", data / "test.parquet") if p.exists()}
    counts = collections.Counter(t for s in xtr for t in s)
    vocab = {w: i + 2 for i, (w, _) in enumerate(counts.most_common())}  # 0 pad, 1 unk
    encode = lambda xs: [[vocab.get(t, 1) for t in s] for s in xs]
    xtr = encode(xtr)
    evals = {k: (encode(x), y) for k, (x, y) in evals.items()}
    net = Net(len(vocab) + 2, a.embed, a.hidden, a.layers, max(ytr) + 1, a.bidir, a.pool, a.dropout)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr)
    print(f"vocab {len(vocab) + 2} params {sum(p.numel() for p in net.parameters()):,} "
          f"threads {torch.get_num_threads()}", flush=True)
    for epoch in range(1, a.epochs + 1):
        net.train()
        t0, tokens, total = time.perf_counter(), 0, 0.0
        for x, lengths, y in batches(xtr, ytr, a.batch, True, a.maxlen):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x, lengths), y)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            tokens += int(lengths.sum())
            total += loss.item() * len(y)
        seconds = time.perf_counter() - t0
        row = [f"epoch {epoch} loss {total / len(ytr):.4f} {seconds:.1f}s {tokens / seconds:,.0f} tok/s"]
        net.eval()
        with torch.no_grad():
            for name, (xs, ys) in evals.items():
                t1 = time.perf_counter()
                right = sum(int((net(x, n).argmax(1) == y).sum()) for x, n, y in batches(xs, ys, 256, False, a.maxlen))
                row.append(f"{name} {right / len(ys):.4f} ({len(ys) / (time.perf_counter() - t1):,.0f}/s)")
        print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
