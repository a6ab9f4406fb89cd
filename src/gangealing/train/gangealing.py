"""GANgealing training: learn the congealing target ``c`` and the spatial transformer from a frozen generator.

One optimisation step (the original's ``train.py``), for ``batch`` samples in ``accumulation``
forward passes per process::

    psi  = anneal_psi(step)                      # 1 -> 0 over the first anneal_psi steps
    loss = congealing_step(G, T, c, ...)         # objective.py: perceptual + TV + identity, min over heads/flips
    loss / accumulation -> backward; mean of gradients over processes
    Adam(T), Adam(c); after annealing both learning rates follow the decaying cosine restarts
    T_ema <- EMA(T)                              # the transformer used at test time

Initialisation: ``c`` in the span of the top ``num_directions`` PCA directions of W (PCA of
``pca_samples`` mapped samples), starting at the mean W; with K clusters each head starts at a
k-means++ seed over coarse-layer renderings (perceptual distance). The transformer starts at the
identity (zero-initialised heads), so at step 0 it returns its input.

Data parallelism: ``torchrun --nproc_per_node P gangealing train ...`` (NCCL on GPUs, gloo on
CPUs). Each process renders its own samples (its own RNG stream); after the accumulation passes
the gradients are averaged over processes in one all-reduce (what DDP does with ``no_sync``), so
every process applies the same update and the weights stay equal.

The run folder (:class:`gangealing.train.runtime.RunDir`): ``config.json``, ``checkpoints/last.pt`` and
``checkpoints/NNNNNNN.pt`` (each a gangealing model checkpoint, loadable with
:func:`gangealing.build.load_model`, plus a ``train_state`` entry with the non-EMA transformer,
the optimisers, the schedulers and the RNG, for resuming), ``metrics.jsonl`` (+ TensorBoard),
``visuals/`` (PNG grids), ``metrics.png`` and, at the end, ``model.pt`` (the model alone).
Running the same command again resumes from ``checkpoints/last.pt``, with the settings saved in it
(:func:`resume_settings`): only those in :data:`RESUMABLE` may change, those in
:data:`CHANGEABLE` only when asked for explicitly. One training at a time holds the folder
(:meth:`RunDir.acquire`); SIGINT / SIGTERM stop it after the current step with a checkpoint.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from gangealing.build import build, build_from_checkpoint, load_state_strict, make_checkpoint
from gangealing.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gangealing.models.pca import fit_pca, sample_w
from gangealing.models.stn import copy_head, copy_state_rows
from gangealing.models.target import kmeans_candidate_wplus, kmeans_plusplus_targets, lloyd_medoids

from .objective import classifier_batch, congealing_step, jitter_inputs, make_resize
from .presets import GANgealingTrainConfig
from .runtime import (DistInfo, MetricsLogger, RunDir, StopOnSignal, all_reduce_dict, all_reduce_mean, any_process,
                      broadcast_module, check_resume_settings, ema_update, init_distributed, progress, read_metrics)
from .schedules import DecayingCosineRestarts, anneal_psi, lr_cycle_iters

__all__ = [
    "TRAIN_STATE_KEY",
    "RESUMABLE",
    "CHANGEABLE",
    "TrainResult",
    "GANgealingTrainer",
    "load_generator",
    "build_transformer",
    "build_target",
    "init_target",
    "Reseed",
    "reseed_heads",
    "sync_gradients",
    "plot_metrics",
    "saved_train_config",
    "resume_settings",
    "train_gangealing",
]

TRAIN_STATE_KEY = "train_state"  # extra top-level entry of a checkpoint file that makes it resumable

# Settings that may change when a run resumes: they do not change what is learned.
RESUMABLE = ("iters", "micro_batch", "log_every", "vis_every", "ckpt_every", "n_sample", "n_mean")
# Settings read afresh at every step, which a resumed run takes only when asked to (--change-settings).
# The others are fixed at the start: the architecture, the initialisation, and what the optimisers
# and schedulers restore from the checkpoint (learning rates, t_mult, decay).
CHANGEABLE = ("loss", "tv_weight", "identity_weight", "freeze_target", "sample_from_full_res", "padding_mode",
              "input_jitter", "batch", "anneal_psi", "anneal_fn", "period", "ema_decay", "reseed_every",
              "reseed_below", "reseed_samples")


def saved_train_config(out: Union[str, Path]) -> Optional[GANgealingTrainConfig]:
    """The settings of the run in folder ``out``: those of its latest checkpoint, or None when it has
    none (a run that never saved one starts afresh, whatever its ``config.json`` says). Checkpoints of
    older runs, with flat settings, load too (:meth:`GANgealingTrainConfig.upgrade`)."""
    path = RunDir(out, is_primary=False).latest_checkpoint()
    if path is None:
        return None
    return GANgealingTrainConfig.from_dict(dict(load_checkpoint(path).meta["train"]))


def resume_settings(saved: GANgealingTrainConfig, cfg: GANgealingTrainConfig, change_settings: bool = False,
                    where: str = "this run") -> Dict[str, Tuple[Any, Any]]:
    """Check ``cfg`` against the ``saved`` settings of a run about to resume; return the changes
    ``{name: (old, new)}``. Raises ValueError naming every setting that may not change: any
    outside :data:`RESUMABLE`, unless it is in :data:`CHANGEABLE` and ``change_settings``. Settings
    are compared by their flat names (those of the flags)."""
    flat = dataclasses.make_dataclass("Settings", list(cfg.flat()))
    return check_resume_settings(flat(**saved.flat()), flat(**cfg.flat()), RESUMABLE, CHANGEABLE, change_settings,
                                 where)


def load_generator(path: Union[str, Path], device: Union[str, torch.device, None] = None) -> nn.Module:
    """A frozen, eval-mode generator from our generator or model checkpoints, or any file
    :func:`gangealing.io.import_checkpoint` understands (rosinality ``g_ema``, original GANgealing, ...)."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        from gangealing.io import import_checkpoint

        ckpt, _ = import_checkpoint(path)
    if "generator" not in ckpt.config:
        raise CheckpointError(f"{path}: this {ckpt.kind} checkpoint holds no generator")
    g = build_from_checkpoint(ckpt, "generator", device)
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def build_transformer(cfg: GANgealingTrainConfig) -> nn.Module:
    """The spatial transformer that ``cfg.stn`` describes (identity at initialisation)."""
    return build("stn", cfg.stn)


def build_target(cfg: GANgealingTrainConfig) -> nn.Module:
    """The congealing target that ``cfg.target`` describes, with at most ``style_dim`` directions
    (call :meth:`GANgealingTrainConfig.for_generator` first)."""
    return build("target", dataclasses.replace(cfg.target, num_directions=min(cfg.target.num_directions,
                                                                             cfg.target.style_dim)))


@torch.no_grad()
def init_target(target: nn.Module, generator: nn.Module, cfg: GANgealingTrainConfig, rng: torch.Generator,
                loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
                resize: Optional[Callable[[Tensor], Tensor]] = None, batch: int = 100) -> Dict[str, Any]:
    """PCA of W (``cfg.pca_samples`` samples) into ``target``'s directions, ``c`` at the mean; with
    K > 1 heads, each head at a k-means++ seed among ``cfg.kmeans_candidates`` latents rendered
    with their coarse rows (rows after ``inject`` from the mean W) and compared with ``loss_fn``
    at the transformer's resolution (``resize``), then (``cfg.kmeans_lloyd`` > 0) moved to cluster
    medoids by Lloyd iterations on ``loss_fn.embed``. Returns a summary (explained variance, seeds)."""
    d = generator.style_dim
    w = sample_w(generator.mapping, cfg.pca_samples, d, batch=10_000, generator=rng)  # (M, D)
    n_comp = min(cfg.target.num_directions, d)
    pca = fit_pca(w, n_comp)
    target.init_from_pca(pca)
    info: Dict[str, Any] = {"pca_samples": int(w.shape[0]),
                            "explained_variance": [float(v) for v in pca.explained_variance[:8]]}
    if target.cfg.num_heads > 1:
        if loss_fn is None:
            raise ValueError("k-means++ initialisation of several heads needs the perceptual loss")
        resize = resize if resize is not None else (lambda x: x)
        mean_w = w.mean(dim=0, keepdim=True)  # (1, D)
        latents = sample_w(generator.mapping, cfg.kmeans_candidates, d, batch=10_000, generator=rng)  # (M, D)
        feats = []
        for chunk in latents.split(batch):
            wp = kmeans_candidate_wplus(chunk, target.cfg.inject, generator.n_latent, mean_w)  # (B, L, D)
            img = resize(generator.synthesis(wp, noise="random", generator=rng))  # (B, C, S, S)
            # float16 on the CPU: 50k paper-size candidates would not fit in memory otherwise.
            feats.append(img.to("cpu", torch.float16))
        features = torch.cat(feats)  # (M, C, S, S)
        dev = latents.device

        def loss_dist(a: Tensor, b: Tensor) -> Tensor:
            return loss_fn(a.to(dev, torch.float32), b.to(dev, torch.float32)).reshape(-1)  # (B,)

        def embedded_dist(a: Tensor, b: Tensor) -> Tensor:
            return (a - b).square().sum(1)  # (B,): the same distances, read from the embedding

        dist, embeddings = loss_dist, None
        if cfg.kmeans_lloyd > 0:
            embed = getattr(loss_fn, "embed", None)
            if embed is None:
                raise ValueError(f"kmeans_lloyd needs a loss with a Euclidean embedding (mobilenet, lpips-vgg, "
                                 f"vgg-ssl, l2), not {type(loss_fn).__name__}; set kmeans_lloyd=0")
            embeddings = torch.cat([embed(c.to(dev, torch.float32)).cpu() for c in features.split(batch)])  # (M, E)
            # One backbone pass per candidate is already paid for: k-means++ reads its distances from
            # the embedding instead of two more passes over every candidate per seed.
            features, dist = embeddings, embedded_dist
        seeds = kmeans_plusplus_targets(latents, features, target.cfg.num_heads, dist, rng, pca, batch_size=batch,
                                        embeddings=embeddings, lloyd_iters=cfg.kmeans_lloyd)
        target.init_from_latents(seeds.latents, pca)
        info["kmeans_seeds"] = seeds.indices.tolist()
    return info


@dataclass(frozen=True)
class Reseed:
    """What one :func:`reseed_heads` check found and did."""

    shares: List[float]  # each head's share of the fresh samples (the min-distance rule, psi = 0)
    costs: List[float]  # each head's removal cost (see reseed_heads)
    heads: List[int]  # the heads re-seeded (lowest removal cost first)
    sources: List[int]  # for each, the head whose transformer it now starts from


@torch.no_grad()
def reseed_heads(generator: nn.Module, stn: nn.Module, target: nn.Module, loss_fn: Callable, resize: Callable, *,
                 samples: int, below: float, rng: torch.Generator, flips: bool = False,
                 sample_from_full_res: bool = False, padding_mode: str = "border", worst: float = 0.1,
                 batch: int = 100, optimizers: Tuple[Optional[torch.optim.Optimizer], ...] = (None, None),
                 also: Tuple[nn.Module, ...] = ()) -> Reseed:
    """Re-seed every head of a K-head run that the other heads could replace: its *removal cost*
    (the mean over ``samples`` fresh samples of how much farther its own samples are from their
    second-nearest target than from it; samples assigned as the cluster classifier's data are:
    nearest target at psi = 0) is below ``below`` times the heads' mean removal cost. A head that
    wins nothing costs 0; one whose target duplicates another's costs little.

    The samples the heads serve worst (the ``worst`` fraction with the largest distance to their
    nearest target) are what no head covers; Lloyd's k-means in ``loss_fn.embed`` splits them into
    one group per head to re-seed (without ``embed``: the worst samples themselves), and each such
    head's target restarts at its group's medoid (its W projected on the target's directions), its
    transformer rows at those of the head that serves that medoid now (:func:`copy_head`; also in
    the modules ``also``, e.g. the EMA copy). A head that already serves its medoid is left alone (a
    head re-seeded there before is still growing). ``optimizers`` (transformer's, target's): their state
    rows follow (the target's from the source head's row). ``rng`` draws the samples: the same
    stream on every process gives the same result everywhere."""
    k = target.num_heads
    parts = [classifier_batch(generator, stn, target, loss_fn, min(batch, samples - s), resize, flips=flips,
                              sample_from_full_res=sample_from_full_res, padding_mode=padding_mode, rng=rng)
             for s in range(0, samples, batch)]
    labels = torch.cat([p.labels for p in parts])  # (N,) in [0, F K)
    cluster = labels % k
    per_head = torch.cat([p.distances for p in parts]).view(len(labels), -1, k).min(dim=1).values  # (N, K): best flip
    dist = per_head.min(dim=1).values  # (N,) distance to the nearest target
    shares = torch.bincount(cluster, minlength=k).float() / len(labels)  # (K,)

    def removal_costs(alive: List[int]) -> Tensor:
        two = per_head[:, alive].topk(2, dim=1, largest=False)  # nearest and second-nearest among ``alive``
        return torch.zeros(len(alive), device=dist.device).index_add_(
            0, two.indices[:, 0], two.values[:, 1] - two.values[:, 0]) / len(labels)  # (A,)

    cost = removal_costs(list(range(k)))  # (K,)
    # One head at a time, each judged without those already taken: of two duplicates (both cost 0
    # while the other is there) only one is re-seeded.
    alive, dead = list(range(k)), []
    while len(alive) > 2:
        c = removal_costs(alive)
        j = min(range(len(alive)), key=lambda i: (float(c[i]), float(shares[alive[i]])))  # ties: fewer wins
        if c[j] >= below * cost.mean():
            break
        dead.append(alive.pop(j))
    if not dead:
        return Reseed([float(v) for v in shares], [float(v) for v in cost], [], [])
    poor = dist.argsort(descending=True)[: max(len(dead), int(round(worst * len(dist))))]  # worst served first
    embed = getattr(loss_fn, "embed", None)
    if embed is not None and len(poor) > len(dead):
        images = torch.cat([p.images for p in parts])[poor]
        e = torch.cat([embed(x).flatten(1) for x in images.split(batch)]).cpu()  # (P, E)
        picks = poor[lloyd_medoids(e, torch.arange(len(dead)), iters=10).to(poor.device)]
    else:
        picks = poor[: len(dead)]
    w = torch.cat([p.w for p in parts])  # (N, D)
    t_optim, ll_optim = optimizers
    sources = []
    moved = []
    for h, i in zip(dead, picks.tolist()):
        src = int(cluster[i])
        if src == h:  # it already serves the samples served worst (a head re-seeded there, still growing): left alone
            continue
        coef = target.coefficients
        coef[h] = (w[i].to(target.lat_mean) - target.lat_mean[0]) @ target.directions.T
        copy_state_rows(ll_optim, coef, src, h)
        copy_head(stn, src, h, t_optim)
        for m in also:
            copy_head(m, src, h)
        moved.append(h)
        sources.append(src)
    return Reseed([float(v) for v in shares], [float(v) for v in cost], moved, sources)


def sync_gradients(params: List[nn.Parameter]) -> None:
    """Average gradients over processes with one all-reduce (no-op for one process)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads or not torch.distributed.is_initialized() or torch.distributed.get_world_size() < 2:
        return
    flat = all_reduce_mean(torch.cat([g.reshape(-1) for g in grads])).to(grads[0].device)  # (P,)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def plot_metrics(metrics_path: Union[str, Path], out_png: Union[str, Path],
                 groups: Optional[Dict[str, List[str]]] = None) -> Optional[Path]:
    """Plot the logged loss terms, psi and learning rates against the step (matplotlib, lazily
    imported; returns None without it or without data)."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = groups or {"loss terms": ["perceptual", "tv", "identity"], "total loss": ["total"],
                        "psi": ["psi"], "learning rates": ["lr_stn", "lr_target"]}
    groups = {k: [n for n in v if any(n in r for r in rows)] for k, v in groups.items()}
    groups = {k: v for k, v in groups.items() if v}
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.2), squeeze=False)
    for ax, (title, names) in zip(axes[0], groups.items()):
        for n in names:
            pts = [(r["step"], r[n]) for r in rows if isinstance(r.get(n), (int, float))]
            if pts:
                ax.plot(*zip(*pts), label=n)
        if title == "loss terms":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    step: int
    model_path: Optional[Path]  # model.pt, written when the last step was reached
    losses: Dict[str, float]  # the last logged values
    wall_time_s: float
    stopped_by: Optional[str] = None  # 'SIGINT' / 'SIGTERM' when a signal stopped the run (with a checkpoint)


class GANgealingTrainer:
    """Trains a transformer and a congealing target against a frozen generator (see the module docstring)."""

    def __init__(self, cfg: GANgealingTrainConfig, generator: nn.Module, out: Union[str, Path], *,
                 dist: Optional[DistInfo] = None, loss_fn: Optional[nn.Module] = None, real: Optional[Tensor] = None,
                 tensorboard: bool = True, show_progress: bool = True, generator_source: str = "",
                 change_settings: bool = False):
        cfg = self.cfg = cfg.validate().for_generator(generator)
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.generator = generator.to(self.device).eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.generator_source = generator_source
        self.accumulation = cfg.accumulation(self.dist.world_size)
        self.show_progress = show_progress
        self.tensorboard = tensorboard
        self.real = real  # (M, C, S, S) in [-1, 1] at input_size, for visuals only (CPU)

        if loss_fn is None:
            from gangealing.losses.perceptual import build_perceptual_loss

            loss_fn = build_perceptual_loss(cfg.loss)
        self.loss_fn = loss_fn.to(self.device).eval()
        self.resize = make_resize(generator.size, cfg.stn.flow_size).to(self.device)

        # Same seed on every process for the models; a per-process stream for the samples.
        torch.manual_seed(cfg.seed)
        self.stn = build_transformer(cfg).to(self.device).train()
        self.stn_ema = copy.deepcopy(self.stn).eval()
        for p in self.stn_ema.parameters():
            p.requires_grad_(False)
        self.target = build_target(cfg).to(self.device)
        self.t_optim = torch.optim.Adam(self.stn.parameters(), lr=cfg.stn_lr, betas=(0.9, 0.999), eps=1e-8)
        self.ll_optim = torch.optim.Adam(self.target.parameters(), lr=cfg.target_lr, betas=(0.9, 0.999), eps=1e-8)
        self.t_sched = DecayingCosineRestarts(self.t_optim, t0=1, t_mult=cfg.t_mult, decay=cfg.decay)
        self.ll_sched = DecayingCosineRestarts(self.ll_optim, t0=1, t_mult=cfg.t_mult, decay=cfg.decay)
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(cfg.seed * self.dist.world_size + self.dist.rank)
        self.step = 0
        self.init_info: Dict[str, Any] = {}
        self.last_losses: Dict[str, float] = {}

        # The folder is locked (and swept) before its checkpoint is read; its files are written only
        # once the settings, the generator and the checkpoint have passed their checks.
        self.run = RunDir(out, keep=2, is_primary=self.dist.is_primary).acquire()
        try:
            resume = self.run.latest_checkpoint()
            if resume is not None:
                self._resume(resume, change_settings)
            else:
                init_rng = torch.Generator(device=self.device)
                init_rng.manual_seed(cfg.seed)  # identical on every process
                self.init_info = init_target(self.target, self.generator, cfg, init_rng, self.loss_fn, self.resize)
                broadcast_module(self.target)
                broadcast_module(self.stn)
                self.stn_ema.load_state_dict(self.stn.state_dict())
                self.run.save_config({"train": dataclasses.asdict(cfg), "generator": self.generator.cfg.to_dict(),
                                      "generator_source": generator_source, "world_size": self.dist.world_size,
                                      "accumulation": self.accumulation, "init": self.init_info})
        except BaseException:
            self.run.release()
            raise
        # Fixed samples for the visuals (same on every process; only the primary draws them).
        vis_rng = torch.Generator(device=self.device)
        vis_rng.manual_seed(cfg.seed + 12345)
        per = max(1, cfg.n_sample // cfg.stn.num_heads)
        self.vis_z = generator.sample_z(per, generator=vis_rng)  # (V, D)

    # ------------------------------------------------------------------ checkpoints
    def model_checkpoint(self):
        """The current model (EMA transformer) as a gangealing 'model' :class:`Checkpoint`."""
        cfg = self.cfg
        meta = {"source": "gangealing train", "generator_source": self.generator_source,
                "test": {"iters": 1, "padding_mode": cfg.padding_mode, "flip": bool(cfg.flips and cfg.stn.num_heads == 1)},
                "train": dataclasses.asdict(cfg), "flips": bool(cfg.flips)}
        return make_checkpoint("model", {"generator": self.generator, "stn": self.stn_ema, "target": self.target},
                               step=self.step, meta=meta)

    def save(self) -> Optional[Path]:
        """Write ``checkpoints/last.pt`` and ``checkpoints/NNNNNNN.pt`` (primary only), atomically."""
        if not self.dist.is_primary:
            return None
        d = self.model_checkpoint().to_dict()
        d[TRAIN_STATE_KEY] = {
            "step": self.step,
            "stn": {k: v.detach().cpu() for k, v in self.stn.state_dict().items()},
            "t_optim": self.t_optim.state_dict(),
            "ll_optim": self.ll_optim.state_dict(),
            "t_sched": self.t_sched.state_dict(),
            "ll_sched": self.ll_sched.state_dict(),
            "rng": self.rng.get_state(),
            "world_size": self.dist.world_size,
        }
        return self.run.save_checkpoint(d, self.step)

    def _resume(self, path: Path, change_settings: bool = False) -> None:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if TRAIN_STATE_KEY not in raw:
            raise CheckpointError(f"{path}: has no training state to resume from")
        ts = raw[TRAIN_STATE_KEY]
        ckpt = load_checkpoint(path)
        where = f"the run in {self.run.path}"
        try:
            same_generator = type(self.generator.cfg).from_dict(dict(ckpt.config["generator"])) == self.generator.cfg
        except (TypeError, ValueError):  # another kind of generator
            same_generator = False
        if not same_generator:
            raise ValueError(f"{where} was trained against another generator ({ckpt.meta.get('generator_source')}); "
                             "pass that --generator to continue it, or choose another --out")
        changes = resume_settings(GANgealingTrainConfig.from_dict(dict(ckpt.meta["train"])), self.cfg,
                                  change_settings, where)
        if changes:  # config.json says what the run continues with, and since when
            saved = self.run.load_config() or {}
            entry = {"step": int(ts["step"]), **{k: list(v) for k, v in changes.items()}}
            if any(k not in RESUMABLE for k in changes):  # what is learned changes: keep the branch point
                pinned = self.run.pin_checkpoint(path, int(ts["step"]))
                if pinned is not None:
                    entry["branch_checkpoint"] = str(pinned.relative_to(self.run.path))
            history = saved.get("changes", []) + [entry]
            self.run.save_config({**saved, "train": dataclasses.asdict(self.cfg), "changes": history})
        load_state_strict(self.stn_ema, ckpt.state["stn"], "checkpoint transformer (EMA)")
        load_state_strict(self.target, ckpt.state["target"], "checkpoint target")
        load_state_strict(self.stn, ts["stn"], "checkpoint transformer")
        self.t_optim.load_state_dict(ts["t_optim"])
        self.ll_optim.load_state_dict(ts["ll_optim"])
        self.t_sched.load_state_dict(ts["t_sched"])
        self.ll_sched.load_state_dict(ts["ll_sched"])
        self.step = int(ts["step"])
        if self.dist.rank == 0 and ts.get("world_size", 1) == self.dist.world_size and self.device.type == "cpu":
            self.rng.set_state(ts["rng"])
        else:  # other processes (or another device): a fresh stream that still depends on the step
            self.rng.manual_seed((self.cfg.seed * self.dist.world_size + self.dist.rank) * 1_000_003 + self.step)

    # ------------------------------------------------------------------ training
    def train_step(self) -> Dict[str, float]:
        """One optimisation step (``accumulation`` forward/backward passes); returns its loss terms
        (means over passes and processes) and the rates and psi used."""
        cfg = self.cfg
        step = self.step + 1
        psi = anneal_psi(step, cfg.anneal_psi, cfg.anneal_fn)
        self.t_optim.zero_grad(set_to_none=True)
        self.ll_optim.zero_grad(set_to_none=True)
        sums: Dict[str, Tensor] = {}
        heads = torch.zeros(cfg.stn.num_heads * (2 if cfg.flips else 1), device=self.device)
        for _ in range(self.accumulation):
            terms = congealing_step(self.generator, self.stn, self.target, self.loss_fn, psi, cfg.micro_batch,
                                    self.resize, flips=cfg.flips, tv_weight=cfg.tv_weight,
                                    identity_weight=cfg.identity_weight, sample_from_full_res=cfg.sample_from_full_res,
                                    padding_mode=cfg.padding_mode, rng=self.rng, input_jitter=cfg.input_jitter)
            (terms.total / self.accumulation).backward()
            for name in ("total", "perceptual", "tv", "identity"):
                sums[name] = sums.get(name, 0.0) + getattr(terms, name).detach() / self.accumulation
            heads += torch.bincount(terms.assignment.index, minlength=heads.numel()).float()
        sync_gradients([p for p in self.stn.parameters()] + [p for p in self.target.parameters()])
        lrs = {"lr_stn": self.t_sched.get_last_lr()[0], "lr_target": self.ll_sched.get_last_lr()[0]}
        self.t_optim.step()
        if not cfg.freeze_target:
            self.ll_optim.step()
        if step > cfg.anneal_psi:  # the rates stay at their base until psi has reached 0
            epoch = max(0.0, (step - cfg.anneal_psi) / cfg.period)
            self.t_sched.step(epoch)
            self.ll_sched.step(epoch)
        ema_update(self.stn_ema, self.stn, cfg.ema_decay)
        self.step = step
        values = dict(sums)
        if heads.numel() > 1:
            share = heads / heads.sum()
            for k in range(heads.numel()):
                values[f"assign_{k}"] = share[k]
        out = all_reduce_dict(values, device=self.device)
        out.update(psi=psi, **lrs)
        return out

    def fit(self, max_steps: Optional[int] = None, max_seconds: Optional[float] = None) -> TrainResult:
        """Train to ``cfg.iters`` (or stop after ``max_steps`` more steps, e.g. to simulate a kill, or
        after ``max_seconds`` of wall time, or at SIGINT / SIGTERM, with a checkpoint: run again to
        continue). The run folder is released when it returns."""
        with self.run.acquire(), StopOnSignal(announce=self.dist.is_primary) as signals:
            return self._fit(signals, max_steps, max_seconds)

    def _fit(self, signals: StopOnSignal, max_steps: Optional[int], max_seconds: Optional[float]) -> TrainResult:
        cfg = self.cfg
        t0 = time.time()
        logger = MetricsLogger(self.run.path / "metrics.jsonl", enabled=self.dist.is_primary,
                               tensorboard=self.tensorboard, resume_step=self.step)
        cycle_ends = set(lr_cycle_iters(cfg.anneal_psi, cfg.period, cfg.iters, cfg.t_mult))
        stop = cfg.iters if max_steps is None else min(cfg.iters, self.step + max_steps)
        stopped_by = None
        if self.step == 0:
            self.visualize(logger)
        bar = progress(cfg.iters, initial=self.step, desc="gangealing", enabled=self.dist.is_primary and self.show_progress)
        try:
            while self.step < stop:
                values = self.train_step()
                step = self.step
                if cfg.reseed_every and cfg.anneal_psi < step < cfg.iters and step % cfg.reseed_every == 0:
                    values["reseeded"] = float(len(self.reseed().heads))
                self.last_losses = values
                bar.update(1)
                bar.set_postfix_str(f"p {values['perceptual']:.4f} tv {values['tv']:.2e} id {values['identity']:.2e} "
                                    f"psi {values['psi']:.3f}", refresh=False)
                if step % cfg.log_every == 0 or step == 1 or step in cycle_ends or step == cfg.iters:
                    logger.log(step, **values)
                if step % cfg.vis_every == 0 or step in cycle_ends or step == cfg.iters:
                    self.visualize(logger)
                # Every process stops at the same step: the decision is all-reduced.
                halt = any_process(signals.requested or (max_seconds is not None and time.time() - t0 > max_seconds))
                if step % cfg.ckpt_every == 0 or step in cycle_ends or step == stop or halt:
                    self.save()
                if halt:
                    stopped_by = signals.signal_name if step < cfg.iters else None
                    break
        finally:
            bar.close()
            logger.close()
        model_path = None
        if self.step >= cfg.iters and self.dist.is_primary:
            model_path = save_checkpoint(self.model_checkpoint(), self.run.path / "model.pt")
            plot_metrics(self.run.path / "metrics.jsonl", self.run.path / "metrics.png")
        return TrainResult(self.run.path, self.step, model_path, dict(self.last_losses), time.time() - t0, stopped_by)

    def reseed(self) -> Reseed:
        """Re-seed the heads the others would replace (:func:`reseed_heads`, ``cfg.reseed_*``). The
        samples come from a stream seeded by the run's seed and the step: the same on every process and
        after a resume."""
        cfg = self.cfg
        rng = torch.Generator(device=self.device).manual_seed(cfg.seed * 1_000_003 + self.step)
        res = reseed_heads(self.generator, self.stn, self.target, self.loss_fn, self.resize, samples=cfg.reseed_samples,
                           below=cfg.reseed_below, rng=rng, flips=cfg.flips, sample_from_full_res=cfg.sample_from_full_res,
                           padding_mode=cfg.padding_mode, batch=cfg.micro_batch,  # a training pass: fits
                           optimizers=(self.t_optim, self.ll_optim), also=(self.stn_ema,))
        if res.heads and self.dist.is_primary:
            print(f"step {self.step}: re-seeded head(s) {res.heads} from {res.sources} (shares "
                  f"{', '.join(f'{v:.3f}' for v in res.shares)}; removal costs "
                  f"{', '.join(f'{v:.2e}' for v in res.costs)})", flush=True)
        return res

    # ------------------------------------------------------------------ visuals
    @torch.no_grad()
    def visualize(self, logger: Optional[MetricsLogger] = None) -> Dict[str, Path]:
        """Save the visual grids of the current step under ``visuals/`` (primary only)."""
        if not self.dist.is_primary:
            return {}
        from gangealing.vis import make_grid, save_grid

        cfg, g, k = self.cfg, self.generator, self.cfg.stn.num_heads
        step = self.step
        psi = anneal_psi(max(step, 1), cfg.anneal_psi, cfg.anneal_fn) if step else 1.0
        w = g.mapping(self.vis_z)  # (V, D)
        inputs = g.synthesis(w, noise="const")  # (V, C, G, G)
        if cfg.input_jitter:  # a fixed jitter per visual sample, so that steps compare
            fixed = torch.Generator(device=self.device).manual_seed(cfg.seed)
            inputs = jitter_inputs(inputs, cfg.input_jitter, padding_mode=cfg.padding_mode, rng=fixed)
        stn_in = self.resize(inputs)  # (V, C, S, S)
        targets = self.resize(g.synthesis(self.target(w, psi), noise="const"))  # (V K, C, S, S)
        res = self.stn_ema(stn_in, padding_mode=cfg.padding_mode,
                           source=inputs if cfg.sample_from_full_res else None)
        c = self.target.target_latent()  # (K, D)
        grids = {"inputs": (stn_in, None), "targets": (targets, k), "congealed": (res.images, k),
                 "target": (self.resize(g.synthesis(c, noise="const")), None)}
        if self.real is not None and len(self.real):
            real = self.real[: cfg.n_sample].to(self.device)
            rr = self.stn_ema(real, output_resolution=cfg.stn.input_size, padding_mode=cfg.padding_mode)
            grids["real"] = (real, None)
            grids["real_congealed"] = (rr.images, k)
            grids["real_average"] = (self.congealed_average(), None)
        out = {}
        for name, (images, nrow) in grids.items():
            nrow = nrow if nrow and nrow > 1 else None
            path = self.run.file("visuals", f"{step:07d}_{name}.png")
            out[name] = save_grid(images.float().clamp(-1, 1).cpu(), path, nrow=nrow)
            if logger is not None:
                logger.log_image(step, f"visuals/{name}", make_grid(images.float().clamp(-1, 1).cpu(), nrow=nrow))
        plot_metrics(self.run.path / "metrics.jsonl", self.run.path / "metrics.png")
        return out

    @torch.no_grad()
    def congealed_average(self, batch: int = 100) -> Tensor:
        """Average of the congealed real images (first ``n_mean``): (K, C, R, R), one per head."""
        real = self.real[: self.cfg.n_mean]
        total = None
        for chunk in real.split(batch):
            res = self.stn_ema(chunk.to(self.device), output_resolution=self.cfg.stn.input_size,
                               padding_mode=self.cfg.padding_mode)
            imgs = res.images.unflatten(0, (chunk.shape[0], self.cfg.stn.num_heads)).sum(0)  # (K, C, R, R)
            total = imgs if total is None else total + imgs
        return total / real.shape[0]


def _load_real(source: str, size: int, split: str, limit: int) -> Tensor:
    from gangealing.data import prepare_dataset

    ds = prepare_dataset(source, size, split=split)
    n = min(len(ds), limit)
    return ds.tensor(slice(0, n))  # (n, C, S, S)


def train_gangealing(cfg: GANgealingTrainConfig, generator_path: Union[str, Path], out: Union[str, Path], *,
                     real: Optional[str] = None, real_split: str = "test", device: Optional[str] = None,
                     max_steps: Optional[int] = None, max_seconds: Optional[float] = None, tensorboard: bool = True,
                     show_progress: bool = True, change_settings: bool = False) -> TrainResult:
    """The whole ``gangealing train`` command: processes, generator, trainer, run. Resumes when
    ``out`` holds a checkpoint (``cfg`` must then agree with its settings; see :func:`resume_settings`)."""
    dist_info = init_distributed(device)
    cfg.validate()
    gen = load_generator(generator_path, dist_info.device)
    real_images = _load_real(real, cfg.stn.input_size, real_split, max(cfg.n_mean, cfg.n_sample)) if real else None
    trainer = GANgealingTrainer(cfg, gen, out, dist=dist_info, real=real_images, tensorboard=tensorboard,
                                show_progress=show_progress, generator_source=str(generator_path),
                                change_settings=change_settings)
    return trainer.fit(max_steps=max_steps, max_seconds=max_seconds)
