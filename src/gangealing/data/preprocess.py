"""Making images square at the training resolution, as the original ``prepare_data.py`` does.

Modes (the original's ``--pad`` choices; ``center`` is its default):

* ``center``: crop the largest centred square (offsets ``(H - s) // 2``, ``(W - s) // 2``), then
  resize to ``size x size``;
* ``border``: resize so the long side is ``size`` and the short side ``round(size * short / long)``,
  then pad the short side to ``size`` by repeating the edge pixels (``floor`` of the padding
  before, the rest after);
* ``zero``: the same resize, padded with black; the image sits at offset ``(size - short) // 2``;
* ``none``: resize to ``size x size`` directly (stretches non-square images).

All resizing is Pillow's Lanczos filter (the original's ``Image.ANTIALIAS``), which low-passes
when shrinking. :func:`preprocess_transform` gives the map from input to output pixel
coordinates, so key points annotated on the input follow the image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

PAD_MODES = ("center", "border", "zero", "none")


@dataclass(frozen=True)
class PreprocessTransform:
    """``out = (in + 0.5) * scale - 0.5 + offset`` per axis, pixel coordinates with centres at integers."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map ``(..., 2)`` input-image ``(x, y)`` pixels to the preprocessed image."""
        p = np.asarray(points, dtype=np.float64)
        scale = np.array([self.scale_x, self.scale_y])
        offset = np.array([self.offset_x, self.offset_y])
        return (p + 0.5) * scale - 0.5 + offset


def _fit_long_side(h: int, w: int, size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the long side ``size`` and the short side rounded as the original."""
    if h <= w:
        return int(np.around(size * h / w)), size
    return size, int(np.around(size * w / h))


def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Lanczos resize of a uint8 ``(H, W, C)`` array (C in 1, 3, 4)."""
    from PIL import Image

    if img.shape[:2] == (height, width):
        return img
    c = img.shape[2]
    pil = Image.fromarray(img[:, :, 0] if c == 1 else img)
    out = np.asarray(pil.resize((width, height), Image.Resampling.LANCZOS), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def preprocess_transform(height: int, width: int, size: int, mode: str = "center") -> PreprocessTransform:
    """The coordinate map of :func:`preprocess` for an input of ``height x width``."""
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    if mode == "center":
        s = min(height, width)
        top, left = (height - s) // 2, (width - s) // 2
        k = size / s
        return PreprocessTransform(k, k, -left * k, -top * k)
    if mode == "none":
        return PreprocessTransform(size / width, size / height, 0.0, 0.0)
    nh, nw = _fit_long_side(height, width, size)
    return PreprocessTransform(nw / width, nh / height, float((size - nw) // 2), float((size - nh) // 2))


def preprocess(img: np.ndarray, size: int, mode: str = "center") -> np.ndarray:
    """uint8 ``(H, W, C)`` -> uint8 ``(size, size, C)`` by ``mode`` (see the module docstring)."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    h, w, _ = img.shape
    if mode == "center":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return _resize(img[top:top + s, left:left + s], size, size)
    if mode == "none":
        return _resize(img, size, size)
    nh, nw = _fit_long_side(h, w, size)
    img = _resize(img, nh, nw)
    before_y, before_x = (size - nh) // 2, (size - nw) // 2
    pad = [(before_y, size - nh - before_y), (before_x, size - nw - before_x), (0, 0)]
    if mode == "border":
        return np.pad(img, pad, mode="edge")
    return np.pad(img, pad, mode="constant", constant_values=0)
