"""How an RNN's tensors fit together, read off real modules after one forward pass.

Every shape reported here is `tuple(tensor.shape)` of a tensor torch produced; nothing is derived
by formula, so what a student sees is what PyTorch really does.
"""

from __future__ import annotations

from dataclasses import dataclass

from rnncli.config import CELLS, NONLINEARITIES, ModelConfig
from rnncli.errors import RnncliError
from rnncli.layout import GATES

MAX_DENSE = 2048  # dense layers built for the weight-sharing comparison
MAX_FLOATS = 64 * 2**20  # 256 MB of float32: sizes a lesson needs, never gigabytes by a typo


@dataclass
class ShapesSpec:
    seq: int = 5
    batch: int = 3
    feature: int = 100
    hidden: int = 20
    layers: int = 1
    cell: str = "rnn"
    nonlinearity: str = "tanh"
    bidirectional: bool = False
    batch_first: bool = False
    vocab: int = 1000
    classes: int = 2
    seed: int = 0

    def check(self) -> None:
        for name in ("seq", "batch", "feature", "hidden", "layers", "vocab", "classes"):
            if getattr(self, name) < 1:
                raise RnncliError(f"--{name} must be at least 1, not {getattr(self, name)}")
        if self.vocab < 2:
            raise RnncliError("--vocab must be at least 2 (id 0 is padding)")
        if self.cell not in CELLS:
            raise RnncliError(f"--cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise RnncliError(f"--nonlinearity must be one of {', '.join(NONLINEARITIES)}")
        dense = self.seq * self.layers * (2 if self.bidirectional else 1)
        if dense > MAX_DENSE:
            raise RnncliError(f"--seq x --layers x directions is {dense:,}; at most {MAX_DENSE:,} (the comparison "
                              "builds one dense layer per step, layer and direction)")
        if self.floats() > MAX_FLOATS:
            raise RnncliError(f"these sizes need about {self.floats() * 4 / 2**20:,.0f} MB of tensors; "
                              f"rnncli shapes builds at most {MAX_FLOATS * 4 // 2**20} MB (use smaller "
                              "--seq, --batch, --feature, --hidden, --layers or --vocab)")

    def floats(self) -> int:
        """About how many floats describe() allocates: two copies of the recurrent weights, the
        embedding, and the inputs and outputs of both forward passes."""
        dirs = 2 if self.bidirectional else 1
        rnn = self.layers * dirs * GATES[self.cell] * self.hidden * (
            max(self.feature, self.hidden * dirs) + self.hidden + 2)
        return 2 * rnn + self.vocab * self.feature + 2 * self.seq * self.batch * (self.feature + self.hidden * dirs)


def _shape(t) -> list[int]:
    return list(t.shape)


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(spec: ShapesSpec) -> dict:
    """Build the modules, run them once on random input and report every tensor's real shape."""
    spec.check()
    import torch

    torch.manual_seed(spec.seed)
    rnn, tensors = _recurrent_layer(spec)
    parameters = parameter_records(rnn, spec.cell)
    return {
        "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__},
        "module": repr(rnn),
        "tensors": tensors,
        "parameters": parameters,
        "pipeline": _pipeline(spec),
        "weight_sharing": _weight_sharing(spec, rnn),
    }


def _recurrent_layer(spec: ShapesSpec):
    """The recurrent layer alone, run once: the module and its tensors' records."""
    import torch

    from rnncli.model import RECURRENT

    extra = {"nonlinearity": spec.nonlinearity} if spec.cell == "rnn" else {}
    rnn = RECURRENT[spec.cell](spec.feature, spec.hidden, num_layers=spec.layers,
                               bidirectional=spec.bidirectional, batch_first=spec.batch_first, **extra)
    x_dims = (spec.batch, spec.seq, spec.feature) if spec.batch_first else (spec.seq, spec.batch, spec.feature)
    return rnn, run_records(rnn, torch.randn(*x_dims))


def run_records(rnn, x) -> list[dict]:
    """Run `rnn` once on `x` from a zero state; the records of x, x_t, h0, out, h_n (and c_n)."""
    import torch

    dirs = 2 if rnn.bidirectional else 1
    seq_axis = "(batch, seq, " if rnn.batch_first else "(seq, batch, "
    batch = x.shape[0] if rnn.batch_first else x.shape[1]
    x_t = x[:, 0] if rnn.batch_first else x[0]  # (batch, feature): the input at one time step
    h0 = torch.zeros(rnn.num_layers * dirs, batch, rnn.hidden_size)
    lstm = isinstance(rnn, torch.nn.LSTM)
    with torch.no_grad():
        out, state = rnn(x, (h0, torch.zeros_like(h0)) if lstm else h0)
    h_n, c_n = state if lstm else (state, None)
    every_layer = "(layers x directions, batch, hidden)"
    tensors = [
        {"name": "x", "shape": _shape(x), "axes": seq_axis + "feature)", "note": "input, every step"},
        {"name": "x_t", "shape": _shape(x_t), "axes": "(batch, feature)", "note": "input at one step t"},
        {"name": "h0", "shape": _shape(h0), "axes": every_layer, "note": "initial state, every layer"},
        {"name": "out", "shape": _shape(out), "axes": seq_axis + "hidden x directions)",
         "note": "top layer, every step"},
        {"name": "h_n", "shape": _shape(h_n), "axes": every_layer, "note": "last step, every layer"},
    ]
    if c_n is not None:
        tensors.append({"name": "c_n", "shape": _shape(c_n), "axes": every_layer,
                        "note": "LSTM cell state, last step, every layer"})
    return tensors


def parameter_records(rnn, cell: str) -> list[dict]:
    return [{"name": name, "shape": _shape(p), "count": p.numel(), "note": _param_note(name, GATES[cell])}
            for name, p in rnn.named_parameters()]


def of_text(model, ids) -> dict:
    """The tensors of a trained classifier's own recurrent layers reading token ids (seq, batch),
    and its parameters: what `describe` shows, on a real text."""
    import torch

    with torch.no_grad():
        x = model.embedding(ids)  # (seq, batch, embed)
    return {"tensors": run_records(model.rnn, x), "parameters": parameter_records(model.rnn, model.config.cell)}


def _pipeline(spec: ShapesSpec) -> list[dict]:
    """The whole classifier, stage by stage, on token ids."""
    import torch

    from rnncli.model import RNNClassifier

    model = RNNClassifier(ModelConfig(cell=spec.cell, nonlinearity=spec.nonlinearity, layers=spec.layers,
                                      embed=spec.feature, hidden=spec.hidden,
                                      bidirectional=spec.bidirectional, dropout=0.0),
                          vocab_size=spec.vocab, num_classes=spec.classes).eval()
    ids = torch.randint(1, spec.vocab, (spec.seq, spec.batch))  # (seq, batch)
    with torch.no_grad():
        emb = model.embedding(ids)  # (seq, batch, embed)
        m_out, _ = model.rnn(emb)  # (seq, batch, hidden x dirs)
        pooled = model.pool(m_out)  # (batch, hidden x dirs)
        logits = model.head(pooled)  # (batch, classes)
    return [
        {"stage": "token ids", "shape": _shape(ids), "axes": "(seq, batch)", "parameters": 0},
        {"stage": "embedding", "shape": _shape(emb), "axes": "(seq, batch, embed)",
         "parameters": _count(model.embedding)},
        {"stage": f"{spec.cell} out", "shape": _shape(m_out), "axes": "(seq, batch, hidden x directions)",
         "parameters": _count(model.rnn)},
        {"stage": "pooled (last step)", "shape": _shape(pooled), "axes": "(batch, hidden x directions)",
         "parameters": 0},
        {"stage": "logits", "shape": _shape(logits), "axes": "(batch, classes)", "parameters": _count(model.head)},
    ]


def _weight_sharing(spec: ShapesSpec, rnn) -> dict:
    """A dense layer per word: the same stack, but its own weights at every step and no state passed
    on. Built on the meta device: only its parameter count is wanted."""
    from torch import nn

    dirs = 2 if spec.bidirectional else 1
    dense_per_step = nn.ModuleList(
        nn.Linear(spec.feature if layer == 0 else spec.hidden * dirs, spec.hidden, device="meta")
        for _ in range(spec.seq) for layer in range(spec.layers) for _ in range(dirs)
    )
    rnn_params, dense_params = _count(rnn), _count(dense_per_step)
    return {
        "rnn_parameters": rnn_params,
        "dense_per_step_parameters": dense_params,
        "dense_per_step_layers": len(dense_per_step),
        "ratio": dense_params / rnn_params,
        "note": "the RNN reuses one W_ih, W_hh and bias at every step and carries h forward; "
                "dense layers per word need their own weights at each step and see no context",
    }


def _param_note(name: str, gates: int) -> str:
    kind = name.split("_")[0] + "_" + name.split("_")[1]  # weight_ih, weight_hh, bias_ih, bias_hh
    what = {"weight_ih": "input -> hidden", "weight_hh": "hidden -> hidden",
            "bias_ih": "input bias", "bias_hh": "hidden bias"}[kind]
    layer = name.split("_l")[1]
    direction = " (reverse)" if layer.endswith("_reverse") else ""
    stacked = f", {gates} gates stacked" if gates > 1 else ""
    return f"{what}, layer {layer.removesuffix('_reverse')}{direction}{stacked}"
