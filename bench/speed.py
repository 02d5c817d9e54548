#!/usr/bin/env python3
"""Speed and memory of rnncli against straightforward baselines, measured in the same run.

    python bench/speed.py [--data ../shared/data] [--baseline ../shared/bench/naive_rnn.py]
                          [--imdb-rows 5000] [--rounds 3] [--imdb-rounds 2] [--gru-rounds 1]
                          [--repeat 9] [--write-docs]

Plain rnn: both sides train the same model (cell rnn, 2 layers, hidden 128, embed 128) on the same
rows as ../shared/bench/naive_rnn.py; on SST-2 for two epochs, so that the table shows the first epoch
(what a user's first run sees) and the second apart; on IMDB, cut to a seeded sample of --imdb-rows
reviews (both sides read the same file, --max-length 256), for one. GRU: rnncli trains the
architectures of configs/sst2-gru.toml (on SST-2) and configs/imdb-gru.toml (on the IMDB sample, up
to 1,200 tokens) for one epoch, without vectors, against bench/naive_gru.py, a tutorial's nn.GRU of
the same shape. Each pair runs in turns (baseline, rnncli, baseline, ...), as these shared machines
have slow spells; a ratio is the median of the rounds' ratios, each printed below the table.

Evaluation: the default model's sentences/s on SST-2 validation (872 sentences) and on its 67,349
train texts, and the wall time of one whole `rnncli eval` call beside the seconds its forward pass
takes (the rest is start-up: imports, reading the data, tokenizing, loading the weights). The GRU
model's packed evaluation against the path it took before (exact-length batches through torch's
own nn.GRU), in turns in this process. Then the wall time of `rnncli predict` and `rnncli --help`
against `python -c "import torch"`. `--write-docs` also writes the table into docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docs  # bench/docs.py, beside this script

HERE = Path(__file__).resolve().parent
MODEL = ["--cell", "rnn", "--layers", "2", "--hidden", "128", "--embed", "128"]
SAME_AS_BASELINE = ["--nonlinearity", "tanh", "--weight-init", "default"]  # nn.RNN's own defaults, as naive_rnn.py
# configs/sst2-gru.toml's and configs/imdb-gru.toml's architectures, as bench/naive_gru.py's flags
GRU = {"SST-2": ["--bidir", "--pool", "attn", "--embed", "100", "--hidden", "128", "--dropout", "0.5"],
       "IMDB": ["--bidir", "--pool", "mean", "--embed", "100", "--hidden", "128", "--dropout", "0.5",
                "--maxlen", "1200"]}
GRU_CONFIG = {"SST-2": "configs/sst2-gru.toml", "IMDB": "configs/imdb-gru.toml"}
PY = sys.executable
RNNCLI = [PY, "-m", "rnncli"]


def run_measured(cmd: list[str]) -> tuple[str, float]:
    """Run a command in a fresh wrapper process; return its stdout and the child's peak RSS in MB."""
    wrapper = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stderr.write(p.stderr); print(p.stdout); "
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    p = subprocess.run([PY, "-c", wrapper, *cmd], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    rss = int(re.search(r"PEAK_RSS_KB (\d+)", p.stdout).group(1)) / 1024
    return p.stdout, rss


def baseline(cmd: list[str]) -> dict:
    """A baseline script's run: per-epoch tokens/s and seconds, peak RSS, last validation accuracy."""
    out, rss = run_measured(cmd)
    epochs_seen = re.findall(r"epoch \d+ loss [\d.]+ ([\d.]+)s ([\d,]+) tok/s \| validation ([\d.]+)", out)
    if not epochs_seen:
        sys.exit(f"could not read the baseline's output:\n{out}")
    return {"tokens_per_second": [float(t.replace(",", "")) for _, t, _ in epochs_seen],
            "seconds": [float(s) for s, _, _ in epochs_seen], "rss_mb": rss, "accuracy": float(epochs_seen[-1][2])}


def rnncli_train(args: list[str], out: Path) -> dict:
    """`rnncli train ARGS` in its own process, read back from its metrics.jsonl like `baseline`."""
    if out.exists():
        shutil.rmtree(out)
    _, rss = run_measured([*RNNCLI, "train", *args, "--device", "cpu", "--out", str(out)])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if r["split"] == "validation"]
    return {"tokens_per_second": [r["tokens_per_second"] for r in records],
            "seconds": [r["seconds"] for r in records], "rss_mb": rss,
            "accuracy": max(r["accuracy"] for r in records)}


def in_turns(rounds: int, base_cmd: list[str], ours_args: list[str], out: Path) -> tuple[list[dict], list[dict]]:
    """Each side `rounds` times, alternating, so that a slow spell of a shared machine hits both."""
    bases, ourses = [], []
    for _ in range(rounds):
        bases.append(baseline(base_cmd))
        ourses.append(rnncli_train(ours_args, out))
    return bases, ourses


def training_rows(name: str, bases: list[dict], ourses: list[dict], target: float, epoch: int,
                  spread: dict) -> list[tuple]:
    """Rows for one pair's epoch `epoch` (from 1): tokens/s with the ratio and its target, then
    seconds; the rounds' ratios go into `spread`."""
    ratios = [o["tokens_per_second"][epoch - 1] / b["tokens_per_second"][epoch - 1] for b, o in zip(bases, ourses)]
    ratio = statistics.median(ratios)
    spread[name] = ratios
    med = lambda runs, key: statistics.median(r[key][epoch - 1] for r in runs)
    return [(f"{name} training tokens/s", f"{med(bases, 'tokens_per_second'):,.0f}",
             f"{med(ourses, 'tokens_per_second'):,.0f}", f"{ratio:.1f}x", f">= {target:g}x", ratio >= target),
            (f"{name} seconds", f"{med(bases, 'seconds'):.1f}", f"{med(ourses, 'seconds'):.1f}", "", "", None)]


def run_rows(name: str, bases: list[dict], ourses: list[dict], rss_limit: float | None = None) -> list[tuple]:
    """Peak RSS and validation accuracy of a pair's runs (medians; accuracy repeats for one seed)."""
    med = lambda runs, key: statistics.median(r[key] for r in runs)
    rss = med(ourses, "rss_mb")
    return [(f"{name} peak RSS of training (MB)", f"{med(bases, 'rss_mb'):,.0f}", f"{rss:,.0f}", "",
             f"<= {rss_limit:,.0f}" if rss_limit else "", rss <= rss_limit if rss_limit else None),
            (f"{name} validation accuracy", f"{med(bases, 'accuracy'):.4f}", f"{med(ourses, 'accuracy'):.4f}",
             "", "", None)]


def wall(cmds: list[list[str]], repeat: int) -> list[float]:
    """Median wall time of each command, run in turns (a, b, c, a, b, c, ...) so drift hits all alike."""
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(repeat):
        for i, cmd in enumerate(cmds):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def imdb_sample(src: Path, rows: int, dest: Path) -> Path:
    import pyarrow.parquet as pq

    dest.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(src / "train.parquet")
    if rows and rows < table.num_rows:
        # a seeded sample in random order (the file is sorted by label), the same rows for both sides
        import numpy as np

        table = table.take(np.random.default_rng(0).choice(table.num_rows, rows, replace=False))
    train_rows = int(table.num_rows * 0.9)
    pq.write_table(table.slice(0, train_rows), dest / "train.parquet")
    pq.write_table(table.slice(train_rows), dest / "validation.parquet")
    return dest


def eval_json(model: Path, *extra: str) -> dict:
    p = subprocess.run([*RNNCLI, "eval", "--model", str(model), "--runtime", "torch", "--json", *extra],
                       check=True, capture_output=True, text=True)
    return json.loads(p.stdout)


def evaluation_rows(model: Path, sst2: Path) -> list[tuple]:
    """The default model's sentences/s (median of 3) on 872 and on 67,349 texts, and the fixed cost
    of one `rnncli eval` call: its wall time less its forward pass."""
    small, large, walls = [], [], []
    for _ in range(3):
        start = time.perf_counter()
        small.append(eval_json(model))
        walls.append(time.perf_counter() - start)
        large.append(eval_json(model, "--dataset", str(sst2), "--split", "train"))
    eps = statistics.median(r["examples_per_second"] for r in small)
    big = statistics.median(r["examples_per_second"] for r in large)
    wall_s = statistics.median(walls)
    forward_s = statistics.median(r["seconds"] for r in small)
    return [("SST-2 evaluation sentences/s (872 validation)", "", f"{eps:,.0f}", "", "", None),
            (f"SST-2 evaluation sentences/s ({large[0]['examples']:,} train texts)", "", f"{big:,.0f}", "",
             ">= 50,000", big >= 50000),
            ("one `rnncli eval` call on 872: wall s (forward s)", "", f"{wall_s:.2f} ({forward_s:.3f})", "", "",
             None)]


def packed_gru_rows(model: Path, sst2: Path, rounds: int = 21) -> list[tuple]:
    """The GRU model's evaluation sentences/s on SST-2 validation: packed (rnncli now) against
    exact-length batches through torch's nn.GRU (the path it took before), in turns."""
    import pyarrow.parquet as pq

    from rnncli import checkpoint, inference
    from rnncli.tokenizer import encode

    loaded = checkpoint.load(model)
    texts = pq.read_table(sst2 / "validation.parquet").column("sentence").to_pylist()
    enc = encode(loaded.tokenizer, texts, loaded.config.data.max_length)
    speeds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for packed in (False, True):
            loaded.model.fused = packed  # unfused: not packable, so length buckets through nn.GRU
            inference.logits_of(loaded.model, enc)  # warm
            start = time.perf_counter()
            inference.logits_of(loaded.model, enc)
            speeds[packed].append(len(texts) / (time.perf_counter() - start))
    before, now = statistics.median(speeds[False]), statistics.median(speeds[True])
    return [("SST-2 GRU (sst2-gru.toml) evaluation sentences/s: length buckets -> packed", f"{before:,.0f}",
             f"{now:,.0f}", f"{now / before:.1f}x", ">= 2x", now / before >= 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--baseline", default=str(Path(__file__).resolve().parents[2] / "shared" / "bench" / "naive_rnn.py"))
    ap.add_argument("--imdb-rows", type=int, default=5000, help="IMDB reviews used (0: all 25,000)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="SST-2 rnn training runs per side, in turns; the ratio is the median of the rounds' ratios")
    ap.add_argument("--imdb-rounds", type=int, default=2, help="the same for IMDB (its epochs are longer)")
    ap.add_argument("--gru-rounds", type=int, default=1, help="the same for each GRU config")
    ap.add_argument("--repeat", type=int, default=9, help="runs per start-up timing (median)")
    docs.add_option(ap)
    a = ap.parse_args()

    import os
    import platform

    import torch

    rows = []
    spread: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sst2, imdb = a.data / "sst2", imdb_sample(a.data / "imdb", a.imdb_rows, tmp / "imdb")
        imdb_name = f"IMDB ({a.imdb_rows or 25000:,} reviews)"
        rnn = [*MODEL, *SAME_AS_BASELINE, "--max-length", "256"]

        def naive(data: Path, epochs: int) -> list[str]:
            return [PY, a.baseline, str(data), *MODEL, "--epochs", str(epochs), "--maxlen", "256"]

        bases, ourses = in_turns(a.rounds, naive(sst2, 2), ["--dataset", str(sst2), *rnn, "--epochs", "2",
                                                            "--patience", "2"], tmp / "sst2-rnn")
        rows += training_rows("SST-2 rnn, first epoch,", bases, ourses, 6, 1, spread)
        rows += training_rows("SST-2 rnn, second epoch,", bases, ourses, 6, 2, spread)
        rows += run_rows("SST-2 rnn", bases, ourses)
        bases, ourses = in_turns(a.imdb_rounds, naive(imdb, 1), ["--dataset", str(imdb), *rnn, "--epochs", "1"],
                                 tmp / "imdb-rnn")
        rows += training_rows(f"{imdb_name} rnn", bases, ourses, 6, 1, spread)
        rows += run_rows(f"{imdb_name} rnn", bases, ourses, rss_limit=2500)
        for name, data in (("SST-2", sst2), ("IMDB", imdb)):
            label = f"{name if name == 'SST-2' else imdb_name} GRU ({Path(GRU_CONFIG[name]).name})"
            bases, ourses = in_turns(a.gru_rounds, [PY, str(HERE / "naive_gru.py"), str(data), *GRU[name]],
                                     ["--config", str(HERE.parent / GRU_CONFIG[name]), "--dataset", str(data),
                                      "--epochs", "1"], tmp / f"{name}-gru")
            rows += training_rows(label, bases, ourses, 2.5, 1, spread)
            rows += run_rows(label, bases, ourses)

        rows += evaluation_rows(tmp / "sst2-rnn", sst2)
        rows += packed_gru_rows(tmp / "SST-2-gru", sst2)
        torch_s, predict_s, help_s = wall([
            [PY, "-c", "import torch"],
            [*RNNCLI, "predict", "--model", str(tmp / "sst2-rnn"), "I hate this boring movie"],
            [*RNNCLI, "--help"],
        ], a.repeat)
        rows.append(("`python -c \"import torch\"` wall s", "", f"{torch_s:.2f}", "", "", None))
        rows.append(("`rnncli predict \"...\"` wall s", "", f"{predict_s:.2f}", f"{predict_s / torch_s:.2f}x torch",
                     "<= 1.3x", predict_s / torch_s <= 1.3))
        rows.append(("`rnncli --help` wall s", "", f"{help_s:.2f}", "", "< 0.5 s", help_s < 0.5))

    machine = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}, {torch.get_num_threads()} threads; rounds {a.rounds} (SST-2 rnn), "
               f"{a.imdb_rounds} (IMDB rnn), {a.gru_rounds} (each GRU); rnn model: {' '.join(MODEL)}")
    header = ("measure", "baseline", "rnncli", "ratio", "target", "met")
    table = [header] + [(m, b, r, x, t, "" if ok is None else ("yes" if ok else "NO")) for m, b, r, x, t, ok in rows]
    lines = [machine, *docs.markdown_table(table)]
    for name, ratios in spread.items():
        lines.append(f"{name} training tokens/s ratio by round: {', '.join(f'{r:.1f}x' for r in ratios)}")
    missed = [r[0] for r in rows if r[5] is False]
    lines.append("all targets met" if not missed else f"targets missed: {', '.join(missed)}")
    print("\n".join(lines))
    if a.write_docs:
        docs.write_section("bench/speed.py", "\n".join(lines))


if __name__ == "__main__":
    main()
