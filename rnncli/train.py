"""Train a classifier from a resolved config and write its model folder.

`train(config) -> Run` prints nothing: it reports through a `Progress` object, which the CLI draws
with rich and tests leave silent. Batches hold texts of one exact length (see batching.py); AdamW
that updates only the embedding rows a batch uses (see optimizer.py), gradient clipping,
validation after every epoch, the best model kept, early stopping.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch.distributed.algorithms.join import Join

from rnncli import checkpoint
from rnncli import distributed as ddp
from rnncli.batching import LengthBuckets
from rnncli.config import Config, from_dict
from rnncli.data import Corpus, load_corpus
from rnncli.device import resolve_device
from rnncli.errors import Interrupted, RnncliError
from rnncli.evaluate import Metrics, evaluate
from rnncli.model import RNNClassifier
from rnncli.optimizer import RowAdamW
from rnncli.streaming import open_stream
from rnncli.tokenizer import UNK_ID, Encoded, add_words, encode, load_tokenizer, train_tokenizer
from rnncli.vectors import Vectors, read_vectors, vector_words


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
    lr: float = 0.0  # the epoch's learning rate (records written before it was kept lack it)


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
    model: RNNClassifier | None = field(default=None, repr=False)  # the best weights, on the training device


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
    """Refuse to overwrite anything, and find an unwritable place before training, not after.
    Nothing is created here: the folders appear with the first saved epoch."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RnncliError(f"{out}: already exists; choose another --out or remove it")
    base = out.parent.absolute()
    while not base.exists():  # the nearest folder that exists is where writing starts
        base = base.parent
    if not base.is_dir():
        raise RnncliError(f"{out.parent}: cannot write the model folder here ({base} is a file)")
    problem = checkpoint.write_problem(base)
    if problem:
        raise RnncliError(f"{out.parent}: cannot write the model folder here ({problem})")
    if out.exists():
        out.rmdir()  # an empty folder is replaced by the renamed, complete one


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model, config: Config, rows: bool = False):
    """AdamW; with `rows`, a `RowAdamW` that updates only the embedding rows each batch uses."""
    params = [p for p in model.parameters() if p.requires_grad]  # a frozen embedding is left out
    kw = {"lr": config.train.lr, "weight_decay": config.train.weight_decay}
    if rows and model.embedding.weight.requires_grad:
        kind, kw = RowAdamW, kw | {"embedding": model.embedding.weight}
    else:
        kind = torch.optim.AdamW
    try:
        return kind(params, fused=True, **kw)
    except (RuntimeError, TypeError):  # pragma: no cover - older torch or an unsupported device
        return kind(params, foreach=True, **kw)


class Gradients:
    """Zeroes and clips the gradients around each step, the embedding's by the rows a batch uses.

    A dense embedding gradient is a (vocab, embed) matrix that is zero outside the batch's few
    hundred words, yet zeroing it, taking its norm and scaling it for clipping each touch every
    row, every step: most of a small model's step time. With `rows`, the embedding emits a sparse
    gradient that autograd adds in place into one dense buffer kept across steps; the norm and the
    clipping read only the batch's rows, which are zeroed again after the optimiser step. A plain
    AdamW still sees the full dense gradient, so its updates are the dense path's; a `RowAdamW`
    is told the rows and reads only those. (Not under DDP, which would have to all-reduce a sparse
    gradient.)
    """

    def __init__(self, model: RNNClassifier, rows: bool, optimizer=None):
        self.embedding = model.embedding if rows and model.embedding.weight.requires_grad else None
        self.optimizer = optimizer if isinstance(optimizer, RowAdamW) else None  # told each batch's rows
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.touched = None  # (rows,) the embedding rows the current batch uses
        if self.embedding is not None:
            weight = self.embedding.weight
            self.embedding.sparse = True
            weight.grad = torch.zeros_like(weight)  # (vocab, embed), zero outside `touched`
            self.params = [p for p in self.params if p is not weight]

    def zero(self, ids: torch.Tensor) -> None:
        """Before the backward pass of the batch `ids` (seq, batch)."""
        for p in self.params:
            p.grad = None
        if self.embedding is not None:
            self.touched = torch.unique(ids)
            if self.optimizer is not None:
                self.optimizer.rows = self.touched

    def clip(self, max_norm: float) -> None:
        """Scale all gradients together so that their norm is at most `max_norm` (as `clip_grad_norm_`)."""
        if self.embedding is None:
            torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)
            return
        grads = [p.grad for p in self.params if p.grad is not None]
        rows = self.embedding.weight.grad.index_select(0, self.touched)  # (rows, embed): the only nonzero rows
        total = torch.linalg.vector_norm(torch.stack([*torch._foreach_norm(grads), rows.norm()]))
        scale = max_norm / (float(total) + 1e-6)
        if scale < 1:  # below the limit, scaling by 1 would rewrite every gradient for nothing
            torch._foreach_mul_(grads, scale)
            self.embedding.weight.grad.index_copy_(0, self.touched, rows.mul_(scale))

    def release(self) -> None:
        """After the optimiser step: the buffer is zero again for the next batch."""
        if self.embedding is not None:
            self.embedding.weight.grad.index_fill_(0, self.touched, 0.0)

    def settle(self) -> None:
        """Before the weights are read: a `RowAdamW` brings the rows no recent batch used up to date."""
        if self.optimizer is not None:
            self.optimizer.flush()

    def close(self) -> None:
        """Leave the model as a plain one: no gradients held, a dense embedding gradient next time."""
        self.settle()
        for p in self.params:
            p.grad = None
        if self.embedding is not None:
            self.embedding.sparse = False
            self.embedding.weight.grad = None


def start_from(config: Config) -> checkpoint.Loaded | None:
    """The model folder named by `init_from`, checked against this run's architecture."""
    path = config.model.init_from
    if not path:
        return None
    if config.model.vectors:
        raise RnncliError("--init-from and --vectors both set the embedding: give one of them")
    source = checkpoint.load(path)
    theirs, ours = source.config.model, config.model
    keys = ["cell", "layers", "embed", "hidden", "bidirectional"] + (["nonlinearity"] if ours.cell == "rnn" else [])
    for key in keys:
        value = getattr(theirs, key)
        if value != getattr(ours, key):
            flag = (f"--{'' if value else 'no-'}{key}" if isinstance(value, bool) else f"--{key} {value}")
            raise RnncliError(f"--init-from {path}: its {key} is {value}, this run's {getattr(ours, key)}; "
                              f"they must match (pass {flag})")
    return source


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
    more = f"; {vectors.added:,} more words from the file" if vectors.added else ""
    return (f"vectors {path}: {vectors.covered_words:,} of {vectors.words:,} training vocabulary words covered "
            f"({vectors.coverage:.1%}){more}, {'frozen' if frozen else 'fine-tuned'}")


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


def versions() -> dict[str, str]:
    """Package versions, torch's as the build names itself (2.14.1+cu130, 2.13.0+cpu): the build,
    not only the release, decides which kernels ran."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rnncli", "torch", "datasets", "tokenizers", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover
            out[pkg] = "unknown"
    out["torch"] = torch.__version__
    return out


def train(config: Config | None = None, progress: Progress | None = None, resume: str | Path | None = None) -> Run:
    """Train from `config`, or continue the interrupted run in folder `resume` with its own config.

    Started by torchrun, every process runs this: each trains on its share of the batches under
    DistributedDataParallel, and only the main process reports progress and writes the folder.
    """
    dist = ddp.from_env()
    progress = progress if progress is not None and dist.main else Progress()
    saved = saved_meta = None
    if resume is not None and config is not None:
        raise RnncliError("resume= continues with the folder's own config; pass no config with it")
    if resume is not None:
        resume = Path(resume)
        checkpoint.check_writable(resume)
        saved_meta = checkpoint.read_meta(resume)
        config = from_dict(saved_meta["config"], where=str(resume / checkpoint.CONFIG))
        saved = checkpoint.load_resume(resume)
    if config is None:
        raise RnncliError("train() needs a config, or resume= a folder to continue")
    tc = config.train
    if config.model.freeze_vectors and not config.model.vectors:
        raise RnncliError("--freeze-vectors needs --vectors FILE: a frozen random embedding would never learn")
    device = resolve_device(ddp.device_spec(tc.device, dist))
    autocast, scaler = mixed_precision(tc.precision, device)
    ddp.start(dist, device)
    try:
        run = _train(config, progress, resume, saved, saved_meta, dist, device, autocast, scaler)
    except BaseException:
        ddp.stop(dist, finished=False)
        raise
    ddp.stop(dist)
    return run


def _train(config, progress, out, saved, saved_meta, dist, device, autocast, scaler) -> Run:
    tc = config.train
    if saved is None:
        problem = None
        if dist.main:
            try:
                out = Path(tc.out) if tc.out else default_out(config.data.dataset)
                check_out(out)
            except RnncliError as e:
                problem = e
        ddp.raise_together(problem, dist)
        out = ddp.broadcast(out, dist)  # the main process's timestamped name
    # checked before the data is read, so a wrong folder fails at once; and before seeding, as
    # rebuilding the source model draws random numbers
    source = start_from(config) if saved is None else None  # on --resume the weights come from the checkpoint
    seed_everything(tc.seed)

    dc = config.data
    if dc.streaming:
        corpus = open_stream(dc, seed=tc.seed)
        corpus.splits = {"train": corpus.sample, **corpus.splits}  # the sample stands in for train below
    else:
        corpus = load_corpus(dc, seed=tc.seed)
    train_split = corpus.splits["train"]
    present = np.unique(train_split.labels)
    if len(present) < 2:
        only = corpus.labels[int(present[0])]
        raise RnncliError(f"{config.data.dataset}: the train split holds a single class ({only!r}); "
                          "a classifier needs at least two")
    if len(corpus.splits["validation"]) == 0:
        raise RnncliError(f"{config.data.dataset}: the validation split is empty")
    added = 0  # words the vectors file brought into the vocabulary
    if source is not None:
        tokenizer = source.tokenizer  # the source's embedding rows belong to its vocabulary
    elif saved is None:
        tokenizer = train_tokenizer(train_split.texts, config.data.min_freq, config.data.max_vocab)
        if config.model.vectors and config.model.vectors_vocab:
            tokenizer, added = add_words(tokenizer, vector_words(config.model.vectors), config.data.max_vocab)
    else:
        tokenizer = load_tokenizer(out / checkpoint.TOKENIZER)
    encoded = {name: encode(tokenizer, split.texts, config.data.max_length)
               for name, split in corpus.splits.items()}
    vocab_size = tokenizer.get_vocab_size()
    run = Run(out=out, config=config, report=data_report(corpus, encoded, vocab_size, config.data.max_length))
    if dc.streaming:  # the stream's length is unknown until it has been read
        rename = lambda d: {("train (first rows)" if k == "train" else k): v for k, v in d.items()}
        run.report.rows, run.report.class_counts = rename(run.report.rows), rename(run.report.class_counts)
    vectors = None
    if saved is None and config.model.vectors:  # on --resume the weights come from the checkpoint
        vectors = read_vectors(config.model.vectors, tokenizer.get_vocab(), config.model.embed, added=added)
        run.report.notes.append(vectors_note(config.model.vectors, vectors, config.model.freeze_vectors))
    if source is not None:
        run.report.notes.append(f"started from {config.model.init_from}: its vocabulary, embedding and "
                                f"{config.model.cell} layers (trained on {source.meta['dataset']['name']}, "
                                f"labels {', '.join(source.labels)}); a new head for {', '.join(corpus.labels)}")
    progress.report(run.report)

    model = RNNClassifier(config.model, vocab_size=vocab_size, num_classes=len(corpus.labels)).to(device)
    if vectors is not None:
        init_embedding(model.embedding, vectors)
    if source is not None:
        body = {k: v for k, v in source.model.state_dict().items() if not k.startswith("head.")}
        model.load_state_dict(body, strict=False)  # everything but the head, which keeps its fresh init
    step_model = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        # DDP copies the main process's weights to the others now and averages gradients after each backward
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        torch.manual_seed(tc.seed + 1_000_003 * (dist.rank + 1))  # each process its own dropout masks
    rows = not dist.active
    optimizer = make_optimizer(model, config, rows=rows)
    gradients = Gradients(model, rows=rows, optimizer=optimizer)
    weight = None
    if tc.class_weights == "auto":
        counts = np.bincount(train_split.labels, minlength=len(corpus.labels)).astype(float)
        weight = torch.tensor(len(train_split) / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32,
                              device=device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=tc.label_smoothing)
    if dc.streaming:
        def batches(epoch: int, rng: np.random.Generator):
            """Each buffer of the stream grouped by length and shuffled; the stream's length is unknown."""
            for chunk in corpus.chunks(dc.stream_buffer, tc.seed, epoch, part=dist.rank, parts=dist.world):
                labels = torch.from_numpy(chunk.labels)
                for idx, ids in LengthBuckets(encode(tokenizer, chunk.texts, dc.max_length)).batches(
                        tc.batch_size, rng):
                    yield ids, labels[idx]

        num_batches = None
        encoded.pop("train")  # only the report needed the sample's ids
    else:
        buckets = LengthBuckets(encoded["train"])
        train_labels = torch.from_numpy(train_split.labels)

        def batches(epoch: int, rng: np.random.Generator):
            for idx, ids in buckets.batches(tc.batch_size, rng, part=dist.rank, parts=dist.world):
                yield ids, train_labels[idx]

        num_batches = buckets.num_batches(tc.batch_size, dist.world)
    # processes that stream different amounts of data take different numbers of steps; DDP's Join
    # lets those that finish first answer the others' gradient exchanges until all are done
    uneven = dist.active and dc.streaming
    val_labels = corpus.splits["validation"].labels
    meta = {
        "format_version": checkpoint.FORMAT_VERSION,
        "config": config.to_dict(),
        "labels": corpus.labels,
        "vocab_size": vocab_size,
        "dataset": {"name": corpus.name, "source": corpus.source, "fingerprint": corpus.fingerprint},
        "versions": versions(),
        "distributed": {"processes": dist.world, "batch_size_per_process": tc.batch_size},
        "determinism": {"device": str(device), "torch_threads": torch.get_num_threads(),
                        "deterministic": device.type == "cpu",
                        "note": "CPU runs with the same seed and threads usually repeat bit for bit; "
                                "on large data an occasional run has been seen to differ (see README); "
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
        if dist.main:
            checkpoint.rewrite_metrics(out, records)
        run.history = [Epoch(**r, improved=r["epoch"] == run.best_epoch) for r in records]
        torch.set_rng_state(rng_state)  # last: building the best model above draws random numbers
    def step(ids: torch.Tensor, y: torch.Tensor) -> float:
        """One optimisation step on a batch; returns its loss."""
        with autocast():
            loss = loss_fn(step_model(ids).float(), y)  # logits (batch, classes) in fp32 for the loss
        gradients.zero(ids)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
        if tc.clip > 0:
            gradients.clip(tc.clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        gradients.release()
        return loss.item()

    # a batch loss this far above chance (ln classes) means exploded logits, not slow learning
    diverged_loss = 50 * math.log(len(corpus.labels))
    epoch = first_epoch
    try:
        for epoch in range(first_epoch, tc.epochs + 1):
            model.train()
            # set between epochs, when RowAdamW has brought every row up to date at the old rate
            for group in optimizer.param_groups:
                group["lr"] = tc.lr * tc.lr_decay ** (epoch - 1)
            rng = np.random.default_rng([tc.seed, epoch])
            progress.epoch_start(epoch, num_batches)
            start, tokens, loss_sum, seen = time.perf_counter(), 0, 0.0, 0
            exploded = None
            with Join([step_model]) if uneven else contextlib.nullcontext():
                for ids, y in batches(epoch, rng):
                    ids = ids.to(device, non_blocking=True)  # (seq, batch)
                    y = y.to(device, non_blocking=True)  # (batch,)
                    value = local = step(ids, y)
                    if dist.active and not uneven:  # every process must take the same decision below
                        value = float(ddp.all_sum([value], dist, device)[0]) / dist.world
                    if not math.isfinite(value) or value > diverged_loss:
                        exploded = value
                        break
                    loss_sum += local * len(y)
                    tokens += ids.numel()
                    seen += len(y)
                    progress.batch(value, ids.numel() * dist.world)
            if uneven:  # a process that stopped early tells the others now
                count, total = ddp.all_sum([exploded is not None, exploded or 0.0], dist, device)
                exploded = total / count if count else None
            if exploded is not None:
                run.stopped = "diverged"
                run.message = (f"the loss exploded to {exploded:.4g} in epoch {epoch}; training stopped "
                               f"(try a lower --lr than {tc.lr:g} or a smaller --clip)")
                break
            gradients.settle()
            loss_sum, seen, tokens = ddp.all_sum([loss_sum, seen, tokens], dist, device)
            seconds = time.perf_counter() - start
            m = evaluate(model, encoded["validation"], val_labels, corpus.labels, device=device, dist=dist)
            improved = best_state is None or m.accuracy > run.best_accuracy
            result = Epoch(epoch=epoch, split="validation", train_loss=loss_sum / max(seen, 1),
                           loss=m.loss, accuracy=m.accuracy, macro_f1=m.macro_f1, seconds=seconds,
                           tokens_per_second=tokens / max(seconds, 1e-9), improved=improved,
                           lr=optimizer.param_groups[0]["lr"])
            run.history.append(result)
            record = {k: v for k, v in asdict(result).items() if k != "improved"}
            if improved:
                run.best_epoch, run.best_accuracy, stale = epoch, m.accuracy, 0
                best_state = copy.deepcopy(model.state_dict())
                meta["best"] = {"epoch": epoch, "accuracy": m.accuracy, "macro_f1": m.macro_f1}
                if not dist.main:
                    pass
                elif out.exists():
                    checkpoint.save_weights(out, model)
                    checkpoint.write_json(out / checkpoint.CONFIG, meta)
                    checkpoint.append_metrics(out, record)
                else:
                    checkpoint.create_folder(out, model, tokenizer, meta, [record])
                    checkpoint.point_latest(out)
            else:
                stale += 1
                if dist.main:
                    checkpoint.append_metrics(out, record)
            if dist.main:
                checkpoint.save_resume(out, model, optimizer, {
                    "epoch": epoch, "stale": stale, "best_epoch": run.best_epoch,
                    "best_accuracy": run.best_accuracy})
            progress.epoch_end(result)
            if stale >= tc.patience:
                run.stopped = "early stop"
                run.message = f"no better validation accuracy for {tc.patience} epochs"
                break
    except KeyboardInterrupt:
        run.stopped = "interrupted"
        run.message = f"interrupted in epoch {epoch}"
    finally:
        gradients.close()
    if best_state is None:
        if run.stopped == "interrupted":
            raise Interrupted(Interrupted.BEFORE_FIRST_EPOCH)
        raise RnncliError(f"no model was saved: {run.message or 'training stopped before the first epoch ended'}")
    if run.stopped != "interrupted" and dist.main:
        (out / checkpoint.RESUME).unlink(missing_ok=True)  # nothing left to resume
    model.load_state_dict(best_state)
    run.model = model
    if "test" in encoded and len(encoded["test"]) and run.stopped != "interrupted":
        try:
            run.test = evaluate(model, encoded["test"], corpus.splits["test"].labels, corpus.labels,
                                device=device, dist=dist)
        except KeyboardInterrupt:
            run.stopped, run.message = "interrupted", "interrupted while scoring the test split, after training"
            return run
        if dist.main:
            checkpoint.append_metrics(out, {"epoch": run.best_epoch, "split": "test", "loss": run.test.loss,
                                            "accuracy": run.test.accuracy, "macro_f1": run.test.macro_f1})
    return run
