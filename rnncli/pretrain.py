"""Pretrain a classifier's embedding and recurrent layers as a language model on unlabeled text.

`pretrain(config) -> LMRun` reads the texts of a data source's train split (or a .txt file, one
text per line), learns the vocabulary, and trains `lm.LanguageModel` to predict each next word
(and, when bidirectional, each word before), with the perplexity of a held-out share of those
texts after every epoch. The folder it writes holds the tokenizer, the weights and config.json
with `"kind": "language-model"`; `rnncli train --init-from FOLDER` starts a classifier from it.
Like `train`, it keeps the best epoch, stops early, and can be interrupted and resumed.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rnncli import checkpoint
from rnncli.batching import LengthBuckets
from rnncli.config import Config, DataConfig
from rnncli.data import (
    TEXT_COLUMNS,
    as_texts,
    find_column,
    has_labels,
    length_percentiles,
    load_corpus,
    open_dataset,
    require_train,
)
from rnncli.device import resolve_device
from rnncli.errors import Interrupted, RnncliError
from rnncli.lm import MIN_HIDDEN, LanguageModel
from rnncli.lmstream import TextStream, open_text_stream, source_specs, text_file
from rnncli.optimizer import Gradients, make_optimizer
from rnncli.restarts import Restarts
from rnncli.skipgram import learn_vectors
from rnncli.texts import read_file
from rnncli.tokenizer import UNK_ID, Encoded, add_words, encode, train_tokenizer
from rnncli.train import Progress as TrainProgress
from rnncli.train import Restart, epoch_lr, seed_everything, set_lr
from rnncli.vectors import Vectors, init_embedding, read_vectors, vector_words, vectors_note

EVAL_BATCH = 256  # held-out texts per batch when the perplexity is measured


class Progress(TrainProgress):
    """Training's hooks, and those of the skip-gram stage before the first epoch."""

    def vectors_start(self, epochs: int) -> None: ...
    def vectors_epoch(self, done: int) -> None: ...
    def vectors_end(self, note: str) -> None: ...


@dataclass
class LMTexts:
    """The texts a language model learns from and the held-out ones it is measured on."""
    name: str  # as the user gave it
    source: str  # what was read: a resolved path, a hub id or "builtin"
    fingerprint: str
    train: list[str]
    validation: list[str]
    notes: list[str] = field(default_factory=list)


def lm_texts(config: DataConfig, seed: int) -> LMTexts:
    """The texts of one or more sources (`a,b`: each one's train split, never a validation or test
    split, or a .txt file's lines), in that order; a seeded `val_fraction` of them is held out
    for the perplexity."""
    specs = source_specs(config.dataset)
    sources, prints, texts, notes = [], [], [], []
    for spec in specs:
        source, fingerprint, more, said = _source_texts(dataclasses.replace(config, dataset=spec), seed)
        sources.append(source)
        prints.append(fingerprint)
        texts += more
        notes += [f"{spec}: {note}" for note in said] if len(specs) > 1 else said
    if len(texts) < 2:
        raise RnncliError(f"{config.dataset}: {len(texts)} non-empty text(s); pretraining needs at least 2")
    held = np.random.default_rng(seed).permutation(len(texts))[: max(1, round(len(texts) * config.val_fraction))]
    mask = np.zeros(len(texts), dtype=bool)
    mask[held] = True
    notes.append(f"held out {mask.sum():,} of {len(texts):,} texts ({config.val_fraction:.0%}, seed {seed}) "
                 "for the perplexity")
    return LMTexts(config.dataset, ",".join(sources), prints[0] if len(prints) == 1 else _digest(prints),
                   [t for t, m in zip(texts, mask) if not m], [t for t, m in zip(texts, mask) if m], notes)


def _source_texts(config: DataConfig, seed: int) -> tuple[str, str, list[str], list[str]]:
    """(source, fingerprint, texts, notes) of one source: a .txt file or a data set's train split."""
    path = text_file(config.dataset)
    if path is None:
        return _split_texts(config, seed)
    texts = [t for t in read_file(path) if t.strip()]
    return str(path.resolve()), _digest(texts), texts, [f"{len(texts):,} texts"]


def _digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()[:16]


def _split_texts(config: DataConfig, seed: int) -> tuple[str, str, list[str], list[str]]:
    """(source, fingerprint, texts, notes) of a data source's train split. A labeled one is read as
    `rnncli train` reads it, so the rows it would carve out for validation (same --seed and
    --val-fraction) are left out here too."""
    dsd, source = open_dataset(config.dataset)
    where = config.dataset
    train = require_train(dsd, where)
    columns = list(train.column_names)
    text_col = find_column(columns, config.text_column, TEXT_COLUMNS, "text", where)
    if has_labels(columns, config):
        corpus = load_corpus(config, seed)
        carved = [n.removeprefix("no validation split: ") for n in corpus.notes if n.startswith("no validation split")]
        texts = [t for t in corpus.train.texts if t.strip()]
        note = f"{len(texts):,} texts of the train split only"
        if carved:
            note += f"; {carved[0]}, left out as rnncli train with the same seed validates on them"
        return corpus.source, corpus.fingerprint, texts, [note]
    texts = [t for t in as_texts(train.select_columns([text_col])[:][text_col]) if t.strip()]
    return source, _digest(texts), texts, [f"{len(texts):,} texts of the train split only (no labels there)"]


@dataclass
class LMReport:
    """What pretraining reads: texts and tokens per part, text lengths, vocabulary coverage."""
    texts: dict[str, int]
    tokens: dict[str, int]
    length_percentiles: dict[str, int]
    truncated_share: float
    max_length: int
    vocab_size: int
    val_oov_rate: float
    notes: list[str]


def lm_report(texts: LMTexts, train: Encoded, validation: Encoded, vocab_size: int, max_length: int,
              dropped: int) -> LMReport:
    full = train.full_lengths
    notes = list(texts.notes)
    if dropped:
        notes.append(f"left out {dropped:,} texts of one token: no next word to predict")
    return LMReport(texts={"train": len(train), "validation": len(validation)},
                    tokens={"train": int(train.lengths.sum()), "validation": int(validation.lengths.sum())},
                    length_percentiles=length_percentiles(full), truncated_share=float((full > max_length).mean()),
                    max_length=max_length, vocab_size=vocab_size,
                    val_oov_rate=float((validation.ids[_token_mask(validation)] == UNK_ID).mean()), notes=notes)


def _token_mask(enc: Encoded) -> np.ndarray:
    """Which entries of the shared flat id array belong to `enc`'s texts."""
    mask = np.zeros(len(enc.ids), dtype=bool)
    for start, length in zip(enc.starts, enc.lengths):
        mask[start: start + length] = True
    return mask


@dataclass
class LMEpoch:
    epoch: int
    split: str
    train_loss: float  # mean negative log-likelihood per predicted word
    loss: float
    perplexity: float  # exp(loss) on the held-out texts
    seconds: float
    tokens_per_second: float
    improved: bool
    lr: float

    def record(self) -> dict:
        """Its line in metrics.jsonl."""
        return {k: v for k, v in asdict(self).items() if k != "improved"}


@dataclass
class LMRun:
    out: Path
    config: Config
    report: LMReport
    history: list[LMEpoch] = field(default_factory=list)
    best_epoch: int = 0
    best_perplexity: float = float("inf")
    stopped: str = "finished"  # finished | early stop | interrupted | diverged
    message: str = ""
    restarts: list[Restart] = field(default_factory=list)  # epochs started again after a loss explosion
    model: LanguageModel | None = field(default=None, repr=False)


def pretrain(config: Config | None = None, progress: Progress | None = None, resume: str | Path | None = None
             ) -> LMRun:
    """Pretrain from `config`, or continue the interrupted run in folder `resume` with its own config."""
    progress = progress or Progress()
    config, resumed = resolve_lm_run(config, resume)
    device = resolve_device(config.train.device)
    if resumed is None:
        path = checkpoint.new_folder_path(config.train.out, config.data.dataset.rstrip("/") + "-lm")
        folder = checkpoint.RunFolder(path, latest=False)
    else:
        folder = checkpoint.RunFolder(resumed.path, meta=resumed.meta, latest=False)
    seed_everything(config.train.seed)
    texts = (open_text_stream if config.data.streaming else lm_texts)(config.data, config.train.seed)
    tokenizer, added = (folder.tokenizer(), 0) if resumed else vocabulary(config, texts.train)
    train_ids, val_ids, report = encode_texts(config, texts, tokenizer)
    model = LanguageModel(config.model, tokenizer.get_vocab_size()).to(device)
    fresh = resumed is None  # on --resume the weights come from the checkpoint
    vectors = file_vectors(config, tokenizer, added, report) if fresh else None
    progress.report(report)
    if fresh and vectors is None and config.pretrain.vector_epochs:
        vectors = skipgram_vectors(config, texts.train, tokenizer, progress, report)
    if vectors is not None:
        init_embedding(model.embedding, vectors)
    stream = texts if isinstance(texts, TextStream) else None
    fit = LMFit(config, model, tokenizer, train_ids, val_ids, folder, device, progress, report, stream)
    if resumed is None:
        folder.meta = lm_meta(config, texts, tokenizer.get_vocab_size(), device)
    else:
        fit.restore(resumed)
    fit.epochs()
    return fit.finish()


def file_vectors(config: Config, tokenizer, added: int, report: LMReport) -> Vectors | None:
    """The --vectors file's rows for the vocabulary, if one was given."""
    if not config.model.vectors:
        return None
    vectors = read_vectors(config.model.vectors, tokenizer.get_vocab(), config.model.embed, added=added)
    report.notes.append(vectors_note(config.model.vectors, vectors, frozen=False))
    return vectors


def skipgram_vectors(config: Config, texts: list[str], tokenizer, progress: Progress, report: LMReport) -> Vectors:
    """Skip-gram vectors learned from the training texts, `vector_epochs` passes."""
    epochs = config.pretrain.vector_epochs
    progress.vectors_start(epochs)
    learned = learn_vectors(texts, tokenizer.get_vocab(), config.model.embed, epochs, config.train.seed,
                            progress.vectors_epoch)
    report.notes.append(learned.note(epochs))
    progress.vectors_end(report.notes[-1])
    return learned.vectors


def resolve_lm_run(config: Config | None, resume) -> tuple[Config, checkpoint.Resumed | None]:
    """The run's config (see `checkpoint.run_config`), checked for what pretraining needs."""
    config, resumed = checkpoint.run_config(config, resume, language_model=True)
    if config.model.hidden < MIN_HIDDEN:
        raise RnncliError(f"--hidden must be at least {MIN_HIDDEN} for pretrain (the adaptive softmax "
                          f"narrows it by 8), not {config.model.hidden}")
    if config.model.init_from:
        raise RnncliError("pretrain learns its own embedding and layers; --init-from is for rnncli train")
    if config.model.freeze_vectors:
        raise RnncliError("pretrain fine-tunes the embedding it starts from; --freeze-vectors is for rnncli train")
    return config, resumed


def vocabulary(config: Config, texts: list[str]):
    """The words of `texts` and, with --vectors, those of the vectors file after them (as `rnncli
    train` grows its vocabulary); returns (tokenizer, words the file added)."""
    tokenizer = train_tokenizer(texts, config.data.min_freq, config.data.max_vocab)
    if config.model.vectors and config.model.vectors_vocab:
        return add_words(tokenizer, vector_words(config.model.vectors), config.data.max_vocab)
    return tokenizer, 0


def encode_texts(config: Config, texts: LMTexts, tokenizer) -> tuple[Encoded, Encoded, LMReport]:
    """Both parts as token ids, without the one-token texts, which hold no word to predict."""
    max_length = config.data.max_length
    if max_length < 2:
        raise RnncliError("--max-length must be at least 2 for pretrain: a word and the next one")
    train, validation = (encode(tokenizer, t, max_length) for t in (texts.train, texts.validation))
    dropped = int((train.lengths < 2).sum() + (validation.lengths < 2).sum())
    train, validation = (e.subset(np.flatnonzero(e.lengths >= 2)) for e in (train, validation))
    if len(train) == 0 or len(validation) == 0:
        raise RnncliError(f"{config.data.dataset}: too few texts of two or more words to pretrain on "
                          f"({len(train)} to train on, {len(validation)} held out)")
    return train, validation, lm_report(texts, train, validation, tokenizer.get_vocab_size(), max_length, dropped)


def lm_meta(config: Config, texts: LMTexts | TextStream, vocab_size: int, device) -> dict:
    """config.json of a language model's folder (with --streaming, the text counts are the first rows')."""
    return {
        "format_version": checkpoint.FORMAT_VERSION,
        "kind": checkpoint.LANGUAGE_MODEL,
        "config": config.to_dict(),
        "vocab_size": vocab_size,
        "dataset": {"name": texts.name, "source": texts.source, "fingerprint": texts.fingerprint,
                    "train_texts": len(texts.train), "held_out_texts": len(texts.validation),
                    "streaming": isinstance(texts, TextStream)},
        "versions": checkpoint.versions(),
        "device": str(device),
        "best": {},
    }


class LMFit:
    """The epochs of a pretraining run: each a pass over the texts, then the held-out perplexity,
    the best weights kept and the folder saved."""

    def __init__(self, config: Config, model: LanguageModel, tokenizer, train: Encoded, validation: Encoded,
                 folder: checkpoint.RunFolder, device, progress: Progress, report: LMReport,
                 stream: TextStream | None = None):
        self.config, self.model, self.tokenizer, self.folder = config, model, tokenizer, folder
        self.device, self.progress, self.stream = device, progress, stream
        self.held_out = LengthBuckets(validation)
        self.buckets = None if stream else LengthBuckets(train)  # streamed: each buffer is grouped as it comes
        rows = True  # the embedding's gradient and AdamW step cover only the rows a batch uses
        self.optimizer = make_optimizer(model, config, rows=rows)
        self.gradients = Gradients(model, rows=rows, optimizer=self.optimizer)
        self.run = LMRun(out=folder.path, config=config, report=report)
        self.best_state: dict | None = None
        self.stale, self.first_epoch = 0, 1
        self.restarts = Restarts(model, self.optimizer, config.train.restarts)

    def restore(self, resumed: checkpoint.Resumed) -> None:
        """Continue after the interrupted run's last finished epoch."""
        run = self.run
        self.model.load_state_dict(resumed.model)
        self.optimizer.load_state_dict(resumed.optimizer)
        self.first_epoch, self.stale = resumed.epoch + 1, resumed.stale
        run.best_epoch, run.best_perplexity = resumed.best_epoch, resumed.state["best_perplexity"]
        self.best_state = self.folder.best_weights()
        run.history = [LMEpoch(**r, improved=r["epoch"] == run.best_epoch)
                       for r in self.folder.records_upto(resumed.epoch)]
        self.restarts.restore(resumed.state, resumed.path / checkpoint.RESUME)
        torch.set_rng_state(resumed.rng)

    def epochs(self) -> None:
        """Train until the last epoch, early stopping, divergence or an interrupt."""
        run, train_cfg = self.run, self.config.train
        epoch = self.first_epoch
        try:
            for epoch in range(self.first_epoch, train_cfg.epochs + 1):
                loss, tokens, seconds = self.restarted_pass(epoch)
                if not math.isfinite(loss):
                    run.stopped = "diverged"
                    run.message = (f"the loss became {loss} in epoch {epoch}{self.restarts.note()}; pretraining stopped (try a "
                                   f"lower --lr than {train_cfg.lr:g} or a smaller --clip)")
                    break
                if self.end_of_epoch(epoch, loss, tokens, seconds):
                    run.stopped = "early stop"
                    run.message = f"no better held-out perplexity for {train_cfg.patience} epochs"
                    break
        except KeyboardInterrupt:
            run.stopped, run.message = "interrupted", f"interrupted in epoch {epoch}"
        finally:
            self.gradients.close()

    def restarted_pass(self, epoch: int) -> tuple[float, int, float]:
        """The epoch's pass; started again while its loss is not finite and `Restarts` has a restart left."""
        self.restarts.mark()
        loss, tokens, seconds = self.one_pass(epoch)
        while not math.isfinite(loss) and self.restarts.rewind():
            restart = Restart(epoch, loss, epoch_lr(self.config, epoch, self.restarts.scale))
            self.run.restarts.append(restart)
            self.progress.restarted(restart)
            loss, tokens, seconds = self.one_pass(epoch)
        return loss, tokens, seconds

    def one_pass(self, epoch: int) -> tuple[float, int, float]:
        """One epoch of steps: (mean loss per predicted word, tokens read, seconds)."""
        model, train_cfg = self.model, self.config.train
        model.train()
        set_lr(self.optimizer, self.config, epoch, self.restarts.scale)
        rng = np.random.default_rng([train_cfg.seed, epoch])
        buckets = self.buckets
        self.progress.epoch_start(epoch, buckets.num_batches(train_cfg.batch_size) if buckets else None)
        start, loss_sum, words, tokens = time.perf_counter(), 0.0, 0, 0
        batches = buckets.batches(train_cfg.batch_size, rng) if buckets else self.streamed_batches(epoch, rng)
        for _, ids, _ in batches:
            ids = ids.to(self.device, non_blocking=True)  # (seq, batch)
            loss, count = self.step(ids)
            if not math.isfinite(loss):
                return loss, tokens, time.perf_counter() - start
            loss_sum, words, tokens = loss_sum + loss * count, words + count, tokens + ids.numel()
            self.progress.batch(loss, ids.numel())
        self.gradients.catch_up()
        return loss_sum / max(words, 1), tokens, time.perf_counter() - start

    def streamed_batches(self, epoch: int, rng: np.random.Generator):
        """With --streaming: each buffer of texts encoded, grouped by length and shuffled."""
        data_cfg = self.config.data
        for texts in self.stream.chunks(data_cfg.stream_buffer, epoch):
            enc = encode(self.tokenizer, texts, data_cfg.max_length)
            enc = enc.subset(np.flatnonzero(enc.lengths >= 2))  # a one-word text has no next word
            if len(enc):
                yield from LengthBuckets(enc).batches(self.config.train.batch_size, rng)

    def step(self, ids: torch.Tensor) -> tuple[float, int]:
        """One optimisation step on ids (seq, batch): (its mean loss per word, words predicted)."""
        total, count = self.model(ids)
        loss = total / count
        self.gradients.zero(ids)
        loss.backward()
        if self.config.train.clip > 0:
            self.gradients.clip(self.config.train.clip)
        self.optimizer.step()
        self.gradients.zero_rows()
        return loss.item(), count

    @torch.inference_mode()
    def held_out_loss(self) -> float:
        """Mean negative log-likelihood per predicted word of the held-out texts."""
        self.model.eval()
        total, words = 0.0, 0
        for _, ids, _ in self.held_out.batches(EVAL_BATCH):
            loss, count = self.model(ids.to(self.device))
            total, words = total + float(loss), words + count
        return total / words

    def end_of_epoch(self, epoch: int, train_loss: float, tokens: int, seconds: float) -> bool:
        """Measure, keep the best model, save the folder and the resume state; True to stop early."""
        run = self.run
        loss = self.held_out_loss()
        perplexity = math.exp(min(loss, 700.0))
        improved = self.best_state is None or perplexity < run.best_perplexity
        result = LMEpoch(epoch=epoch, split="validation", train_loss=train_loss, loss=loss, perplexity=perplexity,
                         seconds=seconds, tokens_per_second=tokens / max(seconds, 1e-9), improved=improved,
                         lr=self.optimizer.param_groups[0]["lr"])
        run.history.append(result)
        if improved:
            run.best_epoch, run.best_perplexity, self.stale = epoch, perplexity, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.folder.save_best(self.model, self.tokenizer, result.record(),
                                  {"epoch": epoch, "perplexity": perplexity, "loss": loss})
        else:
            self.stale += 1
            self.folder.add_record(result.record())
        self.folder.save_resume(self.model, self.optimizer, epoch, self.stale, run.best_epoch,
                                best_perplexity=run.best_perplexity, **self.restarts.state())
        self.progress.epoch_end(result)
        return self.stale >= self.config.train.patience

    def finish(self) -> LMRun:
        """The best weights back in the model; the resume state gone unless interrupted."""
        run = self.run
        if self.best_state is None:
            if run.stopped == "interrupted":
                raise Interrupted(Interrupted.BEFORE_FIRST_EPOCH)
            raise RnncliError(f"no model was saved: {run.message or 'pretraining stopped before the first epoch ended'}")
        if run.stopped != "interrupted":
            self.folder.finish()
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        run.model = self.model
        return run
