"""Similarity transforms (rotation, uniform scale, shift) as batched 2x3 affine matrices.

Convention: a matrix ``M`` of shape ``(N, 2, 3)`` is an *inverse* warp, as ``F.affine_grid`` uses
it: it maps normalised output coordinates ``(x, y, 1)`` to normalised *source* coordinates
(``align_corners=False``; see :mod:`gangealing.geometry.coords`).

``compose(a, b)`` is ``a @ [b; 0 0 1]``: as coordinate maps ``p -> a(b(p))``, and as warps "warp by
``a``, then warp the result by ``b``" (the order in which the original chains iterated similarity
passes and the flow after the similarity).
"""
from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from gangealing.geometry.coords import apply_affine

Size = Union[int, Sequence[int]]


def similarity_matrix(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """The ``(..., 2, 3)`` matrix ``[[s cos, -s sin, tx], [s sin, s cos, ty]]``.

    ``angle`` in radians, ``scale`` > 0, shifts in normalised units; all of the same shape ``(...)``.
    As an inverse warp (output -> source), a positive ``tx`` samples further right, so the content
    moves left; a scale below 1 zooms in.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    rows = [scale * cos, -scale * sin, tx, scale * sin, scale * cos, ty]
    return torch.stack(rows, dim=-1).unflatten(-1, (2, 3))  # (..., 2, 3)


def similarity_from_params(rotation: torch.Tensor, log_scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """The original GANgealing's parameterisation of raw regressed values: angle = pi*tanh(r), scale = exp(s).

    All zeros give the exact identity matrix. Shapes ``(...)`` -> ``(..., 2, 3)``.
    """
    return similarity_matrix(torch.tanh(rotation) * math.pi, torch.exp(log_scale), tx, ty)


def to_homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    """``(..., 2, 3)`` -> ``(..., 3, 3)`` by appending the row ``[0, 0, 1]``."""
    bottom = torch.zeros_like(matrix[..., :1, :])  # (..., 1, 3)
    bottom[..., 0, 2] = 1
    return torch.cat([matrix, bottom], dim=-2)


def compose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The inverse warp ``a @ [b; 0 0 1]`` (both ``(..., 2, 3)``, broadcasting over leading dims).

    As coordinate maps: ``compose(a, b)(p) = a(b(p))``. For inverse warps this means: sampling an
    image with ``compose(a, b)`` equals first warping the image with ``a`` and then warping *that*
    result with ``b``. This is how the original composes an iterated similarity: ``new = previous @
    [S; 0 0 1]``.
    """
    return a @ to_homogeneous(b)


def invert(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(..., 2, 3)`` affine maps: ``compose(invert(m), m)`` is the identity."""
    return torch.linalg.inv(to_homogeneous(matrix))[..., :2, :]


def identity(batch: int = 1, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(batch, 2, 3)`` identity matrices."""
    return torch.eye(2, 3, device=device, dtype=dtype).expand(batch, 2, 3).clone()


def affine_grid(matrix: torch.Tensor, size: Size) -> torch.Tensor:
    """The sampling grid ``(N, H, W, 2)`` of inverse warps ``(N, 2, 3)`` at output size ``size``.

    ``size`` is an int (square) or ``(H, W)``. Pixel centres, align_corners=False: exactly
    ``F.affine_grid``, which is what the original calls.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return F.affine_grid(matrix, [matrix.size(0), 1, h, w], align_corners=False)


def apply_to_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Map normalised ``(x, y)`` values ``(N, ..., 2)`` through ``(N, 2, 3)`` matrices.

    For an inverse warp this maps output (aligned-frame) points to source points; use
    :func:`invert` for the other direction.
    """
    return apply_affine(points, matrix)
