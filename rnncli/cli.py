"""The command line: parse options, resolve the config, call a library function, print with rich.

Nothing here computes; every command is a thin wrapper over a function in the library.
torch and datasets are imported only inside the commands that need them, so `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rnncli.errors import Interrupted, RnncliError
from rnncli.serve.options import ServeOptions
from rnncli.shapes import ShapesSpec

app = typer.Typer(
    name="rnncli",
    help="A recurrent-network sentiment classifier: train it, evaluate it, use it, and look inside it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # help texts show [data] and <dataset> literally
)
console = Console()
MAX_BATCH = 1_000_000  # texts per inference batch


_stopped_by = [signal.SIGINT]  # the signal that stopped this process, when one did
_said_stopped = [False]  # whether the line saying so was printed (or left to torchrun's main process)


def _say_stopped(line: str | None) -> None:
    if line is not None:
        typer.echo(line, err=True)
    _said_stopped[0] = True


def _terminate(signum, frame):
    """SIGTERM stops a command as Ctrl-C does."""
    _stopped_by[0] = signum
    raise KeyboardInterrupt


def clean_errors(command):
    """Turn a user's mistake (RnncliError) into one line on stderr and its exit code (2), and an
    interrupt into one line and 128 + the signal's number (130 for Ctrl-C)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Interrupted as e:
            _say_stopped(None if e.echo else f"rnncli: {e}")
            raise typer.Exit(128 + _stopped_by[0]) from None
        except RnncliError as e:
            if not e.echo:
                typer.echo(f"rnncli: error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _say_stopped(f"rnncli: interrupted; {command.__name__.rstrip('_')} stopped and saved nothing")
            raise typer.Exit(128 + _stopped_by[0]) from None

    return wrapper


def jsonl(obj) -> str:
    """One JSON record on one line, whatever splits lines for the reader (U+2028, U+0085 escaped)."""
    text = json.dumps(obj, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


def _version(value: bool) -> None:
    if value:
        from rnncli import __version__

        typer.echo(f"rnncli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    *,
    version: Annotated[
        bool | None, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = None,
):
    """A recurrent-network sentiment classifier: train it, evaluate it, use it, and look inside it."""


def fmt_shape(shape) -> str:
    return str(tuple(shape))  # (20,) for one axis, as torch.Size prints it


def _help(text: str, default=None) -> str:
    """Help with its default written as the train options write theirs: `(default: X)`."""
    if isinstance(default, bool):
        default = "on" if default else "off"
    return text if default is None else f"{text} (default: {default})"


SHAPES = ShapesSpec()  # the defaults of `rnncli shapes`, kept in the library
RUNTIME = typer.Option(help=_help("What runs the model: torch (the weights), onnx (the folder's model.onnx in "
                                  "onnxruntime, without torch; see rnncli export), or auto: onnx when the "
                                  "folder has a model.onnx, onnxruntime is installed and the device is the "
                                  "CPU, else torch.", "auto"), show_default=False)


def _spec(name: str, text: str):
    """A `shapes` option whose default is the library's."""
    return typer.Option(help=_help(text, getattr(SHAPES, name)), show_default=False)


@app.command()
@clean_errors
def shapes(
    *,
    seq: Annotated[int, _spec("seq", "Time steps (words) per sequence.")] = SHAPES.seq,
    batch: Annotated[int, _spec("batch", "Sequences per batch.")] = SHAPES.batch,
    feature: Annotated[int, _spec("feature", "Input size per step (the embedding size).")] = SHAPES.feature,
    hidden: Annotated[int, _spec("hidden", "Hidden state size.")] = SHAPES.hidden,
    layers: Annotated[int, _spec("layers", "Stacked recurrent layers.")] = SHAPES.layers,
    cell: Annotated[str, _spec("cell", "rnn, gru or lstm.")] = SHAPES.cell,
    nonlinearity: Annotated[str, _spec("nonlinearity", "tanh or relu (rnn cell).")] = SHAPES.nonlinearity,
    bidirectional: Annotated[bool, _spec("bidirectional", "Read the sequence both ways.")] = SHAPES.bidirectional,
    batch_first: Annotated[bool, _spec("batch_first", "Lay x and out out as (batch, seq, ...).")] = SHAPES.batch_first,
    vocab: Annotated[int, _spec("vocab", "Vocabulary size for the classifier pipeline.")] = SHAPES.vocab,
    classes: Annotated[int, _spec("classes", "Classes for the classifier pipeline.")] = SHAPES.classes,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
):
    """Show how an RNN's tensors fit together, from real tensors after one forward pass.

    Example: rnncli shapes --seq 10 --batch 3 --feature 100 --hidden 20 --layers 4
    """
    from rnncli.shapes import describe

    report = describe(ShapesSpec(seq=seq, batch=batch, feature=feature, hidden=hidden, layers=layers,
                                 cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional,
                                 batch_first=batch_first, vocab=vocab, classes=classes))
    if as_json:
        typer.echo(json.dumps(report))
        return
    _print_shapes(report)


def _print_shapes(report: dict) -> None:
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



def _config_option(name: str, *flags: str, **kw):
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
        self.print_reading(report, "validation")

    @staticmethod
    def print_reading(report, held: str) -> None:
        """Text lengths, the vocabulary and its coverage of the `held` texts, and the notes."""
        p = report.length_percentiles
        console.print(f"tokens per training text: p50 {p['p50']}, p90 {p['p90']}, p99 {p['p99']}, "
                      f"max {p['max']}; {report.truncated_share:.1%} truncated at {report.max_length}")
        console.print(f"vocabulary {report.vocab_size:,} words; {held} out-of-vocabulary rate "
                      f"{report.val_oov_rate:.2%}")
        for note in report.notes:
            console.print(f"note: {note}")

    def epoch_start(self, epoch: int, batches: int) -> None:
        if self.task is None:
            self.bar.start()  # one live bar for the whole run; epoch lines print above it
        self.task = self.bar.add_task("train", total=batches, epoch=epoch, loss=float("nan"), tps=0.0)
        self.started, self.tokens = time.perf_counter(), 0

    def batch(self, loss: float, tokens: int) -> None:
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, advance=1, loss=loss, tps=self.tokens / elapsed)

    def restarted(self, restart) -> None:
        self.bar.remove_task(self.task)
        console.print(f"[yellow]epoch {restart.epoch:>3}  the loss exploded to {restart.loss:.4g}; restarting "
                      f"the epoch at lr {restart.lr:.3g}[/yellow]")

    def epoch_end(self, r) -> None:
        self.bar.remove_task(self.task)
        mark = "  [green]best[/green]" if r.improved else ""
        console.print(f"epoch {r.epoch:>3}  train loss {r.train_loss:.4f}  val loss {r.loss:.4f}  "
                      f"val acc {r.accuracy:.2%}  macro-F1 {r.macro_f1:.3f}  {r.seconds:.1f}s  "
                      f"{r.tokens_per_second:,.0f} tok/s{mark}")

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()


@app.command()
@clean_errors
def train(
    *,
    config: Annotated[Path | None, typer.Option(help="A TOML run config ([data], [model], [train]); "
                                                       "flags given here override it.")] = None,
    dataset: Annotated[str | None, _config_option("dataset")] = None,
    text_column: Annotated[str | None, _config_option("text_column")] = None,
    label_column: Annotated[str | None, _config_option("label_column")] = None,
    val_fraction: Annotated[float | None, _config_option("val_fraction")] = None,
    max_length: Annotated[int | None, _config_option("max_length")] = None,
    min_freq: Annotated[int | None, _config_option("min_freq")] = None,
    max_vocab: Annotated[int | None, _config_option("max_vocab")] = None,
    streaming: Annotated[bool | None, _config_option("streaming", "--streaming/--no-streaming")] = None,
    vocab_sample: Annotated[int | None, _config_option("vocab_sample")] = None,
    stream_buffer: Annotated[int | None, _config_option("stream_buffer")] = None,
    cell: Annotated[str | None, _config_option("cell")] = None,
    nonlinearity: Annotated[str | None, _config_option("nonlinearity")] = None,
    layers: Annotated[int | None, _config_option("layers")] = None,
    embed: Annotated[int | None, _config_option("embed")] = None,
    hidden: Annotated[int | None, _config_option("hidden")] = None,
    bidirectional: Annotated[bool | None,
                             _config_option("bidirectional", "--bidirectional/--no-bidirectional")] = None,
    pool: Annotated[str | None, _config_option("pool")] = None,
    dropout: Annotated[float | None, _config_option("dropout")] = None,
    word_dropout: Annotated[float | None, _config_option("word_dropout")] = None,
    ngrams: Annotated[int | None, _config_option("ngrams")] = None,
    ngram_buckets: Annotated[int | None, _config_option("ngram_buckets")] = None,
    weight_init: Annotated[str | None, _config_option("weight_init")] = None,
    init: Annotated[str | None, typer.Option("--init", hidden=True, help="Old spelling of --weight-init.")] = None,
    vectors: Annotated[str | None, _config_option("vectors")] = None,
    vectors_vocab: Annotated[bool | None, _config_option("vectors_vocab", "--vectors-vocab/--no-vectors-vocab")] = None,
    freeze_vectors: Annotated[bool | None, _config_option("freeze_vectors", "--freeze-vectors/--no-freeze-vectors")] = None,
    init_from: Annotated[str | None, _config_option("init_from")] = None,
    epochs: Annotated[int | None, _config_option("epochs")] = None,
    batch_size: Annotated[int | None, _config_option("batch_size")] = None,
    lr: Annotated[float | None, _config_option("lr")] = None,
    lr_decay: Annotated[float | None, _config_option("lr_decay")] = None,
    weight_decay: Annotated[float | None, _config_option("weight_decay")] = None,
    clip: Annotated[float | None, _config_option("clip")] = None,
    seed: Annotated[int | None, _config_option("seed")] = None,
    patience: Annotated[int | None, _config_option("patience")] = None,
    restarts: Annotated[int | None, _config_option("restarts")] = None,
    label_smoothing: Annotated[float | None, _config_option("label_smoothing")] = None,
    adversarial: Annotated[float | None, _config_option("adversarial")] = None,
    class_weights: Annotated[str | None, _config_option("class_weights")] = None,
    device: Annotated[str | None, _config_option("device")] = None,
    precision: Annotated[str | None, _config_option("precision")] = None,
    out: Annotated[str | None, _config_option("out")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted run in this model folder, "
                                                     "with its own config.")] = None,
):
    """Train a classifier and write its model folder (runs/latest points to the newest).

    With no options it trains on the built-in corpus, offline. Examples:
    rnncli train --layers 2 --hidden 30;
    rnncli train --dataset ../shared/data/sst2 --epochs 3;
    rnncli train --config configs/imdb.toml --dataset ../shared/data/imdb;
    rnncli train --streaming --dataset big-folder/ (a buffer at a time);
    torchrun --nproc_per_node 2 -m rnncli train ... (data-parallel, one folder written)
    """
    flags = {k: v for k, v in locals().items() if k not in ("config", "resume", "init")}
    resolved = _train_config(config, flags, init, resume)
    signal.signal(signal.SIGTERM, _terminate)  # SIGTERM stops like Ctrl-C: the best model so far stays
    progress = RichProgress()
    try:
        from rnncli.distributed import from_env

        console.quiet = not from_env().main  # under torchrun only the main process draws and reports
        from rnncli.train import train as run_training

        run = run_training(resolved, progress, resume=resume)
    except KeyboardInterrupt:  # before training started: while importing, or reading the data
        raise Interrupted(Interrupted.BEFORE_FIRST_EPOCH) from None
    finally:
        progress.close()
    _print_run(run)
    _exit_as_stopped(run)


def _train_config(config: Path | None, flags: dict, init: str | None, resume: Path | None):
    """The run's config from the TOML file and the flags; None with --resume, which takes the folder's."""
    if init is not None:
        if flags["weight_init"] is not None:
            raise RnncliError("--init is the old spelling of --weight-init: give one of them")
        flags["weight_init"] = init
    if resume is not None:
        if config is not None or any(v is not None for v in flags.values()):
            raise RnncliError("--resume continues with the folder's own config; give no other options")
        return None
    from rnncli.config import resolve

    return resolve(config, flags)


def _exit_as_stopped(run, again: str = "train") -> None:
    """An interrupted run says where its best model is and how to resume, and exits as the signal
    asks; a diverged one exits with 2."""
    if run.stopped == "interrupted":
        from rnncli.checkpoint import RESUME

        more = f"; continue with: rnncli {again} --resume {run.out}" if (run.out / RESUME).exists() else ""
        _say_stopped(f"rnncli: {run.message}; the best model so far (epoch {run.best_epoch}) is saved in "
                     f"{run.out}{more}")
        raise typer.Exit(128 + _stopped_by[0])
    if run.stopped == "diverged":
        raise typer.Exit(2)


def _print_run(run) -> None:
    t = Table(title=f"Training: {run.stopped}", title_justify="left")
    for col in ("epoch", "lr", "train loss", "val loss", "val acc", "macro-F1", "seconds", "tok/s"):
        t.add_column(col, justify="right")
    for r in run.history:
        style = "bold green" if r.epoch == run.best_epoch else None
        t.add_row(str(r.epoch), f"{r.lr:.3g}", f"{r.train_loss:.4f}", f"{r.loss:.4f}", f"{r.accuracy:.2%}",
                  f"{r.macro_f1:.3f}", f"{r.seconds:.1f}", f"{r.tokens_per_second:,.0f}", style=style)
    console.print(t)
    if run.message and run.stopped != "interrupted":
        console.print(f"[yellow]{run.stopped}:[/yellow] {run.message}")
    if run.test is not None:
        console.print(f"test accuracy {run.test.accuracy:.2%} (macro-F1 {run.test.macro_f1:.3f}) "
                      f"on {run.test.examples:,} texts")
    console.print(f"best model (epoch {run.best_epoch}, val acc {run.best_accuracy:.2%}) saved to "
                  f"[bold]{run.out}[/bold]")


def _lm_option(name: str, text: str, *flags: str):
    """A pretrain option that means something of its own there, with the config's default."""
    from rnncli.config import field_info

    return typer.Option(*flags, help=_help(text, field_info(name).default), show_default=False)


class LMProgress(RichProgress):
    """Draws pretraining progress: RichProgress's bar, the data it reads and a line per epoch."""

    def report(self, report) -> None:
        t = Table(title="Texts", title_justify="left")
        for col in ("part", "texts", "tokens"):
            t.add_column(col, justify="right" if col != "part" else "left")
        for name, texts in report.texts.items():
            t.add_row("held out" if name == "validation" else name, f"{texts:,}", f"{report.tokens[name]:,}")
        console.print(t)
        self.print_reading(report, "held-out")

    def close(self) -> None:
        if getattr(self, "vectors_bar", None) is not None:
            self.vectors_bar.stop()
        super().close()

    def vectors_start(self, epochs: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.vectors_bar = Progress(TextColumn("[bold]word vectors (skip-gram)"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), console=console, transient=True)
        self.vectors_bar.start()
        self.vectors_task = self.vectors_bar.add_task("vectors", total=epochs)

    def vectors_epoch(self, done: int) -> None:
        self.vectors_bar.update(self.vectors_task, completed=done)

    def vectors_end(self, note: str) -> None:
        self.vectors_bar.stop()
        console.print(f"note: {note}")

    def epoch_end(self, r) -> None:
        self.bar.remove_task(self.task)
        mark = "  [green]best[/green]" if r.improved else ""
        console.print(f"epoch {r.epoch:>3}  train loss {r.train_loss:.4f}  held-out loss {r.loss:.4f}  "
                      f"perplexity {r.perplexity:,.1f}  {r.seconds:.1f}s  {r.tokens_per_second:,.0f} tok/s{mark}")


@app.command()
@clean_errors
def pretrain(
    *,
    config: Annotated[Path | None, typer.Option(help="A TOML run config ([data], [model], [train], [pretrain]); "
                                                       "flags given here override it.")] = None,
    dataset: Annotated[str | None, _lm_option("dataset", "Texts to learn from: any data source train reads (its "
                                                    "train split; labels unused) or a .txt file, one text per line; "
                                                    "several, joined by commas (sst2,imdb).")] = None,
    text_column: Annotated[str | None, _config_option("text_column")] = None,
    val_fraction: Annotated[float | None, _lm_option("val_fraction", "Share of the texts held out (seeded) for "
                                                          "the perplexity.")] = None,
    max_length: Annotated[int | None, _config_option("max_length")] = None,
    min_freq: Annotated[int | None, _config_option("min_freq")] = None,
    max_vocab: Annotated[int | None, _config_option("max_vocab")] = None,
    streaming: Annotated[bool | None, _lm_option("streaming", "Read the texts a buffer at a time, for corpora "
                                                      "larger than memory: the first --vocab-sample texts give the "
                                                      "vocabulary and word vectors; a seeded hash of each text "
                                                      "holds out --val-fraction of them.",
                                                 "--streaming/--no-streaming")] = None,
    vocab_sample: Annotated[int | None, _lm_option("vocab_sample", "With --streaming: the first texts read, which "
                                                         "give the vocabulary, the word vectors and the "
                                                         "held-out texts measured.")] = None,
    stream_buffer: Annotated[int | None, _config_option("stream_buffer")] = None,
    cell: Annotated[str | None, _config_option("cell")] = None,
    nonlinearity: Annotated[str | None, _config_option("nonlinearity")] = None,
    layers: Annotated[int | None, _config_option("layers")] = None,
    embed: Annotated[int | None, _config_option("embed")] = None,
    hidden: Annotated[int | None, _config_option("hidden")] = None,
    bidirectional: Annotated[bool | None,
                             _config_option("bidirectional", "--bidirectional/--no-bidirectional")] = None,
    dropout: Annotated[float | None, _config_option("dropout")] = None,
    weight_init: Annotated[str | None, _config_option("weight_init")] = None,
    vectors: Annotated[str | None, _config_option("vectors")] = None,
    vectors_vocab: Annotated[bool | None, _config_option("vectors_vocab", "--vectors-vocab/--no-vectors-vocab")] = None,
    vector_epochs: Annotated[int | None, _config_option("vector_epochs")] = None,
    epochs: Annotated[int | None, _config_option("epochs")] = None,
    batch_size: Annotated[int | None, _config_option("batch_size")] = None,
    lr: Annotated[float | None, _config_option("lr")] = None,
    lr_decay: Annotated[float | None, _config_option("lr_decay")] = None,
    weight_decay: Annotated[float | None, _config_option("weight_decay")] = None,
    clip: Annotated[float | None, _config_option("clip")] = None,
    seed: Annotated[int | None, _config_option("seed")] = None,
    patience: Annotated[int | None, _lm_option("patience", "Stop after this many epochs without a lower "
                                                     "held-out perplexity.")] = None,
    restarts: Annotated[int | None, _config_option("restarts")] = None,
    device: Annotated[str | None, _config_option("device")] = None,
    out: Annotated[str | None, typer.Option(help="Folder to write; empty: runs/<dataset>-lm-<timestamp>. "
                                                 "runs/latest is left pointing at the newest classifier.",
                                            show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue an interrupted pretraining run in this "
                                                     "folder, with its own config.")] = None,
):
    """Pretrain the embedding and recurrent layers as a language model on unlabeled text: each
    direction learns to predict the next word (a bidirectional model's second direction, the
    word before). Then train a classifier from it with rnncli train --init-from FOLDER.

    The same [model] options as train; pool and the head belong to the classifier. Examples:
    rnncli pretrain --dataset ../shared/data/imdb --cell gru --bidirectional --out runs/imdb-lm;
    rnncli train --dataset ../shared/data/imdb --init-from runs/imdb-lm (its cell and sizes come along);
    rnncli pretrain --streaming --dataset big.txt (a buffer at a time)
    """
    flags = {k: v for k, v in locals().items() if k not in ("config", "resume")}
    resolved = _train_config(config, flags, None, resume)
    signal.signal(signal.SIGTERM, _terminate)
    progress = LMProgress()
    try:
        from rnncli.pretrain import pretrain as run_pretraining

        run = run_pretraining(resolved, progress, resume=resume)
    except KeyboardInterrupt:
        raise Interrupted(Interrupted.BEFORE_FIRST_EPOCH) from None
    finally:
        progress.close()
    _print_lm_run(run)
    _exit_as_stopped(run, again="pretrain")


def _print_lm_run(run) -> None:
    t = Table(title=f"Pretraining: {run.stopped}", title_justify="left")
    for col in ("epoch", "lr", "train loss", "held-out loss", "perplexity", "seconds", "tok/s"):
        t.add_column(col, justify="right")
    for r in run.history:
        style = "bold green" if r.epoch == run.best_epoch else None
        t.add_row(str(r.epoch), f"{r.lr:.3g}", f"{r.train_loss:.4f}", f"{r.loss:.4f}", f"{r.perplexity:,.1f}",
                  f"{r.seconds:.1f}", f"{r.tokens_per_second:,.0f}", style=style)
    console.print(t)
    if run.message and run.stopped != "interrupted":
        console.print(f"[yellow]{run.stopped}:[/yellow] {run.message}")
    console.print(f"best language model (epoch {run.best_epoch}, perplexity {run.best_perplexity:,.1f}) saved to "
                  f"[bold]{run.out}[/bold]; train a classifier from it with: rnncli train --init-from {run.out}")


@app.command("eval")
@clean_errors
def eval_(
    *,
    model: Annotated[str, typer.Option(help=_help("Model folder.", "runs/latest"), show_default=False)] = "runs/latest",
    dataset: Annotated[str | None, typer.Option(help=_help("Data to score on.", "the model's own"))] = None,
    split: Annotated[str | None, typer.Option(help=_help("Split.", "test where there is one, else "
                                                                  "validation"))] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_BATCH, help=_help("Texts per batch.", 128),
                                            show_default=False)] = 128,
    device: Annotated[str, typer.Option(help=_help("auto, cpu, cuda or cuda:N.", "cpu"), show_default=False)] = "cpu",
    runtime: Annotated[str, RUNTIME] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Score a trained model: accuracy, macro-F1, per-class scores, confusion matrix, speed."""
    from rnncli.checkpoint import inspect

    checked = inspect(model)  # a broken or crafted folder fails in milliseconds, before torch is imported
    from rnncli.evaluate import evaluate_folder

    ev = evaluate_folder(model, dataset=dataset, split=split, batch_size=batch_size, device=device,
                         inspected=checked, runtime=runtime)
    if as_json:
        typer.echo(json.dumps(ev.to_dict()))
        return
    _print_evaluation(ev)


def _print_evaluation(ev) -> None:
    m = ev.metrics
    console.print(f"[bold]{ev.model}[/bold] on {ev.dataset} ({ev.split}, {m.examples:,} texts)")
    console.print(f"accuracy [bold]{m.accuracy:.2%}[/bold]  macro-F1 {m.macro_f1:.3f}  loss {m.loss:.4f}  "
                  f"{m.examples_per_second:,.0f} texts/s ({ev.runtime})")
    console.print(f"majority-class baseline ({m.majority_label!r} always): {m.majority_accuracy:.2%}")
    if m.accuracy <= m.majority_accuracy:
        console.print("[yellow]warning: the model does not beat always answering the majority class[/yellow]")
    t = Table(title="Per class", title_justify="left")
    for col in ("label", "precision", "recall", "F1", "support"):
        t.add_column(col, justify="left" if col == "label" else "right")
    for c in m.per_class:
        t.add_row(c["label"], f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}", f"{c['support']:,}")
    console.print(t)
    t = Table(title="Confusion (rows: true, columns: predicted)", title_justify="left")
    t.add_column("")
    for name in m.labels:
        t.add_column(name, justify="right")
    for name, row in zip(m.labels, m.confusion):
        t.add_row(name, *(f"{v:,}" for v in row))
    console.print(t)


@app.command()
@clean_errors
def predict(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify; - reads one per line "
                                                              "from standard input.", show_default=False)] = None,
    *,
    file: Annotated[Path | None, typer.Option(help="Read one text per line from this file (UTF-8).")] = None,
    model: Annotated[str, typer.Option(help=_help("Model folder.", "runs/latest"), show_default=False)] = "runs/latest",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    top_k: Annotated[int | None, typer.Option(min=1, help=_help("Show the K likeliest labels.",
                                                                "the likeliest only"))] = None,
    threshold: Annotated[float | None, typer.Option(help=_help(
        "Two-class models: answer the second label (e.g. positive) only above this probability, "
        "0 < threshold < 1.", "the likelier label"))] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=MAX_BATCH, help=_help("Texts per batch.", 128),
                                            show_default=False)] = 128,
    explain: Annotated[bool, typer.Option(help="Show how the model reads the text: the class probabilities "
                                                "after every word (a one-direction model pooled at the last "
                                                "step), or the attention each word gets (--pool attn). "
                                                "(default: off)", show_default=False)] = False,
    device: Annotated[str, typer.Option(help=_help("auto, cpu, cuda or cuda:N.", "cpu"), show_default=False)] = "cpu",
    runtime: Annotated[str, RUNTIME] = "auto",
):
    """Classify texts with a trained model: one record per input line, in input order.

    Examples: rnncli predict "I hate this boring movie";
    echo "a gorgeous, witty film" | rnncli predict -;
    rnncli predict --file reviews.txt --json
    """
    from rnncli.checkpoint import inspect
    from rnncli.texts import read_texts

    lines = read_texts(list(texts or []), file)
    checked = inspect(model)  # a broken or crafted folder fails in milliseconds, before torch is imported
    from rnncli.predict import Classifier, check_threshold

    check_threshold(threshold)
    runtime = "torch" if explain and runtime == "auto" else runtime  # only torch reads every step's state
    clf = Classifier.load(model, device=device, inspected=checked, runtime=runtime)
    _say_runtime(clf, runtime)
    if not lines:  # an empty file or standard input: no texts, no records
        return
    if explain:
        for text in lines:
            _print_explanation(clf.explain(text), as_json)
        return
    if as_json:  # written a chunk at a time: a file of millions of lines needs one chunk's records
        for preds in clf.predict_chunks(lines, batch_size=batch_size, threshold=threshold):
            typer.echo("\n".join(jsonl(p.to_dict(top_k)) for p in preds))
        return
    _print_predictions(clf.predict(lines, batch_size=batch_size, threshold=threshold), top_k)


def _say_runtime(clf, asked: str) -> None:
    """A line on stderr when --runtime auto chose the folder's model.onnx over its weights."""
    if asked == "auto" and clf.runtime == "onnx":
        typer.echo(f"rnncli: running model.onnx ({clf.model.precision}) in onnxruntime; "
                   f"--runtime torch runs the weights", err=True)


def _print_predictions(preds, top_k: int | None) -> None:
    t = Table()
    t.add_column("text", overflow="fold", ratio=3)
    t.add_column("label")
    t.add_column("probability", justify="right")
    t.add_column("unknown words", justify="right")
    for p in preds:
        shown = p.text if len(p.text) <= 300 else p.text[:297] + "..."
        if p.empty:
            t.add_row(shown or "(blank line)", "[dim](empty text)[/dim]", "", "")
            continue
        if top_k:
            ranked = p.top(top_k)
            label, prob = "\n".join(n for n, _ in ranked), "\n".join(f"{v:.3f}" for _, v in ranked)
        else:
            label, prob = p.label, f"{p.score:.3f}"
        t.add_row(shown, label, prob, f"{p.unknown_share:.0%}")
    console.print(t)


def _print_explanation(ex, as_json: bool) -> None:
    if as_json:
        typer.echo(jsonl(ex.to_dict()))
        return
    if ex.attention:
        t = Table(title=f"Where the model looked: {ex.prediction.label} ({ex.prediction.score:.3f})",
                  title_justify="left")
        t.add_column("step", justify="right")
        t.add_column("word")
        t.add_column("attention", justify="right")
        t.add_column("")
        top = max(ex.attention)
        for i, (token, weight) in enumerate(zip(ex.tokens, ex.attention), start=1):
            t.add_row(str(i), token, f"{weight:.3f}", "#" * round(weight / top * 20))
        console.print(t)
        return
    t = Table(title=f"How the answer builds up, word by word: {ex.prediction.label} "
                    f"({ex.prediction.score:.3f})", title_justify="left")
    t.add_column("step", justify="right")
    t.add_column("word")
    t.add_column("likeliest")
    for name in ex.labels:
        t.add_column(name, justify="right")
    t.add_column("")
    for i, (token, row) in enumerate(zip(ex.tokens, ex.probabilities), start=1):
        k = max(range(len(row)), key=row.__getitem__)
        bar = "#" * round(row[k] * 20)
        t.add_row(str(i), token, ex.labels[k], *(f"{v:.3f}" for v in row), bar)
    console.print(t)


@app.command()
@clean_errors
def export(
    *,
    model: Annotated[str, typer.Option(help=_help("Model folder.", "runs/latest"), show_default=False)] = "runs/latest",
    format: Annotated[str, typer.Option("--format", help=_help("File format; onnx is the one there is.", "onnx"),
                                        show_default=False)] = "onnx",
    quantize: Annotated[str, typer.Option(help=_help(
        "none, or int8: onnxruntime's dynamic quantization, a smaller file, with the validation "
        "accuracy before and after it reported.", "none"), show_default=False)] = "none",
    out: Annotated[Path | None, typer.Option(help=_help("File to write.", "model.onnx in the model folder"),
                                             show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """Write the model as ONNX, for onnxruntime (rnncli predict --runtime onnx, no torch) or any other
    ONNX runtime. The file is checked against the torch model before it is kept. Needs
    pip install "rnncli[onnx]".

    Example: rnncli export --model runs/latest, then rnncli predict --runtime onnx "a gorgeous, witty film"
    """
    from rnncli.checkpoint import inspect

    inspect(model)  # a broken or crafted folder fails in milliseconds, before torch is imported
    from rnncli.export import export as export_model

    with Console(stderr=True).status("exporting and checking against torch", spinner="line"):
        done = export_model(model, out=out, quantize=quantize, format=format)
    if as_json:
        typer.echo(json.dumps(done.to_dict()))
        return
    _print_export(done)


def _print_export(done) -> None:
    precision = "fp32" if done.quantize == "none" else done.quantize
    console.print(f"wrote [bold]{done.path}[/bold]: {done.bytes / 1e6:,.1f} MB, {precision} (the weights: "
                  f"{done.weights_bytes / 1e6:,.1f} MB)")
    console.print(f"checked against torch on {len(done.checks)} batches of 1 to {max(c.batch for c in done.checks)} "
                  f"texts, 1 to {max(max(c.lengths) for c in done.checks)} tokens:")
    console.print(f"largest difference in a probability {done.max_difference:.1e} (at most {done.tolerance:g})")
    if done.accuracy:
        a = done.accuracy
        console.print(f"{a['split']} accuracy ({a['texts']:,} texts): torch {a['torch']:.2%}, "
                      f"onnx {precision} {a['onnx']:.2%} ({a['onnx'] - a['torch']:+.2%})")


SERVE = ServeOptions()  # the defaults of `rnncli serve`, kept in the library


def _serve_option(name: str, *flags: str, **kw):
    """A serve option whose help and default come from `ServeOptions` (defaults written once)."""
    return typer.Option(*flags, help=ServeOptions.help(name), show_default=False, **kw)


@app.command()
@clean_errors
def serve(
    *,
    model: Annotated[str, _serve_option("model")] = SERVE.model,
    host: Annotated[str, _serve_option("host")] = SERVE.host,
    port: Annotated[int, _serve_option("port")] = SERVE.port,
    device: Annotated[str, _serve_option("device")] = SERVE.device,
    runtime: Annotated[str, _serve_option("runtime")] = SERVE.runtime,
    max_batch: Annotated[int, _serve_option("max_batch")] = SERVE.max_batch,
    max_wait_ms: Annotated[float, _serve_option("max_wait_ms")] = SERVE.max_wait_ms,
    max_texts: Annotated[int, _serve_option("max_texts")] = SERVE.max_texts,
    max_body: Annotated[int, _serve_option("max_body")] = SERVE.max_body,
    workers: Annotated[int, _serve_option("workers")] = SERVE.workers,
    allowed_host: Annotated[list[str] | None, _serve_option("allowed_host", metavar="<name>")] = None,
    access_log: Annotated[bool, _serve_option("access_log")] = SERVE.access_log,
    api_key: Annotated[str | None, _serve_option("api_key", envvar="RNNCLI_API_KEY", show_envvar=True)] = None,
):
    """Keep a trained model loaded behind an HTTP API: POST /predict and /explain, GET /info,
    /health and /metrics, the API's own docs at /docs. Needs pip install "rnncli[serve]".

    Example: rnncli serve --model runs/latest --port 8000, then
    curl -s --json '{"texts": ["a gorgeous, witty film"]}' localhost:8000/predict
    """
    from rnncli.serve import require_extra

    options = ServeOptions(model=model, host=host, port=port, device=device, runtime=runtime,
                           max_batch=max_batch, max_wait_ms=max_wait_ms, max_texts=max_texts, max_body=max_body,
                           workers=workers, allowed_host=tuple(allowed_host) if allowed_host else None, access_log=access_log,
                           api_key=api_key)
    options.check()
    require_extra()
    from rnncli.serve.server import address, build, listen, run

    app_ = build(options)
    sock = listen(options)
    typer.echo(f"rnncli: serving {model} ({app_.card['runtime']}) on {address(sock)} (API docs at /docs); "
               f"Ctrl-C stops", err=True)
    run(options, sock, app_)


def main(args: list[str] | None = None) -> None:
    """Run the CLI. A usage mistake (an unknown option, a value typer refuses) is one line on
    stderr too, and exit code 2. Click's exceptions are recognised by their shape, since typer
    either vendors click or depends on it."""
    try:
        command = typer.main.get_command(app)
        code = command.main(args=args, standalone_mode=False)
    except KeyboardInterrupt:
        _say_stopped("rnncli: interrupted")
        code = 128 + _stopped_by[0]
    except Exception as e:  # noqa: BLE001 - _usage_error raises again whatever is not click's
        code = _usage_error(e)
    if code == 128 + _stopped_by[0]:
        if not _said_stopped[0]:
            _say_stopped("rnncli: interrupted")  # typer turns a Ctrl-C while it parses into a bare exit code
        from rnncli.__main__ import exit_now

        exit_now(code)  # not through the interpreter's shutdown, which may end it by SIGINT instead
    raise SystemExit(code or 0)


def _usage_error(e: Exception) -> int:
    """The exit code of click's answer to a usage mistake or to Ctrl-C, its one line printed."""
    kind = type(e).__name__
    if kind == "Abort":  # click's answer to Ctrl-C or end of input while it parses
        _say_stopped("rnncli: interrupted")
        return 128 + _stopped_by[0]
    if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
        raise e  # not a usage error: our bug, with its traceback
    if kind == "NoArgsIsHelpError":  # `rnncli` alone prints its help
        e.show()
        return e.exit_code
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    typer.echo(f"rnncli: error: {' '.join(e.format_message().split())}{hint}", err=True)
    return e.exit_code


if __name__ == "__main__":
    main()
