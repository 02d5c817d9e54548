#!/usr/bin/env python3
"""Word vectors for `rnncli train --vectors`, learned here without labels: no download needed.

    pip install -e ".[bench]" && python bench/vectors.py [--data ../shared/data] [--out FILE.vec] [--dim 100]

fastText skipgram (Bojanowski et al. 2017) on the 25,000 IMDB training reviews and the SST-2
training split's text (labels unused), each split into words exactly as rnncli's tokenizer does
(lowercased; "it's" -> it ' s), so the words match the vocabulary. No validation or test text is
read. It writes word2vec text (`N D` header, then `word v1 ... vD`), prints its time and vocabulary
size. fastText seeds its generator with a fixed 0 and the corpus order is fixed: with `--threads 1`
(slower) a rerun repeats bit for bit; with more threads (the threads race on shared weights) the
vectors differ slightly from run to run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = (("imdb", "train"), ("sst2", "train"))  # never a validation or test split


def corpus_texts(data: Path):
    import pyarrow.parquet as pq

    for name, split in SOURCES:
        table = pq.read_table(data / name / f"{split}.parquet")
        column = next(c for c in ("text", "sentence") if c in table.column_names)
        yield from table.column(column).to_pylist()


def build(data: Path, out: Path, dim: int = 100, epochs: int = 5, min_count: int = 2,
          threads: int = 2, subwords: bool = False) -> tuple[int, float]:
    """Write the vectors file `out`; returns (vocabulary size, seconds)."""
    import fasttext

    from rnncli.tokenizer import split_words

    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        with text.open("w", encoding="utf-8") as fh:
            for words in split_words(corpus_texts(data)):
                fh.write(" ".join(words) + "\n")
        model = fasttext.train_unsupervised(str(text), model="skipgram", dim=dim, epoch=epochs,
                                            minCount=min_count, thread=threads, verbose=0,
                                            **({} if subwords else {"minn": 0, "maxn": 0}))
    words = [w for w in model.words if w != "</s>"]
    tmp_out = out.with_name(out.name + ".tmp")
    with tmp_out.open("w", encoding="utf-8") as fh:
        fh.write(f"{len(words)} {dim}\n")
        for w in words:
            fh.write(w + " " + " ".join(f"{v:.5f}" for v in model.get_word_vector(w)) + "\n")
    tmp_out.replace(out)  # a killed run never leaves a half-written file under the real name
    return len(words), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/vectors/imdb-sst2-<dim>d.vec")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--subwords", action="store_true",
                    help="character n-grams 3-6 as in fastText's default (several times slower)")
    a = ap.parse_args()
    out = a.out or ROOT / "bench" / "vectors" / f"imdb-sst2-{a.dim}d.vec"
    vocab, seconds = build(a.data, out, a.dim, a.epochs, a.min_count, a.threads, a.subwords)
    print(f"{out}: {vocab:,} words x {a.dim} dimensions in {seconds:.0f}s "
          f"(fastText skipgram, {a.epochs} epochs, minCount {a.min_count}"
          f"{', subwords' if a.subwords else ''})", file=sys.stdout)


if __name__ == "__main__":
    main()
