"""The shared training runtime (gangealing.train.runtime)."""
import json
import os
import signal
import threading

import pytest
import torch
from torch import nn

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import load_checkpoint
from gangealing.config import GeneratorConfig
from gangealing.train.runtime import (DistInfo, MetricsLogger, RunDir, RunInUseError, StopOnSignal, all_reduce_dict,
                                      all_reduce_grads, all_reduce_mean, any_process, drop_metrics_after, ema_update,
                                      init_distributed, progress, read_metrics, seed_everything)


def test_single_process_distributed(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu"), True) and not info.distributed
    assert all_reduce_mean(torch.tensor(3.0)).item() == 3.0
    assert all_reduce_dict({"a": torch.tensor(1.5), "b": 2}) == {"a": 1.5, "b": 2.0}
    assert any_process(True) is True and any_process(False) is False
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


@pytest.mark.parametrize("links", [True, False])
def test_a_pinned_checkpoint_outlives_pruning_and_later_writes(tmp_path, monkeypatch, links):
    if not links:  # a file system without hard links: an atomic copy
        def no_link(*a):
            raise OSError("hard links not supported")

        monkeypatch.setattr(os, "link", no_link)
    run = RunDir(tmp_path / "run", keep=1)
    run.save_checkpoint({"step": torch.tensor(1)}, 1)
    pinned = run.pin_checkpoint(run.checkpoints / "last.pt", 1)
    assert pinned.name == "branch-0000001.pt" and run.pin_checkpoint(run.checkpoints / "last.pt", 1) == pinned
    for step in (2, 3):  # last.pt is replaced and 0000001.pt pruned; the pin keeps step 1's contents
        run.save_checkpoint({"step": torch.tensor(step)}, step)
    assert [p.name for p in run.numbered_checkpoints()] == ["0000003.pt"]
    assert torch.load(pinned, weights_only=True)["step"].item() == 1
    assert run.latest_checkpoint().name == "last.pt" and not list(run.checkpoints.glob(".*.tmp"))
    assert RunDir(tmp_path / "other", is_primary=False).pin_checkpoint(pinned, 1) is None


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


def test_run_dir_lock_refuses_a_second_training(tmp_path):
    first = RunDir(tmp_path / "run").acquire()
    assert first.locked and (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(RunInUseError, match=f"in use by another training \\(process {os.getpid()}\\).*--out"):
        RunDir(tmp_path / "run").acquire()
    first.acquire()  # held already: no-op
    first.release()
    with RunDir(tmp_path / "run") as second:  # free again
        assert second.locked
    assert not second.locked
    RunDir(tmp_path / "run", is_primary=False).acquire()  # other processes never lock


def test_acquire_sweeps_temporary_files_of_killed_writes(tmp_path):
    run = RunDir(tmp_path / "run")
    ckpts = run.checkpoints
    left = [ckpts / ".0000003.pt.k2j4.tmp", ckpts / ".last.pt.x9.tmp", run.path / ".config.json.a1.tmp",
            run.file("visuals", ".0000002_inputs.png.b.tmp")]
    kept = [ckpts / "0000002.pt", run.path / "notes.tmp", run.file("classifier", ".model.pt.c.tmp")]
    (run.path / "classifier" / ".lock").touch()  # a nested run sweeps its own folder
    for f in left + kept:
        f.write_bytes(b"x")
    run.acquire()
    assert not any(f.exists() for f in left) and all(f.exists() for f in kept)
    run.release()


def test_metrics_logger_drops_the_lines_of_lost_steps_on_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path, tensorboard=False) as m:
        for step in range(1, 6):
            m.log(step, loss=float(step))
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')  # cut by a kill
    with MetricsLogger(path, tensorboard=False, resume_step=3) as m:  # resumed from the checkpoint of step 3
        m.log(4, loss=40.0)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4] and lines[-1]["loss"] == 40.0
    assert drop_metrics_after(path, 10) == 0 and drop_metrics_after(tmp_path / "none.jsonl", 0) == 0
    with MetricsLogger(path, tensorboard=False, resume_step=0):  # a new run in the folder
        pass
    assert path.read_text() == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_on_signal_turns_the_signal_into_a_flag_and_restores_the_handler(signum, capsys):
    before = signal.getsignal(signum)
    with StopOnSignal() as stop:
        assert not stop.requested and stop.signal_name is None
        os.kill(os.getpid(), signum)
        for _ in range(100):  # the handler runs between bytecodes of the main thread
            if stop.requested:
                break
        assert stop.requested and stop.signal_name == signal.Signals(signum).name
    assert signal.getsignal(signum) is before
    assert "stopping after this step with a checkpoint" in capsys.readouterr().err


def test_a_second_sigint_interrupts_at_once():
    with pytest.raises(KeyboardInterrupt):
        with StopOnSignal(announce=False) as stop:
            stop.handle(signal.SIGINT)
            assert stop.requested
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_on_signal_outside_the_main_thread_installs_nothing():
    seen = []

    def body():
        with StopOnSignal() as stop:
            seen.append((stop.requested, signal.getsignal(signal.SIGINT)))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [(False, signal.default_int_handler)]
