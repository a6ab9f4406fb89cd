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
import torch.nn.functional as F

Size = Union[int, Sequence[int]]


def _size_hw(size: Size) -> tuple:
    """``(H, W)`` of ``size``: an int for square images, or ``(H, W)``."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _size_xy(size: Size, like: torch.Tensor) -> torch.Tensor:
    """(W, H) of ``size`` (an int for square images, or ``(H, W)``) as a float tensor like ``like``."""
    h, w = _size_hw(size)
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.tensor([w, h], dtype=dtype, device=like.device)


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

    Built with ``F.affine_grid(eye(2, 3), (batch, 1, H, W), align_corners=False)`` itself, so it
    is bitwise equal to the original's identity flow; nearest-neighbour searches on the grid
    (key-point congealing) then break ties exactly as the original does.
    """
    h, w = _size_hw(size)
    theta = torch.eye(2, 3, device=device, dtype=dtype).unsqueeze(0).expand(batch, 2, 3)
    return F.affine_grid(theta, [batch, 1, h, w], align_corners=False)  # (batch, H, W, 2)


def apply_affine(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply per-image affine maps ``(N, 2, 3)`` to normalised ``(x, y)`` values ``(N, ..., 2)``.

    Works for key points ``(N, K, 2)`` and for grids ``(N, H, W, 2)`` alike (e.g. composing a
    similarity with a flow grid). Computed as ``[x, y, 1] @ matrix^T``, the original's order of
    operations, so the result is bitwise reproducible against it.
    """
    shape = points.shape
    flat = points.reshape(shape[0], -1, 2)  # (N, P, 2)
    ones = torch.ones_like(flat[..., :1])
    homogeneous = torch.cat([flat, ones], dim=-1)  # (N, P, 3)
    out = homogeneous @ matrix.transpose(1, 2)  # (N, P, 2)
    return out.reshape(shape)


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of per-image affine maps ``(N, 2, 3)`` (through the 3x3 homogeneous matrix)."""
    bottom = torch.zeros_like(matrix[:, :1])  # (N, 1, 3)
    bottom[..., 2] = 1
    full = torch.cat([matrix, bottom], dim=1)  # (N, 3, 3)
    return torch.inverse(full)[:, :2]  # (N, 2, 3)


def pixel_to_norm_legacy(points: torch.Tensor, size: Size, frame_size: Optional[Size] = None) -> torch.Tensor:
    """The original GANgealing's pixel normalisation (its ``SpatialTransformer.normalize``).

    ``x_n = (x / (F - 1) - 0.5) * 2 * (S - 1) / S`` for points given in pixels of a frame of
    ``F = frame_size`` pixels (default ``size``), and an image of ``S = size`` pixels. When
    ``F == S`` this equals :func:`pixel_to_norm` (up to float rounding); otherwise it is the
    pixel-centre formula for a frame of ``F`` pixels scaled about the centre by
    ``F (S - 1) / ((F - 1) S)`` (see :mod:`gangealing.geometry.points`).
    """
    frame_size = size if frame_size is None else frame_size
    s = _size_xy(size, points)
    f = _size_xy(frame_size, points)
    return (points / (f - 1) - 0.5) * 2 * ((s - 1) / s)


def norm_to_pixel_legacy(points: torch.Tensor, size: Size, frame_size: Optional[Size] = None) -> torch.Tensor:
    """The original's inverse normalisation (``SpatialTransformer.unnormalize``).

    ``x = (x_n / ((S - 1) / S) / 2 + 0.5) * (F - 1)``; with ``F == S`` (the only way the original
    calls it) this equals :func:`norm_to_pixel` up to float rounding.
    """
    frame_size = size if frame_size is None else frame_size
    s = _size_xy(size, points)
    f = _size_xy(frame_size, points)
    return (points / ((s - 1) / s) / 2 + 0.5) * (f - 1)


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
