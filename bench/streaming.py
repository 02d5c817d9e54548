#!/usr/bin/env python3
"""Peak memory of training with and without --streaming, and as a streamed corpus grows tenfold.

    pip install -e ".[bench]" && python bench/streaming.py [--data ../shared/data] [--rows 1000000 10000000]
                                                           [--pretrain] [--write-docs]

1. IMDB (`--max-length 256`, the speed benchmark's 2x128 rnn, one epoch), in memory and streamed
   (the default 100,000-row vocabulary sample holds all of IMDB; a smaller one shows the buffer's effect).
2. A synthetic corpus written to local parquet shards (500,000 rows each; short texts over a
   2,000-word vocabulary, labelled by the sentiment words they hold), trained for one epoch with a
   small model, streamed at every size and in memory at the smallest. Streamed, peak RSS should
   stay flat (within 20%) from the smallest to the largest corpus.
With `--pretrain`, the same for `rnncli pretrain` (a 1x32 GRU language model, labels unused, no
skip-gram stage): IMDB in memory and streamed from a 5,000-text sample, then the synthetic corpora.
Each run is its own process; its peak RSS is the kernel's ru_maxrss for that process.
`--write-docs` also writes the table into its section of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import docs  # bench/docs.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
SHARD_ROWS = 500_000
IMDB_MODEL = ["--cell", "rnn", "--layers", "2", "--hidden", "128", "--embed", "128", "--max-length", "256"]
# IMDB's file is sorted by label: a vocabulary sample must reach past its 12,500 negative reviews
IMDB_MODES = [("in memory", []), ("streaming", ["--streaming"]),
              ("streaming, 15,000-row sample, 5,000-row buffer",
               ["--streaming", "--vocab-sample", "15000", "--stream-buffer", "5000"])]
SMALL_MODEL = ["--layers", "1", "--hidden", "32", "--embed", "32", "--batch-size", "256", "--max-length", "32"]
LM_MODEL = ["--cell", "gru", "--hidden", "32", "--embed", "32", "--batch-size", "256", "--vector-epochs", "0"]
IMDB_LM_MODES = [("in memory", ["--max-length", "256"]),
                 ("streaming, 5,000-text sample, 5,000-text buffer",
                  ["--max-length", "256", "--streaming", "--vocab-sample", "5000", "--stream-buffer", "5000"])]


def synthetic(folder: Path, rows: int, seed: int = 0) -> Path:
    """`rows` labelled texts in parquet shards, plus a 5,000-row validation file; written once."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder = folder / f"synthetic-{rows}"
    if (folder / "validation.parquet").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    neutral = [f"w{i}" for i in range(2000)]
    positive = ["good", "great", "fine", "superb", "lovely", "moving", "funny", "smart", "charming", "vivid"]
    negative = ["bad", "dull", "awful", "boring", "clumsy", "flat", "weak", "tedious", "messy", "bland"]
    vocab = pa.array(neutral + positive + negative)
    first_pos, first_neg = len(neutral), len(neutral) + len(positive)

    def block(n: int):
        lengths = rng.integers(4, 13, n)  # 4..12 tokens
        ids = rng.integers(0, len(neutral), lengths.sum())
        sentiment = rng.random(len(ids)) < 0.15
        ids[sentiment] = rng.integers(first_pos, len(vocab), sentiment.sum())
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        score = np.add.reduceat((ids >= first_pos) & (ids < first_neg), offsets[:-1]).astype(int) - \
            np.add.reduceat(ids >= first_neg, offsets[:-1]).astype(int)
        labels = np.where(score == 0, rng.integers(0, 2, n), score > 0).astype(np.int64)
        texts = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), vocab.take(pa.array(ids))), " ")
        return pa.table({"text": texts, "label": pa.array(labels)})

    shards = -(-rows // SHARD_ROWS)
    for k in range(shards):
        n = min(SHARD_ROWS, rows - k * SHARD_ROWS)
        pq.write_table(block(n), folder / f"train-{k:05d}-of-{shards:05d}.parquet")
    pq.write_table(block(5000), folder / "validation.parquet")
    return folder


def train(args: list[str], out: Path, command: str = "train") -> dict:
    """One `rnncli train` (or `pretrain`) in a child process: its wall time, peak RSS and validation
    accuracy (held-out perplexity)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "rnncli", command, *args, "--epochs", "1", "--device", "cpu",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    log = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"rnncli {command} {' '.join(args)} failed:\n{log[-2000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "validation"][-1]
    score = f"perplexity {val['perplexity']:.1f}" if command == "pretrain" else f"{val['accuracy']:.2%}"
    return {"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "score": score,
            "tokens_per_second": val["tokens_per_second"]}


def imdb_runs(imdb: Path, tmp: Path, pretrain: bool) -> list:
    """IMDB's rows: (what, corpus, mode, result)."""
    rows = []
    modes = IMDB_LM_MODES if pretrain else IMDB_MODES
    what = "IMDB, 1x32 gru language model" if pretrain else "IMDB, 2x128 rnn"
    for i, (mode, extra) in enumerate(modes):
        args = ["--dataset", str(imdb), *(LM_MODEL if pretrain else IMDB_MODEL), *extra]
        rows.append((what, "25,000 reviews", mode, train(args, tmp / f"imdb-{i}", _command(pretrain))))
        print(f"done: IMDB {mode}", file=sys.stderr)
    return rows


def _command(pretrain: bool) -> str:
    return "pretrain" if pretrain else "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000],
                    help="synthetic corpus sizes; none: IMDB only")
    ap.add_argument("--pretrain", action="store_true", help="measure rnncli pretrain instead of train")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "rnncli-bench-streaming",
                    help="where the synthetic corpora are written (kept for the next run)")
    docs.add_option(ap)
    args = ap.parse_args()
    rows = []  # what, corpus, mode, result
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (args.data / "imdb").is_dir():
            rows += imdb_runs(args.data / "imdb", tmp, args.pretrain)
        model, what = (LM_MODEL, "synthetic, 1x32 gru language model") if args.pretrain else \
            (SMALL_MODEL, "synthetic, 1x32 rnn")
        for i, n in enumerate(sorted(args.rows)):
            start = time.perf_counter()
            folder = synthetic(args.cache, n)
            print(f"corpus of {n:,} rows ready in {time.perf_counter() - start:.0f}s", file=sys.stderr)
            modes = [("streaming", ["--streaming"])] + ([("in memory", [])] if i == 0 else [])
            for mode, extra in modes:
                r = train(["--dataset", str(folder), *model, *extra], tmp / f"syn-{n}-{len(extra)}",
                          _command(args.pretrain))
                rows.append((what, f"{n:,} rows", mode, r))
                print(f"done: synthetic {n:,} {mode}", file=sys.stderr)
    lines = table(rows, "held-out" if args.pretrain else "val acc")
    print("\n" + "\n".join(lines))
    if args.write_docs:
        docs.write_section("bench/streaming.py" + (" --pretrain" if args.pretrain else ""), "\n".join(lines))


def table(rows: list, score: str) -> list[str]:
    """The rows as a markdown table, and whether the streamed peak stayed flat as the corpus grew."""
    lines = [f"| data | corpus | mode | peak RSS | seconds | tokens/s | {score} |",
             "|---|---|---|---|---|---|---|"]
    for what, corpus, mode, r in rows:
        lines.append(f"| {what} | {corpus} | {mode} | {r['rss_mb']:,.0f} MB | {r['seconds']:.0f} | "
                     f"{r['tokens_per_second']:,.0f} | {r['score']} |")
    streamed = [r["rss_mb"] for what, _, mode, r in rows if what.startswith("synthetic") and mode == "streaming"]
    if len(streamed) > 1:
        growth = streamed[-1] / streamed[0] - 1
        verdict = "flat" if abs(growth) <= 0.20 else "NOT flat"
        lines += ["", f"streamed peak RSS from the smallest to the largest corpus: {growth:+.1%} ({verdict}; limit 20%)"]
    return lines


if __name__ == "__main__":
    main()
