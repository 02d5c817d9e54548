"""Train a classifier from a resolved config and write its model folder.

`train(config) -> Run` prints nothing: it reports through a `Progress` object, which the CLI draws
with rich and tests leave silent. The run in phases: prepare the data and vocabulary, build the
model, restore an interrupted run, then epochs of steps over a batch source (batching.py), each
ending with validation, the best model kept (checkpoint.RunFolder) and early stopping.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.algorithms.join import Join

from rnncli import checkpoint
from rnncli import distributed as ddp
from rnncli.batching import SplitBatches, StreamBatches
from rnncli.config import ARCHITECTURE, Config, ModelConfig
from rnncli.data import DataReport, data_report, load_corpus
from rnncli.device import resolve_device
from rnncli.errors import Interrupted, RnncliError
from rnncli.evaluate import Metrics, evaluate
from rnncli.model import RNNClassifier
from rnncli.optimizer import Gradients, make_optimizer
from rnncli.restarts import Restarts
from rnncli.streaming import open_stream
from rnncli.tokenizer import Encoded, add_words, encode, train_tokenizer
from rnncli.vectors import Vectors, init_embedding, read_vectors, vector_words, vectors_note


@dataclass
class Epoch:
    epoch: int
    split: str
    train_loss: float
    loss: float
    accuracy: float
    macro_f1: float
    seconds: float
    tokens_per_second: float
    improved: bool
    lr: float = 0.0  # the epoch's learning rate (records written before it was kept lack it)

    def record(self) -> dict:
        """Its line in metrics.jsonl."""
        return {k: v for k, v in asdict(self).items() if k != "improved"}


@dataclass
class Restart:
    """An epoch started again: its loss exploded to `loss`; it runs again at `lr`."""
    epoch: int
    loss: float
    lr: float


@dataclass
class Run:
    out: Path
    config: Config
    report: DataReport
    history: list[Epoch] = field(default_factory=list)
    best_epoch: int = 0
    best_accuracy: float = float("nan")
    stopped: str = "finished"  # finished | early stop | interrupted | diverged
    message: str = ""
    restarts: list[Restart] = field(default_factory=list)  # epochs started again after a loss explosion
    test: Metrics | None = None
    model: RNNClassifier | None = field(default=None, repr=False)  # the best weights, on the training device


class Progress:
    """Hooks the CLI fills in to draw progress; the defaults do nothing."""

    def report(self, report: DataReport) -> None: ...
    def epoch_start(self, epoch: int, batches: int | None) -> None: ...
    def batch(self, loss: float, tokens: int) -> None: ...
    def epoch_end(self, result: Epoch) -> None: ...
    def restarted(self, restart: Restart) -> None: ...


@dataclass
class Setup:
    """Where a run trains: its processes, its device and the arithmetic there."""
    dist: ddp.Dist
    device: torch.device
    autocast: Callable  # a context for the forward pass: autocast, or nothing for fp32
    scaler: Any  # a GradScaler for fp16, else None


@dataclass
class Data:
    """What the data phase hands on: the corpus, its vocabulary and its encoded splits."""
    corpus: Any  # data.Corpus or streaming.StreamedCorpus
    tokenizer: Any
    train: Encoded | None  # the training split's ids, when it is held in memory
    splits: dict[str, Encoded]  # validation, and test where there is one
    report: DataReport
    vectors: Vectors | None = None  # pretrained vectors for the embedding's rows


def train(config: Config | None = None, progress: Progress | None = None, resume: str | Path | None = None) -> Run:
    """Train from `config`, or continue the interrupted run in folder `resume` with its own config.

    Started by torchrun, every process runs this: each trains on its share of the batches under
    DistributedDataParallel, and only the main process reports progress and writes the folder.
    """
    dist = ddp.from_env()
    progress = progress if progress is not None and dist.main else Progress()
    config, resumed = resolve_run(config, resume)
    device = resolve_device(ddp.device_spec(config.train.device, dist))
    autocast, scaler = mixed_precision(config.train.precision, device)
    ddp.start(dist, device)
    try:
        run = _train(config, progress, resumed, Setup(dist, device, autocast, scaler))
    except BaseException:
        ddp.stop(dist, finished=False)
        raise
    ddp.stop(dist)
    return run


def resolve_run(config: Config | None, resume) -> tuple[Config, checkpoint.Resumed | None]:
    """The run's config (see `checkpoint.run_config`), checked for what training needs."""
    config, resumed = checkpoint.run_config(config, resume, language_model=False)
    if config.model.freeze_vectors and not config.model.vectors:
        raise RnncliError("--freeze-vectors needs --vectors FILE: a frozen random embedding would never learn")
    return config, resumed


def _train(config: Config, progress: Progress, resumed: checkpoint.Resumed | None, setup: Setup) -> Run:
    """The phases of a run, in order."""
    folder = run_folder(config, resumed, setup.dist)
    # checked before the data is read, so a wrong folder fails at once; and before seeding, as
    # rebuilding the source model draws random numbers
    source = start_from(config) if resumed is None else None  # on --resume the weights come from the checkpoint
    seed_everything(config.train.seed)
    data = prepare_data(config, folder if resumed else None, source)
    progress.report(data.report)
    model = build_model(config, data, source, setup.device)
    learner = Learner(model, config, data.corpus, setup)
    fit = Fit(config, learner, data, folder, setup, progress)
    if resumed is None:
        folder.meta = checkpoint.run_meta(config, data.corpus, data.tokenizer.get_vocab_size(),
                                          setup.dist.world, setup.device)
    else:
        fit.restore(resumed)
    fit.epochs()
    return fit.finish()


def run_folder(config: Config, resumed: checkpoint.Resumed | None, dist: ddp.Dist) -> checkpoint.RunFolder:
    """The folder this run writes: the resumed one, or a new path the main process checked and
    named (a timestamp), told to every process."""
    if resumed is not None:
        return checkpoint.RunFolder(resumed.path, writes=dist.main)
    path = problem = None
    if dist.main:
        try:
            path = checkpoint.new_folder_path(config.train.out, config.data.dataset)
        except RnncliError as e:
            problem = e
    ddp.raise_together(problem, dist)
    return checkpoint.RunFolder(ddp.broadcast(path, dist), writes=dist.main)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def start_from(config: Config) -> checkpoint.Loaded | None:
    """The model folder named by `init_from` (a classifier, or a language model from `rnncli
    pretrain`), checked against this run's architecture."""
    path = config.model.init_from
    if not path:
        return None
    if config.model.vectors:
        raise RnncliError("--init-from and --vectors both set the embedding: give one of them")
    source = checkpoint.load_any(path)
    check_architecture(source.config.model, config.model, path)
    return source


def check_architecture(theirs: ModelConfig, ours: ModelConfig, path) -> None:
    """The source's layers fit this run only with the same cell and sizes (and, for rnn, activation)."""
    keys = [key for key in ARCHITECTURE if key != "nonlinearity" or ours.cell == "rnn"]
    differ = [key for key in keys if getattr(theirs, key) != getattr(ours, key)]
    if differ:
        said = "; ".join(f"its {key} is {getattr(theirs, key)}, this run's {getattr(ours, key)}" for key in differ)
        flags = " ".join(_flag(key, getattr(theirs, key)) for key in differ)
        raise RnncliError(f"--init-from {path}: {said}; they must match (pass {flags}, or leave them unset "
                          "to take the source's)")


def _flag(key: str, value) -> str:
    name = key.replace("_", "-")
    return f"--{'' if value else 'no-'}{name}" if isinstance(value, bool) else f"--{name} {value}"


def mixed_precision(precision: str, device):
    """autocast for `--precision bf16|fp16` on CUDA (and a GradScaler for fp16); fp32 anywhere."""
    if precision == "fp32":
        return contextlib.nullcontext, None
    if device.type != "cuda":
        raise RnncliError(f"--precision {precision} needs a CUDA device; on {device.type} rnncli trains in fp32")
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise RnncliError(f"{device}: this GPU has no bf16 support; use --precision fp16 or fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None  # fp16 gradients underflow unscaled
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), scaler


def prepare_data(config: Config, resumed: checkpoint.RunFolder | None, source) -> Data:
    """Read the data, check it can train a classifier, fix the vocabulary and encode every split."""
    data_cfg = config.data
    if data_cfg.streaming and config.model.ngrams:
        raise RnncliError("--ngrams counts its n-grams in the training split held in memory: it does not run "
                          "with --streaming")
    read = open_stream if data_cfg.streaming else load_corpus
    corpus = read(data_cfg, seed=config.train.seed)
    present = np.unique(corpus.train.labels)
    if len(present) < 2:
        only = corpus.labels[int(present[0])]
        raise RnncliError(f"{data_cfg.dataset}: the train split holds a single class ({only!r}); "
                          "a classifier needs at least two")
    if len(corpus.splits["validation"]) == 0:
        raise RnncliError(f"{data_cfg.dataset}: the validation split is empty")
    tokenizer, added = vocabulary(config, corpus.train.texts, resumed, source)
    train_ids = encode(tokenizer, corpus.train.texts, data_cfg.max_length)
    splits = {name: encode(tokenizer, split.texts, data_cfg.max_length)
              for name, split in corpus.splits.items() if name != "train"}
    report = data_report(corpus, train_ids, splits["validation"], tokenizer.get_vocab_size(), data_cfg.max_length)
    data = Data(corpus, tokenizer, None if data_cfg.streaming else train_ids, splits, report)
    if resumed is None and config.model.vectors:  # on --resume the weights come from the checkpoint
        data.vectors = read_vectors(config.model.vectors, tokenizer.get_vocab(), config.model.embed, added=added)
        report.notes.append(vectors_note(config.model.vectors, data.vectors, config.model.freeze_vectors))
    if source is not None:
        report.notes.append(started_note(config, source, corpus.labels))
    return data


def started_note(config: Config, source: checkpoint.Loaded, labels: list[str]) -> str:
    """What `--init-from` took from its folder."""
    trained = source.meta["dataset"]["name"]
    if source.meta.get("kind") == checkpoint.LANGUAGE_MODEL:
        what = f"a language model pretrained on {trained}"
    else:
        what = f"trained on {trained}, labels {', '.join(source.labels)}"
    return (f"started from {config.model.init_from}: its vocabulary, embedding and {config.model.cell} layers "
            f"({what}); a new head for {', '.join(labels)}")


def vocabulary(config: Config, texts: list[str], resumed: checkpoint.RunFolder | None, source):
    """The tokenizer, and how many words the vectors file added to it: the resumed run's, the
    source model's (its embedding rows belong to its vocabulary), or one trained on `texts`."""
    if resumed is not None:
        return resumed.tokenizer(), 0
    if source is not None:
        return source.tokenizer, 0
    tokenizer = train_tokenizer(texts, config.data.min_freq, config.data.max_vocab)
    if config.model.vectors and config.model.vectors_vocab:
        return add_words(tokenizer, vector_words(config.model.vectors), config.data.max_vocab)
    return tokenizer, 0


def build_model(config: Config, data: Data, source, device) -> RNNClassifier:
    """A fresh model, its embedding from the vectors or its body from the `--init-from` model."""
    model = RNNClassifier(config.model, vocab_size=data.tokenizer.get_vocab_size(),
                          num_classes=len(data.corpus.labels)).to(device)
    if data.vectors is not None:
        init_embedding(model.embedding, data.vectors)
    if source is not None:
        body = source_body(source.model)
        model.load_state_dict(body, strict=False)  # everything but the head, which keeps its fresh init
    if config.model.ngrams:
        model.ngrams.fit_ratios(data.train.ids, data.train.starts, data.train.lengths, data.corpus.train.labels)
    return model


def source_body(source) -> dict:
    """The weights a classifier takes from a pretrained language model (its embedding and
    recurrent layers, `LanguageModel.classifier_body`) or from a trained classifier (all but the
    head and the n-gram bag, which belong to its labels; its attention scorer serves only a model
    that pools by attention too)."""
    if hasattr(source, "classifier_body"):
        return source.classifier_body()
    return {k: v for k, v in source.state_dict().items() if not k.startswith(("head.", "ngrams."))}


class Learner:
    """The model and what steps it: DDP, AdamW, the gradients' zeroing and clipping, the loss."""

    def __init__(self, model: RNNClassifier, config: Config, corpus, setup: Setup):
        train_cfg, dist = config.train, setup.dist
        self.model, self.step_model, self.config, self.setup = model, model, config, setup
        if dist.active:
            from torch.nn.parallel import DistributedDataParallel

            # DDP copies the main process's weights to the others now and averages gradients after each backward
            self.step_model = DistributedDataParallel(
                model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
            torch.manual_seed(train_cfg.seed + 1_000_003 * (dist.rank + 1))  # each process its own dropout masks
        rows = not dist.active
        self.optimizer = make_optimizer(model, config, rows=rows)
        self.gradients = Gradients(model, rows=rows, optimizer=self.optimizer)
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=class_weights(config, corpus, setup.device),
                                                 label_smoothing=train_cfg.label_smoothing)

    def set_epoch(self, epoch: int, scale: float) -> None:
        """Training mode and the epoch's learning rate (times `scale`, see `Restarts`); set between
        epochs, when RowAdamW has brought every row up to date at the old rate."""
        self.model.train()
        set_lr(self.optimizer, self.config, epoch, scale)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self, ids: torch.Tensor, lengths: torch.Tensor | None, y: torch.Tensor) -> float:
        """One optimisation step on a batch, ids (seq, batch), lengths (batch,) or None where no text
        is padded, and labels (batch,); returns its loss."""
        scaler = self.setup.scaler
        loss, total = self.losses(ids, lengths, y)
        self.gradients.zero(ids)
        self.scaled(total).backward()
        if scaler is not None:
            scaler.unscale_(self.optimizer)  # clip the true gradients
        if self.config.train.clip > 0:
            self.gradients.clip(self.config.train.clip)
        if scaler is None:
            self.optimizer.step()
        else:
            scaler.step(self.optimizer)
            scaler.update()
        self.gradients.zero_rows()
        return loss.item()

    def losses(self, ids: torch.Tensor, lengths: torch.Tensor | None, y: torch.Tensor):
        """The batch's loss, and what the step minimises: the loss itself or, with `--adversarial`,
        the loss plus the loss on the batch with its embedded words moved the way that raises it
        most (Miyato et al. 2017). A model that must keep its answer under that push learns
        smoother boundaries than the labels alone give it; each step costs about three times as much."""
        eps = self.config.train.adversarial
        if eps == 0:
            loss = self.loss(ids, lengths, y)
            return loss, loss
        zero = torch.zeros(*ids.shape, self.model.config.embed, device=ids.device, requires_grad=True)
        loss = self.loss(ids, lengths, y, zero)
        grad, = torch.autograd.grad(self.scaled(loss), zero, retain_graph=True)  # (seq, batch, embed)
        return loss, loss + self.loss(ids, lengths, y, adversarial_push(grad, eps))

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss as gradients are taken from it: fp16 gradients underflow unless GradScaler scales it."""
        return loss if self.setup.scaler is None else self.setup.scaler.scale(loss)

    def loss(self, ids: torch.Tensor, lengths: torch.Tensor | None, y: torch.Tensor,
             perturb: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's loss, its embedded words moved by `perturb` (seq, batch, embed) if given."""
        with self.setup.autocast():
            if self.model.config.ngrams:  # the head and the n-gram bag each learn on their own loss
                parts = self.step_model(ids, lengths, perturb, parts=True)  # (batch, classes) each
            else:
                parts = (self.step_model(ids, lengths, perturb),)  # (batch, classes)
        return sum(self.loss_fn(logits.float(), y) for logits in parts)  # in fp32


def adversarial_push(grad: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation of length `eps` per text (L2 over all its words' embeddings) along the loss's
    gradient: grad (seq, batch, embed) -> (seq, batch, embed). Padding has no gradient and gets none."""
    norm = grad.pow(2).sum((0, 2), keepdim=True).sqrt()  # (1, batch, 1)
    return (eps * grad / norm.clamp_min(1e-12)).detach()  # (seq, batch, embed)


def epoch_lr(config: Config, epoch: int, scale: float) -> float:
    """The epoch's learning rate: `lr`, decayed by `lr_decay` an epoch, times `scale`."""
    return config.train.lr * config.train.lr_decay ** (epoch - 1) * scale


def set_lr(optimizer, config: Config, epoch: int, scale: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = epoch_lr(config, epoch, scale)


def class_weights(config: Config, corpus, device) -> torch.Tensor | None:
    """With `--class-weights auto`, each class's loss weighed by its inverse frequency in train."""
    if config.train.class_weights != "auto":
        return None
    labels = corpus.train.labels
    counts = np.bincount(labels, minlength=len(corpus.labels)).astype(float)
    return torch.tensor(len(labels) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32, device=device)


def batch_source(config: Config, data: Data, dist: ddp.Dist) -> SplitBatches | StreamBatches:
    """The training batches: from the split in memory, or from the stream a buffer at a time;
    padded batches of neighbouring lengths for a one-direction model (see `rnncli.batching`)."""
    data_cfg, train_cfg = config.data, config.train
    padded = not config.model.bidirectional
    if data_cfg.streaming:
        return StreamBatches(data.corpus, data.tokenizer, data_cfg.stream_buffer, data_cfg.max_length,
                             train_cfg.batch_size, train_cfg.seed, part=dist.rank, parts=dist.world, padded=padded)
    return SplitBatches(data.train, data.corpus.train.labels, train_cfg.batch_size, part=dist.rank,
                        parts=dist.world, padded=padded)


@dataclass
class Pass:
    """One epoch's pass over the training batches, summed over processes."""
    loss_sum: float = 0.0
    texts: int = 0
    tokens: int = 0
    seconds: float = 0.0
    exploded: float | None = None  # the loss that stopped it, if it diverged


class Fit:
    """The epochs of a run: each a pass over the batches, then validation, the best model kept and
    the folder saved; `finish` leaves the best weights in the model and scores the test split."""

    def __init__(self, config: Config, learner: Learner, data: Data, folder: checkpoint.RunFolder,
                 setup: Setup, progress: Progress):
        self.config, self.learner, self.data, self.folder = config, learner, data, folder
        self.setup, self.progress = setup, progress
        self.batches = batch_source(config, data, setup.dist)
        # processes that stream different amounts of data take different numbers of steps; DDP's Join
        # lets those that finish first answer the others' gradient exchanges until all are done
        self.uneven = setup.dist.active and config.data.streaming
        # a batch loss this far above chance (ln classes) means exploded logits, not slow learning
        self.diverged_loss = 50 * math.log(len(data.corpus.labels))
        self.run = Run(out=folder.path, config=config, report=data.report)
        self.best_state: dict | None = None  # the best epoch's weights
        self.stale = 0  # epochs since the best one
        self.first_epoch = 1
        self.restarts = Restarts(learner.model, learner.optimizer, config.train.restarts)

    def restore(self, resumed: checkpoint.Resumed) -> None:
        """Continue after the interrupted run's last finished epoch, as if it had never stopped."""
        model, run = self.learner.model, self.run
        model.load_state_dict(resumed.model)
        self.learner.optimizer.load_state_dict(resumed.optimizer)
        self.folder.meta = resumed.meta
        self.first_epoch, self.stale = resumed.epoch + 1, resumed.stale
        run.best_epoch, run.best_accuracy = resumed.best_epoch, resumed.best_accuracy
        self.best_state = self.folder.best_weights()
        records = self.folder.records_upto(resumed.epoch)
        run.history = [Epoch(**r, improved=r["epoch"] == run.best_epoch) for r in records]
        self.restarts.restore(resumed.state, resumed.path / checkpoint.RESUME)
        torch.set_rng_state(resumed.rng)  # last: building the best model above draws random numbers

    def epochs(self) -> None:
        """Train until the last epoch, early stopping, divergence or an interrupt."""
        run, train_cfg = self.run, self.config.train
        epoch = self.first_epoch
        try:
            for epoch in range(self.first_epoch, train_cfg.epochs + 1):
                done = self.restarted_pass(epoch)
                if done.exploded is not None:
                    run.stopped = "diverged"
                    run.message = (f"the loss exploded to {done.exploded:.4g} in epoch {epoch}"
                                   f"{self.restarts.note()}; training stopped (try a lower --lr than "
                                   f"{train_cfg.lr:g} or a smaller --clip)")
                    break
                if self.end_of_epoch(epoch, done):
                    run.stopped = "early stop"
                    run.message = f"no better validation accuracy for {train_cfg.patience} epochs"
                    break
        except KeyboardInterrupt:
            run.stopped = "interrupted"
            run.message = f"interrupted in epoch {epoch}"
        finally:
            self.learner.gradients.close()

    def restarted_pass(self, epoch: int) -> Pass:
        """The epoch's pass; started again while its loss explodes and `Restarts` has a restart left."""
        self.restarts.mark()
        done = self.one_pass(epoch)
        while done.exploded is not None and self.restarts.rewind():
            restart = Restart(epoch, done.exploded, epoch_lr(self.config, epoch, self.restarts.scale))
            self.run.restarts.append(restart)
            self.progress.restarted(restart)
            done = self.one_pass(epoch)
        return done

    def one_pass(self, epoch: int) -> Pass:
        """One epoch of optimisation steps over the batch source."""
        learner, dist, device = self.learner, self.setup.dist, self.setup.device
        learner.set_epoch(epoch, self.restarts.scale)
        rng = np.random.default_rng([self.config.train.seed, epoch])
        self.progress.epoch_start(epoch, self.batches.num_batches)
        start, done = time.perf_counter(), Pass()
        with Join([learner.step_model]) if self.uneven else contextlib.nullcontext():
            for ids, lengths, y in self.batches.epoch(epoch, rng):
                ids = ids.to(device, non_blocking=True)  # (seq, batch)
                y = y.to(device, non_blocking=True)  # (batch,)
                value = local = learner.step(ids, lengths, y)
                if dist.active and not self.uneven:  # every process must take the same decision below
                    value = float(ddp.all_sum([value], dist, device)[0]) / dist.world
                if not math.isfinite(value) or value > self.diverged_loss:
                    done.exploded = value
                    break
                done.loss_sum += local * len(y)
                tokens = ids.numel() if lengths is None else int(lengths.sum())  # padding is not counted
                done.tokens += tokens
                done.texts += len(y)
                self.progress.batch(value, tokens * dist.world)
        if self.uneven:  # a process that stopped early tells the others now
            count, total = ddp.all_sum([done.exploded is not None, done.exploded or 0.0], dist, device)
            done.exploded = total / count if count else None
        if done.exploded is None:
            learner.gradients.catch_up()
            done.loss_sum, done.texts, done.tokens = ddp.all_sum([done.loss_sum, done.texts, done.tokens],
                                                                 dist, device)
        done.seconds = time.perf_counter() - start
        return done

    def end_of_epoch(self, epoch: int, done: Pass) -> bool:
        """Validate, keep the best model, save the folder and the resume state; True to stop early."""
        run, model, corpus = self.run, self.learner.model, self.data.corpus
        m = evaluate(model, self.data.splits["validation"], corpus.splits["validation"].labels, corpus.labels,
                     device=self.setup.device, dist=self.setup.dist)
        improved = self.best_state is None or m.accuracy > run.best_accuracy
        result = Epoch(epoch=epoch, split="validation", train_loss=done.loss_sum / max(done.texts, 1),
                       loss=m.loss, accuracy=m.accuracy, macro_f1=m.macro_f1, seconds=done.seconds,
                       tokens_per_second=done.tokens / max(done.seconds, 1e-9), improved=improved,
                       lr=self.learner.lr)
        run.history.append(result)
        if improved:
            run.best_epoch, run.best_accuracy, self.stale = epoch, m.accuracy, 0
            self.best_state = copy.deepcopy(model.state_dict())
            self.folder.save_best(model, self.data.tokenizer, result.record(),
                                  {"epoch": epoch, "accuracy": m.accuracy, "macro_f1": m.macro_f1})
        else:
            self.stale += 1
            self.folder.add_record(result.record())
        self.folder.save_resume(model, self.learner.optimizer, epoch, self.stale, run.best_epoch,
                                best_accuracy=run.best_accuracy, **self.restarts.state())
        self.progress.epoch_end(result)
        return self.stale >= self.config.train.patience

    def finish(self) -> Run:
        """The best weights back in the model, the resume state gone, the test split scored."""
        run, model = self.run, self.learner.model
        if self.best_state is None:
            if run.stopped == "interrupted":
                raise Interrupted(Interrupted.BEFORE_FIRST_EPOCH)
            why = run.message or "training stopped before the first epoch ended"
            raise RnncliError(f"no model was saved: {why}")
        if run.stopped != "interrupted":
            self.folder.finish()
        model.load_state_dict(self.best_state)
        run.model = model
        if "test" in self.data.splits and len(self.data.splits["test"]) and run.stopped != "interrupted":
            self.score_test()
        return run

    def score_test(self) -> None:
        run, corpus = self.run, self.data.corpus
        try:
            run.test = evaluate(run.model, self.data.splits["test"], corpus.splits["test"].labels, corpus.labels,
                                device=self.setup.device, dist=self.setup.dist)
        except KeyboardInterrupt:
            run.stopped, run.message = "interrupted", "interrupted while scoring the test split, after training"
            return
        self.folder.add_record({"epoch": run.best_epoch, "split": "test", "loss": run.test.loss,
                                "accuracy": run.test.accuracy, "macro_f1": run.test.macro_f1})
