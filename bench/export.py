#!/usr/bin/env python3
"""`rnncli export` and the ONNX runtime against torch, measured in one run.

    python bench/export.py [--data ../shared/data] [--rounds 5] [--eval-rounds 3] [--models DIR]
                           [--text TEXT] [--write-docs]

Trains (or reuses, under --models) two SST-2 models: the default one, and one of the
configs/sst2-gru.toml architecture (bidirectional GRU, attention; one epoch, no vectors: the speed is
the architecture's). `rnncli export` writes model.onnx into the model folder, so every export runs on
a copy of the folder in a temporary directory, never in --models: the default model is exported as
fp32 and, into a second copy, as int8 (`--quantize int8`), so that `--runtime onnx` runs the int8 file
there; the GRU model as fp32. Each command runs as its own process, timed whole (start to exit), and
the rows of a kind run in turns within every round; the table shows medians (ratios: the median of
the rounds' ratios). Rows:
- `python -c "import torch"`, the floor of any command that imports torch;
- `rnncli predict TEXT` with `--runtime torch`, and with `--runtime onnx` on the fp32 and int8 files
  (--rounds rounds);
- `rnncli eval --json` sentences/s on SST-2 validation (its figure times the forward pass alone) with
  torch, onnx fp32 and onnx int8 on the default model, torch and onnx fp32 on the GRU model
  (--eval-rounds rounds); and on the SST-2 train split (67,349 texts, a pass of a second or more,
  steadier than validation's tens of milliseconds) with torch and onnx fp32 on the default model;
- the file sizes: model.safetensors, model.onnx fp32 and int8, and fp32 bytes / int8 bytes;
- validation accuracy with torch, onnx fp32 and onnx int8 (`rnncli eval`'s);
- each export's own seconds and largest probability difference from torch on its checks;
- parity, a second table: for the architecture of every shipped config (configs/*.toml; weights
  drawn at random with seed 0, the default model's vocabulary, no vectors), the labels torch and onnx
  give on SST-2 validation that differ, and the largest difference of any probability.
The targets are judged on the default model; the GRU rows are there to read.
`--write-docs` also writes the table into its section of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sst2 import model, validation_texts  # bench/sst2.py

import docs  # bench/docs.py, beside this script

PY = sys.executable
RNNCLI = [PY, "-m", "rnncli"]
ROOT = Path(__file__).resolve().parents[1]
TEXT = "a gorgeous, witty film that never once talks down to its audience"


def run(argv: list[str]) -> str:
    """The standard output of a command run from the repository root; its error output if it fails."""
    done = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          cwd=ROOT)
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


# --- the models ----------------------------------------------------------------------------------

def export(source: Path, into: Path, quantize: str = "none") -> tuple[Path, dict]:
    """A copy of the model folder `source` at `into`, with its model.onnx exported there."""
    shutil.copytree(source, into)
    (into / "model.onnx").unlink(missing_ok=True)  # whatever the cache held: this run's export only
    print(f"exporting {source.name} ({quantize}) ...", file=sys.stderr)
    return into, json.loads(run([*RNNCLI, "export", "--model", str(into), "--quantize", quantize, "--json"]))


# --- the measurements ----------------------------------------------------------------------------

def wall(argv: list[str]) -> float:
    """Seconds of one whole process, start to exit."""
    start = time.perf_counter()
    done = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:].decode(errors='replace')}")
    return seconds


def evaluate(folder: Path, sst2: Path, runtime: str, split: str = "validation") -> dict:
    return json.loads(run([*RNNCLI, "eval", "--model", str(folder), "--dataset", str(sst2), "--split",
                           split, "--runtime", runtime, "--json"]))


def predict_argv(folder: Path, runtime: str, text: str, *flags: str) -> list[str]:
    return [*RNNCLI, "predict", "--model", str(folder), "--runtime", runtime, *flags, text]


def answers(folders: dict[str, tuple[Path, str]], text: str) -> dict[str, dict]:
    """Each predict row's --json answer for the text, run once before the timed rounds (which also
    warms the page cache for every row alike)."""
    out = {}
    for key, (folder, runtime) in folders.items():
        out[key] = json.loads(run(predict_argv(folder, runtime, text, "--json")).splitlines()[0])
    return out


def in_turns(rows: dict[str, object], rounds: int) -> dict[str, list]:
    """Every row's thunk `rounds` times, the rows in turns: a slow spell of a shared machine hits
    every row alike."""
    runs: dict[str, list] = {key: [] for key in rows}
    for i in range(rounds):
        print(f"round {i + 1} of {rounds}: {', '.join(rows)}", file=sys.stderr)
        for key, thunk in rows.items():
            runs[key].append(thunk())
    return runs


# --- the run -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the wall-time rows, in turns (medians)")
    ap.add_argument("--eval-rounds", type=int, default=3, help="rounds of the `rnncli eval` rows, in turns")
    ap.add_argument("--text", default=TEXT, help="the text `rnncli predict` classifies")
    ap.add_argument("--models", type=Path, help="keep the trained models here (and reuse them)")
    docs.add_option(ap)
    a = ap.parse_args()
    sst2 = (a.data / "sst2").resolve()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        models = a.models.resolve() if a.models else Path(tmp) / "models"
        default = model(models, "sst2-default", sst2)
        gru = model(models, "sst2-gru", sst2, "--config", str(ROOT / "configs" / "sst2-gru.toml"))
        lines = measure(a, sst2, default, gru, Path(tmp))
    print("\n".join(lines))
    print(f"({time.perf_counter() - start:.0f} s in all)", file=sys.stderr)
    if a.write_docs:
        docs.write_section("bench/export.py", "\n".join(lines))


def measure(a, sst2: Path, default: Path, gru: Path, tmp: Path) -> list[str]:
    fp32, fp32_export = export(default, tmp / "fp32")
    int8, int8_export = export(default, tmp / "int8", "int8")
    gru32, gru_export = export(gru, tmp / "gru-fp32")
    exports = {"fp32": fp32_export, "int8": int8_export, "gru fp32": gru_export}

    predicts = {"torch": (fp32, "torch"), "onnx fp32": (fp32, "onnx"), "onnx int8": (int8, "onnx")}
    said = answers(predicts, a.text)
    walls = in_turns({"import torch": lambda: wall([PY, "-c", "import torch"])} | {
        key: (lambda folder=folder, runtime=runtime: wall(predict_argv(folder, runtime, a.text)))
        for key, (folder, runtime) in predicts.items()}, a.rounds)

    evals = in_turns({
        "torch": lambda: evaluate(fp32, sst2, "torch"),
        "onnx fp32": lambda: evaluate(fp32, sst2, "onnx"),
        "onnx int8": lambda: evaluate(int8, sst2, "onnx"),
        "gru torch": lambda: evaluate(gru32, sst2, "torch"),
        "gru onnx fp32": lambda: evaluate(gru32, sst2, "onnx"),
        "torch train": lambda: evaluate(fp32, sst2, "torch", "train"),
        "onnx fp32 train": lambda: evaluate(fp32, sst2, "onnx", "train"),
    }, a.eval_rounds)
    agreement = parity(default, tmp / "parity", validation_texts(sst2))
    sizes = {"safetensors": (default / "model.safetensors").stat().st_size,
             "onnx fp32": (fp32 / "model.onnx").stat().st_size,
             "onnx int8": (int8 / "model.onnx").stat().st_size}
    return report(a, walls, evals, sizes, exports, said) + parity_table(agreement)


def parity(default: Path, into: Path, texts: list[str]) -> dict[str, tuple[int, float]]:
    """{config: (labels that differ, largest probability difference)} between torch and onnx on
    `texts`, for each shipped config's architecture with random weights (seed 0)."""
    import dataclasses

    import torch

    from rnncli import checkpoint, load_model
    from rnncli.config import resolve
    from rnncli.export import export as export_model
    from rnncli.model import RNNClassifier

    source = checkpoint.load(default)
    out = {}
    for path in sorted((ROOT / "configs").glob("*.toml")):
        config = resolve(path, {})
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vectors="", init_from=""))
        torch.manual_seed(0)
        model = RNNClassifier(config.model, vocab_size=source.meta["vocab_size"], num_classes=2).eval()
        meta = {**source.meta, "config": config.to_dict()}
        folder = into / path.stem
        checkpoint.create_folder(folder, model, source.tokenizer, meta, [])
        export_model(folder)
        a = load_model(folder, runtime="torch").predict(texts)
        b = load_model(folder, runtime="onnx").predict(texts)
        differ = sum(x.label != y.label for x, y in zip(a, b, strict=True))
        gap = max(abs(x.probabilities[k] - y.probabilities[k]) for x, y in zip(a, b) for k in x.probabilities)
        out[path.name] = (differ, gap)
    return out


def parity_table(agreement: dict[str, tuple[int, float]]) -> list[str]:
    from rnncli.export import TOLERANCE

    rows = [("config (its architecture)", "labels that differ", "largest probability difference")]
    rows += [(name, str(differ), f"{gap:.1e}") for name, (differ, gap) in agreement.items()]
    lines = ["", "parity on SST-2 validation, random weights (seed 0) of each shipped config's architecture:",
             *docs.markdown_table(rows)]
    ok = all(d == 0 and g <= TOLERANCE["none"] for d, g in agreement.values())
    worst = max(g for _, g in agreement.values())
    lines.append(f"target every label equal, every probability within {TOLERANCE['none']:g}: "
                 f"{'met' if ok else 'MISSED'} ({len(agreement)} configs, largest difference {worst:.1e})")
    return lines


# --- the table -----------------------------------------------------------------------------------

def spread(values: list[float], fmt: str) -> str:
    return "rounds: " + ", ".join(format(v, fmt) for v in values)


def per_round(runs: dict[str, list], a: str, b: str, key: str | None = None) -> list[float]:
    pick = (lambda r: r) if key is None else (lambda r: r[key])
    return [pick(x) / pick(y) for x, y in zip(runs[a], runs[b])]


def report(a, walls, evals, sizes, exports, said) -> list[str]:
    import platform

    import onnxruntime
    import torch

    def sps(key: str) -> list[float]:
        return [r["examples_per_second"] for r in evals[key]]

    def accuracy(key: str) -> float:
        return statistics.median(r["accuracy"] for r in evals[key])

    mb = 1e6
    predict = "`rnncli predict TEXT`"
    rows = [
        ('`python -c "import torch"`, wall s', walls["import torch"], ".2f"),
        (f"{predict} --runtime torch, wall s", walls["torch"], ".2f"),
        (f"{predict} --runtime onnx, fp32, wall s", walls["onnx fp32"], ".2f"),
        (f"{predict} --runtime onnx, int8, wall s", walls["onnx int8"], ".2f"),
        ("`rnncli eval` sentences/s, torch", sps("torch"), ",.0f"),
        ("`rnncli eval` sentences/s, onnx fp32", sps("onnx fp32"), ",.0f"),
        ("`rnncli eval` sentences/s, onnx int8", sps("onnx int8"), ",.0f"),
        ("`rnncli eval` sentences/s, sst2-gru, torch", sps("gru torch"), ",.0f"),
        ("`rnncli eval` sentences/s, sst2-gru, onnx fp32", sps("gru onnx fp32"), ",.0f"),
        ("`rnncli eval` sentences/s, SST-2 train split, torch", sps("torch train"), ",.0f"),
        ("`rnncli eval` sentences/s, SST-2 train split, onnx fp32", sps("onnx fp32 train"), ",.0f"),
    ]
    table = [("measure", "median", "notes")]
    table += [(label, format(statistics.median(values), fmt), spread(values, fmt)) for label, values, fmt in rows]
    ratio = sizes["onnx fp32"] / sizes["onnx int8"]
    table += [
        ("model.safetensors, MB", f"{sizes['safetensors'] / mb:.2f}", ""),
        ("model.onnx fp32, MB", f"{sizes['onnx fp32'] / mb:.2f}", ""),
        ("model.onnx int8, MB", f"{sizes['onnx int8'] / mb:.2f}", ""),
        ("fp32 bytes / int8 bytes", f"{ratio:.2f}x", ""),
    ]
    int8_check = exports["int8"].get("accuracy") or {}
    checked = (f"export's own check: torch {int8_check['torch']:.2%}, onnx {int8_check['onnx']:.2%} "
               f"on {int8_check['texts']} {int8_check['split']} texts" if int8_check else "")
    table += [
        ("validation accuracy, torch", f"{accuracy('torch'):.2%}", ""),
        ("validation accuracy, onnx fp32", f"{accuracy('onnx fp32'):.2%}", ""),
        ("validation accuracy, onnx int8", f"{accuracy('onnx int8'):.2%}", checked),
    ]
    for key, label in (("fp32", "fp32"), ("int8", "--quantize int8"), ("gru fp32", "sst2-gru, fp32")):
        e = exports[key]
        notes = f"max difference {e['max_difference']:.2g} (tolerance {e['tolerance']:g}, {len(e['checks'])} checks)"
        table.append((f"`rnncli export` {label}, s", f"{e['seconds']:.2f}", notes))
    machine = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; medians of {a.rounds} rounds "
               f"(wall times) and {a.eval_rounds} (eval) in turns; eval texts: SST-2 validation; "
               f"TEXT: {a.text!r}")
    lines = [machine]
    lines.extend(docs.markdown_table(table))
    agree = {key: (s["label"], s.get("probabilities")) for key, s in said.items()}
    if len({label for label, _ in agree.values()}) > 1:
        lines.append("predict answers differ: " + ", ".join(f"{k} {v[0]}" for k, v in agree.items()))
    lines.extend(targets(walls, evals, sizes))
    return lines


def targets(walls, evals, sizes) -> list[str]:
    checks = []
    for key in ("onnx fp32", "onnx int8"):
        ratios = per_round(walls, key, "torch")
        r = statistics.median(ratios)
        what = (f"`rnncli predict --runtime onnx TEXT`, {key.split()[1]}: {r:.2f} of the wall time with torch "
                f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
        checks.append((what, "<= 1/3", r <= 1 / 3))
    for key, texts in (("", "SST-2 validation"), (" train", "the SST-2 train split")):
        ratios = per_round(evals, "onnx fp32" + key, "torch" + key, "examples_per_second")
        r = statistics.median(ratios)
        what = (f"`rnncli eval` on {texts}, onnx fp32: {r:.2f}x torch's sentences/s "
                f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
        checks.append((what, ">= 1x", r >= 1))
    torch_acc = statistics.median(e["accuracy"] for e in evals["torch"])
    int8_acc = statistics.median(e["accuracy"] for e in evals["onnx int8"])
    lost = (torch_acc - int8_acc) * 100
    ratio = sizes["onnx fp32"] / sizes["onnx int8"]
    what = (f"int8: {lost:+.2f} points of validation accuracy lost ({torch_acc:.2%} -> {int8_acc:.2%}), "
            f"file {ratio:.2f}x smaller than fp32")
    checks.append((what, "<= 0.5 points lost, a smaller file", lost <= 0.5 and ratio > 1))
    lines = [f"target {want}: {'met' if ok else 'MISSED'} ({what})" for what, want, ok in checks]
    missed = [what for what, _, ok in checks if not ok]
    return [*lines, "all targets met" if not missed else f"targets missed: {len(missed)}"]


if __name__ == "__main__":
    main()
