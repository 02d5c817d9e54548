"""The fused CPU recurrence gives nn.RNN's outputs and gradients, for every layout it covers."""

import pytest
import torch

from rnncli import recurrence


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_nn_rnn_forward_and_backward(nonlinearity, bidirectional, layers, bias):
    torch.manual_seed(0)
    rnn = torch.nn.RNN(11, 13, num_layers=layers, nonlinearity=nonlinearity, bidirectional=bidirectional, bias=bias)
    x = torch.randn(7, 3, 11, requires_grad=True)  # (seq, batch, feature)
    weights = torch.randn(7, 3, 13 * (2 if bidirectional else 1))  # a loss that touches every step

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


def test_only_plain_rnn_on_cpu_is_fused():
    x = torch.randn(7, 3, 11)
    assert recurrence.supported(torch.nn.RNN(11, 13), x)
    assert not recurrence.supported(torch.nn.GRU(11, 13), x)
    assert not recurrence.supported(torch.nn.RNN(11, 13, batch_first=True), x)


def test_inference_mode_runs_forward_only():
    rnn = torch.nn.RNN(11, 13)
    x = torch.randn(7, 3, 11)
    with torch.inference_mode():
        out, h_n = recurrence.run(rnn, x)
        ref, h_ref = rnn(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h_n, h_ref, atol=1e-5, rtol=1e-4)
