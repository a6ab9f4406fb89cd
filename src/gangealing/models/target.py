"""The congealing target: a learned latent that GANgealing aligns every image towards.

Each of the K heads (clusters) owns one target latent ``c_k = mean(W) + coefficients_k @ directions``,
with ``directions`` the top principal components of W (see :mod:`gangealing.models.pca`). A
GAN-supervised training pair renders ``w`` and its "congealed" counterpart, whose first ``inject``
W+ rows are moved from ``c`` towards ``w`` by ``psi`` (``psi = 1``: ``w`` itself; ``psi = 0``:
exactly ``c``) while the remaining rows keep ``w`` so that appearance is preserved.

Parity with the original (``DirectionInterpolator`` in ``models/latent_learner.py``):

* state-dict keys and shapes are identical (``coefficients`` parameter (K, n_dirs), ``directions``
  buffer (n_dirs, D), ``lat_mean`` buffer (1, D)), so original ``ll`` state dicts load strictly;
* the lerp is ``torch.lerp(c, w, psi)``, the original's exact expression;
* with several heads and no head selected, the output holds every head for every sample,
  sample-major: row ``n * K + k`` is sample n with head k (``out.view(N, K, n_latent, D)``
  unfolds it), which is the order the original's cluster loss reshapes with ``view(N, K)``.

K-means++ initialisation of the K heads (the paper's clustering init, the original's
``kmeans_plusplus``): candidate W are rendered with their first ``inject`` rows and the mean W on
the remaining rows (:func:`kmeans_candidate_wplus`), seeds are picked with D^2 sampling under a
perceptual distance (:func:`kmeans_plusplus`), and each head starts at its seed's PCA
coefficients (:func:`kmeans_plusplus_targets`, then :meth:`CongealingTarget.init_from_latents`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TargetConfig
from .pca import PCAResult

__all__ = [
    "CongealingTarget",
    "TargetSeeds",
    "kmeans_candidate_wplus",
    "kmeans_plusplus",
    "kmeans_plusplus_targets",
    "gan_template",
    "lloyd_medoids",
]

HeadIndex = Union[int, Tensor, None]
DistanceFn = Callable[[Tensor, Tensor], Tensor]


class CongealingTarget(nn.Module):
    """Learned target latents ``c_k = lat_mean + coefficients_k @ directions`` and the psi-lerp to W+."""

    def __init__(self, cfg: TargetConfig):
        super().__init__()
        if not 0 <= cfg.inject <= cfg.n_latent:
            raise ValueError(f"inject={cfg.inject} must lie in [0, n_latent={cfg.n_latent}]")
        self.cfg = cfg
        # Zeros until init_from_pca / a checkpoint fills them (the original used random placeholders).
        self.coefficients = nn.Parameter(torch.zeros(cfg.num_heads, cfg.num_directions))
        self.register_buffer("directions", torch.zeros(cfg.num_directions, cfg.style_dim))
        self.register_buffer("lat_mean", torch.zeros(1, cfg.style_dim))

    @property
    def num_heads(self) -> int:
        return self.cfg.num_heads

    def target_latent(self, head: HeadIndex = None) -> Tensor:
        """The target latents: (K, D) for ``head=None``, else ``c[head]`` ((D,) for an int, (M, D) for indices)."""
        c = self.lat_mean + self.coefficients @ self.directions  # (K, D)
        return c if head is None else c[head]

    def forward(self, w: Tensor, psi: Union[float, Tensor], head: HeadIndex = None) -> Tensor:
        """Congealed W+ for ``w``.

        Args:
            w: (N, D) W latents, or (N, n_latent, D) W+ (each of the first ``inject`` rows is then
                lerped towards c separately).
            psi: float, or a tensor of shape () or (N,) (per sample); 1 keeps ``w``, 0 gives ``c``.
            head: None -> every head for every sample, (N*K, n_latent, D) sample-major (row n*K + k);
                an int -> that head for all samples; a (N,) long tensor -> one head per sample.
                The last two return (N, n_latent, D).
        Returns:
            (N*K or N, n_latent, D) W+: rows [:inject] = lerp(c, w, psi), rows [inject:] = w.
        """
        L, inject = self.cfg.n_latent, self.cfg.inject
        if w.ndim == 2:
            w_plus = w[:, None, :].expand(-1, L, -1)  # (N, L, D)
        elif w.ndim == 3 and w.shape[1] == L:
            w_plus = w
        else:
            d = self.cfg.style_dim
            raise ValueError(f"w must be (N, {d}) or (N, {L}, {d}), got {tuple(w.shape)}")
        n = w_plus.shape[0]
        c = self.target_latent()  # (K, D)
        psi_rows = psi if not isinstance(psi, Tensor) or psi.ndim == 0 else psi.reshape(n)  # (N,) or scalar
        if head is None:
            k = c.shape[0]
            w_plus = w_plus.repeat_interleave(k, dim=0)  # (N*K, L, D), sample-major
            c = c.repeat(n, 1)  # (N*K, D)
            if isinstance(psi_rows, Tensor) and psi_rows.ndim == 1:
                psi_rows = psi_rows.repeat_interleave(k)  # (N*K,)
        else:
            head = torch.as_tensor(head, dtype=torch.long, device=c.device)
            c = c[head].expand(n, -1) if head.ndim == 0 else c[head.reshape(n)]  # (N, D)
        if isinstance(psi_rows, Tensor):
            psi_rows = psi_rows.to(c).reshape(-1, 1, 1) if psi_rows.ndim == 1 else psi_rows.to(c)
        congealed = torch.lerp(c[:, None, :].expand(-1, inject, -1), w_plus[:, :inject], psi_rows)  # (M, inject, D)
        return torch.cat([congealed, w_plus[:, inject:]], dim=1)  # (M, L, D)

    @torch.no_grad()
    def init_from_pca(self, pca: PCAResult) -> None:
        """Take ``directions`` and ``lat_mean`` from a PCA of W (cast to the buffers' dtype) and zero
        the coefficients, so every head starts at the mean W (the original's ``assign_buffers``)."""
        n, d = self.cfg.num_directions, self.cfg.style_dim
        if pca.components.shape[0] < n or pca.components.shape[1] != d:
            raise ValueError(f"PCA components {tuple(pca.components.shape)} cannot fill directions ({n}, {d})")
        self.directions.copy_(pca.components[:n])
        self.lat_mean.copy_(pca.mean.reshape(1, d))
        self.coefficients.zero_()

    @torch.no_grad()
    def init_from_latents(self, latents: Tensor, pca: Optional[PCAResult] = None) -> None:
        """Start head k at the projection of ``latents[k]`` (K, D) onto the directions.

        ``coefficients = (latents - mean) @ directions.T``, using ``pca`` (float64, the original's
        ``pca.encode``) when given, else this module's own ``lat_mean`` / ``directions`` buffers.
        """
        if latents.shape != (self.cfg.num_heads, self.cfg.style_dim):
            want = (self.cfg.num_heads, self.cfg.style_dim)
            raise ValueError(f"latents must be {want}, got {tuple(latents.shape)}")
        if pca is not None:
            coeffs = pca.encode(latents)[:, : self.cfg.num_directions]  # (K, n_dirs)
        else:
            coeffs = (latents.to(self.lat_mean) - self.lat_mean) @ self.directions.T  # (K, n_dirs)
        self.coefficients.copy_(coeffs)


def kmeans_candidate_wplus(w: Tensor, inject: int, n_latent: int, mean_w: Optional[Tensor] = None) -> Tensor:
    """W+ used to render k-means++ candidates, as in the original: rows [:inject] from ``w`` (M, D),
    the rest from ``mean_w`` (D,) or (1, D) (default: the mean of ``w``), so that the clustering sees
    the coarse (pose / shape) layers only. Returns (M, n_latent, D)."""
    fill = w.mean(dim=0) if mean_w is None else mean_w.reshape(-1)  # (D,)
    m = w.shape[0]
    top = w[:, None, :].expand(-1, inject, -1)  # (M, inject, D)
    rest = fill[None, None, :].expand(m, n_latent - inject, -1)  # (M, L - inject, D)
    return torch.cat([top, rest], dim=1)  # (M, L, D)


@torch.no_grad()
def kmeans_plusplus(
    features: Tensor,
    num_seeds: int,
    distance_fn: DistanceFn,
    generator: torch.Generator,
    batch_size: Optional[int] = None,
) -> Tensor:
    """Pick ``num_seeds`` spread-out candidates with k-means++ (D^2) sampling: (K,) int64 indices
    into ``features``, in the order they were picked.

    Args:
        features: (M, ...) one entry per candidate (images for a perceptual distance, or vectors).
        distance_fn: ``distance_fn(a, b)`` -> (B,) distances between rows of two equal-shaped
            batches (B, ...), e.g. an LPIPS loss per image; it may move its inputs to another device.
        generator: the only source of randomness (first seed uniform, the rest D^2-weighted).
        batch_size: candidates per ``distance_fn`` call (default: all at once).
    As in the original, the first seed is ``randint(M)`` and each further one is drawn with
    ``multinomial(d_min**2 / sum(d_min**2))``, both from ``generator``; unlike the original, the
    current seed's features are reused rather than re-rendered with fresh noise, so a picked
    candidate is at distance 0 from itself (for a metric) and is never picked again.
    """
    m = features.shape[0]
    if not 1 <= num_seeds <= m:
        raise ValueError(f"cannot pick {num_seeds} seeds from {m} candidates")
    batch_size = m if batch_size is None else batch_size
    g_dev = generator.device
    indices = [int(torch.randint(0, m, (1,), generator=generator, device=g_dev))]
    closest = torch.full((m,), float("inf"), dtype=torch.float64)
    for _ in range(num_seeds - 1):
        anchor = features[indices[-1]][None]  # (1, ...)
        dist = torch.cat([
            distance_fn(anchor.expand_as(chunk), chunk).reshape(-1).to("cpu", torch.float64)  # (B,)
            for chunk in features.split(batch_size)
        ])  # (M,)
        closest = torch.minimum(closest, dist)
        weights = closest**2  # (M,)
        if not weights.sum() > 0:
            raise ValueError("k-means++: every candidate coincides with a seed; need more distinct candidates")
        indices.append(int(torch.multinomial((weights / weights.sum()).to(g_dev), 1, generator=generator)))
    return torch.tensor(indices, dtype=torch.long)


@torch.no_grad()
def lloyd_medoids(embeddings: Tensor, seeds: Tensor, iters: int) -> Tensor:
    """Refine seed indices (K,) by ``iters`` Lloyd iterations of k-means on ``embeddings`` (M, E);
    returns (K,) int64 indices of the candidates nearest the final centroids (medoids of a kind).

    k-means++ draws each seed at random, so with K about the number of modes it often puts two seeds
    in one mode and none in another (on MNIST: 6-8 of 10 digits, BENCHMARKS.md section 3); Lloyd's
    iterations move the centres to where the candidates are (8-9 of 10). A cluster that empties keeps
    its centre.
    """
    x = embeddings.float()  # (M, E)
    centres = x[seeds.to(x.device)].clone()  # (K, E)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)  # (M,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)  # (K, E)
        counts = torch.bincount(assign, minlength=centres.shape[0]).to(x.dtype)  # (K,)
        moved = counts > 0
        centres[moved] = sums[moved] / counts[moved, None]
    return torch.cdist(centres, x).argmin(1).to("cpu", torch.long)  # (K,)


@dataclass(frozen=True, eq=False)
class TargetSeeds:
    """Initial targets for K heads: the chosen W and their PCA coefficients."""

    indices: Tensor  # (K,) int64, into the candidate latents
    latents: Tensor  # (K, D)
    coefficients: Tensor  # (K, n_components) float64, (latents - mean) @ components.T


def kmeans_plusplus_targets(
    latents: Tensor,
    features: Tensor,
    num_heads: int,
    distance_fn: DistanceFn,
    generator: torch.Generator,
    pca: PCAResult,
    batch_size: Optional[int] = None,
    embeddings: Optional[Tensor] = None,
    lloyd_iters: int = 0,
) -> TargetSeeds:
    """K-means++ over candidates ``latents`` (M, D) with ``features`` (M, ...) (e.g. their images
    rendered from :func:`kmeans_candidate_wplus`); returns the seeds and their PCA coefficients,
    ready for :meth:`CongealingTarget.init_from_latents` (or to copy into ``coefficients``).
    With ``lloyd_iters`` > 0 the seeds are then refined by :func:`lloyd_medoids` on ``embeddings``
    (M, E), vectors whose squared distances are ``distance_fn``'s (the original stops at the seeds)."""
    if latents.shape[0] != features.shape[0]:
        raise ValueError(f"{latents.shape[0]} latents but {features.shape[0]} feature rows")
    indices = kmeans_plusplus(features, num_heads, distance_fn, generator, batch_size)  # (K,)
    if lloyd_iters > 0:
        if embeddings is None or embeddings.shape[0] != latents.shape[0]:
            raise ValueError("Lloyd refinement of the seeds needs one embedding row per candidate")
        indices = lloyd_medoids(embeddings, indices, lloyd_iters)
    seeds = latents[indices.to(latents.device)]  # (K, D)
    return TargetSeeds(indices, seeds, pca.encode(seeds))


@torch.no_grad()
def gan_template(generator: nn.Module, target: nn.Module, size: int, head: int = 0) -> torch.Tensor:
    """The model's GAN target image ``(1, C, size, size)`` in [-1, 1]: the generator at the congealing
    latent (every injected W+ row at the target, the rest at the target's mean latent)."""
    w = target.lat_mean.expand(1, -1)  # (1, D)
    img = generator.synthesis(target(w, 0.0, head=head), noise="const")  # (1, C, G, G)
    if img.size(-1) != size:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return img.clamp(-1, 1)
