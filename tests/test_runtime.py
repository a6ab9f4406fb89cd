"""The shared training runtime (gangealing.train.runtime)."""
import json

import torch
from torch import nn

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import load_checkpoint
from gangealing.config import GeneratorConfig
from gangealing.train.runtime import (DistInfo, MetricsLogger, RunDir, all_reduce_dict, all_reduce_grads, all_reduce_mean,
                                      ema_update, init_distributed, progress, read_metrics, seed_everything)


def test_single_process_distributed(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"), True) and not info.distributed
    assert all_reduce_mean(torch.tensor(3.0)).item() == 3.0
    assert all_reduce_dict({"a": torch.tensor(1.5), "b": 2}) == {"a": 1.5, "b": 2.0}
    m = nn.Linear(2, 2)
    m(torch.ones(1, 2)).sum().backward()
    g = m.weight.grad.clone()
    all_reduce_grads(m)
    assert torch.equal(m.weight.grad, g)


def test_run_dir_checkpoints(tmp_path):
    run = RunDir(tmp_path / "run", keep=2)
    assert run.latest_checkpoint() is None
    G = build("generator", GeneratorConfig(size=8, style_dim=8, n_mlp=1, max_channels=8))
    for step in (10, 20, 30):
        run.save_checkpoint(make_checkpoint("generator", {"generator": G}, step=step), step)
    assert [p.name for p in run.numbered_checkpoints()] == ["0000020.pt", "0000030.pt"]
    assert run.latest_checkpoint().name == "last.pt" and load_checkpoint(run.latest_checkpoint()).step == 30
    (run.checkpoints / "last.pt").unlink()
    assert run.latest_checkpoint().name == "0000030.pt"
    run.save_checkpoint({"plain": torch.ones(1)}, 40, numbered=False)
    assert torch.load(run.checkpoints / "last.pt", weights_only=True)["plain"].item() == 1
    run.save_config({"a": 1, "p": tmp_path})
    assert run.load_config() == {"a": 1, "p": str(tmp_path)}
    assert not any(p.name.endswith(".tmp") for p in run.checkpoints.iterdir())
    other = RunDir(tmp_path / "other", is_primary=False)
    assert other.save_checkpoint({"x": 1}, 1) is None and not (tmp_path / "other").exists()


def test_metrics_logger_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path, tensorboard=False) as m:
        m.log(1, loss=torch.tensor(0.5), name="x")
    with MetricsLogger(path, tensorboard=False) as m:  # a resumed run appends
        m.log(2, loss=0.25)
        m.log(2, extra=1.0)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == {"step": 1, "loss": 0.5, "name": "x"}
    assert read_metrics(path) == [{"step": 1, "loss": 0.5, "name": "x"}, {"step": 2, "loss": 0.25, "extra": 1.0}]
    MetricsLogger(tmp_path / "off.jsonl", enabled=False).log(1, a=1)
    assert not (tmp_path / "off.jsonl").exists()


def test_ema_and_seed():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, 0.9 * before + 0.1 * b.weight)
    g1, g2 = seed_everything(5, rank=1), seed_everything(5, rank=1)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert not torch.equal(torch.rand(3, generator=seed_everything(5, 0)), torch.rand(3, generator=seed_everything(5, 1)))


def test_progress_disabled_off_primary():
    bar = progress(10, 3, "x", enabled=False)
    bar.update(2)
    assert bar.disable
    bar.close()
