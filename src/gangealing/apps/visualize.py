"""Animations of images smoothly warping into alignment, with an edit or label riding along.

Each frame samples every image with a grid interpolated from the identity (the image as the
transformer sees it: resized and edge-padded to a square) to its congealing grid, with the
original's cosine easing ``alpha_t = (1 - cos(pi t / (T - 1))) / 2`` and anti-aliased (mipmap)
sampling. An edit or label map drawn on the congealed frame is first carried into each image
(:mod:`gangealing.edit`) and then warped with it, so it sits on the object in the first frame and
lands back on the congealed frame in the last. The images are tiled into one picture per frame
and written as an animated GIF (Pillow) or a video (PyAV), chosen by the output suffix.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch


def ease(num_frames: int, device=None) -> torch.Tensor:
    """Interpolation weights ``(T,)`` from 0 to 1 with cosine easing (the original's)."""
    if num_frames < 2:
        return torch.ones(max(num_frames, 0), device=device)
    t = torch.arange(num_frames, dtype=torch.float64, device=device) / (num_frames - 1)
    return (0.5 * (1 - torch.cos(math.pi * t))).float()


@dataclass(frozen=True)
class Animation:
    """Per-frame pictures of images warping into alignment."""

    frames: np.ndarray  # (T, H', W', 3) uint8, the tiled images of each frame
    start: torch.Tensor  # (N, R, R, 2) start grids (identity view of each original)
    grid: torch.Tensor  # (N, R, R, 2) congealing grids


@torch.no_grad()
def warp_sequence(images: torch.Tensor, start: torch.Tensor, grid: torch.Tensor, weights: torch.Tensor,
                  padding_mode: str = "border") -> Iterator[torch.Tensor]:
    """Yield ``images`` (N, C, H, W) sampled with ``lerp(start, grid, w)`` (N, R, R, 2) for each weight."""
    from ..geometry.warp import warp

    for w in weights.tolist():
        g = torch.lerp(start, grid, w)  # (N, R, R, 2)
        yield warp(images, g, padding_mode=padding_mode, antialias=True)  # (N, C, R, R)


@torch.no_grad()
def animate(congealer, images: Sequence[torch.Tensor], *, num_frames: int = 48, resolution: Optional[int] = None,
            edit: Optional[torch.Tensor] = None, blend: str = "alpha", kernel: str = "bilinear", sigma: float = 1.0,
            opacity: float = 1.0, label_opacity: float = 0.6, boomerang: bool = False, nrow: Optional[int] = None,
            padding: int = 2) -> Animation:
    """Frames of ``images`` (a list of (3, H_i, W_i) in [-1, 1], any sizes) warping into alignment.

    ``edit``: an RGBA edit (4, h, w) or a label map (h, w) on the congealed frame, carried into
    each image and warped along. ``boomerang`` appends the frames reversed without the two end frames (2T - 2 frames, a seamless loop).
    """
    from ..edit import carry_labels, carry_rgba, composite, is_label_map, labels_to_edit, resize_edit, resize_labels
    from ..geometry.coords import identity_grid
    from ..vis import make_grid

    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    r = int(resolution or congealer.resolution(None))
    starts, grids, warped_rows = [], [], []
    weights = ease(num_frames)
    for img in images:  # one at a time: sizes may differ
        x = img.unsqueeze(0) if img.dim() == 3 else img
        res = congealer.align(x, output_resolution=r)
        grid = res.grid  # (1, R, R, 2)
        ident = identity_grid(r, 1, grid.device, grid.dtype)
        frame = getattr(res, "frame", None)
        start = frame.grid_to_original(ident) if frame is not None else ident  # the transformer's view of the image
        xd = x.to(grid.device, torch.float32)
        if edit is not None:
            size = tuple(x.shape[-2:])
            if is_label_map(edit):
                lab = carry_labels(resize_labels(edit.unsqueeze(0).to(grid.device), r), grid, size, kernel=kernel, sigma=sigma)
                over = labels_to_edit(lab, opacity=label_opacity)  # (1, 4, H, W)
                xd = over[:, 3:] * over[:, :3] + (1 - over[:, 3:]) * xd
            else:
                carried = carry_rgba(resize_edit(edit.unsqueeze(0).to(grid.device).float(), r), grid, size,
                                     kernel=kernel, sigma=sigma, opacity=opacity)
                xd = composite(xd, carried, blend)
        pad = getattr(congealer, "padding_mode", "border")
        warped_rows.append(torch.cat(list(warp_sequence(xd, start, grid, weights, pad))))  # (T, C, R, R)
        starts.append(start)
        grids.append(grid)
    per_frame = torch.stack(warped_rows, dim=1)  # (T, N, C, R, R)
    frames = [make_grid(f.cpu(), nrow=nrow, padding=padding, pad_value=-1.0) for f in per_frame]
    if boomerang:  # back again without repeating the turning frames, so the loop is seamless
        frames = frames + frames[-2:0:-1]
    return Animation(frames=np.stack(frames), start=torch.cat(starts), grid=torch.cat(grids))


def save_animation(frames: np.ndarray, path: os.PathLike, fps: float = 24.0) -> Path:
    """Write frames ``(T, H, W, 3)`` uint8 as a GIF (Pillow) or a video (PyAV), by suffix."""
    from .video import write_video

    return write_video(list(frames), path, fps)
