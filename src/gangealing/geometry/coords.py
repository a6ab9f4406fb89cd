"""Coordinate conventions and the conversions between them.

Convention (used everywhere in gangealing):

* Images are ``(N, C, H, W)`` float tensors, values in [-1, 1] inside the library.
* Sampling grids and flows are ``(N, H, W, 2)``; the last axis is ``(x, y)``, normalised to
  [-1, 1] with ``align_corners=False``: -1 and +1 are the *outer edges* of the first and last
  pixels, and the centre of 0-based pixel ``i`` on an axis of ``S`` pixels is ``(2i + 1) / S - 1``.
  This is PyTorch's default and the original GANgealing's.
* Points are ``(N, K, 2)`` float tensors in pixels, ``(x, y)`` order, 0-based, with pixel centres
  at integer coordinates and the origin at the top-left pixel's centre. Visibility is a separate
  boolean tensor.
* A "grid" maps output pixels to source coordinates (inverse warping, as ``grid_sample``).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Size = Union[int, Sequence[int]]


def _size_xy(size: Size, like: torch.Tensor) -> torch.Tensor:
    """(W, H) of ``size`` (an int for square images, or ``(H, W)``) as a tensor like ``like``."""
    if isinstance(size, int):
        h = w = size
    else:
        h, w = size
    return torch.tensor([w, h], dtype=like.dtype, device=like.device)


def pixel_to_norm(points: torch.Tensor, size: Size) -> torch.Tensor:
    """Pixel ``(x, y)`` points to normalised coordinates (align_corners=False).

    ``x_n = (2x + 1) / W - 1``. ``size`` is an int (square) or ``(H, W)``.
    """
    wh = _size_xy(size, points)
    return (2 * points + 1) / wh - 1


def norm_to_pixel(points: torch.Tensor, size: Size) -> torch.Tensor:
    """Inverse of :func:`pixel_to_norm`: ``x = ((x_n + 1) W - 1) / 2``."""
    wh = _size_xy(size, points)
    return ((points + 1) * wh - 1) / 2


def identity_grid(
    size: Size,
    batch: int = 1,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The identity sampling grid ``(batch, H, W, 2)``: pixel centres in normalised (x, y).

    Equal to ``F.affine_grid(eye(2, 3), (batch, 1, H, W), align_corners=False)``.
    """
    if isinstance(size, int):
        h = w = size
    else:
        h, w = size
    xs = (2 * torch.arange(w, device=device, dtype=dtype) + 1) / w - 1
    ys = (2 * torch.arange(h, device=device, dtype=dtype) + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)  # (H, W, 2)
    return grid.unsqueeze(0).expand(batch, h, w, 2).contiguous()


def hflip_points(points: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror pixel points horizontally in an image of ``width`` pixels: ``x -> W - 1 - x``."""
    out = points.clone()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def hflip_norm_points(points: torch.Tensor) -> torch.Tensor:
    """Mirror normalised points (or a grid's values) horizontally: ``x_n -> -x_n``."""
    out = points.clone()
    out[..., 0] = -out[..., 0]
    return out
