"""AdamW whose embedding update touches only the rows a batch used.

Dense AdamW rewrites every row of the (vocab, embed) embedding at every step, although a batch
uses a few hundred words: on a small model that pass over the embedding and its two moment
matrices is a quarter of a step. A row no batch has used since step s gets a zero gradient, so
what AdamW does to it is known in closed form: its moments decay (m by beta1^k, v by beta2^k after
k steps), weight decay shrinks it by (1 - lr * wd)^k, and it keeps drifting along m / sqrt(v) by a
sum of step sizes that fades as (beta1 / sqrt(beta2))^j. `RowAdamW` applies those k skipped
steps to a row only when a batch uses it again (or at `flush`, before the weights are read), then
the batch's own step. The result is dense AdamW's up to eps in the skipped steps' denominators.
That own step runs torch's fused AdamW kernel on the gathered rows; on the CPU one call of it
steps the rows and every other parameter together, skipping torch.optim's per-step bookkeeping.
"""

from __future__ import annotations

import math

import torch

from rnncli.config import Config


class RowAdamW(torch.optim.AdamW):
    """`torch.optim.AdamW` (same state, same state dict) with lazy updates for `embedding`.

    Set `rows` (the sorted unique ids of the batch) before each `step`; `flush()` brings every row
    up to date, and runs before the weights or the state dict are read.
    """

    def __init__(self, params, embedding: torch.Tensor, **kw):
        super().__init__(params, **kw)
        if len(self.param_groups) != 1:
            raise ValueError("RowAdamW takes one parameter group")
        self.embedding = embedding
        self.rows: torch.Tensor | None = None  # (rows,) the ids the next step's batch used
        self._last = torch.zeros(embedding.shape[0], dtype=torch.long, device=embedding.device)  # step each row is at
        self._table = None  # (hyperparameters, drift, floor, q), see `_tables`
        self._others: list[torch.Tensor] | None = None  # see `_fusable_others`

    # ------------------------------------------------------------------ the embedding's state
    def _moments(self) -> dict:
        state = self.state[self.embedding]
        if not state:  # the layout torch's AdamW uses, so that its state dict loads either way
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(self.embedding, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(self.embedding, memory_format=torch.preserve_format)
        return state

    def _hyperparameters(self) -> tuple[float, float, float, float, float]:
        group = self.param_groups[0]
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        return lr, beta1, beta2, float(group["eps"]), 1 - lr * float(group["weight_decay"])

    def _tables(self, hyper: tuple, upto: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per-step tables for the rows' catch-up, indexed by a row's last step s, and their ratio q:

        drift[s] = lr * sum over j >= 1 of q^j * size(s + j), where q = beta1 / sqrt(beta2) / decay
        and size(u) = sqrt(1 - beta2^u) / (1 - beta1^u) holds AdamW's bias corrections at step u;
        floor[s] = eps * sqrt(1 - beta2^(s+1)) / sqrt(beta2), eps as step s + 1 adds it to sqrt(v_s).

        Over the zero-gradient steps s+1..s+k, a row with moments m_s, v_s moves by
        decay^k * (drift[s] - q^k drift[s+k]) * m_s / (sqrt(v_s) + floor[s]).
        """
        if self._table is None or self._table[0] != hyper or len(self._table[1]) <= upto:
            lr, beta1, beta2, eps, decay = hyper
            q = beta1 / math.sqrt(beta2) / decay
            if not 0 < q < 1:
                raise ValueError(f"RowAdamW needs beta1 < sqrt(beta2) * (1 - lr * weight_decay); q = {q:.4g}")
            horizon = math.ceil(math.log(1e-12) / math.log(q))  # later terms are below 1e-12
            size = max(2 * upto, 4096)
            u = torch.arange(size + horizon + 1, dtype=torch.float64)
            sizes = torch.sqrt(1 - beta2**u) / (1 - beta1**u)  # (size + horizon + 1,)
            weights = q ** torch.arange(1, horizon + 1, dtype=torch.float64)  # (horizon,)
            # drift[s] = lr * sum_j weights[j-1] * sizes[s + j]: a correlation, one pass
            drift = lr * torch.nn.functional.conv1d(sizes[None, None, 1:], weights[None, None])[0, 0, :size]  # (size,)
            floor = eps / math.sqrt(beta2) * torch.sqrt(1 - beta2 ** u[1: size + 1])  # (size,)
            device, dtype = self.embedding.device, self.embedding.dtype
            self._table = (hyper, drift.to(device, dtype), floor.to(device, dtype), q)
        return self._table[1:]

    def _catch_up(self, rows: torch.Tensor, upto: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Copies of `rows`' weights and moments (sorted unique ids, (rows, embed) each) brought
        through the zero-gradient steps from each row's last one to step `upto`."""
        state = self._moments()
        hyper = _, beta1, beta2, _, decay = self._hyperparameters()
        drift, floor, q = self._tables(hyper, upto)
        take = lambda t: t.index_select(0, rows)
        last = take(self._last)  # (rows,) each row's last step
        skipped = (upto - last).to(drift.dtype)  # (rows,)
        p, m, v = take(self.embedding), take(state["exp_avg"]), take(state["exp_avg_sq"])  # (rows, embed)
        moved = drift.index_select(0, last) - torch.pow(q, skipped) * float(drift[upto])  # (rows,)
        if decay != 1.0:
            shrink = torch.pow(decay, skipped)  # (rows,)
            moved *= shrink
            p.mul_(shrink[:, None])
        p.addcdiv_(m * moved[:, None], v.sqrt().add_(floor.index_select(0, last)[:, None]), value=-1.0)
        m.mul_(torch.pow(beta1, skipped)[:, None])
        v.mul_(torch.pow(beta2, skipped)[:, None])
        return p, m, v

    def _write_rows(self, rows: torch.Tensor, now: int, p: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> None:
        """Write the rows' weights and moments back; they are at step `now`."""
        state = self._moments()
        self.embedding.index_copy_(0, rows, p)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        self._last.index_fill_(0, rows, now)

    def _fused(self, params, grads, exp_avgs, exp_avg_sqs, steps) -> None:
        """Torch's fused AdamW kernel (what `AdamW(fused=True)` runs) on the step counts `steps`."""
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=float(group["lr"]),
                            beta1=float(beta1), beta2=float(beta2), weight_decay=float(group["weight_decay"]),
                            eps=float(group["eps"]), maximize=False, grad_scale=None, found_inf=None)

    # ------------------------------------------------------------------ the optimizer
    def _fusable_others(self) -> list[torch.Tensor] | None:
        """The other parameters, when one fused kernel call can step them with the rows: a plain
        fused AdamW on the CPU whose state exists (a first step goes through torch's own)."""
        group = self.param_groups[0]
        if getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None:
            return None
        if self._others is None:  # checked once the states exist; the group's flags do not change
            if (self.embedding.device.type != "cpu" or not group.get("fused") or group["amsgrad"]
                    or group["maximize"] or group.get("differentiable")):
                return None
            if not all(self.state[p] and self.state[p]["step"].dtype == torch.float32 and p.dtype == self.embedding.dtype
                       for p in group["params"]):
                return None
            self._others = [p for p in group["params"] if p is not self.embedding]
        return None if any(p.grad is None for p in self._others) else self._others

    @torch.no_grad()
    def step(self, closure=None):
        weight, grad = self.embedding, self.embedding.grad
        if grad is None:
            return super().step(closure)
        rows = self.rows if self.rows is not None else torch.arange(len(weight), device=weight.device)
        state = self._moments()
        now = int(state["step"]) + 1
        loss, scale = None, None
        # one kernel call for every parameter and the rows skips torch.optim's per-step bookkeeping
        # (some 0.2 ms of a small model's 5 ms step); otherwise torch's AdamW steps the others first
        others = self._fusable_others() if closure is None else None
        if others is None:
            weight.grad = None  # torch's AdamW skips a parameter without a gradient
            try:
                loss = super().step(closure)
            finally:
                weight.grad = grad
            # GradScaler (fp16 on CUDA) hands a fused optimiser the overflow flag and, unless the
            # gradients were unscaled already, the scale; the fused AdamW above honours both
            found_inf, scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
            if found_inf is not None and float(found_inf) > 0:
                return loss  # an overflowed step is skipped, its count included
            others = []
        p, m, v = self._catch_up(rows, now - 1)
        g = grad.index_select(0, rows)  # (rows, embed)
        states = [self.state[o] for o in others]
        torch._foreach_add_([s["step"] for s in states] + [state["step"]], 1)
        steps = [s["step"] for s in states] + [state["step"].to(p.device, torch.float32)]  # the kernel's device
        self._fused([*others, p], [*(o.grad for o in others), g if scale is None else g / scale],
                    [*(s["exp_avg"] for s in states), m], [*(s["exp_avg_sq"] for s in states), v], steps)
        self._write_rows(rows, now, p, m, v)
        return loss

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every embedding row up to the current step."""
        state = self.state.get(self.embedding)
        if not state:
            return
        now = int(state["step"])
        rows = torch.nonzero(self._last < now).flatten()  # (rows,)
        if len(rows):
            self._write_rows(rows, now, *self._catch_up(rows, now))

    def state_dict(self):
        self.flush()
        return super().state_dict()

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._others = None  # new state tensors: check them again
        state = self.state.get(self.embedding)
        self._last.fill_(int(state["step"]) if state else 0)  # a saved state is flushed


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

    def __init__(self, model, rows: bool, optimizer=None):
        self.embedding = model.embedding if rows and model.embedding.weight.requires_grad else None
        self.optimizer = optimizer if isinstance(optimizer, RowAdamW) else None  # told each batch's rows
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.touched = None  # (rows,) the embedding rows the current batch uses
        if self.embedding is not None:
            weight = self.embedding.weight
            self.embedding.sparse = True
            weight.grad = torch.zeros_like(weight)  # (vocab, embed), zero outside `touched`
            self.params = [p for p in self.params if p is not weight]
        # The n-gram bag's gradient, summed over a text's hundreds of n-grams, would dominate the
        # norm and shrink every other layer's step; it is left unclipped, as NBSVM's is.
        bag = getattr(model, "ngrams", None)
        self.clipped = [p for p in self.params if bag is None or p is not bag.weight]

    def zero(self, ids: torch.Tensor) -> None:
        """Before the backward pass of the batch `ids` (seq, batch)."""
        for p in self.params:
            p.grad = None
        if self.embedding is not None:
            self.touched = torch.unique(ids)
            if self.optimizer is not None:
                self.optimizer.rows = self.touched

    def clip(self, max_norm: float) -> None:
        """Scale all gradients but the n-gram bag's together so that their norm is at most `max_norm`
        (as `clip_grad_norm_`)."""
        if self.embedding is None:
            torch.nn.utils.clip_grad_norm_(self.clipped, max_norm, foreach=True)
            return
        grads = [p.grad for p in self.clipped if p.grad is not None]
        rows = self.embedding.weight.grad.index_select(0, self.touched)  # (rows, embed): the only nonzero rows
        total = torch.linalg.vector_norm(torch.stack([*torch._foreach_norm(grads), rows.norm()]))
        scale = max_norm / (float(total) + 1e-6)
        if scale < 1:  # below the limit, scaling by 1 would rewrite every gradient for nothing
            torch._foreach_mul_(grads, scale)
            self.embedding.weight.grad.index_copy_(0, self.touched, rows.mul_(scale))

    def zero_rows(self) -> None:
        """After the optimiser step: the buffer is zero again for the next batch."""
        if self.embedding is not None:
            self.embedding.weight.grad.index_fill_(0, self.touched, 0.0)

    def catch_up(self) -> None:
        """Before the weights are read: a `RowAdamW` brings the rows no recent batch used up to date."""
        if self.optimizer is not None:
            self.optimizer.flush()

    def close(self) -> None:
        """Leave the model as a plain one: no gradients held, a dense embedding gradient next time."""
        self.catch_up()
        for p in self.params:
            p.grad = None
        if self.embedding is not None:
            self.embedding.sparse = False
            self.embedding.weight.grad = None
