"""An epoch whose loss explodes starts again from the weights it began with, at half the rate."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from rnncli import checkpoint
from rnncli import pretrain as pretrain_module
from rnncli import train as train_module
from rnncli.cli import app
from rnncli.config import resolve
from rnncli.errors import RnncliError
from rnncli.pretrain import pretrain
from rnncli.restarts import Restarts
from rnncli.train import Progress, Restart, train

LR = 0.004


def tiny(dataset, **overrides):
    return resolve(None, {**TINY, "dataset": str(dataset), "lr": LR, **overrides})


class Sabotage(Progress):
    """Sets the rate to 1e38 as epoch `epoch` starts the first time (after train() has set it),
    so its loss explodes; keeps the weights each start of that epoch sees."""

    def __init__(self, optimizers: list, epoch: int, stop_in: int | None = None):
        self.optimizers, self.epoch, self.stop_in = optimizers, epoch, stop_in
        self.starts: list[dict] = []

    def epoch_start(self, epoch, batches):
        if epoch == self.stop_in:
            raise KeyboardInterrupt
        if epoch == self.epoch:
            model_weights = self.optimizers[0].param_groups[0]["params"]
            self.starts.append([p.detach().clone() for p in model_weights])
            if len(self.starts) == 1:
                for group in self.optimizers[0].param_groups:
                    group["lr"] = 1e38


def spy_optimizers(monkeypatch, module) -> list:
    optimizers = []
    real = module.make_optimizer

    def spy(model, config, **kw):
        optimizers.append(real(model, config, **kw))
        return optimizers[-1]

    monkeypatch.setattr(module, "make_optimizer", spy)
    return optimizers


def test_restarts_rewinds_weights_and_moments_each_time():
    torch.manual_seed(0)
    model = torch.nn.Linear(11, 13)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(3, 11)).sum().backward()
    optimizer.step()
    restarts = Restarts(model, optimizer, limit=2)
    restarts.mark()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    moments = optimizer.state[model.weight]["exp_avg"].clone()
    for used in (1, 2):
        model(torch.randn(3, 11)).sum().backward()
        optimizer.step()
        assert not torch.equal(model.weight, start["weight"])
        assert restarts.rewind()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in start.items())
        assert torch.equal(optimizer.state[model.weight]["exp_avg"], moments)
        assert (restarts.used, restarts.scale) == (used, 0.5**used)
    assert not restarts.rewind()  # the limit
    assert restarts.state() == {"restarts": 2}


def test_an_exploded_epoch_runs_again_from_its_start_at_half_the_rate(tmp_path, monkeypatch, reviews_csv):
    optimizers = spy_optimizers(monkeypatch, train_module)
    monkeypatch.chdir(tmp_path)
    sabotage = Sabotage(optimizers, epoch=2)
    run = train(tiny(reviews_csv, out="m", epochs=3, patience=3), sabotage)
    assert run.stopped == "finished"
    assert [(r.epoch, r.lr) for r in run.restarts] == [(2, LR / 2)]
    assert run.restarts[0].loss != run.restarts[0].loss or run.restarts[0].loss > 30  # NaN or far above chance
    assert [(e.epoch, e.lr) for e in run.history] == [(1, LR), (2, LR / 2), (3, LR / 2)]  # the rate stays halved
    first, second = sabotage.starts
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # the same weights both times
    assert all(torch.isfinite(p).all() for p in checkpoint.load("m").model.parameters())


def test_without_restarts_the_first_explosion_stops_the_run(tmp_path, monkeypatch, reviews_csv):
    optimizers = spy_optimizers(monkeypatch, train_module)
    monkeypatch.chdir(tmp_path)
    run = train(tiny(reviews_csv, out="m", epochs=3, restarts=0), Sabotage(optimizers, epoch=2))
    assert run.stopped == "diverged" and run.restarts == []
    assert "epoch 2; training stopped" in run.message
    assert [e.epoch for e in run.history] == [1]


def test_a_resumed_run_keeps_the_halved_rate(tmp_path, monkeypatch, reviews_csv):
    optimizers = spy_optimizers(monkeypatch, train_module)
    monkeypatch.chdir(tmp_path)
    cut = train(tiny(reviews_csv, out="m", epochs=3, patience=3), Sabotage(optimizers, epoch=2, stop_in=3))
    assert cut.stopped == "interrupted" and len(cut.restarts) == 1
    resumed = train(resume="m")
    assert [(e.epoch, e.lr) for e in resumed.history] == [(1, LR), (2, LR / 2), (3, LR / 2)]


@pytest.mark.parametrize("count", [-1, 4, 1.5, "1", True, None])
def test_a_crafted_restart_count_in_the_resume_file_is_refused(tmp_path, monkeypatch, reviews_csv, count):
    monkeypatch.chdir(tmp_path)
    train(tiny(reviews_csv, out="m", epochs=3, patience=3), Sabotage([], epoch=None, stop_in=2))
    path = Path("m") / checkpoint.RESUME
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta["state"] = json.dumps({**json.loads(meta["state"]), "restarts": count})
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(RnncliError, match=r"resume.safetensors: its restart count .* not one this run's --restarts 3"):
        train(resume="m")


def test_the_cli_says_each_restart_and_exits_2_when_none_is_left(tmp_path, monkeypatch, reviews_csv):
    """--lr 1e38 explodes at every rate a restart halves it to."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--dataset", str(reviews_csv), "--embed", "11", "--hidden", "13",
                                      "--device", "cpu", "--lr", "1e38", "--restarts", "2", "--out", "m"])
    assert result.exit_code == 2, result.output
    assert result.output.count("restarting the epoch at lr") == 2
    assert "5e+37" in result.output and "2.5e+37" in result.output
    assert "after 2 restarts at half the rate" in result.output
    assert "Traceback" not in result.output


def test_pretraining_restarts_an_epoch_whose_loss_is_not_finite(tmp_path, monkeypatch, reviews_csv):
    optimizers = spy_optimizers(monkeypatch, pretrain_module)
    monkeypatch.chdir(tmp_path)
    flags = {"embed": 11, "hidden": 13, "batch_size": 16, "device": "cpu", "epochs": 3, "patience": 3,
             "lr": LR, "vector_epochs": 0, "dataset": str(reviews_csv), "out": "lm"}
    sabotage = Sabotage(optimizers, epoch=2)
    run = pretrain(resolve(None, flags), sabotage)
    assert run.stopped == "finished"
    assert run.restarts == [Restart(2, run.restarts[0].loss, LR / 2)]
    assert [e.lr for e in run.history] == [LR, LR / 2, LR / 2]
    first, second = sabotage.starts
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
