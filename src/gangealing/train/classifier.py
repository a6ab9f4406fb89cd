"""Cluster-classifier training (the original's ``train_cluster_classifier.py``).

A clustering GANgealing model congeals generated images with the head (and, with flips, the
orientation) whose congealed image is closest to that head's target. Real images have no target,
so a classifier learns that choice: it sees generated images labelled by the min-loss rule
(:func:`gangealing.train.objective.classifier_batch`, psi = 0, the EMA transformer) and is
trained with cross-entropy. It starts from the similarity transformer's trunk
(:meth:`gangealing.models.classifier.ClusterClassifier.init_from_stn`). Adam with the decaying
cosine restarts from step 0 (``epoch = step / period``), as the original.

Output folder (default ``RUN/classifier``): ``config.json``, ``checkpoints/`` (resumable, each a
model checkpoint with the classifier), ``metrics.jsonl``, ``visuals/`` and, at the end,
``model.pt``: the GANgealing model with its classifier, ready for ``gangealing align``. A rerun
resumes with the settings saved in the checkpoint (only those in :data:`RESUMABLE` may change);
SIGINT / SIGTERM stop it after the current step with a checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from gangealing.build import build, build_from_checkpoint, load_state_strict, make_checkpoint
from gangealing.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from gangealing.models.classifier import classifier_config_for

from .gangealing import TRAIN_STATE_KEY, TrainResult, plot_metrics, sync_gradients
from .objective import classifier_accuracy, classifier_batch, make_resize
from .presets import ClassifierTrainConfig, GANgealingTrainConfig
from .runtime import (DistInfo, MetricsLogger, RunDir, StopOnSignal, all_reduce_dict, any_process, broadcast_module,
                      check_resume_settings, init_distributed, progress)
from .schedules import DecayingCosineRestarts

__all__ = ["RESUMABLE", "ClassifierTrainer", "classifier_out", "find_model_checkpoint", "saved_classifier_config",
           "train_classifier"]

# Settings that may change when a classifier run resumes: they do not change what is learned.
RESUMABLE = ("iters", "micro_batch", "log_every", "vis_every", "ckpt_every", "n_sample")


def find_model_checkpoint(run: Union[str, Path]) -> Path:
    """The model file of a ``gangealing train`` run folder (``model.pt``, else ``checkpoints/last.pt``),
    or ``run`` itself when it is a file."""
    run = Path(run)
    if run.is_file():
        return run
    for p in (run / "model.pt", run / "checkpoints" / "last.pt"):
        if p.is_file():
            return p
    raise CheckpointError(f"{run}: no model.pt or checkpoints/last.pt; is this a `gangealing train` run folder?")


def classifier_out(run: Union[str, Path], out: Optional[Union[str, Path]] = None) -> Path:
    """The classifier's run folder: ``out``, else ``RUN/classifier`` (beside the model file when ``run`` is one)."""
    if out is not None:
        return Path(out)
    return (Path(run) if Path(run).is_dir() else Path(run).parent) / "classifier"


def saved_classifier_config(out: Union[str, Path]) -> Optional[ClassifierTrainConfig]:
    """The settings of the classifier run in ``out`` (from its latest checkpoint), or None."""
    path = RunDir(out, is_primary=False).latest_checkpoint()
    if path is None:
        return None
    return ClassifierTrainConfig.from_dict(load_checkpoint(path).meta["classifier_train"])


class ClassifierTrainer:
    """Trains a :class:`~gangealing.models.classifier.ClusterClassifier` for a clustering model."""

    def __init__(self, model: Checkpoint, cfg: ClassifierTrainConfig, out: Union[str, Path], *,
                 train_cfg: Optional[GANgealingTrainConfig] = None, dist: Optional[DistInfo] = None,
                 loss_fn: Optional[nn.Module] = None, tensorboard: bool = True, show_progress: bool = True):
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.cfg = cfg.validate()
        self.model = model
        tc = train_cfg or GANgealingTrainConfig.from_dict(model.meta.get("train", {}))
        self.train_cfg = tc
        self.generator = build_from_checkpoint(model, "generator", self.device)
        self.stn = build_from_checkpoint(model, "stn", self.device)
        self.target = build_from_checkpoint(model, "target", self.device)
        for m in (self.generator, self.stn, self.target):
            for p in m.parameters():
                p.requires_grad_(False)
        if self.stn.cfg.transforms[0] != "similarity":
            raise ValueError("the cluster classifier starts from the similarity transformer; this model has none")
        if loss_fn is None:
            from gangealing.losses.perceptual import build_perceptual_loss

            loss_fn = build_perceptual_loss(tc.loss)
        self.loss_fn = loss_fn.to(self.device).eval()
        self.resize = make_resize(self.generator.size, self.stn.cfg.flow_size).to(self.device)
        per = cfg.micro_batch * self.dist.world_size
        if cfg.batch % per:
            raise ValueError(f"total batch {cfg.batch} is not a multiple of micro_batch {cfg.micro_batch} x "
                             f"{self.dist.world_size} processes")
        self.accumulation = cfg.batch // per
        self.classifier = build("classifier", classifier_config_for(self.stn.cfg, flips=tc.flips)).to(self.device)
        self.classifier.init_from_stn(self.stn)
        self.optim = torch.optim.Adam(self.classifier.parameters(), lr=cfg.lr)
        self.sched = DecayingCosineRestarts(self.optim, t0=1, t_mult=cfg.t_mult, decay=cfg.decay)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(cfg.seed * self.dist.world_size + self.dist.rank + 777)
        self.show_progress, self.tensorboard = show_progress, tensorboard
        self.step = 0
        self.last: Dict[str, float] = {}
        self.run = RunDir(out, keep=2, is_primary=self.dist.is_primary).acquire()
        try:
            latest = self.run.latest_checkpoint()
            if latest is not None:
                self._resume(latest)
            else:
                broadcast_module(self.classifier)
            self.run.save_config({"classifier_train": dataclasses.asdict(cfg), "train": dataclasses.asdict(tc)})
        except BaseException:
            self.run.release()
            raise

    def model_checkpoint(self) -> Checkpoint:
        meta = dict(self.model.meta)
        meta["classifier_train"] = dataclasses.asdict(self.cfg)
        return make_checkpoint("model", {"generator": self.generator, "stn": self.stn, "target": self.target,
                                         "classifier": self.classifier}, step=self.model.step, meta=meta)

    def save(self) -> Optional[Path]:
        if not self.dist.is_primary:
            return None
        d = self.model_checkpoint().to_dict()
        d[TRAIN_STATE_KEY] = {"step": self.step, "optim": self.optim.state_dict(), "sched": self.sched.state_dict(),
                              "rng": self.rng.get_state()}
        return self.run.save_checkpoint(d, self.step)

    def _resume(self, path: Path) -> None:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        ts = raw[TRAIN_STATE_KEY]
        ckpt = load_checkpoint(path)
        check_resume_settings(ClassifierTrainConfig(**ckpt.meta["classifier_train"]), self.cfg, RESUMABLE,
                              where=f"the classifier run in {self.run.path}")
        load_state_strict(self.classifier, ckpt.state["classifier"], "checkpoint classifier")
        self.optim.load_state_dict(ts["optim"])
        self.sched.load_state_dict(ts["sched"])
        self.step = int(ts["step"])
        if self.dist.rank == 0 and self.device.type == "cpu":
            self.rng.set_state(ts["rng"])
        else:
            self.rng.manual_seed((self.cfg.seed * self.dist.world_size + self.dist.rank) * 1_000_003 + self.step)

    def train_step(self) -> Dict[str, float]:
        tc = self.train_cfg
        self.optim.zero_grad(set_to_none=True)
        sums: Dict[str, Any] = {"cross_entropy": 0.0, "acc1": 0.0, "acc2": 0.0}
        n_out = self.classifier.cfg.num_outputs
        counts = torch.zeros(2, n_out, device=self.device)
        for _ in range(self.accumulation):
            data = classifier_batch(self.generator, self.stn, self.target, self.loss_fn, self.cfg.micro_batch,
                                    self.resize, flips=tc.flips, sample_from_full_res=tc.sample_from_full_res,
                                    padding_mode=tc.padding_mode, rng=self.rng)
            logits = self.classifier(data.images)  # (N, F K)
            loss = nn.functional.cross_entropy(logits, data.labels)
            (loss / self.accumulation).backward()
            sums["cross_entropy"] += loss.detach() / self.accumulation
            sums["acc1"] += classifier_accuracy(logits.detach(), data.distances, 1) / self.accumulation
            sums["acc2"] += classifier_accuracy(logits.detach(), data.distances, 2) / self.accumulation
            counts[0] += torch.bincount(data.labels, minlength=n_out).float()
            counts[1] += torch.bincount(logits.argmax(1), minlength=n_out).float()
        sync_gradients(list(self.classifier.parameters()))
        lr = self.sched.get_last_lr()[0]
        self.optim.step()
        self.step += 1
        self.sched.step(self.step / self.cfg.period)
        share = counts / counts[0].sum()
        values = dict(sums)
        for k in range(n_out):
            values[f"label_{k}"], values[f"pred_{k}"] = share[0, k], share[1, k]
        out = all_reduce_dict(values, device=self.device)
        out["lr"] = lr
        return out

    def fit(self, max_steps: Optional[int] = None, max_seconds: Optional[float] = None) -> TrainResult:
        """Train to ``cfg.iters`` (or ``max_steps`` more, or ``max_seconds`` of wall time, or until SIGINT /
        SIGTERM), with a checkpoint at the end; the run folder is released when it returns."""
        with self.run.acquire(), StopOnSignal(announce=self.dist.is_primary) as signals:
            return self._fit(signals, max_steps, max_seconds)

    def _fit(self, signals: StopOnSignal, max_steps: Optional[int], max_seconds: Optional[float]) -> TrainResult:
        cfg = self.cfg
        t0 = time.time()
        logger = MetricsLogger(self.run.path / "metrics.jsonl", enabled=self.dist.is_primary,
                               tensorboard=self.tensorboard, resume_step=self.step)
        stop = cfg.iters if max_steps is None else min(cfg.iters, self.step + max_steps)
        stopped_by = None
        bar = progress(cfg.iters, initial=self.step, desc="classifier", enabled=self.dist.is_primary and self.show_progress)
        try:
            while self.step < stop:
                values = self.train_step()
                self.last = values
                bar.update(1)
                bar.set_postfix_str(f"xent {values['cross_entropy']:.4f} acc {values['acc1']:.3f}", refresh=False)
                if self.step % cfg.log_every == 0 or self.step == 1 or self.step == cfg.iters:
                    logger.log(self.step, **values)
                if self.step % cfg.vis_every == 0 or self.step == cfg.iters:
                    self.visualize()
                # Every process stops at the same step: the decision is all-reduced.
                halt = any_process(signals.requested or (max_seconds is not None and time.time() - t0 > max_seconds))
                if self.step % cfg.ckpt_every == 0 or self.step == stop or halt:
                    self.save()
                if halt:
                    stopped_by = signals.signal_name if self.step < cfg.iters else None
                    break
        finally:
            bar.close()
            logger.close()
        model_path = None
        if self.step >= cfg.iters and self.dist.is_primary:
            model_path = save_checkpoint(self.model_checkpoint(), self.run.path / "model.pt")
            plot_metrics(self.run.path / "metrics.jsonl", self.run.path / "metrics.png",
                         {"cross entropy": ["cross_entropy"], "accuracy": ["acc1", "acc2"], "learning rate": ["lr"]})
        return TrainResult(self.run.path, self.step, model_path, dict(self.last), time.time() - t0, stopped_by)

    @torch.no_grad()
    def visualize(self) -> Optional[Path]:
        """Generated samples grouped by predicted cluster (one row per cluster/orientation class)."""
        if not self.dist.is_primary:
            return None
        from gangealing.vis import save_grid

        g = torch.Generator(device=self.device)
        g.manual_seed(self.cfg.seed + 4242)
        z = self.generator.sample_z(self.cfg.n_sample, generator=g)
        images = self.resize(self.generator.synthesis(self.generator.mapping(z), noise="const"))  # (V, C, S, S)
        pred = self.classifier(images).argmax(1)  # (V,)
        order = torch.argsort(pred, stable=True)
        return save_grid(images[order].clamp(-1, 1).cpu(), self.run.file("visuals", f"{self.step:07d}_by_cluster.png"))


def train_classifier(run: Union[str, Path], cfg: ClassifierTrainConfig, out: Optional[Union[str, Path]] = None, *,
                     device: Optional[str] = None, max_steps: Optional[int] = None,
                     max_seconds: Optional[float] = None, tensorboard: bool = True,
                     show_progress: bool = True) -> TrainResult:
    """The whole ``gangealing train-classifier`` command (resumes when ``out`` holds a checkpoint)."""
    dist_info = init_distributed(device)
    cfg.validate()
    path = find_model_checkpoint(run)
    model = load_checkpoint(path)
    train_cfg = None
    cfg_file = Path(run) / "config.json" if Path(run).is_dir() else None
    if "train" not in model.meta and cfg_file is not None and cfg_file.is_file():
        train_cfg = GANgealingTrainConfig.from_dict(json.loads(cfg_file.read_text())["train"])
    out = classifier_out(run, out)
    trainer = ClassifierTrainer(model, cfg, out, train_cfg=train_cfg, dist=dist_info, tensorboard=tensorboard,
                                show_progress=show_progress)
    return trainer.fit(max_steps=max_steps, max_seconds=max_seconds)
