"""Image grids for samples, congealed images and progress snapshots."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .data.images import save_image, to_uint8


def make_grid(images: torch.Tensor, nrow: Optional[int] = None, padding: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile ``(N, C, H, W)`` images in [-1, 1] into one uint8 ``(H', W', C)`` array.

    ``nrow`` images per row (default: about square); ``padding`` pixels of ``pad_value`` (in [-1, 1])
    between and around tiles. One-channel images stay one channel.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("no images to tile")
    nrow = max(1, min(n, nrow or math.ceil(math.sqrt(n))))
    ncol_rows = math.ceil(n / nrow)
    tiles = to_uint8(images)  # (N, H, W, C)
    fill = int(round((pad_value + 1) * 127.5))
    grid = np.full((ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding, c), fill, np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[y:y + h, x:x + w] = tiles[i]
    return grid


def save_grid(images: torch.Tensor, path: Union[str, os.PathLike], nrow: Optional[int] = None,
              padding: int = 1, pad_value: float = 1.0) -> Path:
    """:func:`make_grid` written atomically to ``path`` (PNG, JPEG, ... from the suffix)."""
    return save_image(make_grid(images, nrow, padding, pad_value), path)
