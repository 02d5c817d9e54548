"""A fused CPU recurrence for the rnn and gru cells, with the same parameters and results as
`nn.RNN` and `nn.GRU`, and packed inference for every cell.

On the CPU, `nn.RNN` and `nn.GRU` record a small graph per time step and, going backward, compute
the weight gradients one step at a time. Here each layer and direction is one autograd Function: the
input projection for all steps is one matrix product, the loop runs only what depends on h_{t-1}
forward (one h W_hh^T product and the gate math, in place) and the matching loop backward, and the
weight gradients are summed over all steps in one product each. The weights stay in the torch module
(same names, same state dict); only the arithmetic differs. `nn.LSTM` trains on torch's own path,
which on the CPU is oneDNN's fused lstm and faster than this loop would be.

`run_packed` runs inference on texts packed without padding, for the rnn, the gru and the lstm, in
one or two directions. Gate order is torch's: r, z, n for the gru, i, f, g, o for the lstm.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from rnncli.dropout import locked_dropout


def _numpy(x: torch.Tensor) -> np.ndarray | None:
    """x's own memory as a numpy array (a CPU float tensor outside autograd), else None."""
    if x.device.type != "cpu" or x.requires_grad or x.dtype not in (torch.float32, torch.float64):
        return None
    return x.numpy()


def tanh_(x: torch.Tensor, a: np.ndarray | None = None) -> torch.Tensor:
    """tanh in place. On the CPU numpy's vectorized tanh (within about 1e-7 of the exact value, as
    torch's) writes into the tensor's own memory: 2-3x faster than torch.tanh_ on a (16-64, 128)
    step on this project's machines, where torch's tanh costs about as much as the step's matrix
    product. `a`: x's `_numpy` view, where the caller has it already."""
    a = _numpy(x) if a is None else a
    if a is None:
        return x.tanh_()
    np.tanh(a, out=a)
    return x


def _first(rows: torch.Tensor, n: int) -> torch.Tensor:
    """The first n of a step's rows (the texts still running at the next step)."""
    return rows if rows.shape[0] == n else rows[:n]


def _rnn_loop(steps, arrays, w_hh_t: torch.Tensor, relu: bool) -> None:
    """h_t = act(terms_t + h_{t-1} W_hh^T) in place over each step's rows `steps` (n_t, hidden), n_t
    never growing (a padded batch, or packed texts longest first); `arrays`: their `_numpy` views
    for tanh, or None."""
    for t, rows in enumerate(steps):
        if t:  # the zero start state adds nothing at step 0
            rows.addmm_(_first(steps[t - 1], rows.shape[0]), w_hh_t)  # (n, hidden)
        if relu:
            rows.relu_()
        else:
            tanh_(rows, None if arrays is None else arrays[t])


def _steps(x, w_ih, w_hh, bias, relu: bool) -> torch.Tensor:
    """h_t = act(x_t W_ih^T + b + h_{t-1} W_hh^T) for every t from h_{-1} = 0: (seq, batch, in) -> (seq, batch, hidden)."""
    seq, batch, _ = x.shape
    hidden = w_hh.shape[0]
    # every step's input term at once; the loop then adds h_{t-1} W_hh^T in place
    out = torch.addmm(bias, x.reshape(seq * batch, -1), w_ih.t()).view(seq, batch, hidden)  # (seq, batch, hidden)
    _rnn_loop(out.unbind(0), None if relu else _numpy(out), w_hh.t(), relu)  # steps: (batch, hidden) views
    return out


class _Layer(torch.autograd.Function):
    """One direction of one layer from a zero start state: x (seq, batch, in) -> H (seq, batch, hidden).
    For a layer without biases, b_ih and b_hh are zero tensors that need no gradient."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, relu: bool):
        # the two biases are summed in here, not by autograd: one graph node fewer per layer
        out = _steps(x, w_ih, w_hh, b_ih + b_hh, relu)
        ctx.save_for_backward(x, w_ih, w_hh, out)
        ctx.relu = relu
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_ih, w_hh, out = ctx.saved_tensors
        seq, batch, hidden = out.shape
        # d act / d z for every step at once: relu' = [h > 0], tanh' = 1 - h^2
        slope = (out > 0).to(out.dtype) if ctx.relu else 1 - out * out  # (seq, batch, hidden)
        # dz starts as each step's own gradient; the loop adds what step t+1 sends back, in place
        # (an in-place addmm_ skips the copy that addmm(..., out=) makes of its first argument)
        dz = grad_out.clone(memory_format=torch.contiguous_format)  # (seq, batch, hidden)
        rows, slopes = dz.unbind(0), slope.unbind(0)  # views, (batch, hidden) each
        rows[-1].mul_(slopes[-1])
        for t in range(seq - 2, -1, -1):  # dL/dh_t = its own gradient + what step t+1 sends back
            rows[t].addmm_(rows[t + 1], w_hh).mul_(slopes[t])
        flat_dz = dz.view(seq * batch, hidden)
        # h_{t-1} for every t > 0; step 0 saw the zero state, which adds nothing to dL/dW_hh
        grad_w_hh = flat_dz[batch:].t() @ out[:-1].reshape(-1, hidden)  # (hidden, hidden), summed over steps
        grad_w_ih = flat_dz.t() @ x.reshape(seq * batch, -1)  # (hidden, in)
        grad_bias = flat_dz.sum(0)  # the same for b_ih and b_hh
        grad_x = (flat_dz @ w_ih).view_as(x) if ctx.needs_input_grad[0] else None
        return grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_bias, None


def _gru_steps(x, w_ih, w_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gru from h_{-1} = 0: x (seq, batch, in) -> out (seq, batch, hidden), with what the
    backward pass reads: r and z after their activations (seq, batch, 2 hidden), n (seq, batch,
    hidden) and the recurrent term of n before r scales it, h_{t-1} W_hn^T + b_hn (seq, batch, hidden).

        r, z = sigmoid(x W_ir,z^T + b_ir,z + h W_hr,z^T + b_hr,z)
        n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn));  h' = n + z * (h - n)

    Each step's three recurrent terms land in one row of `rec` (batch, 3 hidden) that already holds
    the input terms of r and z and b_hn, so a step is one product and four in-place operations."""
    seq, batch, _ = x.shape
    hidden = w_hh.shape[1]
    flat = x.reshape(seq * batch, -1)
    rec = x.new_empty(seq, batch, 3 * hidden)  # [r, z pre-activations | h W_hn^T + b_hn]
    torch.addmm(b_ih[: 2 * hidden] + b_hh[: 2 * hidden], flat, w_ih[: 2 * hidden].t(),
                out=rec[..., : 2 * hidden].view(seq * batch, 2 * hidden))
    rec[..., 2 * hidden:] = b_hh[2 * hidden:]  # h_{-1} = 0 leaves b_hn
    n = torch.addmm(b_ih[2 * hidden:], flat, w_ih[2 * hidden:].t()).view(seq, batch, hidden)  # input term of n
    out = x.new_empty(seq, batch, hidden)
    w_hh_t = w_hh.t()
    n_arrays = _numpy(n)
    steps = zip(rec.unbind(0), rec[..., : 2 * hidden].unbind(0), rec[..., :hidden].unbind(0),
                rec[..., hidden: 2 * hidden].unbind(0), rec[..., 2 * hidden:].unbind(0), n.unbind(0), out.unbind(0))
    h = None
    for t, (row, rz, r, z, hn, n_t, h_t) in enumerate(steps):  # (batch, 3 hidden), (batch, 2 hidden), (batch, hidden)...
        if h is not None:
            row.addmm_(h, w_hh_t)
        rz.sigmoid_()
        n_t.addcmul_(r, hn)
        tanh_(n_t, None if n_arrays is None else n_arrays[t])
        if h is None:  # h = 0: n - z * n
            torch.addcmul(n_t, z, n_t, value=-1, out=h_t)
        else:  # h' = n + z * (h - n)
            torch.lerp(n_t, h, z, out=h_t)
        h = h_t
    return out, rec[..., : 2 * hidden], n, rec[..., 2 * hidden:]


def _gru_step(g: torch.Tensor, rec: torch.Tensor | None, h: torch.Tensor | None, out: torch.Tensor,
              b_hn: torch.Tensor) -> None:
    """One gru step of packed inference for n texts, in place: the input terms g (n, 3 hidden),
    which hold b_hr and b_hz already, become r, z, n after their activations, given rec = h W_hh^T
    (n, 3 hidden; None for h = 0); the step adds b_hn, which r scales. h' goes to out (n, hidden).
    Every tensor may carry a leading direction axis, (2, n, ...), with b_hn (2, 1, hidden): both
    directions in one step. The formulas are `_gru_steps`'s."""
    hidden = out.shape[-1]
    if rec is not None:
        g[..., : 2 * hidden].add_(rec[..., : 2 * hidden])
    g[..., : 2 * hidden].sigmoid_()
    r, z, n = g.chunk(3, -1)
    n.addcmul_(r, b_hn if rec is None else rec[..., 2 * hidden:].add_(b_hn))
    tanh_(n)
    if h is None:  # h = 0: n - z * n
        torch.addcmul(n, z, n, value=-1, out=out)
    else:  # h' = n + z * (h - n)
        torch.lerp(n, h, z, out=out)


class _GRULayer(torch.autograd.Function):
    """One direction of one gru layer from a zero start state: x (seq, batch, in) -> (seq, batch, hidden)."""

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh):
        out, rz, n, hn = _gru_steps(x, w_ih, w_hh, b_ih, b_hh)
        ctx.save_for_backward(x, w_ih, w_hh, out, rz, n, hn)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_ih, w_hh, out, rz, n, hn = ctx.saved_tensors
        seq, batch, hidden = out.shape
        # dL/dh_t times these gives, for step t, the gradients of r * (h W_hn^T + b_hn), of the
        # pre-activations of r, z and n, in that order; a step is then one broadcast product
        factors = _gru_factors(out, rz, n, hn)  # (seq, batch, 4, hidden)
        grads = torch.empty_like(factors)  # (seq, batch, 4, hidden)
        flat = grads.view(seq * batch, 4 * hidden)
        d_in = flat[:, hidden:]  # of the input terms: r, z, n
        d_rec = flat[:, : 3 * hidden]  # of the recurrent terms, in the order n, r, z
        w_nrz = torch.cat([w_hh[2 * hidden:], w_hh[: 2 * hidden]])  # W_hh's rows in d_rec's order
        factor, grad, rec = factors.unbind(0), grads.unbind(0), d_rec.view(seq, batch, -1).unbind(0)  # per step
        z, own = rz[..., hidden:].unbind(0), grad_out.unbind(0)  # (batch, hidden) per step
        dh = own[-1]  # (batch, hidden)
        for t in range(seq - 1, -1, -1):
            torch.mul(dh[:, None], factor[t], out=grad[t])  # (batch, 4, hidden)
            if t:  # dL/dh_{t-1}: its own gradient, through z, and through the recurrent product
                dh = torch.addcmul(own[t - 1], dh, z[t]).addmm_(rec[t], w_nrz)
        grad_w_ih = d_in.t() @ x.reshape(seq * batch, -1)  # (3 hidden, in), summed over steps
        grad_nrz = d_rec[batch:].t() @ out[:-1].reshape(-1, hidden)  # step 0 saw h = 0
        grad_x = (d_in @ w_ih).view_as(x) if ctx.needs_input_grad[0] else None
        sums = flat.sum(0)  # (4 hidden,)
        return (grad_x, grad_w_ih, _nrz_to_rzn(grad_nrz, hidden), sums[hidden:],
                _nrz_to_rzn(sums[: 3 * hidden], hidden))


def _gru_factors(out, rz, n, hn) -> torch.Tensor:
    """For every step at once, what dL/dh_t multiplies into (see `_GRULayer.backward`)."""
    seq, batch, hidden = out.shape
    r, z = rz.chunk(2, -1)
    factors = out.new_empty(seq, batch, 4, hidden)
    to_nr, to_r, to_z, to_n = factors.unbind(2)  # (seq, batch, hidden) views
    keep = 1 - z
    torch.addcmul(keep, keep, n * n, value=-1, out=to_n)  # d n_pre = dh (1 - z)(1 - n^2)
    torch.mul(to_n, r, out=to_nr)  # d (r * hn) = d n_pre * r
    torch.mul(to_nr, hn, out=to_r).addcmul_(to_r, r, value=-1)  # d r_pre = d n_pre * hn * r (1 - r)
    torch.sub(out[:-1], n[1:], out=to_z[1:])  # h_{t-1} - n; h_{-1} = 0
    torch.neg(n[0], out=to_z[0])
    to_z.mul_(z).mul_(keep)  # d z_pre = dh (h_{t-1} - n) z (1 - z)
    return factors


def _nrz_to_rzn(rows: torch.Tensor, hidden: int) -> torch.Tensor:
    """Rows or entries in the gate order n, r, z back in torch's order r, z, n."""
    return torch.cat([rows[hidden:], rows[:hidden]])


def layer_weights(rnn: nn.Module, suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_ih, W_hh, b_ih and b_hh of one layer and direction (suffix `_l0`, `_l1_reverse`, ...)."""
    w_ih, w_hh = getattr(rnn, "weight_ih" + suffix), getattr(rnn, "weight_hh" + suffix)
    if not rnn.bias:
        zero = w_hh.new_zeros(w_hh.shape[0])  # needs no gradient, so one tensor serves as both
        return w_ih, w_hh, zero, zero
    return w_ih, w_hh, getattr(rnn, "bias_ih" + suffix), getattr(rnn, "bias_hh" + suffix)


def supported(rnn: nn.Module, x: torch.Tensor) -> bool:
    """The fused path covers the rnn and gru modules on CPU tensors (cuDNN already fuses on CUDA)."""
    return isinstance(rnn, (nn.RNN, nn.GRU)) and x.device.type == "cpu" and not rnn.batch_first


def input_terms(rnn: nn.Module, suffix: str, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x W_ih^T plus the biases that add to it, for one layer and direction: (rows, in) ->
    (rows, gates x hidden), into `out` if given. The gru keeps b_hn apart (r scales it): its b_hr
    and b_hz are added."""
    w_ih, _, b_ih, b_hh = layer_weights(rnn, suffix)
    if isinstance(rnn, nn.GRU):
        hidden = b_hh.shape[0] // 3
        bias = torch.cat([b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden:]])
    else:
        bias = b_ih + b_hh
    return torch.addmm(bias, x, w_ih.t(), out=out)  # out=None: a new tensor


class Packed:
    """Where each step's rows lie in packed texts (texts sorted longest first, as in a
    PackedSequence): step t holds rows starts[t] .. starts[t] + sizes[t], one per text that long.

    The index arithmetic runs in numpy, a microsecond an operation where a torch operation on a few
    dozen numbers costs 5-10 (a served request's batch is that small); each index reaches torch
    once, as a tensor over the same memory."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes
        self._starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64)  # (steps,); torch indexes by int64
        self.starts = self._starts.tolist()

    def row(self, step: np.ndarray, text: np.ndarray) -> torch.Tensor:
        """The rows of (step, text) pairs."""
        return torch.from_numpy(self._starts[step] + text)

    @functools.cached_property
    def _step(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.sizes), dtype=np.int64), self.sizes)  # (tokens,)

    @functools.cached_property
    def _text(self) -> np.ndarray:
        return np.arange(len(self._step)) - self._starts[self._step]  # (tokens,)

    @functools.cached_property
    def _lengths(self) -> np.ndarray:
        # text i runs at every step with more than i texts; sizes never grow
        return np.searchsorted(-np.asarray(self.sizes), -np.arange(self.sizes[0]))  # (texts,)

    @property
    def text(self) -> torch.Tensor:
        """(tokens,) the text of every row, numbered longest first."""
        return torch.from_numpy(self._text)

    @property
    def lengths(self) -> torch.Tensor:
        """(texts,) each text's length, longest first."""
        return torch.from_numpy(self._lengths)

    def prev_rows(self) -> torch.Tensor:
        """(tokens,) the row of the same text's previous token, -1 at its first."""
        step = self._step
        return torch.from_numpy(np.where(step > 0, self._starts[np.maximum(step - 1, 0)] + self._text, -1))

    def last_rows(self) -> torch.Tensor:
        """(texts,) the row of each text's last token."""
        return self.row(self._lengths - 1, np.arange(self.sizes[0]))

    @functools.cached_property
    def _reversal(self) -> torch.Tensor:
        return self.row(self._lengths[self._text] - 1 - self._step, self._text)

    def side_by_side(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Two tensors of one value per row (tokens,) -> (2 tokens,): step t's n values of `first`,
        then its n of `second`, step after step, so that a step's values for both lie together."""
        at = self._starts[self._step] + np.arange(len(self._step))  # 2 start_t + k for the k-th row of step t
        out = np.empty(2 * len(at), dtype=np.int64)
        out[at], out[at + np.asarray(self.sizes)[self._step]] = first.numpy(), second.numpy()
        return torch.from_numpy(out)

    def reversal(self) -> torch.Tensor:
        """(tokens,) the row of the same text's token at step length - 1 - t, for every row:
        the packed layout of every text read backwards (its own inverse)."""
        return self._reversal


def _packed_direction(rnn: nn.Module, suffix: str, terms: torch.Tensor, packed: Packed) -> torch.Tensor:
    """One layer and direction over packed input terms (tokens, gates x hidden), in place: h
    (tokens, hidden) in the same layout. Each step runs only the texts that long, on the first
    rows of the step before."""
    _, w_hh, _, b_hh = layer_weights(rnn, suffix)
    w_hh_t, hidden = w_hh.t(), w_hh.shape[1]
    sizes = packed.sizes
    if isinstance(rnn, nn.RNN):
        relu = rnn.nonlinearity == "relu"
        flat = None if relu else _numpy(terms)
        arrays = None if flat is None else [flat[start: start + n] for start, n in zip(packed.starts, sizes)]
        _rnn_loop(terms.split(sizes), arrays, w_hh_t, relu)  # each step's rows: one call, not a slice per step
        return terms
    out = terms.new_empty(len(terms), hidden)
    cells = terms.new_empty(len(terms), hidden) if isinstance(rnn, nn.LSTM) else None
    gates, hs = terms.split(sizes), out.split(sizes)  # each step's rows: one call, not slices per step
    cs = cells.split(sizes) if cells is not None else None
    for t, g in enumerate(gates):  # g: (n, gates x hidden)
        h = _first(hs[t - 1], sizes[t]) if t else None  # h_{t-1} of the texts still running
        if cells is None:  # gru; the input terms hold b_hr and b_hz (see `input_terms`)
            _gru_step(g, None if h is None else torch.mm(h, w_hh_t), h, hs[t], b_hh[2 * hidden:])
        else:  # lstm
            if t:
                g.addmm_(h, w_hh_t)
            g[:, : 2 * hidden].sigmoid_()
            g[:, 3 * hidden:].sigmoid_()
            i, f, c, o = g.chunk(4, 1)
            tanh_(c)
            torch.mul(i, c, out=cs[t])
            if t:
                cs[t].addcmul_(f, _first(cs[t - 1], sizes[t]))
            torch.mul(o, cs[t].tanh(), out=hs[t])
    return out


def _packed_gru_pair(rnn: nn.GRU, layer: int, terms: torch.Tensor | None, packed: Packed,
                     table: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Both directions of a bidirectional gru layer over packed texts in one loop: a text read
    backwards has its own length, so step t runs the same texts in both directions, and each step
    is one batched product and one run of the gate math for the two. The input terms come as terms
    (2, tokens, 3 hidden), the reverse direction's in its reading order (see `run_packed`), or are
    looked up a step at a time from `table` (see `run_packed`), so that a whole pass's terms are
    never held at once. Returns h (2, tokens, hidden) in the same layouts."""
    weights = [layer_weights(rnn, f"_l{layer}" + suffix) for suffix in ("", "_reverse")]
    w_hh_t = torch.stack([w[1] for w in weights]).transpose(1, 2)  # (2, hidden, 3 hidden)
    hidden = w_hh_t.shape[1]
    b_hn = torch.stack([w[3][2 * hidden:] for w in weights])[:, None]  # (2, 1, hidden)
    tokens = len(packed.text)
    if table is not None:
        rows, positions = table  # (2, words, 3 hidden), (tokens,)
        flat = rows.view(-1, 3 * hidden)  # the reverse direction's rows after the forward one's
        lookups = packed.side_by_side(positions, positions.index_select(0, packed.reversal()) + rows.shape[1])
        scratch = flat.new_empty(2 * packed.sizes[0], 3 * hidden)  # (2 n, 3 hidden), reused by every step
    out = w_hh_t.new_empty(2, tokens, hidden)
    h = None
    for start, n in zip(packed.starts, packed.sizes):
        if table is None:
            g = terms[:, start: start + n]  # (2, n, 3 hidden)
        else:
            g = torch.index_select(flat, 0, lookups[2 * start: 2 * (start + n)], out=scratch[: 2 * n]).view(2, n, -1)
        h = None if h is None else h[:, :n]  # h_{t-1} of the texts still running
        step = out[:, start: start + n]  # (2, n, hidden)
        _gru_step(g, None if h is None else torch.bmm(h, w_hh_t), h, step, b_hn)
        h = step
    return out


def run_packed(rnn: nn.Module, x: torch.Tensor | None, packed: Packed,
               table: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Inference on packed texts: x (tokens, features) holds step 0 of every text, then step 1 of
    the texts that long, ... with texts sorted longest first, as in a PackedSequence (see `Packed`).
    Returns `out` in the same layout: (tokens, hidden x dirs). `table`, if given, holds the first
    layer's input terms for a set of words per direction, rows (dirs, words, gates x hidden) (see
    `input_terms`), and each token's row in it, (tokens,); x is then not read.

    No padding is computed, and a whole data set takes only as many steps as its longest text.
    """
    dirs = 2 if rnn.bidirectional else 1
    back = packed.reversal() if dirs == 2 else None  # (tokens,) its own inverse
    pair = dirs == 2 and isinstance(rnn, nn.GRU)  # both directions in one loop
    for layer in range(rnn.num_layers):
        suffixes = [f"_l{layer}", f"_l{layer}_reverse"][:dirs]
        lookup = table if layer == 0 else None
        if lookup is not None and pair:
            terms = None  # looked up a step at a time
        elif lookup is not None:  # each token's row; the reverse direction's in its reading order
            rows, positions = lookup
            terms = rows.new_empty(dirs, len(positions), rows.shape[2])  # (dirs, tokens, gates x hidden)
            for d in range(dirs):
                torch.index_select(rows[d], 0, positions.index_select(0, back) if d else positions, out=terms[d])
        else:  # the reverse direction reads each text backwards: its rows gathered in that order
            terms = x.new_empty(dirs, len(x), getattr(rnn, "weight_ih" + suffixes[0]).shape[0])
            for d, suffix in enumerate(suffixes):
                input_terms(rnn, suffix, x.index_select(0, back) if d else x, out=terms[d])
        if pair:
            outputs = _packed_gru_pair(rnn, layer, terms, packed, lookup)  # (2, tokens, hidden)
        else:
            outputs = [_packed_direction(rnn, suffix, terms[d], packed) for d, suffix in enumerate(suffixes)]
        if dirs == 1:
            x = outputs[0]
        else:  # both directions side by side, the reverse one put back in the forward layout
            hidden = outputs[0].shape[1]
            x = outputs[0].new_empty(len(outputs[0]), 2 * hidden)  # (tokens, 2 hidden)
            x[:, :hidden] = outputs[0]
            x[:, hidden:].index_copy_(0, back, outputs[1])
    return x


def _direction(rnn: nn.Module, x: torch.Tensor, suffix: str) -> torch.Tensor:
    """One layer and direction over x (seq, batch, in) read forward: its out (seq, batch, hidden)."""
    w_ih, w_hh, b_ih, b_hh = layer_weights(rnn, suffix)
    training = torch.is_grad_enabled()  # inference builds no graph and saves nothing for backward
    if isinstance(rnn, nn.GRU):
        return _GRULayer.apply(x, w_ih, w_hh, b_ih, b_hh) if training else _gru_steps(x, w_ih, w_hh, b_ih, b_hh)[0]
    relu = rnn.nonlinearity == "relu"
    if training:
        return _Layer.apply(x, w_ih, w_hh, b_ih, b_hh, relu)
    return _steps(x, w_ih, w_hh, b_ih + b_hh, relu)


def run(rnn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `rnn(x)` with h0 = 0: out (seq, batch, hidden x dirs), h_n (layers x dirs, batch, hidden)."""
    dirs = 2 if rnn.bidirectional else 1
    finals = []
    layer_input = x
    for layer in range(rnn.num_layers):
        outputs = []
        for d in range(dirs):
            seq_in = layer_input.flip(0) if d else layer_input  # the reverse direction reads backwards
            out = _direction(rnn, seq_in, f"_l{layer}" + ("_reverse" if d else ""))  # (seq, batch, hidden)
            finals.append(out[-1])
            outputs.append(out.flip(0) if d else out)
        layer_input = outputs[0] if dirs == 1 else torch.cat(outputs, dim=2)  # (seq, batch, hidden x dirs)
        if layer < rnn.num_layers - 1:
            layer_input = locked_dropout(layer_input, rnn.dropout, rnn.training)
    return layer_input, torch.stack(finals)  # h_n: (layers x dirs, batch, hidden)
