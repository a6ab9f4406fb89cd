"""Training runs that keep their own settings: resume with the run's config, refused changes, the run
folder's lock, stops on SIGINT/SIGTERM with a checkpoint, metrics of lost steps, --iters 0."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gangealing.build import build
from gangealing.checkpoint import load_checkpoint
from gangealing.cli import build_parser, main
from gangealing.commands.train import config_from_args
from gangealing.config import GeneratorConfig
from gangealing.losses.perceptual import PixelDistance
from gangealing.train.classifier import ClassifierTrainer, train_classifier
from gangealing.train.gangealing import GANgealingTrainer
from gangealing.train.presets import ClassifierTrainConfig, get_preset
from gangealing.train.runtime import RunDir, RunInUseError
from helpers import tiny_cfg, tiny_generator

TINY_FLAGS = ["--preset", "tiny", "--flow-size", "16", "--input-size", "16", "--stn-max-channels", "16", "--batch", "4",
              "--micro-batch", "2", "--anneal-psi", "1", "--period", "1", "--pca-samples", "300", "--inject", "3",
              "--loss", "l2", "--log-every", "1", "--vis-every", "1000", "--ckpt-every", "1000", "--quiet",
              "--no-tensorboard"]


def trainer(cfg, out, **kw):
    return GANgealingTrainer(cfg, tiny_generator(), out, loss_fn=PixelDistance(2), show_progress=False,
                             tensorboard=False, **kw)


def send_at_step(tr, n, signum):
    """Make ``tr`` receive ``signum`` during its step ``n`` (as a Ctrl-C or a `kill` would)."""
    step = tr.train_step

    def train_step():
        values = step()
        if tr.step == n:
            os.kill(os.getpid(), signum)
        return values

    tr.train_step = train_step


def test_cli_resume_without_repeating_the_preset_uses_the_runs_settings(gen_file, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--generator", str(gen_file), "--out", str(run), *TINY_FLAGS, "--iters", "3",
                 "--max-steps", "1"]) == 0
    args = build_parser().parse_args(["train", "--generator", str(gen_file), "--out", str(run), "--iters", "2"])
    cfg = config_from_args(args)  # before: the paper's defaults, which cannot load this checkpoint
    assert (cfg.flow_size, cfg.loss, cfg.iters) == (16, "l2", 2)
    assert main(["train", "--generator", str(gen_file), "--out", str(run), "--iters", "2", "--quiet",
                 "--no-tensorboard"]) == 0
    assert load_checkpoint(run / "model.pt").step == 2
    assert json.loads((run / "config.json").read_text())["train"]["iters"] == 2  # a resumable change, recorded


def test_a_changed_setting_is_refused_by_name_or_taken_explicitly(tmp_path):
    cfg = tiny_cfg(iters=3)
    trainer(cfg, tmp_path / "run").fit(max_steps=1)
    with pytest.raises(ValueError, match=r"tv_weight 1000.0 -> 123.0.*--change-settings"):
        trainer(cfg.replace(tv_weight=123.0), tmp_path / "run")
    with pytest.raises(ValueError, match=r"cannot change on resume \(num_directions 1 -> 2\)"):
        trainer(cfg.replace(num_directions=2), tmp_path / "run", change_settings=True)
    tr = trainer(cfg.replace(tv_weight=123.0, iters=2), tmp_path / "run", change_settings=True)  # the lock was released
    assert tr.step == 1 and tr.cfg.tv_weight == 123.0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["tv_weight"] == 123.0 and "init" in saved
    # The branch point is kept out of the checkpoint pruning, so the run can be branched again from it.
    assert saved["changes"] == [{"step": 1, "tv_weight": [1000.0, 123.0], "iters": [3, 2],
                                 "branch_checkpoint": "checkpoints/branch-0000001.pt"}]
    tr.fit()
    assert load_checkpoint(tmp_path / "run" / "model.pt").meta["train"]["tv_weight"] == 123.0
    branch = load_checkpoint(tmp_path / "run" / "checkpoints" / "branch-0000001.pt")
    assert branch.step == 1 and branch.meta["train"]["tv_weight"] == 1000.0
    assert RunDir(tmp_path / "run").latest_checkpoint().name == "last.pt"
    trainer(cfg.replace(tv_weight=123.0, iters=3), tmp_path / "run").run.release()  # only --iters: no new pin
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("branch-*")) == ["branch-0000001.pt"]
    other = build("generator", GeneratorConfig(size=16, style_dim=16, n_mlp=2, max_channels=16))
    with pytest.raises(ValueError, match="another generator"):
        GANgealingTrainer(cfg.replace(iters=2), other, tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)


def test_a_failed_start_does_not_bind_the_corrected_rerun(tmp_path):
    tr = trainer(tiny_cfg(iters=2), tmp_path / "run")

    def broken():
        raise RuntimeError("the first step failed")

    tr.train_step = broken
    with pytest.raises(RuntimeError):
        tr.fit()
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))
    fixed = trainer(tiny_cfg(iters=2, tv_weight=5.0), tmp_path / "run")  # no checkpoint: a new start, unlocked
    assert fixed.fit().model_path is not None
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["tv_weight"] == 5.0


def test_a_second_training_in_the_same_folder_is_refused(tmp_path):
    first = trainer(tiny_cfg(iters=2), tmp_path / "run")
    with pytest.raises(RunInUseError, match="in use by another training"):
        trainer(tiny_cfg(iters=2), tmp_path / "run")
    first.fit(max_steps=1)  # the folder is free once a fit returns
    assert trainer(tiny_cfg(iters=2), tmp_path / "run").step == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_training_with_a_checkpoint(tmp_path, signum):
    tr = trainer(tiny_cfg(iters=6), tmp_path / "run")
    send_at_step(tr, 2, signum)
    res = tr.fit()
    assert res.step == 2 and res.stopped_by == signal.Signals(signum).name and res.model_path is None
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").step == 2
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)
    assert trainer(tiny_cfg(iters=6), tmp_path / "run").fit().step == 6


def test_resume_drops_the_metrics_and_tmp_files_of_the_lost_steps(tmp_path):
    run = tmp_path / "run"
    trainer(tiny_cfg(iters=5), run).fit(max_steps=2)
    with open(run / "metrics.jsonl", "a") as f:  # steps 3-4 were logged, then SIGKILL before their checkpoint
        f.write('{"step": 3, "perceptual": 9.0}\n{"step": 4, "perceptual": 9.0}\n')
    tmp = run / "checkpoints" / ".0000004.pt.abc123.tmp"
    tmp.write_bytes(b"half a checkpoint")
    tr = trainer(tiny_cfg(iters=5), run)
    assert not tmp.exists()
    tr.fit()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_iters_zero_or_negative_is_refused(tmp_path):
    for bad in ("0", "-3"):
        args = build_parser().parse_args(["train", "--generator", "g.pt", "--out", str(tmp_path / "r"), "--preset",
                                          "tiny", "--iters", bad])
        with pytest.raises(ValueError, match=f"iters must be positive, got {bad} \\(flag --iters\\)"):
            config_from_args(args)
    with pytest.raises(ValueError, match="iters must be positive, got 0"):
        ClassifierTrainConfig(iters=0).validate()
    with pytest.raises(ValueError, match="ckpt_every must be positive"):
        get_preset("tiny", ckpt_every=0)
    with pytest.raises(ValueError, match="iters must be positive"):  # before anything is read or written
        train_classifier(tmp_path / "nothing", ClassifierTrainConfig(iters=-1))
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "r").exists()


def test_classifier_resumes_with_its_settings_and_stops_on_a_signal(tmp_path):
    model_path = trainer(tiny_cfg(iters=1, num_heads=2), tmp_path / "run").fit().model_path
    model = load_checkpoint(model_path)
    cfg = ClassifierTrainConfig(iters=4, batch=4, micro_batch=2, log_every=1, vis_every=1000, ckpt_every=1000)
    out = tmp_path / "run" / "classifier"

    def classifier(c):
        return ClassifierTrainer(model, c, out, loss_fn=PixelDistance(2), tensorboard=False, show_progress=False)

    tr = classifier(cfg)
    with pytest.raises(RunInUseError):
        classifier(cfg)
    send_at_step(tr, 2, signal.SIGTERM)
    res = tr.fit()
    assert res.step == 2 and res.stopped_by == "SIGTERM"
    with pytest.raises(ValueError, match=r"lr 0.001 -> 0.5"):
        classifier(dataclasses.replace(cfg, lr=0.5))
    res = classifier(dataclasses.replace(cfg, iters=3)).fit()
    assert res.step == 3 and res.model_path is not None
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_cli_sigint_saves_a_checkpoint_and_exits_without_a_traceback(gen_file, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "gangealing", "train", "--generator", str(gen_file), "--out", str(run), *TINY_FLAGS,
           "--iters", "100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().strip():
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "stopped by SIGINT at step" in out
    step = int(out.split("stopped by SIGINT at step ")[1].split()[0])
    assert step >= 1 and load_checkpoint(run / "checkpoints" / "last.pt").step == step
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["train_state"]["step"] == step
