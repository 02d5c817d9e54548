"""`rnncli export`: a model folder's network as one ONNX file, checked against torch before it is kept.

The graph takes `ids` (seq, batch) and `lengths` (batch,), texts right-padded with 0 as everywhere
in rnncli, and gives `logits` and `probabilities` (batch, classes), for any batch and any length.
Padding never changes a result: a forward direction never sees the steps after a text, and a
backward one reads each text reversed within its own length, so it starts on the text's last token.

torch.onnx's TorchScript exporter (`dynamo=False`) writes it: `torch.export` fixes the time axis of
nn.RNN, nn.GRU and nn.LSTM to the example's length (pytorch#126339), while this exporter maps nn.GRU
and nn.LSTM onto ONNX's GRU and LSTM ops, and the plain RNN's step loop (TorchScript) onto an ONNX
Loop, all with a free time axis. Whatever it does, `check` runs the file on lengths and batch sizes
unlike the example's and refuses it if its answers differ.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rnncli import __version__
from rnncli.errors import RnncliError
from rnncli.onnxmodel import (
    EXTRA,
    INPUTS,
    LABELS_KEY,
    ONNX,
    OUTPUTS,
    QUANTIZE_KEY,
    WEIGHTS_KEY,
    OnnxModel,
    require_onnxruntime,
    weights_digest,
)
from rnncli.recurrence import layer_weights

TOLERANCE = {"none": 1e-5, "int8": 0.1}  # largest difference of any probability allowed, by --quantize
OPSET = 17
CASES = [(1, [1]), (1, [2]), (2, [9, 3]), (3, [7, 7, 1]), (5, [33, 1, 12, 33, 2]),
         (17, list(range(1, 18)))]  # (batch, text lengths); write_graph's example is (3, [7, 4, 2])


def _tanh_steps(z: torch.Tensor, w_hh_t: torch.Tensor) -> torch.Tensor:
    """h_t = tanh(z_t + h_{t-1} W_hh^T) from h_{-1} = 0, as one ONNX Loop: z (seq, batch, hidden) -> h."""
    h = torch.tanh(z[0])  # (batch, hidden)
    out = [h]
    for t in range(1, z.shape[0]):
        h = torch.tanh(torch.addmm(z[t], h, w_hh_t))  # one Gemm: z_t + h W_hh^T
        out.append(h)
    return torch.stack(out)  # (seq, batch, hidden)


def _relu_steps(z: torch.Tensor, w_hh_t: torch.Tensor) -> torch.Tensor:
    h = torch.relu(z[0])  # (batch, hidden)
    out = [h]
    for t in range(1, z.shape[0]):
        h = torch.relu(torch.addmm(z[t], h, w_hh_t))
        out.append(h)
    return torch.stack(out)  # (seq, batch, hidden)


@functools.cache
def _scripted(relu: bool):
    """The step loop as TorchScript, which the exporter turns into an ONNX Loop (traced, it would be
    unrolled to the example's length)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's notice of its own deprecation
        return torch.jit.script(_relu_steps if relu else _tanh_steps)


class _PlainSteps(nn.Module):
    """One direction of one plain-RNN layer, written out: every step's input term at once, then a
    loop of one product and the activation. onnxruntime runs this about 3x faster than ONNX's own
    RNN op (SST-2 validation); GRU and LSTM keep their ONNX ops. In the first layer, when the
    embedding is at least as wide as the state, the embedding and the input term are folded into one
    (vocab, hidden) table: a lookup replaces a product per token, and the file grows no larger."""

    def __init__(self, rnn: nn.RNN, suffix: str, embedding: nn.Embedding | None = None):
        super().__init__()
        w_ih, w_hh, b_ih, b_hh = (p.detach().clone() for p in layer_weights(rnn, suffix))
        self.folds = embedding is not None and rnn.hidden_size <= embedding.embedding_dim
        if self.folds:  # z = E[ids] W_ih^T + b = (E W_ih^T + b)[ids]
            self.table = nn.Parameter(torch.addmm(b_ih + b_hh, embedding.weight.detach(), w_ih.t()))  # (vocab, hidden)
        else:
            self.w_ih_t = nn.Parameter(w_ih.t().contiguous())  # (in, hidden)
            self.bias = nn.Parameter(b_ih + b_hh)  # (hidden,)
        self.w_hh_t = nn.Parameter(w_hh.t().contiguous())  # (hidden, hidden)
        self.steps = _scripted(rnn.nonlinearity == "relu")

    def forward(self, x: torch.Tensor):
        """x: ids (seq, batch) where the table is folded in, else features (seq, batch, in)."""
        z = self.table[x] if self.folds else torch.matmul(x, self.w_ih_t) + self.bias  # (seq, batch, hidden)
        return self.steps(z, self.w_hh_t), None  # as nn.RNN: (out, h_n), h_n unused


def _one_layer(model: nn.Module, layer: int, reverse: bool) -> nn.Module:
    """Layer `layer` of the model's recurrent layers, one direction of it, as a module of its own
    with the same weights."""
    rnn = model.rnn
    if isinstance(rnn, nn.RNN):
        return _PlainSteps(rnn, f"_l{layer}" + ("_reverse" if reverse else ""), model.embedding if layer == 0 else None)
    inputs = rnn.input_size if layer == 0 else rnn.hidden_size * (2 if rnn.bidirectional else 1)
    one = type(rnn)(inputs, rnn.hidden_size, num_layers=1, bias=rnn.bias)
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    with torch.no_grad():
        for name, p in one.named_parameters():  # weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0
            p.copy_(getattr(rnn, name.removesuffix("_l0") + suffix))
    return one


def _reorder(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """x (seq, batch, features), or ids (seq, batch), with each text's steps taken in the order
    `steps` (seq, batch) gives."""
    if x.dim() == 2:
        return x.gather(0, steps)  # (seq, batch)
    return x.gather(0, steps[..., None].expand(-1, -1, x.shape[2]))  # (seq, batch, features)


class OnnxGraph(nn.Module):
    """What is exported: the classifier's own embedding, pooling and head around its recurrent
    layers, taken apart into one module per layer and direction."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.layers = nn.ModuleList(
            nn.ModuleList(_one_layer(model, layer, bool(d)) for d in range(model.directions))
            for layer in range(model.rnn.num_layers))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor):
        folded = getattr(self.layers[0][0], "folds", False)  # the first layer looks its ids up itself
        x = ids if folded else self.model.embedding(ids)  # (seq, batch) or (seq, batch, embed)
        steps = torch.arange(ids.shape[0])[:, None]  # (seq, 1)
        own = lengths[None, :] - 1 - steps  # (seq, batch): step t of a text read backwards
        back = torch.where(own >= 0, own, steps)  # (seq, batch); padding stays where it is, at the end
        for directions in self.layers:
            outs = [directions[0](x)[0]]  # (seq, batch, hidden)
            if len(directions) == 2:
                outs.append(_reorder(directions[1](_reorder(x, back))[0], back))  # (seq, batch, hidden)
            x = torch.cat(outs, dim=2) if len(outs) == 2 else outs[0]  # (seq, batch, hidden x dirs)
        logits = self.model.answer(self.model.pool(x, lengths), ids, lengths)  # (batch, classes)
        return logits, logits.softmax(1)


@dataclass
class Check:
    """The exported file against the torch model on one batch: ids (seq, batch) with these lengths."""
    batch: int
    lengths: list[int]
    max_difference: float  # of any probability

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Export:
    """What `rnncli export` wrote and how it was checked."""
    model: str
    path: str
    quantize: str
    bytes: int
    weights_bytes: int
    tolerance: float
    checks: list[Check]
    accuracy: dict = field(default_factory=dict)  # validation accuracy by runtime, with --quantize
    seconds: float = 0.0

    @property
    def max_difference(self) -> float:
        return max(c.max_difference for c in self.checks)

    def to_dict(self) -> dict:
        return {**asdict(self), "checks": [c.to_dict() for c in self.checks], "max_difference": self.max_difference}


def export(model_dir: str | Path = "runs/latest", out: str | Path | None = None, quantize: str = "none",
           format: str = "onnx") -> Export:
    """Write the folder's model as ONNX (`out`, or model.onnx in the folder), after checking it
    against the torch model; with `quantize="int8"`, onnxruntime's dynamic int8 quantization, and
    the validation accuracy before and after it."""
    from rnncli.checkpoint import WEIGHTS, atomic_write, load

    start = time.perf_counter()
    if format != "onnx":
        raise RnncliError(f"unknown --format {format!r}: onnx is the one format rnncli exports")
    if quantize not in TOLERANCE:
        raise RnncliError(f"unknown --quantize {quantize!r}: use {' or '.join(TOLERANCE)}")
    _require_onnx()
    folder = Path(model_dir)
    loaded = load(folder)
    target = Path(out) if out else folder / ONNX
    _check_target(target)
    meta = {WEIGHTS_KEY: weights_digest(folder / WEIGHTS), LABELS_KEY: json.dumps(loaded.labels),
            QUANTIZE_KEY: quantize, "rnncli.version": __version__}
    done: dict = {}

    def write(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".rnncli-export-") as work:
            fp32 = Path(work) / "fp32.onnx"
            write_graph(loaded.model, fp32)
            if quantize == "int8":
                _quantize_int8(fp32, tmp)
            else:
                fp32.replace(tmp)
        _add_metadata(tmp, meta)
        done["checks"] = check(loaded.model, tmp, loaded.meta["vocab_size"], loaded.config.data.max_length)
        worst = max(c.max_difference for c in done["checks"])
        if not worst <= TOLERANCE[quantize]:  # NaN fails this too
            raise RnncliError(f"the exported model differs from the torch model by {worst:.2g} in a "
                              f"probability, more than {TOLERANCE[quantize]:g}; nothing was written")
        done["accuracy"] = _accuracy(loaded, tmp) if quantize == "int8" else {}

    atomic_write(target, write)
    return Export(model=str(folder), path=str(target), quantize=quantize, bytes=target.stat().st_size,
                  weights_bytes=(folder / WEIGHTS).stat().st_size, tolerance=TOLERANCE[quantize],
                  checks=done["checks"], accuracy=done["accuracy"], seconds=time.perf_counter() - start)


def _require_onnx() -> None:
    require_onnxruntime()
    try:
        import onnx  # noqa: F401 - the exporter and the quantizer need it
    except ImportError:
        raise RnncliError(f"rnncli export needs onnx: {EXTRA}") from None


def _check_target(target: Path) -> None:
    from rnncli.checkpoint import write_problem

    if target.is_dir():
        raise RnncliError(f"{target}: is a folder; --out names the file to write")
    if not target.parent.is_dir():
        raise RnncliError(f"{target.parent}: no such folder")
    problem = write_problem(target.parent)
    if problem:
        raise RnncliError(f"{target.parent}: cannot write here ({problem})")


def write_graph(model: nn.Module, path: Path) -> None:
    """`OnnxGraph(model)` as ONNX, with free batch and time axes."""
    graph = OnnxGraph(model).eval()
    ids = torch.tensor([[3, 4, 5], [6, 7, 8], [9, 2, 0], [3, 4, 0], [5, 0, 0], [6, 0, 0], [7, 0, 0]])  # (seq 7, batch 3)
    ids = ids.clamp(max=model.embedding.num_embeddings - 1)
    lengths = torch.tensor([7, 4, 2])  # (batch,)
    axes = {"ids": {0: "seq", 1: "batch"}, "lengths": {0: "batch"}, "logits": {0: "batch"},
            "probabilities": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing and on its own deprecation
        torch.onnx.export(graph, (ids, lengths), str(path), input_names=INPUTS, output_names=OUTPUTS,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _quantize_int8(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process, printed through the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _add_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def check(model: nn.Module, path: Path, vocab: int, max_length: int, seed: int = 0) -> list[Check]:
    """The file at `path` against `model` on random texts: batch 1 and length 1, the longest
    length the model reads, and padded batches of mixed lengths unlike the export's example."""
    ort = require_onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    cases = [*CASES, (2, [max_length, max(1, max_length // 3)])]
    out = []
    for batch, lengths in cases:
        lengths = np.minimum(np.array(lengths), max_length)  # (batch,)
        ids = rng.integers(2, vocab, size=(int(lengths.max()), batch))  # (seq, batch)
        ids[np.arange(len(ids))[:, None] >= lengths[None, :]] = 0  # right-padded
        with torch.inference_mode():
            want = model(torch.from_numpy(ids), torch.from_numpy(lengths)).softmax(1).numpy()  # (batch, classes)
        got = session.run(["probabilities"], {"ids": ids, "lengths": lengths})[0]  # (batch, classes)
        out.append(Check(batch=batch, lengths=lengths.tolist(), max_difference=float(np.abs(got - want).max())))
    return out


def _accuracy(loaded, path: Path) -> dict:
    """Validation accuracy of the torch model and of the file at `path`, on the model's own data."""
    from rnncli.evaluate import labelled_split
    from rnncli.inference import probabilities
    from rnncli.tokenizer import encode

    ort = require_onnxruntime()
    _, split, data = labelled_split(loaded, split="validation")
    enc = encode(loaded.tokenizer, data.texts, loaded.config.data.max_length)
    onnx_model = OnnxModel(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), path, "int8")
    gold = np.asarray(data.labels)
    return {"split": split, "texts": len(gold),
            "torch": float((probabilities(loaded.model, enc).argmax(1) == gold).mean()),
            "onnx": float((onnx_model.probabilities(enc).argmax(1) == gold).mean())}
