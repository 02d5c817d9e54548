"""Use a trained model: labels and probabilities for texts, and the sentiment trajectory of one text.

`Classifier.load("runs/latest").predict(["great film", "dull"])`. Imports neither `datasets` nor
pandas/pyarrow, so a prediction starts about as fast as torch itself; with `runtime="onnx"` the
folder's model.onnx runs in onnxruntime and torch is not imported at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from rnncli.checkpoint import Loaded, open_model
from rnncli.errors import RnncliError
from rnncli.tokenizer import UNK_ID, Encoded, read_limit

# A text's probabilities do not depend on the texts that share its batch or on its place there,
# beyond float rounding: matrix kernels (oneDNN, MKL, cuBLAS) may add in another order for another
# batch shape, which moves the last bits (about 1e-7 seen on the CPU). The promise, tested:
CHUNK = 16384  # texts per `predict_chunks` step
BATCH_TOLERANCE = 1e-5  # largest difference of any probability between two batchings of one text


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 < threshold < 1.0:  # NaN fails this too
        raise RnncliError(f"--threshold must be a number between 0 and 1 (exclusive), not {threshold}")


def choose(p, threshold: float | None = None) -> np.ndarray:
    """The class each row of probabilities answers, (..., classes) -> (...): the likeliest, or with
    a threshold (two classes) the second only above it."""
    p = np.asarray(p)
    return (p[..., 1] > threshold).astype(np.int64) if threshold is not None else p.argmax(-1)


@dataclass
class Prediction:
    text: str
    label: str | None  # None for an empty text
    score: float | None  # probability of `label`
    probabilities: dict[str, float] = field(default_factory=dict)
    unknown_share: float = 0.0  # share of the text's tokens the vocabulary does not know
    tokens: int = 0
    truncated: bool = False
    empty: bool = False

    def to_dict(self, top_k: int | None = None) -> dict:
        """The record `predict --json` prints; `top` holds the `top_k` likeliest labels when asked."""
        return {"text": self.text, "label": self.label, "score": self.score,
                "probabilities": dict(self.probabilities), "unknown_share": self.unknown_share,
                "tokens": self.tokens, "truncated": self.truncated, "empty": self.empty,
                "top": self.top(top_k) if top_k else None}

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k likeliest labels with their probabilities, likeliest first."""
        return sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:k]

    def at_threshold(self, threshold: float | None) -> Prediction:
        """This prediction answered with `threshold` (see `choose`), as `predict(threshold=...)` would."""
        if threshold is None or self.empty:
            return self
        names = list(self.probabilities)
        label = names[int(choose(list(self.probabilities.values()), threshold))]
        return replace(self, label=label, score=self.probabilities[label])


def _epochs(folder: Path) -> list[dict]:
    """metrics.jsonl's records; an unreadable file gives none rather than stopping a server."""
    from rnncli.checkpoint import read_metrics

    try:
        return read_metrics(folder)
    except (OSError, ValueError):
        return []


@dataclass
class Explanation:
    text: str
    tokens: list[str]
    labels: list[str]
    probabilities: list[list[float]]  # one row per token: class probabilities after that prefix (`last` pooling)
    prediction: Prediction
    attention: list[float] = field(default_factory=list)  # one weight per token, summing to 1 (`attn` pooling)
    shapes: dict = field(default_factory=dict)  # this forward pass's tensors and the parameters (rnncli.shapes)

    def to_dict(self) -> dict:
        """The record `predict --explain --json` prints: the attention weights or the probabilities
        after each prefix, whichever the model gives, the prediction's label and score, and the
        shapes of the tensors the recurrent layers made reading this text."""
        record = {"text": self.text, "tokens": self.tokens, "labels": self.labels}
        record |= {"attention": self.attention} if self.attention else {"probabilities": self.probabilities}
        return record | {"label": self.prediction.label, "score": self.prediction.score, "shapes": self.shapes}


class Classifier:
    def __init__(self, loaded: Loaded):
        self.loaded = loaded
        self.model = loaded.model  # an RNNClassifier, or an OnnxModel when runtime is "onnx"
        self.runtime = loaded.runtime
        self.tokenizer = loaded.tokenizer
        self.labels = list(loaded.labels)
        self.max_length = loaded.config.data.max_length
        self.device = next(self.model.parameters()).device if self.runtime == "torch" else "cpu"
        self.asked_runtime = self.runtime
        self._explainer: Classifier | None = None
        self._table = None  # the first layer's lookup table, once `warm` has built it

    @classmethod
    def load(cls, path: str | Path = "runs/latest", device: str = "cpu", inspected=None,
             runtime: str = "torch") -> Classifier:
        """The model in folder `path`; `inspected` is `checkpoint.inspect(path)` when already done;
        `runtime` "auto", "torch" or "onnx" (see `onnxmodel.resolve_runtime`)."""
        clf = cls(open_model(path, device=device, inspected=inspected, runtime=runtime))
        clf.asked_runtime = runtime
        return clf

    def explainer(self) -> Classifier:
        """The classifier that explains: this one, or where "auto" chose model.onnx, the folder's
        weights in torch (loaded once), since only torch reads the state after every word."""
        if self.runtime == "torch":
            return self
        if self.asked_runtime != "auto":
            raise RnncliError("--explain reads the RNN's state after every word, which model.onnx does not "
                              "give; use --runtime torch or auto")
        if self._explainer is None:
            self._explainer = Classifier.load(self.loaded.path, inspected=(self.loaded.meta, self.loaded.config))
        return self._explainer

    def warm(self) -> Classifier:
        """Build once what every call would otherwise pay for, for a classifier kept loaded (a
        server): the tokenizer's word dictionary for ASCII texts and, on the CPU, the first layer's
        lookup table (`RNNClassifier.input_table`)."""
        from rnncli.tokenizer import ascii_words

        ascii_words(self.tokenizer)
        if self.runtime == "torch" and self.device.type == "cpu" and getattr(self.model, "packable", False):
            import torch

            with torch.inference_mode():
                self._table = self.model.input_table()
        return self

    def card(self) -> dict:
        """What the model is: labels, architecture and size, the data it learned from, its best and
        per-epoch validation metrics, and the versions it was trained and is run with."""
        from rnncli.checkpoint import versions
        from rnncli.layout import weight_shapes

        meta, config = self.loaded.meta, self.loaded.config
        shapes = weight_shapes(config.model, meta["vocab_size"], len(self.labels))
        return {
            "model": self.loaded.path.resolve().name,
            "labels": self.labels,
            "architecture": asdict(config.model),
            "explainable": config.model.explainable,
            "parameters": sum(int(np.prod(shape)) for shape in shapes.values()),
            "vocab_size": meta["vocab_size"],
            "max_length": self.max_length,
            "data": meta.get("dataset", {}),
            "best": meta.get("best", {}),
            "epochs": _epochs(self.loaded.path),
            "trained_with": meta.get("versions", {}),
            "runtime": self.runtime if self.runtime == "torch" else f"onnx ({self.model.precision})",
            "versions": versions(*(["onnxruntime"] if self.runtime == "onnx" else [])),
        }

    def check_threshold(self, threshold: float | None) -> None:
        """A threshold is a probability, and only a two-class model has a second label to hold back."""
        check_threshold(threshold)
        if threshold is not None and len(self.labels) != 2:
            raise RnncliError(f"--threshold needs a two-class model; this one has {len(self.labels)} classes")

    def _encode(self, texts: list[str]) -> tuple[Encoded, np.ndarray]:
        from rnncli.tokenizer import encode

        enc = encode(self.tokenizer, texts, self.max_length)
        return enc, enc.full_lengths == 0

    def predict_chunks(self, texts: list[str], batch_size: int = 128, threshold: float | None = None,
                       chunk: int | None = None) -> Iterator[list[Prediction]]:
        """`predict` of `chunk` (CHUNK) texts at a time, in input order: a long input's records can be
        written as they come, while memory holds one chunk's records instead of all of them."""
        self.check_threshold(threshold)
        chunk = chunk or CHUNK
        for start in range(0, len(texts), chunk):
            yield self.predict(texts[start: start + chunk], batch_size, threshold)

    def predict(self, texts: list[str], batch_size: int = 128, threshold: float | None = None
                ) -> list[Prediction]:
        """One Prediction per text, in input order; blank texts give a record marked empty."""
        self.check_threshold(threshold)
        texts = list(texts)
        if not texts:
            return []
        enc, empty = self._encode(texts)
        probs = self._probabilities(enc, batch_size)  # (texts, classes)
        chosen = choose(probs, threshold)  # (texts,)
        unknown = np.add.reduceat((enc.ids == UNK_ID).astype(np.int64), enc.starts) / enc.lengths  # (texts,)
        truncated = enc.full_lengths > self.max_length
        out = []
        for text, row, k, unk, n, cut, blank in zip(texts, probs.tolist(), chosen.tolist(), unknown.tolist(),
                                                   enc.lengths.tolist(), truncated.tolist(), empty.tolist()):
            if blank:
                out.append(Prediction(text=text, label=None, score=None, empty=True))
                continue
            out.append(Prediction(text=text, label=self.labels[k], score=row[k],
                                  probabilities=dict(zip(self.labels, row)), unknown_share=unk, tokens=n,
                                  truncated=cut))
        return out

    def _probabilities(self, enc: Encoded, batch_size: int) -> np.ndarray:
        if self.runtime == "onnx":
            return self.model.probabilities(enc, batch_size)
        from rnncli.inference import probabilities

        return probabilities(self.model, enc, batch_size, self.device, self._table)

    def explain(self, text: str) -> Explanation:
        """How the model read `text`, from the RNN's `out` at every step: the class probabilities
        after each prefix (a one-direction model pooled at the last step), or the attention weight
        each token got (`attn` pooling)."""
        if self.runtime != "torch":
            return self.explainer().explain(text)
        import torch

        with torch.inference_mode():
            return self._explain(text)

    def _explain(self, text: str) -> Explanation:
        import torch

        if not self.model.explainable:
            why = "bidirectional" if self.model.directions == 2 else f"pooled by {self.model.config.pool}"
            raise RnncliError(f"--explain reads the state after each word, which is the model's answer only "
                              f"for a one-direction model pooled at the last step, or the attention each "
                              f"word gets (--pool attn); this model is {why}")
        prediction = self.predict([text])[0]
        if prediction.empty:
            raise RnncliError("nothing to explain: the text is empty")
        encoding = self.tokenizer.encode(text[: read_limit(self.max_length)], add_special_tokens=False)
        tokens = encoding.tokens[: self.max_length]
        ids = torch.tensor(encoding.ids[: self.max_length], device=self.device)[:, None]  # (seq, 1)
        from rnncli.shapes import of_text

        shapes = of_text(self.model, ids)
        if self.model.config.pool == "attn":
            out, _ = self.model.encode(ids)  # (seq, 1, hidden x dirs)
            weights = self.model.attention(out)[:, 0].float()  # (seq,)
            return Explanation(text=text, tokens=tokens, labels=self.labels, probabilities=[],
                               prediction=prediction, attention=weights.cpu().tolist(), shapes=shapes)
        steps = torch.softmax(self.model.step_logits(ids)[:, 0].float(), dim=-1)  # (seq, classes)
        return Explanation(text=text, tokens=tokens, labels=self.labels,
                           probabilities=steps.cpu().tolist(), prediction=prediction, shapes=shapes)
