"""The fused CPU recurrence gives nn.RNN's and nn.GRU's outputs and gradients, for every layout it
covers (packed inference, which covers the lstm too, is checked in test_model)."""

import pytest
import torch

from rnncli import recurrence


def assert_matches_torch(rnn: torch.nn.Module) -> None:
    """recurrence.run gives `rnn`'s own out, h_n and gradients (of x and of every weight) on 7 steps of 3 texts."""
    x = torch.randn(7, 3, 11, requires_grad=True)  # (seq, batch, feature)
    weights = torch.randn(7, 3, 13 * (2 if rnn.bidirectional else 1))  # a loss that touches every step

    out_ref, h_ref = rnn(x)
    (out_ref * weights).sum().backward()
    grads_ref = {n: p.grad.clone() for n, p in rnn.named_parameters()}
    x_grad_ref = x.grad.clone()
    rnn.zero_grad()
    x.grad = None

    out, h_n = recurrence.run(rnn, x)
    (out * weights).sum().backward()
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h_n, h_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(x.grad, x_grad_ref, atol=1e-5, rtol=1e-4)
    for name, p in rnn.named_parameters():
        torch.testing.assert_close(p.grad, grads_ref[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_nn_rnn_forward_and_backward(nonlinearity, bidirectional, layers, bias):
    torch.manual_seed(0)
    assert_matches_torch(torch.nn.RNN(11, 13, num_layers=layers, nonlinearity=nonlinearity,
                                      bidirectional=bidirectional, bias=bias))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_nn_gru_forward_and_backward(bidirectional, layers, bias):
    torch.manual_seed(0)
    rnn = torch.nn.GRU(11, 13, num_layers=layers, bidirectional=bidirectional, bias=bias)
    for p in rnn.parameters():  # biases far from zero, so a gate that ignores one fails
        torch.nn.init.uniform_(p, -0.5, 0.5)
    assert_matches_torch(rnn)


def test_a_loss_on_the_final_state_alone_trains_every_step():
    """The classifier's `last` pooling reads one step; the gradient must still reach all seven."""
    torch.manual_seed(0)
    rnn = torch.nn.GRU(11, 13)
    x = torch.randn(7, 3, 11, requires_grad=True)
    rnn(x)[0][-1].sum().backward()
    ref = x.grad.clone()
    x.grad = None
    recurrence.run(rnn, x)[0][-1].sum().backward()
    torch.testing.assert_close(x.grad, ref, atol=1e-5, rtol=1e-4)
    assert x.grad[0].abs().sum() > 0


def test_rnn_and_gru_on_cpu_seq_first_are_fused():
    x = torch.randn(7, 3, 11)
    assert recurrence.supported(torch.nn.RNN(11, 13), x)
    assert recurrence.supported(torch.nn.GRU(11, 13), x)
    assert not recurrence.supported(torch.nn.LSTM(11, 13), x)  # torch's own (oneDNN's) lstm is faster here
    assert not recurrence.supported(torch.nn.RNN(11, 13, batch_first=True), x)


@pytest.mark.parametrize("cell", [torch.nn.RNN, torch.nn.GRU])
def test_inference_mode_runs_forward_only(cell):
    rnn = cell(11, 13, bidirectional=True)
    x = torch.randn(7, 3, 11)
    with torch.inference_mode():
        out, state = recurrence.run(rnn, x)
        ref, state_ref = rnn(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(state, state_ref, atol=1e-5, rtol=1e-4)
