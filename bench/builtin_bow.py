#!/usr/bin/env python3
"""Word order matters in the built-in corpus: a bag of words against the default RNN, same splits.

    pip install -e ".[bench]" && python bench/builtin_bow.py [--seeds 0 1 2] [--write-docs]

Trains TF-IDF + logistic regression (unigrams, and unigrams + bigrams) and `rnncli train` with its
defaults on `builtin`, and prints test accuracy for each. Negation and "but"/"although" make the
label depend on the order of the words, which a bag of unigrams cannot see. `--write-docs` also
writes the table into its section of docs/results.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import docs  # bench/docs.py, beside this script


def bag_of_words(train, test, ngrams: tuple[int, int]) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=ngrams, token_pattern=r"[^\s]+")
    clf = LogisticRegression(max_iter=2000).fit(vec.fit_transform(train["sentence"]), train["label"])
    return float((clf.predict(vec.transform(test["sentence"])) == test["label"]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds for the RNN")
    docs.add_option(ap)
    a = ap.parse_args()

    import numpy as np

    from rnncli.builtin import builtin_dataset
    from rnncli.config import resolve
    from rnncli.train import train

    data = builtin_dataset()
    tr, te = data["train"][:], data["test"][:]
    tr["label"], te["label"] = np.array(tr["label"]), np.array(te["label"])
    rows = [("TF-IDF unigrams + logistic regression", bag_of_words(tr, te, (1, 1)), None),
            ("TF-IDF uni+bigrams + logistic regression", bag_of_words(tr, te, (1, 2)), None)]
    accs, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            start = time.perf_counter()
            run = train(resolve(None, {"seed": seed, "device": "cpu", "out": str(Path(tmp) / f"s{seed}")}))
            seconds.append(time.perf_counter() - start)
            accs.append(run.test.accuracy)
    spread = f" (min {min(accs):.4f}, max {max(accs):.4f}, {len(accs)} seeds)" if len(accs) > 1 else ""
    rows.append((f"rnncli default RNN{spread}", statistics.mean(accs), statistics.mean(seconds)))
    lines = ["built-in corpus, test split (1,000 sentences)",
             f"| {'model':<70} | test accuracy | train s |",
             f"|{'-' * 72}|---------------|---------|"]
    for name, acc, secs in rows:
        lines.append(f"| {name:<70} | {acc:>13.4f} | {'' if secs is None else f'{secs:.1f}':>7} |")
    print("\n".join(lines))
    if a.write_docs:
        docs.write_section("bench/builtin_bow.py", "\n".join(lines))


if __name__ == "__main__":
    main()
