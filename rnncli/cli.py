"""The command line: parse options, resolve the config, call a library function, print with rich.

Nothing here computes; every command is a thin wrapper over a function in the library.
torch and datasets are imported only inside the commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from rnncli.errors import RnncliError

app = typer.Typer(
    name="rnncli",
    help="A recurrent-network sentiment classifier: train it, evaluate it, use it, and look inside it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()


def clean_errors(command):
    """Turn a user's mistake (RnncliError) into one line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RnncliError as e:
            typer.echo(f"rnncli: error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        from rnncli import __version__

        typer.echo(f"rnncli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    *,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
):
    """A recurrent-network sentiment classifier: train it, evaluate it, use it, and look inside it."""


def fmt_shape(shape) -> str:
    return str(tuple(shape))  # (20,) for one axis, as torch.Size prints it


@app.command()
@clean_errors
def shapes(
    *,
    seq: Annotated[int, typer.Option(help="Time steps (words) per sequence.")] = 5,
    batch: Annotated[int, typer.Option(help="Sequences per batch.")] = 3,
    feature: Annotated[int, typer.Option(help="Input size per step (the embedding size).")] = 100,
    hidden: Annotated[int, typer.Option(help="Hidden state size.")] = 20,
    layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 1,
    cell: Annotated[str, typer.Option(help="rnn, gru or lstm.")] = "rnn",
    nonlinearity: Annotated[str, typer.Option(help="tanh or relu (rnn cell).")] = "tanh",
    bidirectional: Annotated[bool, typer.Option(help="Read the sequence both ways.")] = False,
    batch_first: Annotated[bool, typer.Option(help="Lay x and out out as (batch, seq, ...).")] = False,
    vocab: Annotated[int, typer.Option(help="Vocabulary size for the classifier pipeline.")] = 1000,
    classes: Annotated[int, typer.Option(help="Classes for the classifier pipeline.")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
):
    """Show how an RNN's tensors fit together, from real tensors after one forward pass.

    Example: rnncli shapes --seq 10 --batch 3 --feature 100 --hidden 20 --layers 4
    """
    from rnncli.shapes import ShapesSpec, describe

    report = describe(ShapesSpec(seq=seq, batch=batch, feature=feature, hidden=hidden, layers=layers,
                                 cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional,
                                 batch_first=batch_first, vocab=vocab, classes=classes))
    if as_json:
        typer.echo(json.dumps(report))
        return
    t = Table(title=f"Recurrent layer: {report['module']}", title_justify="left")
    for col in ("tensor", "shape", "axes", "what it holds"):
        t.add_column(col)
    for row in report["tensors"]:
        t.add_row(row["name"], fmt_shape(row["shape"]), row["axes"], row["note"])
    console.print(t)

    t = Table(title="Its parameters (shared by every time step)", title_justify="left")
    for col in ("parameter", "shape", "count", "role"):
        t.add_column(col, justify="right" if col == "count" else "left")
    for row in report["parameters"]:
        t.add_row(row["name"], fmt_shape(row["shape"]), f"{row['count']:,}", row["note"])
    console.print(t)

    t = Table(title="The classifier, stage by stage", title_justify="left")
    for col in ("stage", "shape", "axes", "parameters"):
        t.add_column(col, justify="right" if col == "parameters" else "left")
    for row in report["pipeline"]:
        t.add_row(row["stage"], fmt_shape(row["shape"]), row["axes"], f"{row['parameters']:,}")
    console.print(t)

    ws = report["weight_sharing"]
    console.print(
        f"[bold]Weight sharing:[/bold] the RNN has {ws['rnn_parameters']:,} parameters for any length; "
        f"{ws['dense_per_step_layers']} dense layers, one per step and layer, would need "
        f"{ws['dense_per_step_parameters']:,} ({ws['ratio']:.1f}x) for {report['spec']['seq']} steps "
        "and would see no context."
    )



def _opt(name: str, *flags: str, **kw):
    """A train option whose help and default come from the config dataclasses (defaults written once)."""
    from rnncli.config import help_text

    return typer.Option(*flags, help=help_text(name), show_default=False, **kw)


class RichProgress:
    """Draws training progress: a bar with loss and tokens/s, a line per epoch."""

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
                            TimeElapsedColumn(), console=console, transient=True)
        self.task = None

    def report(self, report) -> None:
        t = Table(title="Data", title_justify="left")
        for col in ("split", "rows", *report.labels):
            t.add_column(col, justify="right" if col != "split" else "left")
        for name, rows in report.rows.items():
            t.add_row(name, f"{rows:,}", *(f"{c:,}" for c in report.class_counts[name]))
        console.print(t)
        p = report.length_percentiles
        console.print(f"tokens per training text: p50 {p['p50']}, p90 {p['p90']}, p99 {p['p99']}, "
                      f"max {p['max']}; {report.truncated_share:.1%} truncated at {report.max_length}")
        console.print(f"vocabulary {report.vocab_size:,} words; validation out-of-vocabulary rate "
                      f"{report.val_oov_rate:.2%}")
        for note in report.notes:
            console.print(f"note: {note}")

    def epoch_start(self, epoch: int, batches: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("train", total=batches, epoch=epoch, loss=float("nan"), tps=0.0)
        self.started, self.tokens = __import__("time").perf_counter(), 0

    def batch(self, loss: float, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(__import__("time").perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, loss=loss, tps=self.tokens / elapsed)

    def epoch_end(self, r) -> None:
        self.bar.remove_task(self.task)
        self.bar.stop()
        mark = "  [green]best[/green]" if r.improved else ""
        console.print(f"epoch {r.epoch:>3}  train loss {r.train_loss:.4f}  val loss {r.loss:.4f}  "
                      f"val acc {r.accuracy:.2%}  macro-F1 {r.macro_f1:.3f}  {r.seconds:.1f}s  "
                      f"{r.tokens_per_second:,.0f} tok/s{mark}")

    def close(self) -> None:
        self.bar.stop()


@app.command()
@clean_errors
def train(
    *,
    config: Annotated[Optional[Path], typer.Option(help="A TOML run config ([data], [model], [train]); "
                                                       "flags given here override it.")] = None,
    dataset: Annotated[Optional[str], _opt("dataset")] = None,
    text_column: Annotated[Optional[str], _opt("text_column")] = None,
    label_column: Annotated[Optional[str], _opt("label_column")] = None,
    val_fraction: Annotated[Optional[float], _opt("val_fraction")] = None,
    max_length: Annotated[Optional[int], _opt("max_length")] = None,
    min_freq: Annotated[Optional[int], _opt("min_freq")] = None,
    max_vocab: Annotated[Optional[int], _opt("max_vocab")] = None,
    cell: Annotated[Optional[str], _opt("cell")] = None,
    nonlinearity: Annotated[Optional[str], _opt("nonlinearity")] = None,
    layers: Annotated[Optional[int], _opt("layers")] = None,
    embed: Annotated[Optional[int], _opt("embed")] = None,
    hidden: Annotated[Optional[int], _opt("hidden")] = None,
    bidirectional: Annotated[Optional[bool], _opt("bidirectional", "--bidirectional/--no-bidirectional")] = None,
    pool: Annotated[Optional[str], _opt("pool")] = None,
    dropout: Annotated[Optional[float], _opt("dropout")] = None,
    init: Annotated[Optional[str], _opt("init")] = None,
    epochs: Annotated[Optional[int], _opt("epochs")] = None,
    batch_size: Annotated[Optional[int], _opt("batch_size")] = None,
    lr: Annotated[Optional[float], _opt("lr")] = None,
    weight_decay: Annotated[Optional[float], _opt("weight_decay")] = None,
    clip: Annotated[Optional[float], _opt("clip")] = None,
    seed: Annotated[Optional[int], _opt("seed")] = None,
    patience: Annotated[Optional[int], _opt("patience")] = None,
    class_weights: Annotated[Optional[str], _opt("class_weights")] = None,
    device: Annotated[Optional[str], _opt("device")] = None,
    out: Annotated[Optional[str], _opt("out")] = None,
):
    """Train a classifier and write its model folder (runs/latest points to the newest).

    With no options it trains on the built-in corpus, offline. Examples:
    rnncli train --layers 2 --hidden 30;
    rnncli train --dataset ../shared/data/sst2 --epochs 3;
    rnncli train --config configs/imdb.toml --dataset ../shared/data/imdb
    """
    flags = {k: v for k, v in locals().items() if k != "config"}
    from rnncli.config import resolve

    resolved = resolve(config, flags)
    from rnncli.train import train as run_training

    progress = RichProgress()
    try:
        run = run_training(resolved, progress)
    finally:
        progress.close()
    t = Table(title=f"Training: {run.stopped}", title_justify="left")
    for col in ("epoch", "train loss", "val loss", "val acc", "macro-F1", "seconds", "tok/s"):
        t.add_column(col, justify="right")
    for r in run.history:
        style = "bold green" if r.epoch == run.best_epoch else None
        t.add_row(str(r.epoch), f"{r.train_loss:.4f}", f"{r.loss:.4f}", f"{r.accuracy:.2%}", f"{r.macro_f1:.3f}",
                  f"{r.seconds:.1f}", f"{r.tokens_per_second:,.0f}", style=style)
    console.print(t)
    if run.message:
        console.print(f"[yellow]{run.stopped}:[/yellow] {run.message}")
    if run.test is not None:
        console.print(f"test accuracy {run.test.accuracy:.2%} (macro-F1 {run.test.macro_f1:.3f}) "
                      f"on {run.test.examples:,} texts")
    console.print(f"best model (epoch {run.best_epoch}, val acc {run.best_accuracy:.2%}) saved to "
                  f"[bold]{run.out}[/bold]")
    if run.stopped in ("diverged", "interrupted"):
        raise typer.Exit(2 if run.stopped == "diverged" else 130)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
