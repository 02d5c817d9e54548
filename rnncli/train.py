"""Train a classifier from a resolved config and write its model folder.

`train(config) -> Run` prints nothing: it reports through a `Progress` object, which the CLI draws
with rich and tests leave silent. Batches hold texts of one exact length (see batching.py); AdamW,
gradient clipping, validation after every epoch, the best model kept, early stopping.
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from rnncli import checkpoint
from rnncli.batching import LengthBuckets
from rnncli.config import Config, from_dict
from rnncli.data import Corpus, load_corpus
from rnncli.device import resolve_device
from rnncli.errors import RnncliError
from rnncli.evaluate import Metrics, evaluate
from rnncli.model import RNNClassifier
from rnncli.tokenizer import UNK_ID, Encoded, encode, load_tokenizer, train_tokenizer
from rnncli.vectors import Vectors, read_vectors


@dataclass
class DataReport:
    labels: list[str]
    rows: dict[str, int]
    class_counts: dict[str, list[int]]
    length_percentiles: dict[str, int]  # tokens per training text before truncation: p50, p90, p99, max
    truncated_share: float  # training texts longer than max_length
    max_length: int
    vocab_size: int
    val_oov_rate: float  # validation tokens the vocabulary does not know
    notes: list[str]


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
    test: Metrics | None = None


class Progress:
    """Hooks the CLI fills in to draw progress; the defaults do nothing."""

    def report(self, report: DataReport) -> None: ...
    def epoch_start(self, epoch: int, batches: int) -> None: ...
    def batch(self, loss: float, tokens: int) -> None: ...
    def epoch_end(self, result: Epoch) -> None: ...


def data_report(corpus: Corpus, encoded: dict[str, Encoded], vocab_size: int, max_length: int) -> DataReport:
    full = encoded["train"].full_lengths
    val = encoded["validation"]
    pct = {f"p{q}": int(np.percentile(full, q)) for q in (50, 90, 99)} | {"max": int(full.max())}
    return DataReport(
        labels=corpus.labels,
        rows={name: len(split) for name, split in corpus.splits.items()},
        class_counts={name: split.class_counts(len(corpus.labels)) for name, split in corpus.splits.items()},
        length_percentiles=pct,
        truncated_share=float((full > max_length).mean()),
        max_length=max_length,
        vocab_size=vocab_size,
        val_oov_rate=float((val.ids == UNK_ID).mean()) if len(val.ids) else 0.0,
        notes=list(corpus.notes),
    )


def default_out(dataset: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset.rstrip("/")).name or dataset).strip("-.") or "data"
    base = Path("runs") / f"{slug}-{datetime.now():%Y%m%d-%H%M%S}"
    out, n = base, 2
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out


def check_out(out: Path) -> None:
    """Refuse to overwrite anything, and find an unwritable place before training, not after."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RnncliError(f"{out}: already exists; choose another --out or remove it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".rnncli-write-test-{id(out)}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise RnncliError(f"{out.parent}: cannot write the model folder here ({e.strerror})") from None
    if out.exists():
        out.rmdir()  # an empty folder is replaced by the renamed, complete one


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model, config: Config):
    params = [p for p in model.parameters() if p.requires_grad]  # a frozen embedding is left out
    kw = {"lr": config.train.lr, "weight_decay": config.train.weight_decay}
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch or an unsupported device
        return torch.optim.AdamW(params, foreach=True, **kw)


def init_embedding(embedding: torch.nn.Embedding, vectors: Vectors) -> None:
    """Covered rows take the vectors; the others keep their random init, scaled to the vectors'
    standard deviation (as Kim 2014 does for unknown words), so no row dwarfs the pretrained ones.
    The padding row (id 0) stays zero."""
    weight = embedding.weight
    covered = torch.from_numpy(vectors.covered).to(weight.device)
    known = torch.from_numpy(vectors.values[vectors.covered]).to(weight)
    rest = ~covered
    rest[0] = False
    with torch.no_grad():
        std = float(known.std()) if known.numel() > 1 else 0.0
        if std > 0:
            weight[rest] *= std
        weight[covered] = known
        weight[0] = 0.0


def vectors_note(path: str, vectors: Vectors, frozen: bool) -> str:
    return (f"vectors {path}: {int(vectors.covered.sum()):,} of {vectors.words:,} vocabulary words covered "
            f"({vectors.coverage:.1%}), {'frozen' if frozen else 'fine-tuned'}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rnncli", "torch", "datasets", "tokenizers", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            out[pkg] = "unknown"
    return out


def train(config: Config | None = None, progress: Progress | None = None, resume: str | Path | None = None) -> Run:
    """Train from `config`, or continue the interrupted run in folder `resume` with its own config."""
    progress = progress or Progress()
    saved = None
    if resume is not None:
        out = Path(resume)
        saved_meta = checkpoint.read_meta(out)
        config = from_dict(saved_meta["config"], where=str(out / checkpoint.CONFIG))
        saved = checkpoint.load_resume(out)
    tc = config.train
    if config.model.freeze_vectors and not config.model.vectors:
        raise RnncliError("--freeze-vectors needs --vectors FILE: a frozen random embedding would never learn")
    device = resolve_device(tc.device)
    if saved is None:
        out = Path(tc.out) if tc.out else default_out(config.data.dataset)
        check_out(out)
    seed_everything(tc.seed)

    corpus = load_corpus(config.data, seed=tc.seed)
    train_split = corpus.splits["train"]
    present = np.unique(train_split.labels)
    if len(present) < 2:
        only = corpus.labels[int(present[0])]
        raise RnncliError(f"{config.data.dataset}: the train split holds a single class ({only!r}); "
                          "a classifier needs at least two")
    if len(corpus.splits["validation"]) == 0:
        raise RnncliError(f"{config.data.dataset}: the validation split is empty")
    if saved is None:
        tokenizer = train_tokenizer(train_split.texts, config.data.min_freq, config.data.max_vocab)
    else:
        tokenizer = load_tokenizer(out / checkpoint.TOKENIZER)
    encoded = {name: encode(tokenizer, split.texts, config.data.max_length)
               for name, split in corpus.splits.items()}
    vocab_size = tokenizer.get_vocab_size()
    run = Run(out=out, config=config, report=data_report(corpus, encoded, vocab_size, config.data.max_length))
    vectors = None
    if saved is None and config.model.vectors:  # on --resume the weights come from the checkpoint
        vectors = read_vectors(config.model.vectors, tokenizer.get_vocab(), config.model.embed)
        run.report.notes.append(vectors_note(config.model.vectors, vectors, config.model.freeze_vectors))
    progress.report(run.report)

    model = RNNClassifier(config.model, vocab_size=vocab_size, num_classes=len(corpus.labels)).to(device)
    if vectors is not None:
        init_embedding(model.embedding, vectors)
    optimizer = make_optimizer(model, config)
    weight = None
    if tc.class_weights == "auto":
        counts = np.bincount(train_split.labels, minlength=len(corpus.labels)).astype(float)
        weight = torch.tensor(len(train_split) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32,
                              device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    buckets = LengthBuckets(encoded["train"])
    train_labels = torch.from_numpy(train_split.labels)
    val_labels = corpus.splits["validation"].labels
    meta = {
        "format_version": checkpoint.FORMAT_VERSION,
        "config": config.to_dict(),
        "labels": corpus.labels,
        "vocab_size": vocab_size,
        "dataset": {"name": corpus.name, "source": corpus.source, "fingerprint": corpus.fingerprint},
        "versions": versions(),
        "determinism": {"device": str(device), "torch_threads": torch.get_num_threads(),
                        "deterministic": device.type == "cpu",
                        "note": "CPU runs with the same seed and threads repeat bit for bit; "
                                "CUDA kernels (cuDNN RNNs) may differ in the last bits."},
        "best": {},
    }
    best_state = None
    stale = 0
    first_epoch = 1
    if saved is not None:
        model_state, optimizer_state, rng_state, counters = saved
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        meta = saved_meta
        first_epoch, stale = counters["epoch"] + 1, counters["stale"]
        run.best_epoch, run.best_accuracy = counters["best_epoch"], counters["best_accuracy"]
        best_state = checkpoint.load(out).model.state_dict()
        # records past the saved epoch belong to the epoch being redone
        records = [r for r in checkpoint.read_metrics(out)
                   if r["split"] == "validation" and r["epoch"] <= counters["epoch"]]
        checkpoint.rewrite_metrics(out, records)
        run.history = [Epoch(**r, improved=r["epoch"] == run.best_epoch) for r in records]
        torch.set_rng_state(rng_state)  # last: building the best model above draws random numbers
    # a batch loss this far above chance (ln classes) means exploded logits, not slow learning
    diverged_loss = 50 * math.log(len(corpus.labels))
    try:
        for epoch in range(first_epoch, tc.epochs + 1):
            model.train()
            rng = np.random.default_rng([tc.seed, epoch])
            progress.epoch_start(epoch, buckets.num_batches(tc.batch_size))
            start, tokens, loss_sum = time.perf_counter(), 0, 0.0
            for idx, ids in buckets.batches(tc.batch_size, rng):
                ids = ids.to(device, non_blocking=True)  # (seq, batch)
                y = train_labels[idx].to(device, non_blocking=True)  # (batch,)
                loss = loss_fn(model(ids), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if tc.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip, foreach=True)
                optimizer.step()
                value = loss.item()
                if not math.isfinite(value) or value > diverged_loss:
                    run.stopped = "diverged"
                    run.message = (f"the loss exploded to {value:.4g} in epoch {epoch}; training stopped "
                                   f"(try a lower --lr than {tc.lr:g} or a smaller --clip)")
                    break
                loss_sum += value * len(idx)
                tokens += ids.numel()
                progress.batch(value, ids.numel())
            if run.stopped == "diverged":
                break
            seconds = time.perf_counter() - start
            m = evaluate(model, encoded["validation"], val_labels, corpus.labels, device=device)
            improved = best_state is None or m.accuracy > run.best_accuracy
            result = Epoch(epoch=epoch, split="validation", train_loss=loss_sum / len(train_split),
                           loss=m.loss, accuracy=m.accuracy, macro_f1=m.macro_f1, seconds=seconds,
                           tokens_per_second=tokens / max(seconds, 1e-9), improved=improved)
            run.history.append(result)
            record = {k: v for k, v in asdict(result).items() if k != "improved"}
            if improved:
                run.best_epoch, run.best_accuracy, stale = epoch, m.accuracy, 0
                best_state = copy.deepcopy(model.state_dict())
                meta["best"] = {"epoch": epoch, "accuracy": m.accuracy, "macro_f1": m.macro_f1}
                if out.exists():
                    checkpoint.save_weights(out, model)
                    checkpoint.write_json(out / checkpoint.CONFIG, meta)
                    checkpoint.append_metrics(out, record)
                else:
                    checkpoint.create_folder(out, model, tokenizer, meta, [record])
                    checkpoint.point_latest(out)
            else:
                stale += 1
                checkpoint.append_metrics(out, record)
            checkpoint.save_resume(out, model, optimizer, {
                "epoch": epoch, "stale": stale, "best_epoch": run.best_epoch, "best_accuracy": run.best_accuracy})
            progress.epoch_end(result)
            if stale >= tc.patience:
                run.stopped = "early stop"
                run.message = f"no better validation accuracy for {tc.patience} epochs"
                break
    except KeyboardInterrupt:
        run.stopped = "interrupted"
        run.message = "interrupted"
    if best_state is None:
        raise RnncliError(f"no model was saved: {run.message or 'training stopped before the first epoch ended'}")
    if run.stopped != "interrupted":
        (out / checkpoint.RESUME).unlink(missing_ok=True)  # nothing left to resume
    model.load_state_dict(best_state)
    if "test" in encoded and len(encoded["test"]) and run.stopped != "interrupted":
        run.test = evaluate(model, encoded["test"], corpus.splits["test"].labels, corpus.labels, device=device)
        checkpoint.append_metrics(out, {"epoch": run.best_epoch, "split": "test", "loss": run.test.loss,
                                        "accuracy": run.test.accuracy, "macro_f1": run.test.macro_f1})
    return run
