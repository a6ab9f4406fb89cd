"""`gangealing bench`: alignment quality with real ground truth on held-out real images, and speed.

Three measures (issue 5), each beside its baselines (no alignment; classic congealing,
:mod:`gangealing.baselines.congealing`; the similarity-only ablation when its model exists):

1. **Animal silhouettes, mask transfer.** For a pair (A, B) of same-class test silhouettes, A's
   mask is carried into B's frame through the congealed frame and compared with B's mask (IoU).
   The congealing grid of an image maps congealed pixels to image positions and has no closed-form
   inverse, so we use the *nearest-neighbour inverse*: every pixel of B takes the congealed pixel
   whose grid position in B is nearest to it (none when that position is more than ``max_dist`` px
   away: the pixel is outside the congealed frame's reach and gets background), and that congealed
   pixel reads A's mask with nearest sampling (A's mask sampled with A's grid). Both steps are
   nearest, so an identity model on identical images returns the mask exactly. Classic congealing
   composes its similarity matrices (:func:`~gangealing.baselines.congealing.transfer_grid`).
2. **MNIST under known perturbations.** Test digits are placed on a ``canvas`` px square under
   random similarity transforms (rotation up to 45 degrees, scale 0.7-1.3, shifts up to 15% of the
   canvas); the transforms are known, so the true correspondence is. Points sampled on a digit's
   strokes are transferred (a) between two perturbed copies of one digit, (b) between two different
   digits of one class, whose true correspondence is MNIST's own centred frame (the same 28 px
   position). PCK at ``alpha * canvas``.
3. **MNIST clustering.** The accuracy of routing the test set through a K-cluster model's
   classifier, under the best one-to-one matching of clusters to labels (Hungarian).

Speed: alignment throughput (images/s) of :meth:`gangealing.predictor.Congealer.align` here.

Models come from :data:`MODELS` (paths relative to the repository); missing ones are skipped and
listed in the results.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.coords import apply_affine, norm_to_pixel, pixel_to_norm

__all__ = [
    "ModelEntry",
    "MODELS",
    "resolve_model",
    "available_models",
    "mask_iou",
    "hungarian_accuracy",
    "nearest_inverse_index",
    "congealer_mask_transfer",
    "classic_mask_transfer",
    "grid_mask_transfer",
    "random_pairs",
    "animal_test_set",
    "mnist_test_set",
    "digits_as_images",
    "Perturbed",
    "perturb_digits",
    "stroke_points",
    "pck_at",
    "BenchConfig",
    "BenchResult",
    "step_times",
    "train_throughput",
    "run_bench",
    "write_results",
    "to_markdown",
]

DTI_CLUSTERING_MNIST = 0.979  # published accuracy of DTI-clustering on MNIST (Monnier et al., NeurIPS 2020)


# ------------------------------------------------------------------------------------------------
# The model registry (shared with `gangealing demo`)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """A committed model: where its file is, what it aligns, and its role in the tables."""

    path: str  # relative to the repository root (or absolute)
    dataset: str  # 'animals' or 'mnist'
    classes: Tuple[str, ...]  # the classes it was trained on (all of them for a clustering model)
    label: str  # how the tables name it
    ablation: bool = False


MODELS: Dict[str, ModelEntry] = {
    "gangealing-tiny-cat": ModelEntry("models/gangealing-tiny-cat/model.pt", "animals", ("cat",),
                                      "GANgealing (tiny, K=1)"),
    "gangealing-tiny-cat-k2flips": ModelEntry("models/gangealing-tiny-cat-k2flips/model.pt", "animals", ("cat",),
                                              "GANgealing (tiny, K=2 + flips)"),
    "gangealing-tiny-cat-sim": ModelEntry("models/gangealing-tiny-cat-sim/model.pt", "animals", ("cat",),
                                          "similarity-only ablation (tiny)", ablation=True),
    "gangealing-tiny-mnist3": ModelEntry("models/gangealing-tiny-mnist3/model.pt", "mnist", ("3",),
                                         "GANgealing (tiny, K=1, input jitter)"),
    "gangealing-tiny-mnist-k10": ModelEntry("models/gangealing-tiny-mnist-k10/model.pt", "mnist",
                                            tuple(str(d) for d in range(10)), "GANgealing (tiny, K=10 + classifier)"),
}


def _repo_roots() -> List[Path]:
    # The working directory first (a clone run from its root), then the checkout this file is in.
    return [Path.cwd(), Path(__file__).resolve().parents[3]]


def resolve_model(name: str, root: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """The file of registry model ``name``, or None when it is not there."""
    return resolve_model_file(MODELS[name].path, root)


def resolve_model_file(path: str, root: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """A repository-relative (or absolute) file, looked up under ``root`` or the checkout; None if absent."""
    p = Path(path)
    if p.is_absolute():
        return p if p.is_file() else None
    for r in ([Path(root)] if root is not None else _repo_roots()):
        if (r / p).is_file():
            return r / p
    return None


def available_models(names: Optional[Iterable[str]] = None, root=None) -> Tuple[Dict[str, Path], List[str]]:
    """``({name: path}, [missing names])`` over ``names`` (default: the whole registry)."""
    found, missing = {}, []
    for n in (list(names) if names is not None else list(MODELS)):
        p = resolve_model(n, root)
        (missing.append(n) if p is None else found.__setitem__(n, p))
    return found, missing


# ------------------------------------------------------------------------------------------------
# Small exact pieces
# ------------------------------------------------------------------------------------------------


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks ``(N, H, W)`` -> ``(N,)`` (1 where both are empty)."""
    a, b = a.bool().flatten(1), b.bool().flatten(1)
    inter = (a & b).sum(1).double()
    union = (a | b).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def hungarian_accuracy(pred: Union[np.ndarray, torch.Tensor], labels: Union[np.ndarray, torch.Tensor]) -> float:
    """Clustering accuracy: the fraction of items right under the best one-to-one cluster -> label map."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:  # scipy is optional: only this measure needs it
        raise ImportError("the clustering accuracy needs scipy: pip install 'gangealing[bench]' (or scipy)") from e

    pred, labels = np.asarray(pred).astype(np.int64), np.asarray(labels).astype(np.int64)
    if pred.shape != labels.shape or pred.size == 0:
        raise ValueError("pred and labels must be non-empty and of the same shape")
    k = int(max(pred.max(), labels.max())) + 1
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (pred, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / pred.size)


def random_pairs(labels: Sequence[int], n: int, seed: int = 0) -> torch.Tensor:
    """``(n, 2)`` ordered pairs ``(a, b)``, ``a != b``, of the same label, drawn uniformly (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.as_tensor(np.asarray(labels))
    groups = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    groups = [x for x in groups if x.numel() >= 2]
    if not groups:
        raise ValueError("no label has two images")
    sizes = torch.tensor([x.numel() * (x.numel() - 1) for x in groups], dtype=torch.float64)
    which = torch.multinomial(sizes, n, replacement=True, generator=g)
    out = torch.empty(n, 2, dtype=torch.long)
    for i, gi in enumerate(which.tolist()):
        idx = groups[gi]
        a, b = torch.randperm(idx.numel(), generator=g)[:2]
        out[i, 0], out[i, 1] = idx[a], idx[b]
    return out


# ------------------------------------------------------------------------------------------------
# 1. Mask transfer
# ------------------------------------------------------------------------------------------------


def nearest_inverse_index(grid: torch.Tensor, size: Tuple[int, int], max_dist: float = 1.0) -> torch.Tensor:
    """For each pixel of an image of ``size`` (H, W), the congealed pixel whose grid position is nearest.

    ``grid`` ``(N, R, R, 2)`` maps congealed pixels to normalised image positions. Returns
    ``(N, H * W)`` int64 indices into the flattened ``R * R`` congealed frame, ``-1`` where the
    nearest position is more than ``max_dist`` image pixels away (outside the congealed frame's reach).
    """
    n = grid.size(0)
    h, w = size
    pos = norm_to_pixel(grid.reshape(n, -1, 2).float(), (h, w))  # (N, R*R, 2) image pixels
    ys, xs = torch.meshgrid(torch.arange(h, dtype=pos.dtype), torch.arange(w, dtype=pos.dtype), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(1, -1, 2).to(pos.device).expand(n, -1, -1)  # (N, H*W, 2)
    dist, idx = [], []
    for s in range(0, n, 8):  # chunks bound the (n, H*W, R*R) distance matrix
        d, i = torch.cdist(pix[s:s + 8], pos[s:s + 8]).min(dim=2)  # (n, H*W)
        dist.append(d)
        idx.append(i)
    dist, idx = torch.cat(dist), torch.cat(idx)
    return torch.where(dist <= max_dist, idx, torch.full_like(idx, -1))


def _congealed_masks(masks: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Masks ``(N, H, W)`` read with their grids ``(N, R, R, 2)`` (nearest, zeros outside) -> ``(N, R*R)`` bool."""
    m = masks.float().unsqueeze(1).to(grid.device)  # (N, 1, H, W)
    return F.grid_sample(m, grid.float(), mode="nearest", padding_mode="zeros", align_corners=False).flatten(1) > 0.5


def _read(congealed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``congealed`` ``(P, R*R)`` bool read at ``index`` ``(P, H*W)`` (-1 -> False)."""
    got = torch.gather(congealed, 1, index.clamp(min=0))
    return got & (index >= 0)


def congealer_mask_transfer(congealer, images: torch.Tensor, masks: torch.Tensor, pairs: torch.Tensor, *,
                            resolution: int = 64, batch: int = 100, max_dist: float = 1.0) -> torch.Tensor:
    """A's mask carried into B's frame through a model's congealed frame, for ``pairs`` ``(P, 2)``.

    ``images`` ``(N, C, H, W)`` in [-1, 1], ``masks`` ``(N, H, W)`` bool. Clustering models route
    A with the classifier and align B in A's cluster. Returns ``(P, H, W)`` bool.
    """
    n, h, w = masks.shape
    k = congealer.num_clusters

    def grids(cluster):
        return torch.cat([congealer.align(images[s:s + batch], output_resolution=resolution, cluster=cluster).grid.cpu()
                          for s in range(0, n, batch)])

    if k == 1:
        per_cluster = [grids(None)]  # (N, R, R, 2)
        routed = torch.zeros(n, dtype=torch.long)
    else:
        routed = torch.cat([congealer.align(images[s:s + batch], output_resolution=8).cluster.cpu()
                            for s in range(0, n, batch)])
        per_cluster = [grids(c) for c in range(k)]
    congealed = torch.stack([_congealed_masks(masks, g) for g in per_cluster])  # (K, N, R*R)
    index = torch.stack([nearest_inverse_index(g, (h, w), max_dist) for g in per_cluster])  # (K, N, H*W)
    a, b = pairs[:, 0], pairs[:, 1]
    cl = routed[a]
    out = _read(congealed[cl, a], index[cl, b])  # (P, H*W)
    return out.view(-1, h, w)


def classic_mask_transfer(matrices: torch.Tensor, masks: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """A's mask in B's frame through classic congealing's similarities ``(N, 2, 3)``: ``(P, H, W)`` bool."""
    from ..baselines.congealing import transfer_grid

    h, w = masks.shape[-2:]
    a, b = pairs[:, 0], pairs[:, 1]
    grid = transfer_grid(matrices[a], matrices[b], (h, w))  # (P, H, W, 2)
    m = masks[a].float().unsqueeze(1)
    return F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0] > 0.5


# ------------------------------------------------------------------------------------------------
# 2. MNIST under known perturbations
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Perturbed:
    """Digits on a canvas under known similarities: images and the digit-pixel -> canvas-pixel maps."""

    images: torch.Tensor  # (N, 3, S, S) in [-1, 1], background -1
    to_canvas: torch.Tensor  # (N, 2, 3): canvas_px = A @ [digit_px, 1]
    canvas: int


def perturb_digits(digits: torch.Tensor, canvas: int, gen: torch.Generator, *, max_angle: float = 45.0,
                   scale: Tuple[float, float] = (0.7, 1.3), max_shift: float = 0.15,
                   identity: bool = False) -> Perturbed:
    """Place digits ``(N, H, W)`` uint8 on ``canvas`` px under random similarities about their centres.

    Angle uniform in ``±max_angle`` degrees, scale uniform in ``scale``, shifts uniform in
    ``±max_shift * canvas`` px; ``identity=True`` centres them unchanged (a 0-cost control).
    """
    n, h, w = digits.shape
    if identity:
        ang, s, t = torch.zeros(n), torch.ones(n), torch.zeros(n, 2)
    else:
        ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_angle)
        s = scale[0] + torch.rand(n, generator=gen) * (scale[1] - scale[0])
        t = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift * canvas
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)  # (N, 2, 2)
    c_d = torch.tensor([(w - 1) / 2, (h - 1) / 2])
    c_c = torch.full((2,), (canvas - 1) / 2)
    trans = c_c + t - (rot @ c_d)  # (N, 2)
    to_canvas = torch.cat([rot, trans.unsqueeze(-1)], 2)  # (N, 2, 3)
    # Render: every canvas pixel samples the digit at the inverse-mapped position.
    ys, xs = torch.meshgrid(torch.arange(canvas, dtype=torch.float32), torch.arange(canvas, dtype=torch.float32), indexing="ij")
    q = torch.stack([xs, ys], -1).reshape(1, -1, 2)  # (1, S*S, 2)
    inv = torch.linalg.inv(rot)  # (N, 2, 2)
    p = (q - trans.unsqueeze(1)) @ inv.transpose(1, 2)  # (N, S*S, 2) digit pixels
    grid = pixel_to_norm(p, (h, w)).view(n, canvas, canvas, 2)
    unit = digits.float().div(255).unsqueeze(1)  # (N, 1, H, W) in [0, 1]; zeros padding = background
    img = F.grid_sample(unit, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return Perturbed(images=(img * 2 - 1).expand(-1, 3, -1, -1).contiguous(), to_canvas=to_canvas, canvas=canvas)


def stroke_points(digits: torch.Tensor, k: int, gen: torch.Generator, threshold: int = 128) -> torch.Tensor:
    """``k`` random stroke pixels ``(N, k, 2)`` (x, y) per digit ``(N, H, W)`` uint8 (with replacement if few)."""
    out = []
    for d in digits:
        ys, xs = torch.nonzero(d >= threshold, as_tuple=True)
        if ys.numel() == 0:
            ys, xs = torch.nonzero(d == d.max(), as_tuple=True)
        pick = torch.randint(ys.numel(), (k,), generator=gen) if ys.numel() < k else torch.randperm(ys.numel(), generator=gen)[:k]
        out.append(torch.stack([xs[pick], ys[pick]], -1).float())
    return torch.stack(out)


def pck_at(est: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor, size: int, alphas: Sequence[float]) -> List[float]:
    """PCK per alpha (threshold ``alpha * size`` px, inclusive) over visible points (:mod:`gangealing.metrics.pck`)."""
    from ..metrics.pck import pck_correct, pck_thresholds

    th = pck_thresholds(alphas, (size, size))
    correct = pck_correct(est.float(), gt.float(), visible, th)  # (N, A)
    return (correct.sum(0) / visible.float().sum().clamp(min=1)).tolist()


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What `gangealing bench` measures, and how much of it."""

    pairs: int = 1000  # mask-transfer pairs per class
    animal_classes: Tuple[str, ...] = ("cat",)  # baselines run on these; models on their own class
    mnist_digits: int = 200  # test digits per MNIST PCK run (each gives one same-digit and one cross pair)
    canvas: int = 40
    points: int = 10  # stroke points per digit
    alphas: Tuple[float, ...] = (0.1, 0.05)
    cluster_images: int = 10_000  # MNIST test images routed for clustering accuracy
    throughput_images: int = 200
    mask_resolution: int = 64  # congealed-frame resolution for mask transfer
    classic: bool = True  # classic congealing, and gradient congealing (rigid, and with a per-image flow)
    # Refinement rows (issue 16): a transformer refined from nothing, and each K=1 model refined, on
    # the test images themselves (set-level, as the congealing baselines); the inductive row fits
    # the train split and is measured on the test split of `inductive_classes`.
    refine: bool = True
    refine_steps: int = 400
    refine_distill_steps: int = 0
    inductive_classes: Tuple[str, ...] = ("cat",)
    generators: bool = True  # the Generators section (apps/bench_generators.py)
    generator_samples: int = 2000  # samples (and real images) per generator for FD / precision / recall
    # Training throughput: timed steps per preset after one warm-up step ((preset, steps) pairs;
    # 16 GAN steps span one lazy-R1 period of the tiny preset). Empty = not measured.
    gan_presets: Tuple[Tuple[str, int], ...] = (("tiny", 16),)
    gangealing_presets: Tuple[Tuple[str, int], ...] = (("tiny", 4), ("tiny-clusters", 2), ("tiny-clusters-flips", 2),
                                                       ("tiny-similarity", 4))
    seed: int = 0


@dataclass
class BenchResult:
    """Everything measured, JSON-ready."""

    config: Dict[str, Any]
    mask_transfer: List[Dict[str, Any]] = field(default_factory=list)
    mnist_pck: List[Dict[str, Any]] = field(default_factory=list)
    clustering: List[Dict[str, Any]] = field(default_factory=list)
    throughput: List[Dict[str, Any]] = field(default_factory=list)
    train_throughput: List[Dict[str, Any]] = field(default_factory=list)
    generators: List[Dict[str, Any]] = field(default_factory=list)
    models: Dict[str, str] = field(default_factory=dict)
    missing: List[str] = field(default_factory=list)
    environment: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def animal_test_set(name: str) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Held-out silhouettes of an embedded ``animals[:class]`` name: images ``(N, 3, 28, 28)`` in
    [-1, 1], masks ``(N, 28, 28)`` bool (pixels >= 128) and labels ``(N,)``."""
    from ..data.embedded import load_embedded
    from ..data.images import to_tensor

    d = load_embedded(name, "test")
    images = to_tensor(d.images).expand(-1, 3, -1, -1).contiguous()
    masks = torch.from_numpy(d.images[..., 0] >= 128)
    return images, masks, d.labels


def mnist_test_set(classes: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, np.ndarray]:
    """MNIST test digits ``(N, 28, 28)`` uint8 (of ``classes``, default all) and their labels."""
    from ..data.embedded import load_embedded

    d = load_embedded("mnist", "test", classes=classes)
    return torch.from_numpy(d.images[..., 0].copy()), d.labels


def digits_as_images(digits: torch.Tensor) -> torch.Tensor:
    """uint8 digits ``(N, H, W)`` -> the models' input ``(N, 3, H, W)`` in [-1, 1]."""
    from ..data.images import to_tensor

    return to_tensor(digits.numpy()[..., None]).expand(-1, 3, -1, -1)


def _classic(images: torch.Tensor):
    from ..baselines.congealing import classic_congeal

    return classic_congeal(images).matrices


def _rigid(images: torch.Tensor, flow_cells: int = 0):
    from ..baselines.rigid import RigidCongealingConfig, rigid_congeal

    return rigid_congeal(images, RigidCongealingConfig(flow_cells=flow_cells))


def grid_mask_transfer(grids: torch.Tensor, masks: torch.Tensor, pairs: torch.Tensor, *, resolution: int = 64,
                       max_dist: float = 1.0) -> torch.Tensor:
    """As :func:`congealer_mask_transfer`, for per-image grids ``(N, R', R', 2)`` into the images (any R')."""
    from ..geometry.warp import resize_grid

    g = resize_grid(grids, resolution)
    congealed, index = _congealed_masks(masks, g), nearest_inverse_index(g, masks.shape[-2:], max_dist)
    return _read(congealed[pairs[:, 0]], index[pairs[:, 1]]).view(-1, *masks.shape[-2:])


def _refined(images: torch.Tensor, cfg: BenchConfig, base=None, seed: int = 0):
    """(Congealer, row fields): a transformer refined on ``images`` (from nothing, or ``base``'s, a
    Congealer whose checkpoint had a generator and target when ``base.gan`` is set)."""
    from ..predictor import Congealer
    from ..train.refine import Refiner, default_config, scratch_stn

    stn = scratch_stn(32) if base is None else base.stn
    rc = default_config(base is not None, steps=cfg.refine_steps, seed=seed,
                        distill_steps=cfg.refine_distill_steps if base is None else 0)  # holdout 10%: when to stop
    frame = Congealer(stn, flip=False)
    x = torch.cat([frame.prepare(images[s:s + 500])[0].cpu() for s in range(0, len(images), 500)])
    res = Refiner(stn, rc, template_image=getattr(base, "gan", None)).fit(x, progress_bar=False)
    c = Congealer(res.stn, flip=False if base is None else base.flip, padding_mode="border")
    return c, dict(fit_seconds=round(res.seconds, 1), fit_images=res.train_images + res.holdout_images,
                   images_per_s=round(res.images_per_s, 1), steps=res.steps)


def _refine_bases(congealers: Dict[str, Any], dataset: str, cls: str) -> Dict[str, Any]:
    """The registry models of ``dataset``/``cls`` that refine can adapt (one cluster, not an ablation)."""
    return {n: c for n, c in congealers.items() if MODELS[n].dataset == dataset and cls in MODELS[n].classes
            and c.num_clusters == 1 and not MODELS[n].ablation}


def _mask_rows(cls: str, cfg: BenchConfig, congealers: Dict[str, Any], tick) -> List[Dict[str, Any]]:
    images, masks, _ = animal_test_set(f"animals:{cls}")
    pairs = random_pairs(np.zeros(len(images), dtype=np.int64), cfg.pairs, cfg.seed)
    a, b = pairs[:, 0], pairs[:, 1]
    rows = [dict(dataset=f"animals:{cls} (test)", method="no alignment", pairs=len(pairs),
                 iou=float(mask_iou(masks[a], masks[b]).mean()))]
    if cfg.classic:
        t0 = time.time()
        mats = _classic(images)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="classic congealing (similarity)", pairs=len(pairs),
                         iou=float(mask_iou(classic_mask_transfer(mats, masks, pairs), masks[b]).mean()),
                         fit_seconds=round(time.time() - t0, 1)))
        t0 = time.time()
        r = _rigid(images)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="gradient congealing (similarity)", pairs=len(pairs),
                         iou=float(mask_iou(classic_mask_transfer(r.matrices, masks, pairs), masks[b]).mean()),
                         fit_seconds=round(time.time() - t0, 1)))
        t0 = time.time()
        r = _rigid(images, flow_cells=8)
        out = grid_mask_transfer(r.grids, masks, pairs, resolution=cfg.mask_resolution)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="gradient congealing + per-image 8x8 flow (set-level)",
                         pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), fit_seconds=round(time.time() - t0, 1)))
    tick()
    if cfg.refine:
        c, info = _refined(images, cfg, seed=cfg.seed)
        out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="refine from nothing (set-level: fitted on these images)",
                         pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), **info))
        for name, base in _refine_bases(congealers, "animals", cls).items():
            c, info = _refined(images, cfg, base=base, seed=cfg.seed)
            out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
            rows.append(dict(dataset=f"animals:{cls} (test)", method=f"{MODELS[name].label} + refine (set-level)",
                             model=name, pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), **info))
        if cls in cfg.inductive_classes:
            from ..data.embedded import load_embedded
            from ..data.images import to_tensor

            train = to_tensor(load_embedded(f"animals:{cls}", "train").images).expand(-1, 3, -1, -1).contiguous()
            c, info = _refined(train, cfg, seed=cfg.seed)
            out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
            rows.append(dict(dataset=f"animals:{cls} (test)", method="refine from nothing (inductive: fitted on the train split)",
                             pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), **info))
    for name, c in congealers.items():
        if MODELS[name].dataset != "animals" or cls not in MODELS[name].classes:
            continue
        out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
        rows.append(dict(dataset=f"animals:{cls} (test)", method=MODELS[name].label, model=name, pairs=len(pairs),
                         iou=float(mask_iou(out, masks[b]).mean())))
        tick()
    return rows


def _pck_rows(cfg: BenchConfig, digit: str, congealers: Dict[str, Any], tick) -> List[Dict[str, Any]]:
    g = torch.Generator().manual_seed(cfg.seed)
    digits, _ = mnist_test_set([digit])
    digits = digits[: cfg.mnist_digits]
    n = digits.size(0)
    c1 = perturb_digits(digits, cfg.canvas, g)
    c2 = perturb_digits(digits, cfg.canvas, g)
    other = torch.roll(torch.arange(n), 1)  # digit i -> digit i-1: a different digit of the class
    pts_d = stroke_points(digits, cfg.points, g)  # (N, P, 2) in digit pixels
    src = apply_affine(pts_d, c1.to_canvas)  # points in copy 1 of digit i
    tasks = {
        "same digit, two perturbations": (c1.images, c2.images, apply_affine(pts_d, c2.to_canvas)),
        "different digits, one class": (c1.images, c2.images[other], apply_affine(pts_d, c2.to_canvas[other])),
    }
    inside = lambda p: ((p >= -0.5) & (p <= cfg.canvas - 0.5)).all(-1)  # noqa: E731
    name_ds = f"mnist:{digit} (test, {cfg.canvas} px canvas)"
    rows = []
    both = torch.cat([c1.images, c2.images])
    fit_s: Dict[str, float] = {}
    rigid: Dict[str, torch.Tensor] = {}
    if cfg.classic:
        for method, fit in (("classic congealing (similarity)", _classic),
                            ("gradient congealing (similarity)", lambda x: _rigid(x).matrices)):
            t0 = time.time()
            rigid[method] = fit(both)
            fit_s[method] = round(time.time() - t0, 1)
    models = {mname: c for mname, c in congealers.items() if MODELS[mname].dataset == "mnist" and digit in MODELS[mname].classes}
    labels = {mname: MODELS[mname].label for mname in models}
    if cfg.refine:
        c, info = _refined(both, cfg, seed=cfg.seed)
        models["refine"], labels["refine"] = c, "refine from nothing (set-level: fitted on these images)"
        fit_s[labels["refine"]] = info["fit_seconds"]
        for mname, base in _refine_bases(congealers, "mnist", digit).items():
            c, info = _refined(both, cfg, base=base, seed=cfg.seed)
            models[mname + "+refine"], labels[mname + "+refine"] = c, f"{MODELS[mname].label} + refine (set-level)"
            fit_s[labels[mname + "+refine"]] = info["fit_seconds"]
    tick()
    for task, (ia, ib, gt) in tasks.items():
        vis = inside(src) & inside(gt)
        ib_idx = torch.arange(n) if task.startswith("same") else other
        methods = {"no alignment": src}
        for method, mats in rigid.items():
            from ..geometry.similarity import apply_to_points, invert

            m1, m2 = mats[:n], mats[n:]
            na = pixel_to_norm(src, cfg.canvas)
            est = apply_to_points(m2[ib_idx], apply_to_points(invert(m1), na))
            methods[method] = norm_to_pixel(est, cfg.canvas)
        for mname, c in models.items():
            est = torch.cat([c.transfer_points(ia[s:s + 100], ib[s:s + 100], src[s:s + 100]).cpu()
                             for s in range(0, n, 100)])
            methods[labels[mname]] = est
        for method, est in methods.items():
            vals = pck_at(est, gt, vis, cfg.canvas, cfg.alphas)
            row = dict(dataset=name_ds, task=task, method=method, pairs=n, points=int(vis.sum()))
            row.update({f"pck@{a}": v for a, v in zip(cfg.alphas, vals)})
            if method in fit_s:
                row["fit_seconds"] = fit_s[method]
            rows.append(row)
        tick()
    return rows


def _cluster_rows(cfg: BenchConfig, name: str, c, batch: int = 500) -> Dict[str, Any]:
    digits, labels = mnist_test_set()
    digits, labels = digits[: cfg.cluster_images], labels[: cfg.cluster_images]
    images = digits_as_images(digits)
    preds = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x, _ = c.prepare(images[s:s + batch])
            cl, _ = c.route(x)
            preds.append(cl.cpu())
    pred = torch.cat(preds).numpy()
    return dict(dataset="mnist (test)", model=name, method=MODELS[name].label, images=int(len(pred)),
                clusters=c.num_clusters, accuracy=hungarian_accuracy(pred, labels),
                reference="DTI-clustering (published)", reference_accuracy=DTI_CLUSTERING_MNIST)


def _throughput(name: str, c, images: torch.Tensor, batch: int = 100) -> Dict[str, Any]:
    c.align(images[:batch])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(images), batch):
        c.align(images[s:s + batch])
    dt = time.perf_counter() - t0
    return dict(model=name, images=int(len(images)), batch=batch, input=f"{images.shape[-1]} px",
                output=f"{c.flow_size} px", device=str(c.device), threads=torch.get_num_threads(),
                images_per_s=len(images) / dt)


def step_times(step: Callable[[], Any], steps: int, warmup: int = 1,
               device: Union[str, torch.device] = "cpu") -> List[float]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed calls (CUDA work is
    waited for, so GPU times are real)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def train_throughput(cfg: BenchConfig, device: str = "cpu", root=None) -> List[Dict[str, Any]]:
    """Training speed per preset, measured on the spot: ``train-gan`` on the embedded cat silhouettes
    and GANgealing ``train`` against the committed ``gan-tiny-cat`` generator (in a temporary run
    folder, nothing kept)."""
    import tempfile

    from ..train.gan import GANTrainer, resolve_config
    from ..train.gangealing import GANgealingTrainer, load_generator
    from ..train.presets import get_preset
    from ..train.runtime import DistInfo

    dev = torch.device(device)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, steps in cfg.gan_presets:
            gcfg = resolve_config(preset, data="animals:cat", sample_every=10 ** 9, ckpt_every=10 ** 9, seed=cfg.seed)
            tr = GANTrainer(gcfg, Path(tmp) / f"gan-{preset}", dist_info=DistInfo(device=dev), show_progress=False,
                            tensorboard=False)
            sec = sum(step_times(tr.train_step, steps, device=dev)) / steps
            rows.append(dict(what="train-gan", preset=preset, size=gcfg.size, batch=gcfg.batch, steps=steps,
                             s_per_step=sec, images_per_s=gcfg.batch / sec, device=str(dev),
                             threads=torch.get_num_threads()))
        gen_file = resolve_model_file("models/gan-tiny-cat/generator.pt", root) if cfg.gangealing_presets else None
        if gen_file is not None:
            gen = load_generator(gen_file, dev)
            for preset, steps in cfg.gangealing_presets:
                tcfg = get_preset(preset, pca_samples=5000, kmeans_candidates=200, seed=cfg.seed)
                tr = GANgealingTrainer(tcfg, gen, Path(tmp) / f"gg-{preset}", dist=DistInfo(device=dev),
                                       tensorboard=False, show_progress=False)
                sec = sum(step_times(tr.train_step, steps, device=dev)) / steps
                rows.append(dict(what="train", preset=preset, size=gen.size, batch=tcfg.batch, heads=tcfg.num_heads,
                                 flips=tcfg.flips, steps=steps, s_per_step=sec, images_per_s=tcfg.batch / sec,
                                 device=str(dev), threads=torch.get_num_threads()))
    return rows


def run_bench(cfg: BenchConfig = BenchConfig(), models: Optional[Sequence[str]] = None, *, root=None,
              device: str = "cpu", progress: bool = True, paths: Optional[Dict[str, str]] = None,
              congealers: Optional[Dict[str, Any]] = None) -> BenchResult:
    """Run every measure on the registry models that exist (``models`` picks some by name).

    ``paths`` (``{registry name: file}``) points registry entries at other files (a run folder's
    ``model.pt`` before it is copied under ``models/``). ``congealers`` (``{registry name:
    Congealer}``) replaces loading from files (tests).
    """
    from tqdm import tqdm

    from ..predictor import Congealer

    t_start = time.time()
    if congealers is None:
        found, missing = available_models(models, root)
        for n, p in (paths or {}).items():
            if n not in MODELS:
                raise KeyError(f"unknown registry model {n!r}; known: {', '.join(MODELS)}")
            if Path(p).is_file() and (models is None or n in models):
                found[n] = Path(p)
                missing = [m for m in missing if m != n]
        congealers = {n: Congealer.from_checkpoint(p, device=device) for n, p in found.items()}
        paths = {n: str(p) for n, p in found.items()}
    else:
        missing, paths = [], {n: "(given)" for n in congealers}
    res = BenchResult(config=dataclasses.asdict(cfg), models=paths, missing=missing)
    digits = sorted({cl for n in congealers if MODELS[n].dataset == "mnist" and len(MODELS[n].classes) == 1
                     for cl in MODELS[n].classes}) or ["3"]
    steps = len(cfg.animal_classes) * (1 + sum(MODELS[n].dataset == "animals" for n in congealers)) \
        + len(digits) * 3 + len(congealers) + 2
    bar = tqdm(total=steps, desc="bench", disable=not progress)
    tick = lambda: bar.update(1)  # noqa: E731
    try:
        for cls in cfg.animal_classes:
            res.mask_transfer += _mask_rows(cls, cfg, congealers, tick)
        for d in digits:
            res.mnist_pck += _pck_rows(cfg, d, congealers, tick)
        for n, c in congealers.items():
            if MODELS[n].dataset == "mnist" and c.num_clusters > 1 and c.classifier is not None:
                res.clustering.append(_cluster_rows(cfg, n, c))
        tick()
        for n, c in congealers.items():
            if MODELS[n].dataset == "animals":
                imgs = animal_test_set(f"animals:{MODELS[n].classes[0]}")[0]
            else:
                imgs = digits_as_images(mnist_test_set()[0][: cfg.throughput_images])
            reps = math.ceil(cfg.throughput_images / len(imgs))
            res.throughput.append(_throughput(n, c, torch.cat([imgs] * reps)[: cfg.throughput_images].contiguous()))
            tick()
        if cfg.gan_presets or cfg.gangealing_presets:
            res.train_throughput = train_throughput(cfg, device=device, root=root)
        tick()
        if cfg.generators:
            res.generators = _generator_section(cfg, root, device)
    finally:
        bar.close()
    res.environment = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                           processor=platform.processor() or "", cpu_count=os.cpu_count(),
                           threads=torch.get_num_threads(), device=device)
    res.seconds = round(time.time() - t_start, 1)
    return res


def _generator_section(cfg: BenchConfig, root, device: str) -> List[Dict[str, Any]]:
    """Rows of the Generators section: each committed generator that exists, then each dataset's ceiling."""
    from .bench_generators import GENERATORS, generator_rows, real_vs_real_row

    found = {n: p for n, p in ((n, resolve_model_file(e.path, root)) for n, e in GENERATORS.items()) if p is not None}
    rows = generator_rows(found, cfg.generator_samples, cfg.seed, device)
    for data in sorted({GENERATORS[n].data for n in found}):
        rows.append(real_vs_real_row(data, cfg.generator_samples, cfg.seed, device=device))
    return rows


# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def to_markdown(res: BenchResult, command: str = "") -> str:
    """The results as Markdown tables."""
    out = ["# gangealing bench results", ""]
    if command:
        out += ["Made by:", "", "```bash", command, "```", ""]
    if res.missing:
        out += [f"Models not found (skipped): {', '.join(res.missing)}.", ""]
    if res.mask_transfer:
        out += ["## 1. Animal silhouettes: mask transfer (mean IoU over random same-class test pairs)", "",
                "| dataset | method | pairs | mean IoU |", "| --- | --- | --- | --- |"]
        out += [f"| {r['dataset']} | {r['method']} | {r['pairs']} | {_f(r['iou'])} |" for r in res.mask_transfer]
        out.append("")
        if any("set-level" in r["method"] for r in res.mask_transfer + res.mnist_pck):
            out += ["Rows marked *set-level* (like the congealing baselines) were fitted on the very test images they are "
                    "measured on; the *inductive* row was fitted on the train split and never saw them.", ""]
    if res.mnist_pck:
        al = res.config.get("alphas", (0.1, 0.05))
        out += ["## 2. MNIST under known similarity perturbations: PCK of transferred stroke points", "",
                "| dataset | pairs | method | " + " | ".join(f"PCK@{a}" for a in al) + " | points |",
                "| --- | --- | --- | " + " | ".join("---" for _ in al) + " | --- |"]
        out += [f"| {r['dataset']} | {r['task']} | {r['method']} | "
                + " | ".join(_f(r[f'pck@{a}']) for a in al) + f" | {r['points']} |" for r in res.mnist_pck]
        out.append("")
    if res.clustering:
        out += ["## 3. MNIST clustering accuracy (Hungarian matching)", "",
                "| model | clusters | test images | accuracy | DTI-clustering (published) |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {r['model']} | {r['clusters']} | {r['images']} | {_f(r['accuracy'])} | {_f(r['reference_accuracy'])} |"
                for r in res.clustering]
        out.append("")
    if res.throughput:
        out += ["## Alignment throughput at inference", "",
                "| model | input | output | batch | device | threads | images/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['model']} | {r['input']} | {r['output']} | {r['batch']} | {r['device']} | {r['threads']} | "
                f"{r['images_per_s']:.0f} |" for r in res.throughput]
        out.append("")
    if res.train_throughput:
        out += ["## Training throughput", "",
                "| command | preset | size | batch (samples per step) | heads | flips | s/step | images/s | device | threads |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['what']} | {r['preset']} | {r['size']} px | {r['batch']} | {r.get('heads', '–')} | "
                f"{r.get('flips', '–')} | {r['s_per_step']:.2f} | {r['images_per_s']:.1f} | {r['device']} | "
                f"{r['threads']} |" for r in res.train_throughput]
        out.append("")
    if res.generators:
        from .bench_generators import generators_markdown

        out += generators_markdown(res.generators)
    out += [f"Total time: {res.seconds} s; torch {res.environment.get('torch')}, "
            f"{res.environment.get('cpu_count')} CPUs visible, {res.environment.get('threads')} torch threads.", ""]
    return "\n".join(out)


def write_results(res: BenchResult, out_dir: Union[str, os.PathLike], command: str = "") -> Tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(res)
    data["command"] = command
    js, md = out / "results.json", out / "results.md"
    js.write_text(json.dumps(data, indent=1, default=str) + "\n")
    md.write_text(to_markdown(res, command))
    return js, md
