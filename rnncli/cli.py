"""The command line: parse options, resolve the config, call a library function, print with rich.

Nothing here computes; every command is a thin wrapper over a function in the library.
torch and datasets are imported only inside the commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
