"""The nearest-neighbour inverse of a sampling grid (coordinates: :mod:`gangealing.geometry.coords`)."""
from __future__ import annotations

from typing import Tuple

import torch

from .coords import norm_to_pixel

__all__ = ["nearest_inverse_index"]


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
