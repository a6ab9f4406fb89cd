"""Alignment measures with real ground truth: mask IoU, clustering accuracy, PCK, random same-class pairs.

Pure functions over tensors (no files, no models); ``gangealing bench`` and ``gangealing demo`` use them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["mask_iou", "hungarian_accuracy", "cluster_composition", "random_pairs", "pck_at"]


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
    if pred.size == 0:
        raise ValueError("pred and labels must be non-empty and of the same shape")
    k = int(max(pred.max(), labels.max())) + 1
    counts = _contingency(pred, labels, k, k)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / pred.size)


def _contingency(pred: np.ndarray, labels: np.ndarray, clusters: int, classes: int) -> np.ndarray:
    """``(clusters, classes)`` counts of items per (predicted cluster, true label)."""
    if pred.shape != labels.shape:
        raise ValueError("pred and labels must be non-empty and of the same shape")
    counts = np.zeros((clusters, classes), dtype=np.int64)
    np.add.at(counts, (pred, labels), 1)
    return counts


def cluster_composition(pred: Union[np.ndarray, torch.Tensor], labels: Union[np.ndarray, torch.Tensor],
                        clusters: Optional[int] = None) -> List[Dict[str, Any]]:
    """What each cluster holds: ``[{cluster, images, label, share}]`` in cluster order, where ``label``
    is the most common true label among the cluster's items and ``share`` its fraction of them (``label``
    is None and ``share`` 0 for an empty cluster). ``clusters`` defaults to the largest id seen + 1."""
    pred, labels = np.asarray(pred).astype(np.int64), np.asarray(labels).astype(np.int64)
    k = int(clusters if clusters is not None else (pred.max() + 1 if pred.size else 0))
    counts = _contingency(pred, labels, k, int(labels.max()) + 1 if labels.size else 1)
    sizes, top = counts.sum(1), counts.argmax(1)
    return [dict(cluster=c, images=int(sizes[c]), label=int(top[c]) if sizes[c] else None,
                 share=float(counts[c, top[c]] / sizes[c]) if sizes[c] else 0.0) for c in range(k)]


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


def pck_at(est: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor, size: int, alphas: Sequence[float]) -> List[float]:
    """PCK per alpha (threshold ``alpha * size`` px, inclusive) over visible points (:mod:`gangealing.metrics.pck`)."""
    from .pck import pck_correct, pck_thresholds

    th = pck_thresholds(alphas, (size, size))
    correct = pck_correct(est.float(), gt.float(), visible, th)  # (N, A)
    return (correct.sum(0) / visible.float().sum().clamp(min=1)).tolist()
