"""The pieces of GANgealing's training objective, as functions over batches.

One training sample: draw ``z``, render ``x = G(w)`` (``w`` = mapping(z)) and its own congealing
target ``y = G(mix(c, w, psi))`` (first ``inject`` W+ rows lerped from ``c`` towards ``w`` by psi,
the rest ``w``; :class:`gangealing.models.target.CongealingTarget`), both with fresh noise. The
spatial transformer warps ``x`` and the loss is::

    perceptual(T(x), y) + tv_weight * TV(flow) + identity_weight * |flow|^2

Clustering (K heads, K targets): every sample is warped by every head and compared with that
head's target; only the smallest perceptual distance counts (hard assignment), and the flow
regularisers apply to the assigned head's flow only. With flips the mirrored input competes too:
the minimum runs over ``(flip, head)`` pairs. Candidates are indexed ``f * K + k`` (``f = 1``:
mirrored), which is also the cluster classifier's label convention ("class k + K: cluster k,
mirrored").

Row orders (all image-major, as the original): targets ``(N K)`` rows ``n K + k``; transformer
outputs ``(F N K)`` rows ``(f N + n) K + k`` with ``F = 2`` under flips.

Randomness: every draw takes an optional ``torch.Generator``; ``None`` uses the global RNG in the
original's order (z, noise of the input, noise of the target), which replays its training steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gangealing.geometry import similarity as sim
from gangealing.geometry.warp import warp
from gangealing.losses.flow import flow_identity_loss, total_variation_loss
from gangealing.models.stn import AlignResult, SpatialTransformer, TentDownsample

__all__ = [
    "TrainingPairs",
    "Assignment",
    "LossTerms",
    "make_resize",
    "sample_pairs",
    "jitter_matrices",
    "jitter_inputs",
    "align_pairs",
    "assign_clusters",
    "select_assigned",
    "gangealing_loss",
    "congealing_step",
    "ClassifierBatch",
    "classifier_batch",
    "classifier_accuracy",
]

Resize = Callable[[Tensor], Tensor]


class _Identity(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


class _BilinearResize(nn.Module):
    """Bilinear resize to ``size`` (align_corners=False), for generators smaller than the transformer."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def make_resize(gen_size: int, stn_size: int, channels: int = 3) -> nn.Module:
    """Generator output -> transformer input (``flow_size``): identity, the original's tent
    downsampling for an integer factor, else bilinear (e.g. the parity fixture's x2 upsample)."""
    if gen_size == stn_size:
        return _Identity()
    if gen_size > stn_size and gen_size % stn_size == 0:
        return TentDownsample(gen_size // stn_size, channels)
    return _BilinearResize(stn_size)


@dataclass(frozen=True, eq=False)
class TrainingPairs:
    """Generated inputs and their per-sample congealing targets."""

    inputs: Tensor  # (N, C, G, G) generator output, full resolution
    stn_inputs: Tensor  # (N, C, S, S) the same, resized to the transformer's flow_size
    targets: Tensor  # (N K, C, S, S) targets, row n K + k: sample n, head k
    w: Tensor  # (N, D)


def jitter_matrices(batch: int, jitter: Sequence[float], rng: Optional[torch.Generator] = None,
                    device: Optional[torch.device] = None) -> Tensor:
    """``(N, 2, 3)`` inverse-warp matrices of random similarities ``(max_angle_deg, min_scale,
    max_scale, max_shift)`` (see ``GANgealingTrainConfig.input_jitter``).

    The content is rotated by ``a``, scaled by ``s`` and moved by ``t`` (``t`` in normalised units,
    ``2 * max_shift`` per image side) about the image centre; the returned matrix maps output to
    source, as ``grid_sample`` wants.
    """
    max_angle, lo, hi, shift = (float(v) for v in jitter)
    dev = rng.device if rng is not None else device
    u = torch.rand(batch, 4, generator=rng, device=dev)  # (N, 4) in [0, 1)
    angle = (u[:, 0] * 2 - 1) * math.radians(max_angle)
    scale = lo + u[:, 1] * (hi - lo)
    t = (u[:, 2:] * 2 - 1) * 2 * shift  # (N, 2)
    forward = sim.similarity_matrix(angle, scale, t[:, 0], t[:, 1])  # source -> output
    return sim.invert(forward)


def jitter_inputs(images: Tensor, jitter: Sequence[float], padding_mode: str = "border",
                  rng: Optional[torch.Generator] = None) -> Tensor:
    """Warp each image ``(N, C, H, W)`` by its own random similarity of :func:`jitter_matrices`."""
    m = jitter_matrices(images.size(0), jitter, rng=rng, device=images.device).to(images.dtype)
    return warp(images, sim.affine_grid(m, images.shape[-2:]), padding_mode=padding_mode)


def sample_pairs(generator: nn.Module, target: nn.Module, psi: Union[float, Tensor], batch: int, resize: Resize,
                 rng: Optional[torch.Generator] = None, z: Optional[Tensor] = None,
                 input_jitter: Sequence[float] = (), padding_mode: str = "border") -> TrainingPairs:
    """Draw ``batch`` samples and render them and their targets (gradients reach ``target``).

    ``generator`` is frozen; ``z`` (N, D) overrides the draw. Draw order: z, the input's noise, the
    target's noise (the original's), then, with ``input_jitter``, the inputs' random similarities
    (the targets stay unjittered: the transformer learns to undo the jitter).
    """
    if z is None:
        z = generator.sample_z(batch, generator=rng)  # (N, D)
    with torch.no_grad():
        w = generator.mapping(z)  # (N, D)
        inputs = generator.synthesis(w, noise="random", generator=rng)  # (N, C, G, G)
    w_plus = target(w, psi)  # (N K, L, D)
    targets = resize(generator.synthesis(w_plus, noise="random", generator=rng))  # (N K, C, S, S)
    if input_jitter:
        inputs = jitter_inputs(inputs, input_jitter, padding_mode=padding_mode, rng=rng)
    return TrainingPairs(inputs=inputs, stn_inputs=resize(inputs), targets=targets, w=w)


def align_pairs(stn: SpatialTransformer, pairs: TrainingPairs, flips: bool = False,
                sample_from_full_res: bool = False, padding_mode: str = "border") -> AlignResult:
    """Warp the inputs with every head (and, with ``flips``, their mirrors too): ``(F N K)`` rows.

    ``sample_from_full_res`` samples pixels from the full-resolution generator output instead of
    the resized copy the transformer regresses from (sharper targets for large generators).
    """
    x, source = pairs.stn_inputs, pairs.inputs if sample_from_full_res else None
    if flips:
        x = torch.cat([x, x.flip(3)])  # (2N, C, S, S)
        source = None if source is None else torch.cat([source, source.flip(3)])
    return stn(x, padding_mode=padding_mode, source=source)


@dataclass(frozen=True, eq=False)
class Assignment:
    """Hard assignment of each sample to its best ``(flip, head)`` candidate."""

    index: Tensor  # (N,) long in [0, F K): f K + k
    distance: Tensor  # (N,) the smallest distance (differentiable)
    distances: Tensor  # (N, F K) all candidates' distances
    num_heads: int

    @property
    def cluster(self) -> Tensor:
        """(N,) long: the assigned head."""
        return self.index % self.num_heads

    @property
    def flipped(self) -> Tensor:
        """(N,) bool: the mirrored input won."""
        return self.index >= self.num_heads


def assign_clusters(distances: Tensor, batch: int, num_heads: int = 1, flips: bool = False) -> Assignment:
    """Minimum over heads (and flips) of per-row distances ``(F N K,)`` in transformer row order.

    Ties go to the lower index (the unmirrored input, then the lower head), as ``torch.min``.
    """
    f = 2 if flips else 1
    per = distances.reshape(f, batch, num_heads)  # (F, N, K)
    collapsed = per.permute(1, 0, 2).reshape(batch, f * num_heads)  # (N, F K)
    best = collapsed.min(dim=1)
    return Assignment(index=best.indices, distance=best.values, distances=collapsed, num_heads=num_heads)


def select_assigned(rows: Tensor, assignment: Assignment) -> Tensor:
    """Pick each sample's assigned row from ``(F N K, ...)`` transformer outputs -> ``(N, ...)``."""
    n, fk = assignment.distances.shape
    k = assignment.num_heads
    per = rows.reshape(fk // k, n, k, *rows.shape[1:]).transpose(0, 1).reshape(n, fk, *rows.shape[1:])  # (N, F K, ...)
    return per[torch.arange(n, device=rows.device), assignment.index]  # (N, ...)


@dataclass(frozen=True, eq=False)
class LossTerms:
    """The terms of one batch's loss (scalars) and the assignment behind them."""

    total: Tensor  # perceptual + tv_weight * tv + identity_weight * identity
    perceptual: Tensor
    tv: Tensor
    identity: Tensor
    assignment: Assignment


def gangealing_loss(aligned: AlignResult, targets: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor], batch: int,
                    num_heads: int = 1, flips: bool = False, tv_weight: float = 1000.0,
                    identity_weight: float = 1.0) -> LossTerms:
    """The GANgealing loss of transformer outputs ``aligned`` ((F N K) rows) against ``targets`` ((N K) rows).

    ``loss_fn(a, b)`` returns per-image distances. Unimodal without flips this is the plain mean
    distance; otherwise the mean of per-sample minima. TV and identity act on the assigned rows'
    residual flows (zero for a similarity-only transformer).
    """
    f = 2 if flips else 1
    tgt = targets.repeat(f, 1, 1, 1) if f > 1 else targets  # (F N K, C, S, S)
    dist = loss_fn(aligned.images, tgt).reshape(-1)  # (F N K,)
    assignment = assign_clusters(dist, batch, num_heads, flips)
    perceptual = assignment.distance.mean()
    if aligned.flow is not None:
        flow = select_assigned(aligned.flow, assignment)  # (N, S, S, 2)
        tv, identity = total_variation_loss(flow), flow_identity_loss(flow)
    else:
        tv = identity = perceptual.new_zeros(())
    total = perceptual
    if tv_weight:
        total = total + tv_weight * tv
    if identity_weight:
        total = total + identity_weight * identity
    return LossTerms(total=total, perceptual=perceptual, tv=tv, identity=identity, assignment=assignment)


def congealing_step(generator: nn.Module, stn: SpatialTransformer, target: nn.Module, loss_fn: Callable,
                    psi: Union[float, Tensor], batch: int, resize: Resize, *, flips: bool = False,
                    tv_weight: float = 1000.0, identity_weight: float = 1.0, sample_from_full_res: bool = False,
                    padding_mode: str = "border", rng: Optional[torch.Generator] = None,
                    z: Optional[Tensor] = None, input_jitter: Sequence[float] = ()) -> LossTerms:
    """Sample pairs, align, and compute the loss of one (micro-)batch (the original's training step
    up to ``backward``)."""
    pairs = sample_pairs(generator, target, psi, batch, resize, rng=rng, z=z, input_jitter=input_jitter,
                         padding_mode=padding_mode)
    aligned = align_pairs(stn, pairs, flips=flips, sample_from_full_res=sample_from_full_res, padding_mode=padding_mode)
    return gangealing_loss(aligned, pairs.targets, loss_fn, batch, num_heads=stn.cfg.num_heads, flips=flips,
                           tv_weight=tv_weight, identity_weight=identity_weight)


@dataclass(frozen=True, eq=False)
class ClassifierBatch:
    """Generated images (the transformer's input) labelled by the min-loss rule over heads and flips."""

    images: Tensor  # (N, C, S, S) unmirrored generator samples, at the transformer's flow_size
    labels: Tensor  # (N,) long in [0, F K): k = best head, + K when the mirror won
    distances: Tensor  # (N, F K) perceptual distance of every candidate
    w: Optional[Tensor] = None  # (N, D) the samples' W latents


@torch.no_grad()
def classifier_batch(generator: nn.Module, stn: SpatialTransformer, target: nn.Module, loss_fn: Callable, batch: int,
                     resize: Resize, *, flips: bool = False, sample_from_full_res: bool = False,
                     padding_mode: str = "border", rng: Optional[torch.Generator] = None) -> ClassifierBatch:
    """Training data of the cluster classifier: fresh samples and the candidate (head, flip) whose
    congealed image is perceptually closest to that head's target at psi = 0 (the original's
    ``assign_fake_images_to_clusters``)."""
    pairs = sample_pairs(generator, target, 0.0, batch, resize, rng=rng)
    aligned = align_pairs(stn, pairs, flips=flips, sample_from_full_res=sample_from_full_res, padding_mode=padding_mode)
    f = 2 if flips else 1
    tgt = pairs.targets.repeat(f, 1, 1, 1) if f > 1 else pairs.targets  # (F N K, C, S, S)
    dist = loss_fn(aligned.images, tgt).reshape(-1)  # (F N K,)
    a = assign_clusters(dist, batch, stn.cfg.num_heads, flips)
    return ClassifierBatch(images=pairs.stn_inputs, labels=a.index, distances=a.distances, w=pairs.w)


def classifier_accuracy(logits: Tensor, distances: Tensor, k: int = 1) -> Tensor:
    """Share of samples whose predicted class is among the ``k`` truly best candidates.

    ``logits`` (N, F K) from the classifier, ``distances`` (N, F K) from :class:`Assignment`
    (smaller is better). ``k = 1`` is plain accuracy against the min-loss labels.
    """
    k = min(k, distances.shape[1])
    best = distances.topk(k, dim=1, largest=False).indices  # (N, k)
    pred = logits.argmax(dim=1, keepdim=True)  # (N, 1)
    return (best == pred).any(dim=1).float().mean()
