"""Mask transfer: A's silhouette carried into B's frame through a congealed frame (``gangealing bench``, section 1).

The congealing grid of an image maps congealed pixels to image positions and has no closed-form
inverse, so we use the *nearest-neighbour inverse* (:func:`gangealing.geometry.inverse.nearest_inverse_index`):
every pixel of B takes the congealed pixel whose grid position in B is nearest to it (none when that
position is more than ``max_dist`` px away: background), and that congealed pixel reads A's mask with
nearest sampling (A's mask sampled with A's grid). Both steps are nearest, so an identity model on
identical images returns the mask exactly. Classic congealing composes its similarity matrices.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry.inverse import nearest_inverse_index

__all__ = ["congealer_mask_transfer", "classic_mask_transfer", "grid_mask_transfer"]


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


def grid_mask_transfer(grids: torch.Tensor, masks: torch.Tensor, pairs: torch.Tensor, *, resolution: int = 64,
                       max_dist: float = 1.0) -> torch.Tensor:
    """As :func:`congealer_mask_transfer`, for per-image grids ``(N, R', R', 2)`` into the images (any R')."""
    from ..geometry.warp import resize_grid

    g = resize_grid(grids, resolution)
    congealed, index = _congealed_masks(masks, g), nearest_inverse_index(g, masks.shape[-2:], max_dist)
    return _read(congealed[pairs[:, 0]], index[pairs[:, 1]]).view(-1, *masks.shape[-2:])
