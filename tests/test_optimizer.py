"""RowAdamW: AdamW's updates, computed only for the embedding rows a batch uses."""

import pytest
import torch

from rnncli.optimizer import RowAdamW

VOCAB, EMBED = 37, 11


def train_both(steps: int, weight_decay: float, lr: float = 0.01, later_lr: float | None = None, fused: bool = False):
    """The same gradients through torch's AdamW and through RowAdamW; returns both (weights, state dicts).
    With `later_lr`, the rate changes between epochs of 20 steps, as `--lr-decay` does: after a flush."""
    torch.manual_seed(0)
    start_embedding, start_other = torch.randn(VOCAB, EMBED), torch.randn(5, 3)
    results = []
    for lazy in (False, True):
        embedding = torch.nn.Parameter(start_embedding.clone())
        other = torch.nn.Parameter(start_other.clone())
        kw = {"lr": lr, "weight_decay": weight_decay, "fused": fused}
        optimizer = RowAdamW([embedding, other], embedding, **kw) if lazy else torch.optim.AdamW([embedding, other], **kw)
        draw = torch.Generator().manual_seed(1)
        for step in range(steps):
            if later_lr is not None and step and step % 20 == 0:
                if lazy:
                    optimizer.flush()  # what train() does at each epoch's end
                for group in optimizer.param_groups:
                    group["lr"] = later_lr * step / steps
            # rows 25-36 unused for the first half, then used now and then: long gaps, short gaps
            high = 25 if step < steps // 2 else VOCAB
            rows = torch.unique(torch.randint(1, high, (6,), generator=draw))
            grad = torch.zeros(VOCAB, EMBED)
            grad[rows] = torch.randn(len(rows), EMBED, generator=draw) * 1e-2
            embedding.grad, other.grad = grad, torch.randn(5, 3, generator=draw)
            optimizer.rows = rows
            optimizer.step()
        state = optimizer.state_dict()  # RowAdamW brings every row up to date first
        results.append((embedding.detach().clone(), other.detach().clone(), state))
    return results


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_row_adamw_makes_adamws_updates(weight_decay, fused):
    """fused: after the first step, RowAdamW runs torch's fused kernel itself, on everything at once."""
    (dense, dense_other, dense_state), (lazy, lazy_other, lazy_state) = train_both(80, weight_decay, fused=fused)
    assert not torch.allclose(dense, train_both(0, weight_decay)[0][0])  # the rows did move
    torch.testing.assert_close(lazy_other, dense_other, rtol=0, atol=0)  # the other parameters: AdamW's own kernel
    # the rows' skipped steps are summed in closed form: equal up to rounding and eps
    torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-5)
    for name in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(lazy_state["state"][0][name], dense_state["state"][0][name], rtol=1e-4, atol=1e-9)
    assert float(lazy_state["state"][0]["step"]) == float(dense_state["state"][0]["step"]) == 80


@pytest.mark.parametrize("fused", [False, True])
def test_row_adamw_follows_a_rate_changed_between_epochs(fused):
    (dense, _, dense_state), (lazy, _, lazy_state) = train_both(80, 0.1, later_lr=0.004, fused=fused)
    (constant, _, _), _ = train_both(80, 0.1)
    assert not torch.allclose(dense, constant)  # the new rates did change the path
    torch.testing.assert_close(lazy, dense, rtol=1e-5, atol=1e-5)
    for name in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(lazy_state["state"][0][name], dense_state["state"][0][name], rtol=1e-4, atol=1e-9)


def test_a_row_is_brought_up_to_date_only_when_used_or_flushed():
    embedding = torch.nn.Parameter(torch.randn(VOCAB, EMBED))
    optimizer = RowAdamW([embedding], embedding, lr=0.1, weight_decay=0.0)
    embedding.grad = torch.zeros(VOCAB, EMBED)
    embedding.grad[3] = 1.0
    optimizer.rows = torch.tensor([3])
    optimizer.step()
    after_first = embedding.detach().clone()
    embedding.grad[3] = 0.0
    embedding.grad[5] = 1.0
    optimizer.rows = torch.tensor([5])
    for _ in range(4):
        optimizer.step()
    assert torch.equal(embedding[3], after_first[3])  # row 3's momentum is still owed...
    optimizer.flush()
    assert (embedding[3] - after_first[3]).abs().min() > 0  # ...and paid on flush
    never_used = [i for i in range(VOCAB) if i not in (3, 5)]
    assert torch.equal(embedding[never_used], after_first[never_used])  # no moments, no movement


def test_state_dict_has_adamws_layout_both_ways():
    """A resume file written under either optimiser loads into the other and carries on alike."""
    torch.manual_seed(0)
    start = torch.randn(VOCAB, EMBED)
    grads = [torch.randn(VOCAB, EMBED) * (torch.rand(VOCAB, 1) < 0.2) for _ in range(12)]

    def run(first, second):
        embedding = torch.nn.Parameter(start.clone())
        make = {"dense": lambda: torch.optim.AdamW([embedding], lr=0.01),
                "rows": lambda: RowAdamW([embedding], embedding, lr=0.01)}
        optimizer = make[first]()
        for i, grad in enumerate(grads):
            if i == 6:  # save, and continue under the other kind
                saved = optimizer.state_dict()
                optimizer = make[second]()
                optimizer.load_state_dict(saved)
            embedding.grad = grad
            optimizer.rows = torch.nonzero(grad.any(1)).flatten()
            optimizer.step()
        if hasattr(optimizer, "flush"):
            optimizer.flush()
        return embedding.detach()

    reference = run("dense", "dense")
    for first, second in [("dense", "rows"), ("rows", "dense"), ("rows", "rows")]:
        torch.testing.assert_close(run(first, second), reference, rtol=1e-5, atol=1e-5, msg=f"{first} -> {second}")


def test_a_step_gradscaler_marks_overflowed_changes_nothing():
    """Under fp16 GradScaler hands a fused optimiser `found_inf`: the whole step is skipped."""
    embedding, other = torch.nn.Parameter(torch.randn(VOCAB, EMBED)), torch.nn.Parameter(torch.randn(3))
    optimizer = RowAdamW([embedding, other], embedding, lr=0.1, fused=True)
    embedding.grad, other.grad = torch.ones(VOCAB, EMBED), torch.ones(3)
    optimizer.rows = torch.arange(VOCAB)
    optimizer.step()
    before = embedding.detach().clone(), other.detach().clone()
    optimizer.found_inf = torch.tensor(1.0)
    optimizer.step()
    assert torch.equal(embedding, before[0]) and torch.equal(other, before[1])
    assert float(optimizer.state[embedding]["step"]) == 1


def test_fused_row_adamw_steps_everything_in_one_kernel_call(monkeypatch):
    """After torch's AdamW has made the other parameters' state, each step is one fused kernel call."""
    calls = []
    kernel = torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_", lambda params, *a, **kw: (calls.append(len(params)), kernel(params, *a, **kw)))
    embedding, a, b = torch.nn.Parameter(torch.randn(VOCAB, EMBED)), torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 5))
    optimizer = RowAdamW([embedding, a, b], embedding, lr=0.1, fused=True)
    for _ in range(3):
        embedding.grad, a.grad, b.grad = torch.randn(VOCAB, EMBED), torch.randn(3), torch.randn(2, 5)
        optimizer.rows = torch.tensor([2, 5, 30])
        optimizer.step()
    assert calls == [2, 1, 3, 3]  # first: torch's for a and b, then the rows; then all at once
    assert [float(optimizer.state[p]["step"]) for p in (embedding, a, b)] == [3, 3, 3]
