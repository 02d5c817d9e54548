#!/usr/bin/env python3
"""Accuracy of the shipped configs on real data, next to the peers run in the same invocation.

    pip install -e ".[bench]" && python bench/accuracy.py [--data ../shared/data] [--quick] [--write-docs]
        [--seeds 0,1,2] [--only sst2-gru-lm,sst5-gru-lm]

For each data set it writes the exact splits rnncli trains on (IMDB: validation carved from train,
seeded, as `rnncli train` does) to a temporary folder, trains each config listed below on it, and
runs `../shared/bench/peers.py` (fastText, TF-IDF + logistic regression) on the same files.
`--quick` caps every config at 2 epochs and 400 tokens a text, and IMDB at 5,000 reviews.
`--write-docs` also writes the table into its section of docs/results.md (a `--quick`, `--seeds` or
`--only` table into a section of its own). `--seeds` trains each config once per seed and gives the mean (the language
models are pretrained once); `--only` trains the configs it names and those they start from.
Configs that need word vectors get bench/vectors.py's file, built on first use (about 4.5 minutes)
and kept in bench/vectors/.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docs  # bench/docs.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
VECTORS_DIM = 100
# word vectors built by bench/vectors.py on first use and kept in bench/vectors/ (git ignores it)
VECTORS = ROOT / "bench" / "vectors" / f"imdb-sst2-{VECTORS_DIM}d.vec"
RUNS = [  # data set, config file (None: defaults), extra overrides
    ("builtin", None, {}),
    ("sst2", ROOT / "configs" / "default.toml", {}),
    ("sst2", ROOT / "configs" / "sst2.toml", {"vectors": str(VECTORS)}),
    ("imdb", ROOT / "configs" / "default.toml", {}),
    ("imdb", ROOT / "configs" / "imdb.toml", {}),
    ("imdb", ROOT / "configs" / "imdb-gru.toml", {"vectors": str(VECTORS)}),
    ("sst2", ROOT / "configs" / "sst2-gru.toml", {"vectors": str(VECTORS)}),
    ("sst2", ROOT / "configs" / "sst2-lstm.toml", {"vectors": str(VECTORS)}),
    ("sst5", ROOT / "configs" / "sst5.toml", {}),
    ("sst5", ROOT / "configs" / "sst5-gru.toml", {"vectors": str(VECTORS)}),
    # init_from names a config above: the model that config trained in this invocation
    ("sst5", ROOT / "configs" / "sst5-from-sst2.toml", {"init_from": ROOT / "configs" / "sst2-gru.toml"}),
    # init_from "lm:NAME": the language model LMS[NAME] that `rnncli pretrain` trains first in this invocation
    ("sst2", ROOT / "configs" / "sst2-lm.toml", {"init_from": "lm:rnn"}),
    ("imdb", ROOT / "configs" / "imdb-lm.toml", {"init_from": "lm:rnn"}),
    ("sst2", ROOT / "configs" / "sst2-gru-lm.toml", {"init_from": "lm:gru"}),
    ("imdb", ROOT / "configs" / "imdb-gru-lm.toml", {"init_from": "lm:gru"}),
    ("sst5", ROOT / "configs" / "sst5-gru-lm.toml", {"init_from": "lm:gru"}),
]
# The pretraining those configs' headers give: the train splits of SST-2 and IMDB (IMDB's without
# the rows carved out for validation), with the same flags, as one language model per architecture.
LM_DATA = ("sst2", "imdb")
LM_FLAGS = {"max_length": 200, "dropout": 0.1, "epochs": 2}
LMS = {"gru": ROOT / "configs" / "sst2-gru-lm.toml", "rnn": ROOT / "configs" / "sst2-lm.toml"}


def write_splits(name: str, data: Path, dest: Path, imdb_rows: int) -> Path:
    """The train/validation rows rnncli uses, as parquet files both rnncli and the peers read."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rnncli.config import DataConfig
    from rnncli.data import load_corpus

    corpus = load_corpus(DataConfig(dataset=str(data / name)), seed=0)
    dest.mkdir(parents=True)
    for split in ("train", "validation"):
        s = corpus.splits[split]
        rows = range(len(s))
        if name == "imdb" and imdb_rows:  # a seeded sample: the file is sorted by label
            keep = imdb_rows if split == "train" else imdb_rows // 9
            rows = np.random.default_rng(0).permutation(len(s))[:keep].tolist()
        pq.write_table(pa.table({"sentence": [s.texts[i] for i in rows],
                                 "label": [int(s.labels[i]) for i in rows]}), dest / f"{split}.parquet")
    return dest


def pretrain_lm(lm: str, folders: dict[str, Path], out: Path, quick: bool, table: list) -> Path:
    """`rnncli pretrain` of LMS[lm]'s config with LM_FLAGS, timed, with its row in `table`; returns its folder."""
    from rnncli.config import resolve
    from rnncli.pretrain import pretrain

    flags = {"dataset": ",".join(str(folders[n]) for n in LM_DATA), "device": "cpu", "out": str(out), **LM_FLAGS}
    if quick:
        flags["epochs"] = 1
    start = time.perf_counter()
    run = pretrain(resolve(LMS[lm], flags))
    seconds = time.perf_counter() - start
    label = f"pretrain {LMS[lm].name} on {'+'.join(LM_DATA)} train text: perplexity {run.best_perplexity:.1f}"
    table.append(("lm", label, run.config.model.cell, "", f"{run.best_epoch}/{len(run.history)}", seconds,
                  float("nan"), float("nan"), ""))
    print(f"done: {table[-1]}", file=sys.stderr, flush=True)
    return out


def peers(script: Path, folder: Path) -> list[tuple[str, float, float]]:
    p = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        return [(f"peers failed: {p.stderr.strip().splitlines()[-1][:80]}", float("nan"), float("nan"))]
    rows = []
    for line in p.stdout.splitlines():
        m = re.match(r"(.+?) \| train ([\d.]+)s \| validation ([\d.]+)", line)
        if m:
            rows.append((m.group(1), float(m.group(2)), float(m.group(3))))
    return rows


def selected(only: str) -> list[tuple]:
    """RUNS whose config file is named in `only` (all when empty), with the configs they start from."""
    if not only:
        return RUNS
    names = {n.strip().removesuffix(".toml") for n in only.split(",") if n.strip()}
    known = {c.stem for _, c, _ in RUNS if c is not None}
    if unknown := names - known:
        sys.exit(f"--only: no config named {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    keep = {c for _, c, _ in RUNS if c is not None and c.stem in names}
    keep |= {extra["init_from"] for _, c, extra in RUNS if c in keep and isinstance(extra.get("init_from"), Path)}
    return [run for run in RUNS if run[1] in keep]


def train_seeds(name: str, config_file, extra: dict, seeds: list[int], folders: dict, trained: dict,
                tmp: Path, quick: bool) -> tuple:
    """One config trained once per seed (a chained config from its source's model of the same
    seed); its table row, accuracy and macro-F1 the mean over seeds."""
    from rnncli.config import resolve
    from rnncli.train import train

    source = extra.get("init_from")
    results, seconds = [], 0.0
    for seed in seeds:
        out = tmp / f"model-{name}-{config_file.stem if config_file else 'defaults'}-{seed}"
        flags = {"dataset": str(folders.get(name, "builtin")), "device": "cpu", "out": str(out), **extra,
                 "seed": seed}
        if source is not None:
            flags["init_from"] = str(trained[source] if isinstance(source, str) else trained[source, seed])
        config = resolve(config_file, flags)
        if quick:
            config.train.epochs = min(config.train.epochs, 2)
            config.data.max_length = min(config.data.max_length, 400)  # imdb-gru reads 1,200 tokens
        start = time.perf_counter()
        run = train(config)
        seconds += time.perf_counter() - start
        trained[config_file, seed] = out
        results.append((next(e for e in run.history if e.epoch == run.best_epoch), len(run.history)))
    label = (config_file.name if config_file else "defaults") + (" + vectors" if config.model.vectors else "")
    if config.train.adversarial:
        label += f", adversarial {config.train.adversarial:g}"
    if source is not None:
        label += f" from the {source.removeprefix('lm:')} LM" if isinstance(source, str) else f" from {source.name}"
    accs = [best.accuracy for best, _ in results]
    return (name, label, config.model.cell, f"{config.model.nonlinearity}/{config.model.weight_init}/{config.model.pool}",
            ", ".join(f"{best.epoch}/{n}" for best, n in results), seconds / len(seeds),
            sum(accs) / len(accs), sum(best.macro_f1 for best, _ in results) / len(results),
            ", ".join(f"{a:.4f}" for a in accs) if len(seeds) > 1 else "")


def section_name(quick: bool, seeds: list[int], runs: list[tuple]) -> str:
    """The docs section a run writes: the full single-seed table has its own, and so does each
    `--quick`, `--seeds` or `--only` variant, so that a partial run never replaces the full table.
    A partial run is named by the configs it trained (`selected`'s), however `--only` spelled them."""
    only = "" if runs == RUNS else ",".join(c.stem for _, c, _ in runs if c is not None)
    return "bench/accuracy.py" + (" --quick" if quick else "") + (
        f" --seeds {','.join(map(str, seeds))}" if len(seeds) > 1 else "") + (f" --only {only}" if only else "")


def render(table: list, quick: bool, seeds: list[int]) -> str:
    """The table: one row per config and peer, sorted by data set."""
    header = ("data", "config", "cell", "act/init/pool", "best/epochs", "train s", "val acc", "macro-F1")
    if len(seeds) > 1:
        header = header[:6] + ("val acc, mean", "macro-F1, mean", "val acc per seed")
    section = f"bench/accuracy.py{' --quick' if quick else ''}"
    title = f"{section}: validation split of each data set" + (
        f"; seeds {','.join(map(str, seeds))}, train s per seed" if len(seeds) > 1 else "")
    lines = [title, "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in sorted(table, key=lambda r: r[0]):
        name, cfg, cell, how, epochs, secs, acc, f1, per_seed = row
        cells = [name, cfg, cell, how, epochs, f"{secs:.1f}", "" if math.isnan(acc) else f"{acc:.4f}",
                 "" if math.isnan(f1) else f"{f1:.4f}"] + ([per_seed] if len(seeds) > 1 else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        sys.exit(f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        sys.exit(f"--seeds {text!r}: give distinct seeds of 0 or more")
    return seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--peers", type=Path, default=ROOT.parent / "shared" / "bench" / "peers.py")
    ap.add_argument("--quick", action="store_true", help="2 epochs and 400 tokens at most, IMDB cut to 5,000 reviews")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds; each config trains once per seed and "
                    "the table gives each seed's accuracy and the mean (default 0)")
    ap.add_argument("--only", default="", help="comma-separated config names (e.g. sst2-gru-lm,sst5-gru-lm): "
                    "train only these, and the configs they start from")
    docs.add_option(ap)
    a = ap.parse_args()
    seeds, runs = seed_list(a.seeds), selected(a.only)

    if any(extra.get("vectors") == str(VECTORS) for _, _, extra in runs) and not VECTORS.exists():
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "bench" / "vectors.py"), "--data", str(a.data),
                        "--dim", str(VECTORS_DIM), "--out", str(VECTORS)], check=True)
        print(f"built {VECTORS} in {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)

    table = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lms = [lm for lm in LMS if any(extra.get("init_from") == f"lm:{lm}" for _, _, extra in runs)]
        scored = [n for n, _, _ in runs if n != "builtin"]  # the data sets the peers run on too
        folders = {}
        for name in dict.fromkeys(scored + list(LM_DATA if lms else [])):
            folders[name] = write_splits(name, a.data, tmp / name, 5000 if a.quick else 0)
        trained = {}  # (config file, seed) -> the model folder it wrote; "lm:NAME" -> that LM's
        for lm in lms:
            trained[f"lm:{lm}"] = pretrain_lm(lm, folders, tmp / f"lm-{lm}", a.quick, table)
        for name, config_file, extra in runs:
            table.append(train_seeds(name, config_file, extra, seeds, folders, trained, tmp, a.quick))
            print(f"done: {table[-1]}", file=sys.stderr, flush=True)
        for name in dict.fromkeys(scored):
            for peer, seconds, acc in peers(a.peers, folders[name]):
                table.append((name, "peer: " + peer, "", "", "", seconds, acc, float("nan"), ""))

    text = render(table, a.quick, seeds)
    print(text)
    if a.write_docs:
        docs.write_section(section_name(a.quick, seeds, runs), text)


if __name__ == "__main__":
    main()
