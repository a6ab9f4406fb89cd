"""Regularisers on the residual flow regressed by the flow spatial transformer.

Both take the residual flow ``(N, H, W, 2)`` (normalised units, see
:mod:`gangealing.geometry.coords`), i.e. the full sampling grid minus the identity grid.
"""
from __future__ import annotations

import torch


def _huber(a: torch.Tensor) -> torch.Tensor:
    """Huber penalty with threshold 1 on non-negative ``a``: ``a^2 / 2`` up to 1, ``a - 1/2`` after."""
    return torch.where(a <= 1.0, 0.5 * a.square(), a - 0.5)


def _mean(values: torch.Tensor, reduce_batch: bool) -> torch.Tensor:
    """Mean over everything, or over all but the batch axis."""
    return values.mean() if reduce_batch else values.flatten(1).mean(dim=1)


def total_variation_loss(flow: torch.Tensor, reduce_batch: bool = True) -> torch.Tensor:
    """Huber total variation of a flow ``(N, H, W, 2)``.

    The Huber penalty is applied to the absolute differences between vertical neighbours and,
    separately, between horizontal neighbours; each set is averaged over all its entries (both
    (x, y) components count) and the two means are added. Returns a scalar, or ``(N,)`` per-image
    values when ``reduce_batch`` is False (these drive test-time flip selection).
    """
    if flow.dim() != 4 or flow.size(-1) != 2:
        raise ValueError(f"expected a flow of shape (N, H, W, 2), got {tuple(flow.shape)}")
    diff_y = (flow[:, 1:] - flow[:, :-1]).abs()  # (N, H-1, W, 2)
    diff_x = (flow[:, :, 1:] - flow[:, :, :-1]).abs()  # (N, H, W-1, 2)
    return _mean(_huber(diff_y), reduce_batch) + _mean(_huber(diff_x), reduce_batch)


def flow_identity_loss(flow: torch.Tensor, reduce_batch: bool = True) -> torch.Tensor:
    """Mean squared residual flow: pulls the flow towards the identity warp.

    Returns a scalar, or ``(N,)`` per-image values when ``reduce_batch`` is False.
    """
    return _mean(flow.square(), reduce_batch)
