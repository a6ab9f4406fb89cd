"""Precision and recall of generated images (Kynkäänniemi et al. 2019, "Improved Precision and
Recall Metric for Assessing Generative Models"), on the same offline features as the Fréchet
distance (:mod:`gangealing.metrics.fid`: MobileNetV2, 1280-d).

Each set of features spans a manifold: the union of balls around its points, each ball's radius
the distance to that point's ``k``-th nearest neighbour in its own set (k = 3 by default, the
paper's). **Precision** is the share of generated samples inside the real manifold (are samples
realistic?); **recall** is the share of real images inside the generated manifold (does the
generator cover the data?). A generator that draws only some digits has high precision and low
recall. Written here (about 40 lines) rather than taken from torch-fidelity, whose feature
extractors need torchvision, which does not import beside the CPU torch build this project uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray]


@dataclass(frozen=True)
class PrecisionRecall:
    """Precision and recall in [0, 1], the k and the sample counts they were measured with."""

    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(t.shape)}")
    return t.double()


def knn_radii(features: ArrayLike, k: int = 3, chunk: int = 1024) -> torch.Tensor:
    """(N,) distance from each row of ``features`` (N, D) to its ``k``-th nearest other row."""
    f = _as_tensor(features)
    if not 1 <= k < len(f):
        raise ValueError(f"k = {k} needs at least k + 1 = {k + 1} samples, got {len(f)}")
    out = []
    for i in range(0, len(f), chunk):
        d = torch.cdist(f[i:i + chunk], f)  # (c, N); the point itself is at distance 0, the first of k + 1
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """(P,) bool: whether each point lies in at least one ball (centre, radius)."""
    out = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i:i + chunk], centres)  # (c, M)
        out.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(out)


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall of ``fake`` (M, D) against ``real`` (N, D) features (see the module docstring)."""
    r, f = _as_tensor(real), _as_tensor(fake)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake features differ in width: {r.shape[1]} vs {f.shape[1]}")
    precision = _inside(f, r, knn_radii(r, k)).double().mean().item()
    recall = _inside(r, f, knn_radii(f, k)).double().mean().item()
    return PrecisionRecall(precision, recall, k, len(r), len(f))
