"""A fused CPU recurrence for the plain RNN cell, with the same parameters and results as `nn.RNN`.

On the CPU, `nn.RNN` records a small graph per time step and, going backward, computes the weight
gradients one step at a time. Here each layer is one autograd Function: the input projection for all
steps is one matrix product, the loop runs only h_t = act(xW_ih^T + b + h_{t-1}W_hh^T) forward and
the matching loop backward, and the weight gradients are summed over all steps in one product each.
The weights stay in the `nn.RNN` module (same names, same state dict); only the arithmetic differs.
"""

from __future__ import annotations

import torch
from torch import nn

from rnncli.dropout import locked_dropout


def _steps(x, w_ih, w_hh, bias, relu: bool) -> torch.Tensor:
    """h_t = act(x_t W_ih^T + b + h_{t-1} W_hh^T) for every t from h_{-1} = 0: (seq, batch, in) -> (seq, batch, hidden)."""
    seq, batch, _ = x.shape
    hidden = w_hh.shape[0]
    # every step's input term at once; the loop then adds h_{t-1} W_hh^T in place
    out = torch.addmm(bias, x.reshape(seq * batch, -1), w_ih.t()).view(seq, batch, hidden)  # (seq, batch, hidden)
    w_hh_t = w_hh.t()
    act = torch.relu_ if relu else torch.tanh_
    steps = out.unbind(0)  # views, (batch, hidden) each
    h = act(steps[0])  # the zero start state adds nothing
    for step in steps[1:]:
        h = act(step.addmm_(h, w_hh_t))
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


def layer_weights(rnn: nn.RNN, suffix: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W_ih, W_hh, b_ih and b_hh of one layer and direction (suffix `_l0`, `_l1_reverse`, ...)."""
    w_ih, w_hh = getattr(rnn, "weight_ih" + suffix), getattr(rnn, "weight_hh" + suffix)
    if not rnn.bias:
        zero = w_hh.new_zeros(rnn.hidden_size)  # needs no gradient, so one tensor serves as both
        return w_ih, w_hh, zero, zero
    return w_ih, w_hh, getattr(rnn, "bias_ih" + suffix), getattr(rnn, "bias_hh" + suffix)


def supported(rnn: nn.Module, x: torch.Tensor) -> bool:
    """The fused path covers the plain RNN cell on CPU tensors (cuDNN already fuses on CUDA)."""
    return isinstance(rnn, nn.RNN) and x.device.type == "cpu" and not rnn.batch_first and not rnn.proj_size


def run_packed(rnn: nn.RNN, x: torch.Tensor, batch_sizes: list[int]) -> torch.Tensor:
    """Inference on packed texts, one direction: x (tokens, features) holds step 0 of every text,
    then step 1 of the texts that long, ... with texts sorted longest first, as in a PackedSequence;
    batch_sizes[t] texts run at step t. Returns `out` in the same layout: (tokens, hidden).

    No padding is computed, and a whole data set takes only as many steps as its longest text.
    """
    relu = rnn.nonlinearity == "relu"
    act = torch.relu_ if relu else torch.tanh_
    starts = [0]
    for n in batch_sizes[:-1]:
        starts.append(starts[-1] + n)
    for layer in range(rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = layer_weights(rnn, f"_l{layer}")
        out = torch.addmm(b_ih + b_hh, x, w_ih.t())  # (tokens, hidden): every step's input term at once
        w_hh_t = w_hh.t()
        act(out[: batch_sizes[0]])  # h_0 = 0
        for t in range(1, len(batch_sizes)):
            n = batch_sizes[t]
            act(out[starts[t]: starts[t] + n].addmm_(out[starts[t - 1]: starts[t - 1] + n], w_hh_t))  # (n, hidden)
        x = out
    return x


def run(rnn: nn.RNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as `rnn(x)` with h0 = 0: out (seq, batch, hidden x dirs), h_n (layers x dirs, batch, hidden)."""
    relu = rnn.nonlinearity == "relu"
    dirs = 2 if rnn.bidirectional else 1
    finals = []
    layer_input = x
    for layer in range(rnn.num_layers):
        outputs = []
        for d in range(dirs):
            w_ih, w_hh, b_ih, b_hh = layer_weights(rnn, f"_l{layer}" + ("_reverse" if d else ""))
            seq_in = layer_input.flip(0) if d else layer_input  # the reverse direction reads backwards
            if torch.is_grad_enabled():
                out = _Layer.apply(seq_in, w_ih, w_hh, b_ih, b_hh, relu)  # (seq, batch, hidden)
            else:  # inference: no graph, nothing saved for backward
                out = _steps(seq_in, w_ih, w_hh, b_ih + b_hh, relu)
            finals.append(out[-1])
            outputs.append(out.flip(0) if d else out)
        layer_input = outputs[0] if dirs == 1 else torch.cat(outputs, dim=2)  # (seq, batch, hidden x dirs)
        if layer < rnn.num_layers - 1:
            layer_input = locked_dropout(layer_input, rnn.dropout, rnn.training)
    return layer_input, torch.stack(finals)  # h_n: (layers x dirs, batch, hidden)
