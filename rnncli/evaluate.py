"""Judge a model on labelled texts: accuracy, macro-F1, per-class scores, confusion, speed, baseline."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from rnncli.tokenizer import Encoded


@dataclass
class Metrics:
    labels: list[str]
    examples: int
    accuracy: float
    macro_f1: float
    loss: float
    per_class: list[dict]  # label, precision, recall, f1, support
    confusion: list[list[int]]  # rows: true label, columns: predicted label
    majority_label: str  # the split's most frequent label, and the accuracy of always answering it
    majority_accuracy: float
    seconds: float
    examples_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)


def confusion_of(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(true label, predicted label) counts."""
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (np.asarray(gold), np.asarray(pred)), 1)
    return confusion


def scores_from_labels(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy, confusion and per-class precision/recall/F1; a class never predicted scores 0."""
    return scores_from_confusion(confusion_of(gold, pred, n_classes))


def scores_from_confusion(confusion: np.ndarray) -> dict:
    """The same scores from a confusion matrix, which sums across the shards of a split."""
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion).astype(float)
    predicted, support = confusion.sum(0), confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0  # macro-F1 over the classes this split holds
    return {
        "accuracy": float(tp.sum() / max(int(confusion.sum()), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision, "recall": recall, "f1": f1, "support": support,
        "confusion": confusion,
    }


def evaluate(model, enc: Encoded, gold: np.ndarray, labels: list[str], batch_size: int = 128,
             device=None, dist=None) -> Metrics:
    """Score `model` on encoded texts. Under torchrun (`dist`) each process scores every
    world-th text and the confusion matrix and loss are summed over processes."""
    from rnncli.distributed import Dist, all_sum

    dist = dist or Dist()
    gold = np.asarray(gold, dtype=np.int64)
    rows = np.arange(dist.rank, len(gold), dist.world)
    start = time.perf_counter()
    logits = _logits(model, enc.subset(rows), batch_size, device)  # (rows, classes)
    loss_sum = cross_entropy_sum(logits, gold[rows])
    confusion = confusion_of(gold[rows], logits.argmax(1), len(labels))
    if dist.active:
        summed = all_sum(np.append(confusion.ravel(), loss_sum), dist, device or next(model.parameters()).device)
        confusion, loss_sum = summed[:-1].round().astype(np.int64).reshape(confusion.shape), float(summed[-1])
    seconds = time.perf_counter() - start
    loss = loss_sum / len(gold) if len(gold) else 0.0
    s = scores_from_confusion(confusion)
    counts = np.bincount(gold, minlength=len(labels))
    return Metrics(
        labels=list(labels), examples=len(gold), accuracy=s["accuracy"], macro_f1=s["macro_f1"], loss=loss,
        per_class=[{"label": name, "precision": float(s["precision"][i]), "recall": float(s["recall"][i]),
                    "f1": float(s["f1"][i]), "support": int(s["support"][i])} for i, name in enumerate(labels)],
        confusion=s["confusion"].tolist(),
        majority_label=labels[int(counts.argmax())],
        majority_accuracy=float(counts.max() / max(len(gold), 1)),
        seconds=seconds, examples_per_second=len(gold) / max(seconds, 1e-9),
    )


def _logits(model, enc: Encoded, batch_size: int, device) -> np.ndarray:
    """(texts, classes) float32 from a torch model or an exported one (`onnxmodel.OnnxModel`)."""
    if getattr(model, "runtime", "torch") == "onnx":
        return model.logits(enc, batch_size)
    from rnncli.inference import logits_of

    return logits_of(model, enc, batch_size, device).numpy()


def cross_entropy_sum(logits: np.ndarray, gold: np.ndarray) -> float:
    """The summed cross-entropy of rows of logits against their gold classes, in float64:
    log-sum-exp of each row minus its gold logit."""
    z = np.asarray(logits, dtype=np.float64)  # (rows, classes)
    top = z.max(1, keepdims=True) if len(z) else z[:, :1]  # (rows, 1), for exp without overflow
    lse = np.log(np.exp(z - top).sum(1)) + top[:, 0]  # (rows,)
    return float((lse - z[np.arange(len(z)), gold]).sum())


@dataclass
class Evaluation:
    model: str
    dataset: str
    split: str
    metrics: Metrics
    runtime: str = "torch"  # what ran the model: torch, or onnxruntime on its model.onnx

    def to_dict(self) -> dict:
        return {"model": self.model, "dataset": self.dataset, "split": self.split, "runtime": self.runtime,
                **self.metrics.to_dict()}


def evaluate_folder(model_dir: str = "runs/latest", dataset: str | None = None, split: str | None = None,
                    batch_size: int = 128, device: str = "cpu", inspected=None, runtime: str = "torch"
                    ) -> Evaluation:
    """Load a model folder and score it on a split of its own data set, or of another one.
    `inspected` is `checkpoint.inspect(model_dir)` when already done; `runtime` as
    `onnxmodel.resolve_runtime` takes it."""
    from rnncli.checkpoint import open_model
    from rnncli.tokenizer import encode

    loaded = open_model(model_dir, device=device, inspected=inspected, runtime=runtime)
    dataset, split, data = labelled_split(loaded, dataset, split)
    enc = encode(loaded.tokenizer, data.texts, loaded.config.data.max_length)
    metrics = evaluate(loaded.model, enc, data.labels, loaded.labels, batch_size=batch_size)
    return Evaluation(model=str(model_dir), dataset=dataset, split=split, metrics=metrics, runtime=loaded.runtime)


def labelled_split(loaded, dataset: str | None = None, split: str | None = None):
    """(dataset, split, its labelled rows) to score a loaded model folder on: by default its own
    data set's test split, else its validation split."""
    import dataclasses

    from rnncli.data import load_corpus
    from rnncli.errors import RnncliError

    cfg = loaded.config
    source = loaded.meta.get("dataset", {}).get("source")
    dataset = dataset or source or cfg.data.dataset
    data_cfg = dataclasses.replace(cfg.data, dataset=dataset)
    if cfg.data.streaming and dataset in (cfg.data.dataset, source):
        # the model's own streamed data: the same validation rows as training (carved from the
        # stream's first rows), without reading the whole training split
        from rnncli.streaming import open_stream

        corpus = open_stream(data_cfg, seed=cfg.train.seed, known_labels=loaded.labels)
    else:
        corpus = load_corpus(data_cfg, seed=cfg.train.seed, known_labels=loaded.labels, need_train=False)
    split = split or ("test" if "test" in corpus.splits else "validation")
    if split not in corpus.splits:
        raise RnncliError(f"{dataset}: no split {split!r} (found: {', '.join(corpus.splits)})")
    data = corpus.splits[split]
    if len(data) == 0:
        raise RnncliError(f"{dataset}: the {split} split has no labeled rows")
    return dataset, split, data
