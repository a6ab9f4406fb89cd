"""PCA of the generator's W space, in pure PyTorch.

The congealing target lives in the span of the top principal directions of W. The original
GANgealing fits them with scikit-learn's ``IncrementalPCA`` on W samples; :func:`fit_pca`
reproduces that algorithm (batches of ``5 * D`` rows by default, running mean, the
combined-basis SVD update and scikit-learn's ``svd_flip`` sign convention) entirely in float64.
On float64 input it agrees with scikit-learn to ~1e-13. On float32 input scikit-learn decomposes
its first batch in float32; with only a small gap between the top eigenvalues that rounding moves
the result by ~1e-6 in a way that depends on the LAPACK build (scikit-learn 1.9.1 on another
machine reproduces the parity fixture only to 1.6e-6), so float64 is the reproducible choice.
:func:`fit_full_pca` is the exact, one-shot PCA of the same data.

Sign convention (both fits): each component is flipped so that its entry of largest absolute value
is positive (scikit-learn's ``svd_flip(..., u_based_decision=False)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["PCAResult", "IncrementalPCA", "fit_pca", "fit_full_pca", "sample_w"]


@dataclass(frozen=True, eq=False)
class PCAResult:
    """Principal components of a set of W vectors (float64)."""

    components: Tensor  # (n, D), orthonormal rows, largest variance first
    mean: Tensor  # (D,)
    explained_variance: Tensor  # (n,), unbiased variance along each component
    singular_values: Tensor  # (n,), of the centred data matrix

    @property
    def n_components(self) -> int:
        return self.components.shape[0]

    def encode(self, x: Tensor) -> Tensor:
        """Coefficients ``(x - mean) @ components.T``: (M, D) -> (M, n), float64, on x's device."""
        comps = self.components.to(x.device)
        return (x.to(comps.dtype) - self.mean.to(x.device)) @ comps.T  # (M, n)

    def decode(self, coefficients: Tensor) -> Tensor:
        """Inverse of :meth:`encode` within the span: (M, n) -> (M, D), float64."""
        comps = self.components.to(coefficients.device)
        return self.mean.to(coefficients.device) + coefficients.to(comps.dtype) @ comps  # (M, D)


def _flip_signs(vt: Tensor) -> Tensor:
    """Make the largest-magnitude entry of every row positive (scikit-learn's svd_flip on V)."""
    idx = vt.abs().argmax(dim=1, keepdim=True)  # (n, 1)
    signs = torch.sign(vt.gather(1, idx))  # (n, 1)
    signs[signs == 0] = 1.0
    return vt * signs


class IncrementalPCA:
    """Streaming PCA with the update rule of scikit-learn's ``IncrementalPCA`` (float64)."""

    def __init__(self, n_components: int):
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components = n_components
        self.n_samples_seen = 0
        self._mean: Optional[Tensor] = None  # (D,)
        self._components: Optional[Tensor] = None  # (n, D)
        self._singular_values: Optional[Tensor] = None  # (n,)
        self._explained_variance: Optional[Tensor] = None  # (n,)

    @torch.no_grad()
    def partial_fit(self, x: Tensor) -> "IncrementalPCA":
        """Fold one batch (B, D) into the estimate; B must be at least ``n_components``."""
        x = x.detach().to(torch.float64)
        b, d = x.shape
        if b < self.n_components or d < self.n_components:
            raise ValueError(f"batch of shape {tuple(x.shape)} cannot hold {self.n_components} components")
        n_old = self.n_samples_seen
        n_total = n_old + b
        batch_mean = x.mean(dim=0)  # (D,)
        centred = x - batch_mean  # (B, D)
        mean = batch_mean if n_old == 0 else (self._mean * n_old + x.sum(dim=0)) / n_total  # (D,)
        if n_old == 0:
            stacked = centred
        else:
            # The previous basis scaled by its singular values stands in for the old data; the last
            # row accounts for the shift between the old mean and this batch's mean.
            correction = ((n_old / n_total) * b) ** 0.5 * (self._mean - batch_mean)  # (D,)
            stacked = torch.cat([self._singular_values[:, None] * self._components, centred, correction[None]], 0)
        _, s, vt = torch.linalg.svd(stacked, full_matrices=False)
        vt = _flip_signs(vt)
        k = self.n_components
        self.n_samples_seen = n_total
        self._mean = mean
        self._components, self._singular_values = vt[:k], s[:k]
        self._explained_variance = s[:k] ** 2 / (n_total - 1)
        return self

    def result(self) -> PCAResult:
        """The current estimate as a :class:`PCAResult`."""
        if self._components is None:
            raise RuntimeError("IncrementalPCA.result() called before any partial_fit")
        return PCAResult(self._components, self._mean, self._explained_variance, self._singular_values)


def _batch_slices(n: int, batch_size: int, min_batch_size: int):
    """Row ranges like scikit-learn's ``gen_batches``: a full batch is skipped (merged into the
    tail) when it would leave fewer than ``min_batch_size`` rows after it."""
    start = 0
    for _ in range(n // batch_size):
        end = start + batch_size
        if end + min_batch_size > n:
            continue
        yield start, end
        start = end
    if start < n:
        yield start, n


def fit_pca(w: Tensor, n_components: int, batch_size: Optional[int] = None) -> PCAResult:
    """Incremental PCA of ``w`` (M, D), exactly as the original fits its target directions.

    ``batch_size`` defaults to ``5 * D`` (scikit-learn's default). Returns float64 tensors on
    ``w``'s device.
    """
    m, d = w.shape
    batch_size = 5 * d if batch_size is None else batch_size
    ipca = IncrementalPCA(n_components)
    for start, end in _batch_slices(m, batch_size, n_components):
        ipca.partial_fit(w[start:end])
    return ipca.result()


@torch.no_grad()
def fit_full_pca(w: Tensor, n_components: int) -> PCAResult:
    """Exact PCA of ``w`` (M, D) by one SVD of the centred data (float64)."""
    x = w.detach().to(torch.float64)
    mean = x.mean(dim=0)  # (D,)
    _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
    vt = _flip_signs(vt[:n_components])
    s = s[:n_components]
    return PCAResult(vt, mean, s**2 / (x.shape[0] - 1), s)


@torch.no_grad()
def sample_w(
    mapping_fn: Callable[[Tensor], Tensor],
    n: int,
    style_dim: int,
    batch: int,
    generator: torch.Generator,
    device: Optional[torch.device] = None,
) -> Tensor:
    """Map ``n`` standard-normal z through ``mapping_fn`` in batches: returns W (n, style_dim).

    z is drawn on ``generator``'s device (so a CPU generator gives the same W on every device)
    and then moved to ``device`` (default: the generator's device) before mapping.
    """
    device = torch.device(device) if device is not None else generator.device
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, style_dim, generator=generator, device=generator.device).to(device)  # (b, D)
        out.append(mapping_fn(z))  # (b, D)
    return torch.cat(out, 0)  # (n, D)
