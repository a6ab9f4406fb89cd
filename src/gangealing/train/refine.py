"""Refinement: fit a spatial transformer to a collection of real images, with or without a GAN (issue 16).

The objective is set-level congealing with GANgealing's transformer. For a batch of real images
``x`` the transformer gives congealed images ``T(x)`` (at ``flow_size``); the loss is

    d(blur(T(x)), blur(template))                       the alignment term (mean squared error)
    + tv_weight * TV(flow) + identity_weight * |flow|^2  the paper's flow penalties (losses/flow.py)
    + anchor_weight * |grid - grid_start|^2              stay near the starting warp
    + pose_weight * |batch mean of the pose and flow relative to the start|^2
    + scale_weight * relu(|log scale relative to the start| - max_log_scale)^2

The template is the running average congealed image (initialised from a pass over the training
images, then an exponential moving average of batch means: re-estimated as training goes, no
gradient through it), the model's own GAN target (the generator at the learned congealing
latent), or the mean of the two distances (``template='both'``). The blur shrinks linearly over
the steps (coarse to fine: early on, far-apart images still overlap when blurred).

Collapse guards. A set-level objective is easiest to meet by zooming every image onto a flat patch
or shrinking them all onto the template. Three terms rule that out: the batch-mean pose (angle, log
scale, shift of the similarity, and the mean residual flow) relative to the starting model is
pinned to zero, as classic congealing re-centres its mean transform, so the set as a whole cannot
zoom or drift; each image's scale relative to the start is bounded (``max_log_scale``, a hinge);
and the warp is anchored to the start. A transformer from nothing starts at the identity, so
"relative to the start" means relative to the input frame.

Clustering models (K heads): every head is adapted, each on its own cluster. As training's hard
min-assignment, each image goes to the head whose congealed image is nearest that head's GAN target
(a :class:`~gangealing.routing.TargetRouter`: the model's training distance and its mirror choice;
the transformer being fitted routes, so assignments follow the fit), and the alignment term
compares it with its cluster's template (one running average congealed image per cluster, started
from the images routed there; a cluster no image reaches starts at its GAN target). The refined
model routes the same way (``meta["test"]["routing"] = "targets"``). Routing costs K transformer
passes per image on every step.

From nothing (:func:`scratch_stn`): an identity-initialised small transformer; its flow is frozen
for the first ``flow_warmup`` of the steps so that the similarity does the coarse work first.

A held-out split (``holdout``) decides when to stop: every ``eval_every`` steps the held-out images'
distance to the template (at the final blur) is measured; the weights of the best evaluation are
kept, and training stops after ``patience`` evaluations without improvement, at ``steps``, or after
``minutes``. Evaluations in the first ``patience_after`` of the steps do not count toward patience:
while the blur is still coarse, a transformer that starts well aligned (an adapted GANgealing
model) first gets worse at the fine scale the held-out check measures, and only then better
(measured on ``gangealing-cat``: held-out distance 0.083 at the start, 0.089 at step 50, 0.074 at
step 400; with patience counted from the start every adapted model came back unchanged).
Images stream through in batches from a (memory-mapped) prepared dataset, so memory does not grow
with the collection.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..baselines.congealing import gaussian_blur
from ..geometry.similarity import compose, invert
from ..losses.flow import flow_identity_loss, total_variation_loss
from .runtime import MetricsLogger, progress, seed_everything
from .schedules import cosine_anneal

__all__ = ["RefineConfig", "RefineResult", "scratch_stn", "pose_of", "Refiner", "refine",
           "load_refine_images", "save_refined", "default_config", "parse_overrides", "MIN_IMAGES", "SCRATCH_SIZE", "SCRATCH_CHANNELS",
           "SCRATCH_FLOW_DOWNSAMPLE"]

MIN_IMAGES = 4  # fewest images that leave both a training and a held-out split of two
# The transformer made from nothing: 32 px; widest layer 64 (32 before 2026-12-06: 64 gained 0.02 IoU
# on cats on both splits, docs/refine.md "From nothing: width and length").
SCRATCH_SIZE = 32
SCRATCH_CHANNELS = 64
# Its flow is regressed at 32 / 4 = 8 x 8 and convex-upsampled (GANgealing's transformers: / 8, 4 x 4).
# The finer grid gains mask-transfer IoU on silhouettes, but with the flow TV of 10 that suited the
# 4 x 4 grid it bent the perturbed digits onto each other (keypoint PCK@0.1 0.730 -> 0.147); with TV
# 100 (default_config) the keypoint guard reads as the 4 x 4 grid's and cats gain 0.015 set-level,
# 0.034 inductive (8 before 2026-12-07; docs/refine.md, "From nothing: the flow's grid").
SCRATCH_FLOW_DOWNSAMPLE = 4


@dataclass(frozen=True)
class RefineConfig:
    """Hyper-parameters of :class:`Refiner` (weights are relative to a mean squared error in [-1, 1] units)."""

    steps: int = 400  # the bench's length; 1,000 images at 32 px fit in under 5 minutes on 2 cores (BENCHMARKS.md)
    minutes: Optional[float] = None  # wall-clock budget; None: no limit
    batch: int = 32
    lr: float = 2e-3
    template: str = "auto"  # 'mean', 'gan', 'both'; 'auto': 'both' with a GAN, else 'mean'
    template_decay: float = 0.9  # EMA of the batch-mean congealed image
    blur: tuple = (2.0, 0.5)  # Gaussian sigma (flow-size pixels) at the first and the last step
    tv_weight: float = 1000.0
    identity_weight: float = 1.0
    anchor_weight: float = 0.0
    pose_weight: float = 10.0
    scale_weight: float = 100.0
    max_log_scale: float = math.log(1.6)
    flow_warmup: float = 0.0  # fraction of the steps during which the flow is frozen
    # Learning-rate schedule over the steps: 'constant', or 'cosine' (from lr down to 0 at the last
    # step; a frozen flow's warm-up is not counted, the flow's rate follows from where it is unfrozen).
    lr_schedule: str = "constant"
    # Which stages of the transformer are trained: 'all', or 'similarity' (the flow stays as it
    # starts). Adapting a model to pose changes only, the rigid stage cannot bend one shape onto another.
    stages: str = "all"
    distill_steps: int = 0  # steps regressing the grids of a set-level fit (baselines.rigid) before the objective
    teacher_flow_cells: int = 8  # per-image flow resolution of that fit
    holdout: float = 0.1  # fraction of the images held out to decide when to stop
    max_holdout: int = 1000  # at most this many held out: each check costs a pass over them
    # The first template is the mean congealed image of at most this many training images (a seeded
    # random subset of a larger collection; the running average takes over from there), so a
    # collection of 100,000 images does not start with a pass over all of them.
    init_images: int = 4096
    eval_every: int = 25
    patience: int = 8
    patience_after: float = 0.5  # fraction of the steps before which evaluations do not count toward patience
    seed: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def default_config(from_model: bool, **overrides: Any) -> RefineConfig:
    """Defaults for adapting a GANgealing model or for a transformer from nothing, each measured (the
    tables in docs/refine.md). Both: flow TV 100. From nothing, with its 8 x 8 flow grid: TV 10 bent
    the perturbed-MNIST digits onto each other (keypoint PCK@0.1 0.147) and TV 30 still did (0.43),
    TV 100 keeps the guard at the 4 x 4 grid's level (0.717 vs 0.730) with cat mask transfer 0.749
    inductive (TV 10 was best on the 4 x 4 grid, 0.715 there). Adapting a model: TV 100 (cat mask
    transfer as with TV 10, 0.726 inductive, and the keypoint guard raised where TV 10 bent the
    digits: same-digit PCK@0.05 0.873 vs 0.837), anchored to its warp. Both: Adam 3e-3 (TV 1000 and
    lr 5e-4 gave cat 0.697 set-level; lr 6e-3 measured no better). The similarity stage alone
    (``stages='similarity'``) takes 1.5e-3: on the perturbed-MNIST guard it raised every cell over 3e-3
    (different digits PCK@0.1 0.899 -> 0.907 fitted on train digits; 7.5e-4 0.904, 6e-3 no change)."""
    similarity_only = overrides.get("stages") == "similarity"
    base = dict(tv_weight=100.0, lr=1.5e-3 if similarity_only else 3e-3, anchor_weight=1.0 if from_model else 0.0)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return RefineConfig(**base)


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> keyword overrides for :func:`default_config` (the study scripts'
    ``--set``): values read as JSON (``tv_weight=100``, ``stages='"similarity"'``), lists as tuples
    (``blur=[0.5,0.5]``); a key that is not a :class:`RefineConfig` field is refused by name."""
    fields = {f.name for f in dataclasses.fields(RefineConfig)}
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        v = json.loads(value)
        out[key] = tuple(v) if isinstance(v, list) else v
    return out


@dataclass
class RefineResult:
    """What :meth:`Refiner.fit` returns; ``stn`` holds the best held-out weights, in eval mode."""

    stn: nn.Module
    steps: int
    best_step: int
    holdout_loss: float  # best held-out distance to the template (nan without a held-out split)
    initial_holdout_loss: float
    seconds: float
    images_per_s: float  # training images through the transformer per second
    stopped: str  # 'steps', 'minutes', 'patience'
    train_images: int
    holdout_images: int
    history: List[Dict[str, float]] = field(default_factory=list)


def scratch_stn(size: int = SCRATCH_SIZE, channels: int = SCRATCH_CHANNELS, image_channels: int = 3, input_size: Optional[int] = None,
                seed: Optional[int] = 0, flow_downsample: int = SCRATCH_FLOW_DOWNSAMPLE) -> nn.Module:
    """An identity-initialised small similarity + flow transformer of ``size`` px (a power of two >= 16).

    Its hidden layers are initialised from ``seed`` (without touching the global random state), so a
    refine run does not depend on what ran before it in the process; ``None``: the global state."""
    from ..build import build
    from ..config import STNConfig

    if size < 16 or size & (size - 1):
        raise ValueError(f"the transformer size must be a power of two >= 16 (e.g. 32 or 64), got {size}")
    cfg = STNConfig(transforms=("similarity", "flow"), flow_size=size, input_size=input_size or size,
                    channel_multiplier=0.5, max_channels=channels, image_channels=image_channels,
                    flow_downsample=flow_downsample)
    if seed is None:
        return build("stn", cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build("stn", cfg)


def pose_of(matrix: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 3)`` similarity-like matrices -> ``(N, 4)`` ``(angle, log_scale, tx, ty)``."""
    a = matrix[:, :, :2]
    det = (a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]).abs().clamp(min=1e-8)
    angle = torch.atan2(a[:, 1, 0] - a[:, 0, 1], a[:, 0, 0] + a[:, 1, 1])
    return torch.stack([angle, 0.5 * det.log(), matrix[:, 0, 2], matrix[:, 1, 2]], -1)


def _split(n: int, holdout: float, seed: int, max_holdout: int = 1000):
    if n < 2:
        raise ValueError(f"refine needs at least 2 images, got {n}")
    if holdout <= 0:
        return torch.arange(n), torch.arange(0)
    k = min(max(2, max_holdout), max(2, int(round(n * holdout))))
    if n - k < 2:
        raise ValueError(f"{n} images are too few to hold out a split (need at least {MIN_IMAGES}); add images or "
                         "pass --holdout 0 to fit on all of them without early stopping")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


class Refiner:
    """Fits ``stn`` (a :class:`~gangealing.models.stn.SpatialTransformer`, trained in place on a copy)
    to real images; ``template_image`` ``(1, C, S, S)`` is the GAN target when there is one.
    ``flip`` is the starting model's test-time flip inference (the images are fitted as the model
    faces them). ``iters``: similarity passes the transformer is fitted with (default 1, also for a
    model applied with more: on the perturbed-MNIST guard, ``gangealing-tiny-mnist3`` (2 passes)
    refined at its 2 passes gave PCK 0.9645 / 0.9010 against 0.9690 / 0.9050 at one pass,
    docs/refine.md). A clustering model (K heads) needs ``router`` (a
    :class:`~gangealing.routing.TargetRouter`, whose templates are the heads' GAN targets and replace
    ``template_image``) and routes every image to a head as the module docstring says."""

    def __init__(self, stn: nn.Module, cfg: RefineConfig = RefineConfig(), *, template_image: Optional[torch.Tensor] = None,
                 device: Union[str, torch.device, None] = None, flip: bool = False, iters: int = 1, router=None):
        if cfg.stages not in ("all", "similarity"):
            raise ValueError(f"stages must be 'all' or 'similarity', got {cfg.stages!r}")
        if cfg.template not in ("auto", "mean", "gan", "both"):
            raise ValueError(f"template must be 'auto', 'mean', 'gan' or 'both', got {cfg.template!r}")
        if cfg.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {cfg.lr_schedule!r}")
        if router is not None:  # a clustering model: the heads' GAN targets are the router's templates
            template_image = router.templates
        kind = ("both" if template_image is not None else "mean") if cfg.template == "auto" else cfg.template
        if kind in ("gan", "both") and template_image is None:
            raise ValueError(f"template={kind!r} needs the model's GAN target; this model has no generator and target "
                             "(use template='mean')")
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else next(stn.parameters()).device
        self.heads, self.router = int(stn.num_heads), None
        if self.heads > 1:
            if router is None:
                raise ValueError(f"this is a clustering model ({self.heads} heads): refining it routes each image to the "
                                 "head whose GAN target is nearest, so it needs the model's generator and target "
                                 "(pass router=TargetRouter.from_model(...); `gangealing refine --ckpt` does this)")
            if router.num_clusters != self.heads:
                raise ValueError(f"the router has {router.num_clusters} targets but the transformer has {self.heads} heads")
            if flip:
                raise ValueError("a clustering model mirrors images by its routing (router.flips), not by flip inference")
            self.router = router.to(self.device)
        self.kind = kind
        self.start = copy.deepcopy(stn).to(self.device).eval().requires_grad_(False)
        self.stn = copy.deepcopy(stn).to(self.device).train()
        self.gan = None if template_image is None else template_image.to(self.device, torch.float32)
        self.size = stn.cfg.flow_size
        # A model with flip inference (trained with --flips) meets mirrored poses by mirroring the
        # input. Refine fits the images the way the starting model faces them (mirrored where it
        # mirrors them), so the refined transformer keeps one facing instead of learning both.
        self.flip = bool(flip)
        # The similarity passes the model is applied with (meta["test"]["iters"], e.g. chosen by
        # `gangealing tune`): the transformer is fitted as it will be used, not at one pass.
        if int(iters) < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.iters = int(iters)
        self.from_identity = not any(p.abs().sum() > 0 for n, p in stn.named_parameters() if "warp_head" in n
                                     and n.endswith(("linear.weight", "linear.bias", "flow_out.2.weight", "flow_out.2.bias")))
        if self.heads > 1 and self.from_identity:
            raise ValueError("a clustering transformer at the identity has no clusters to adapt; refine a trained model")

    # -- pieces --------------------------------------------------------------------------------

    def _sigma(self, step: int, total: int) -> float:
        a, b = self.cfg.blur
        return a + (b - a) * min(1.0, step / max(1, total - 1))

    @torch.no_grad()
    def _prepare(self, x: torch.Tensor):
        """``(x, heads)``: ``x`` as the model faces it (mirrored where the starting model's flip
        inference, or a clustering model's routing, mirrors it) and, for K heads, each image's head
        ``(N,)`` (the current transformer routes; None for one head)."""
        if self.router is not None:
            heads, flipped = self.router.route(self.stn, x, iters=self.iters)
            return _mirrored(x, flipped), heads
        return _mirrored(x, self._start_flips(x)), None

    @torch.no_grad()
    def _start_flips(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: where the starting model's flip inference mirrors ``x`` (none without flips)."""
        if not self.flip:
            return torch.zeros(x.size(0), dtype=torch.bool, device=x.device)
        return self.start(x, flip="auto", antialias=False, iters=self.iters).flipped

    def _forward(self, stn: nn.Module, x: torch.Tensor, heads: Optional[torch.Tensor] = None):
        # Congealed at flow_size; same-size sampling needs no mipmaps.
        return stn(x, antialias=False, iters=self.iters, heads=heads)

    @torch.no_grad()
    def _mean_congealed(self, batches) -> torch.Tensor:
        """``(K, C, S, S)``: the mean congealed image of the images each head gets (K = 1: of all);
        a head that gets none keeps its GAN target."""
        total, count = None, torch.zeros(self.heads, device=self.device)
        for x, heads in batches:
            img = self._forward(self.stn, x, heads).images
            h = torch.zeros(img.size(0), dtype=torch.long, device=img.device) if heads is None else heads
            total = img.new_zeros(self.heads, *img.shape[1:]) if total is None else total
            total.index_add_(0, h, img)
            count += torch.bincount(h, minlength=self.heads).to(count)
        mean = total / count.clamp(min=1).view(-1, 1, 1, 1)
        if self.heads > 1:
            mean = torch.where((count > 0).view(-1, 1, 1, 1), mean, self.gan)
        return mean

    def _distance(self, congealed: torch.Tensor, template: torch.Tensor, sigma: float,
                  heads: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-image mean squared distance ``(N,)`` of blurred congealed images to the template(s):
        with ``heads`` ``(N,)``, to the templates (``(K, C, S, S)``) of each image's head."""
        c = gaussian_blur(congealed, sigma)
        pick = (lambda t: t) if heads is None else (lambda t: t[heads])  # noqa: E731
        d = []
        if self.kind in ("mean", "both"):
            d.append((c - pick(gaussian_blur(template, sigma))).square().flatten(1).mean(1))
        if self.kind in ("gan", "both"):
            d.append((c - pick(gaussian_blur(self.gan, sigma))).square().flatten(1).mean(1))
        return sum(d) / len(d)

    def loss(self, x: torch.Tensor, template: torch.Tensor, sigma: float, heads: Optional[torch.Tensor] = None,
             start: Optional[tuple] = None):
        """Total loss, its terms, and the congealed batch (for the template update); ``heads``
        ``(N,)``: each image's head (clustering models); ``start``: the starting model's
        ``(grid, matrix, flow)`` of ``x`` when already known (:class:`_StartCache`)."""
        cfg = self.cfg
        res = self._forward(self.stn, x, heads)
        terms: Dict[str, torch.Tensor] = {"align": self._distance(res.images, template, sigma, heads).mean()}
        if res.flow is not None:
            terms["tv"] = total_variation_loss(res.flow)
            terms["identity"] = flow_identity_loss(res.flow)
        if self.from_identity:
            start_grid, start_matrix, start_flow = None, None, None
        elif start is not None:
            start_grid, start_matrix, start_flow = start
        else:
            with torch.no_grad():
                s = self._forward(self.start, x, heads)
            start_grid, start_matrix, start_flow = s.grid, s.matrix, s.flow
        pose_parts = []
        if res.matrix is not None:
            rel = res.matrix if start_matrix is None else compose(invert(start_matrix), res.matrix)
            pose = pose_of(rel)  # (B, 4)
            pose_parts.append(pose.mean(0))
            terms["scale"] = F.relu(pose[:, 1].abs() - cfg.max_log_scale).square().mean()
        if res.flow is not None:
            mean_flow = res.flow.mean(0) - (0 if start_flow is None else start_flow.mean(0))
            pose_parts.append(mean_flow.flatten())
        terms["pose"] = sum(p.square().mean() for p in pose_parts) if pose_parts else torch.zeros((), device=x.device)
        if cfg.anchor_weight > 0:
            ident = None
            if start_grid is None:
                from ..geometry.coords import identity_grid

                ident = identity_grid(res.grid.size(1), device=x.device, dtype=res.grid.dtype)
            terms["anchor"] = (res.grid - (ident if start_grid is None else start_grid)).square().mean()
        w = dict(align=1.0, tv=cfg.tv_weight, identity=cfg.identity_weight, anchor=cfg.anchor_weight,
                 pose=cfg.pose_weight, scale=cfg.scale_weight)
        total = sum(w[k] * v for k, v in terms.items())
        return total, terms, res.images

    # -- the loop ------------------------------------------------------------------------------

    def _distill(self, x: torch.Tensor, gen: torch.Generator, progress_bar: bool, log: Optional[MetricsLogger]) -> None:
        """Fit per-image warps to the training images ``x`` (N, C, S, S) at set level
        (:func:`~gangealing.baselines.rigid.rigid_congeal` with a flow), then regress the
        transformer's grids onto them: a fast, well-posed start for the set-level objective."""
        from ..baselines.rigid import RigidCongealingConfig, rigid_congeal
        from ..geometry.warp import resize_grid

        cfg = self.cfg
        teacher = rigid_congeal(x, RigidCongealingConfig(flow_cells=cfg.teacher_flow_cells))
        targets = resize_grid(teacher.grids, self.size)  # (N, S, S, 2)
        opt = torch.optim.Adam(self.stn.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        bar = progress(cfg.distill_steps, desc="distil", enabled=progress_bar)
        try:
            for step in range(cfg.distill_steps):
                idx = torch.randint(x.size(0), (min(cfg.batch, x.size(0)),), generator=gen)
                loss = (self._forward(self.stn, x[idx]).grid - targets[idx]).square().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1)
                if log is not None:
                    log.log(step - cfg.distill_steps, distill=float(loss.detach()))
        finally:
            bar.close()

    def fit(self, images, *, progress_bar: bool = True, log: Optional[MetricsLogger] = None) -> RefineResult:
        """Fit on ``images``: a :class:`~gangealing.data.dataset.PreparedDataset` or a float tensor
        ``(N, C, S, S)`` in [-1, 1], ``S`` = the transformer's input size."""
        cfg = self.cfg
        n = len(images)
        get = (lambda idx: images[idx]) if isinstance(images, torch.Tensor) else images.tensor
        s_in = self.stn.cfg.input_size
        probe = get(np.arange(1) if not isinstance(images, torch.Tensor) else torch.arange(1))
        if probe.shape[-2:] != (s_in, s_in) or probe.size(1) != self.stn.cfg.image_channels:
            raise ValueError(f"images are {tuple(probe.shape[1:])} but the transformer takes "
                             f"({self.stn.cfg.image_channels}, {s_in}, {s_in}); load them with "
                             f"load_refine_images(source, size={s_in})")
        train_idx, held_idx = _split(n, cfg.holdout, cfg.seed, cfg.max_holdout)
        fetch = lambda idx: get(idx.numpy() if not isinstance(images, torch.Tensor) else idx).to(self.device)  # noqa: E731
        load = lambda idx: self._prepare(fetch(idx))  # noqa: E731
        cache = _StartCache(self, len(train_idx))
        chunks = lambda idx: (load(idx[s:s + 256]) for s in range(0, len(idx), 256))  # noqa: E731
        gen = seed_everything(cfg.seed)
        flow_params = [p for n_, p in self.stn.named_parameters() if n_.startswith("stns.") and
                       self.stn.transforms[int(n_.split(".")[1])] == "flow"]
        other = [p for p in self.stn.parameters() if all(p is not q for q in flow_params)]
        if cfg.stages == "similarity":  # the flow keeps its starting weights
            for p in flow_params:
                p.requires_grad_(False)
            flow_params = []
        groups = [g for g in ({"params": other, "lr": cfg.lr}, {"params": flow_params, "lr": cfg.lr}) if g["params"]]
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.99))
        warm = int(cfg.flow_warmup * cfg.steps)
        t0 = time.time()
        if cfg.distill_steps > 0:
            if self.heads > 1:
                raise ValueError("distill_steps is for one head (the set-level teacher has no clusters); set it to 0")
            self._distill(torch.cat([x for x, _ in chunks(train_idx)]), gen, progress_bar, log)
        init_idx = train_idx
        if len(train_idx) > cfg.init_images:
            pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.init_images]
            init_idx = train_idx[pick].sort().values
        template = self._mean_congealed(chunks(init_idx))  # (K, C, S, S)
        final_sigma = float(cfg.blur[1])

        def held_loss() -> float:
            if len(held_idx) == 0:
                return float("nan")
            self.stn.eval()
            with torch.no_grad():
                d = torch.cat([self._distance(self._forward(self.stn, x, h).images, template, final_sigma, h)
                               for x, h in chunks(held_idx)])
            self.stn.train()
            return float(d.mean())

        initial = best = held_loss()
        best_state, best_step, bad, step, stopped = copy.deepcopy(self.stn.state_dict()), 0, 0, 0, "steps"
        history: List[Dict[str, float]] = []
        bar = progress(cfg.steps, desc="refine", enabled=progress_bar)
        try:
            while step < cfg.steps:
                if cfg.minutes is not None and time.time() - t0 > cfg.minutes * 60:
                    stopped = "minutes"
                    break
                idx = train_idx[torch.randint(len(train_idx), (min(cfg.batch, len(train_idx)),), generator=gen)]
                if cache.enabled:  # the starting model's view of each image, computed once
                    x, heads, start = cache.batch(idx, fetch(idx))
                else:
                    (x, heads), start = load(idx), None
                for g, rate in zip(groups, _rates(cfg, step, warm if len(flow_params) and self.from_identity else 0,
                                                  len(groups))):
                    g["lr"] = rate
                sigma = self._sigma(step, cfg.steps)
                total, terms, congealed = self.loss(x, template, sigma, heads, start)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                with torch.no_grad():
                    congealed = congealed.detach()
                    if heads is None:
                        template.lerp_(congealed.mean(0, keepdim=True), 1 - cfg.template_decay)
                    else:  # each cluster's template moves toward the batch mean of its images
                        for k in heads.unique().tolist():
                            template[k:k + 1].lerp_(congealed[heads == k].mean(0, keepdim=True), 1 - cfg.template_decay)
                step += 1
                bar.update(1)
                row = {k: float(v.detach()) for k, v in terms.items()}
                row.update(loss=float(total.detach()), sigma=sigma)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    h = held_loss()
                    row["holdout"] = h
                    if not math.isnan(h):
                        if h < best:
                            best, best_step, bad = h, step, 0
                            best_state = copy.deepcopy(self.stn.state_dict())
                        elif step >= cfg.patience_after * cfg.steps:
                            bad += 1
                    bar.set_postfix(align=f"{row['align']:.4f}", holdout=f"{h:.4f}")
                history.append(dict(step=step, **row))
                if log is not None:
                    log.log(step, **row)
                if len(held_idx) and bad >= cfg.patience:
                    stopped = "patience"
                    break
        finally:
            bar.close()
        seconds = time.time() - t0
        if len(held_idx):
            self.stn.load_state_dict(best_state)
        else:
            best_step, best = step, float("nan")
        self.stn.eval().requires_grad_(True)  # frozen stages (cfg.stages) are trainable again in the result
        return RefineResult(stn=self.stn, steps=step, best_step=best_step, holdout_loss=best,
                            initial_holdout_loss=initial, seconds=seconds,
                            images_per_s=step * min(cfg.batch, len(train_idx)) / max(seconds, 1e-9),
                            stopped=stopped, train_images=len(train_idx), holdout_images=len(held_idx),
                            history=history)


def _rates(cfg: RefineConfig, step: int, warm: int, n_groups: int) -> List[float]:
    """Learning rates at ``step`` of the parameter groups (the rest, then the flow when it is a group
    of its own): ``cfg.lr`` under ``cfg.lr_schedule``; the flow is frozen (0) for its first ``warm``
    steps and its schedule runs over the steps left after them."""

    def scheduled(t: int, span: int) -> float:
        if cfg.lr_schedule == "constant":
            return cfg.lr
        return cosine_anneal(min(t, span), max(span, 1), start=cfg.lr, end=0.0)

    rates = [scheduled(step, cfg.steps)]
    if n_groups > 1:
        rates.append(0.0 if step < warm else scheduled(step - warm, cfg.steps - warm))
    return rates


class _StartCache:
    """The frozen starting model's view of each training image, kept by index: whether its flip
    inference mirrors the image, and its warp ``(grid, matrix, flow)`` of the image as faced. Both are
    fixed, so they are computed once per image instead of on every step (the pose and anchor terms
    need them): an adapted model's step then costs one transformer pass with its backward, not two
    passes (three with flips). Used for one head (a clustering model's heads follow the fit) and while
    the cache stays under ``max_bytes`` (512 MB: about 32,000 images at 32 px)."""

    def __init__(self, refiner: "Refiner", n: int, max_bytes: int = 512 * 2 ** 20):
        self.r, self.rows = refiner, {}
        per_image = 4 * 4 * refiner.size ** 2 + 64  # grid and flow (2 x S x S floats each), matrix, flag
        self.enabled = not refiner.from_identity and refiner.heads == 1 and n * per_image <= max_bytes

    @torch.no_grad()
    def batch(self, idx: torch.Tensor, raw: torch.Tensor):
        """``(x, heads, start)`` for images ``raw`` ``(B, C, S, S)`` of training indices ``idx``
        ``(B,)``: ``x`` as faced, ``heads`` None, ``start`` the starting model's warp of ``x``."""
        r, ids = self.r, idx.tolist()
        new = [j for j, i in enumerate(ids) if i not in self.rows and i not in ids[:j]]
        if new:
            xs = raw[new]
            flipped = r._start_flips(xs)
            s = r._forward(r.start, _mirrored(xs, flipped))
            for k, j in enumerate(new):
                self.rows[ids[j]] = (bool(flipped[k]), s.grid[k], None if s.matrix is None else s.matrix[k],
                                     None if s.flow is None else s.flow[k])
        rows = [self.rows[i] for i in ids]
        flipped = torch.tensor([row[0] for row in rows], device=raw.device)
        stack = lambda k: None if rows[0][k] is None else torch.stack([row[k] for row in rows])  # noqa: E731
        return _mirrored(raw, flipped), None, (stack(1), stack(2), stack(3))


def _mirrored(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """``x`` ``(N, C, H, W)`` with the rows where ``flipped`` ``(N,)`` mirrored left-right."""
    return torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)


def refine(stn: nn.Module, images, cfg: RefineConfig = RefineConfig(), *, template_image: Optional[torch.Tensor] = None,
           progress_bar: bool = False, device=None, flip: bool = False, iters: int = 1, router=None) -> RefineResult:
    """:class:`Refiner` in one call."""
    return Refiner(stn, cfg, template_image=template_image, device=device, flip=flip,
                   iters=iters, router=router).fit(images, progress_bar=progress_bar)


def load_refine_images(source: Union[str, os.PathLike], size: int, *, split: str = "train", channels: int = 3,
                       progress_bar: bool = False):
    """A folder / zip / glob of images, a prepared dataset, or an embedded dataset name
    (``animals:cat``), as a memory-mapped :class:`~gangealing.data.dataset.PreparedDataset` at
    ``size`` px: every image is fitted to the square as ``gangealing align`` does (long side to
    ``size``, the short side padded by repeating its edge), so images of any sizes mix."""
    from ..data.dataset import prepare_dataset

    ds = prepare_dataset(source, size, mode="border", split=split, image_mode="RGB" if channels == 3 else "L",
                         progress=progress_bar)
    if len(ds) == 0:
        raise ValueError(f"{source}: no readable images")
    if ds.channels != channels:
        raise ValueError(f"{source}: images have {ds.channels} channels but the transformer takes {channels}")
    return ds if ds.size == size else _Resized(ds, size)


class _Resized:
    """A prepared dataset of another size, resized batch by batch (as the predictor prepares squares)."""

    def __init__(self, ds, size: int):
        self.ds, self.size = ds, size

    def __len__(self) -> int:
        return len(self.ds)

    def tensor(self, index) -> torch.Tensor:
        x = self.ds.tensor(index)
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)


def save_refined(result: RefineResult, out: Union[str, os.PathLike], *, cfg: RefineConfig, base: Optional[str] = None,
                 base_model=None, data: str = "", test: Optional[Dict[str, Any]] = None) -> Path:
    """Write the refined transformer as a normal model checkpoint (``kind='model'``; with the base
    model's generator and target when it had them) that every command loads. Never overwrites
    ``base``."""
    from ..build import make_checkpoint
    from ..checkpoint import save_checkpoint
    from ..fileio import check_not_input

    out = check_not_input(out, base)
    modules = {"stn": result.stn}
    if base_model is not None:
        modules.update(generator=base_model.generator, target=base_model.target)
    meta = dict(source="gangealing refine", base=base or "(none: from nothing)", data=data, refine=cfg.to_dict(),
                result=dict(steps=result.steps, best_step=result.best_step, holdout_loss=result.holdout_loss,
                            initial_holdout_loss=result.initial_holdout_loss, seconds=round(result.seconds, 1),
                            images_per_s=round(result.images_per_s, 1), stopped=result.stopped,
                            train_images=result.train_images, holdout_images=result.holdout_images),
                test=dict(test or {"iters": 1, "padding_mode": "border", "flip": False}))
    return save_checkpoint(make_checkpoint("model", modules, step=result.steps, meta=meta), out)
