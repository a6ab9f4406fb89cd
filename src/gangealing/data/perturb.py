"""Images (digits, photos) under known similarity perturbations, and points on their strokes: exact ground truth for
keypoint transfer (``gangealing bench``, section 2; ``gangealing demo``)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..geometry.coords import pixel_to_norm

__all__ = ["Perturbed", "perturb_digits", "perturb_images", "stroke_points"]


@dataclass(frozen=True)
class Perturbed:
    """Images on a canvas under known similarities: the renders and the image-pixel -> canvas-pixel maps."""

    images: torch.Tensor  # (N, C, S, S); digits: (N, 3, S, S) in [-1, 1], background -1
    to_canvas: torch.Tensor  # (N, 2, 3): canvas_px = A @ [digit_px, 1]
    canvas: int


def perturb_images(images: torch.Tensor, canvas: int, gen: torch.Generator, *, max_angle: float = 45.0,
                   scale: Tuple[float, float] = (0.7, 1.3), max_shift: float = 0.15, identity: bool = False,
                   fill: Optional[float] = None) -> Perturbed:
    """Place images ``(N, C, H, W)`` on ``canvas`` px squares under random similarities about their centres.

    Angle uniform in ``±max_angle`` degrees, scale uniform in ``scale``, shifts uniform in
    ``±max_shift * canvas`` px; ``identity=True`` centres them unchanged (a 0-cost control). Canvas
    pixels that fall outside an image take ``fill`` (a value), or with ``fill=None`` its nearest
    border pixel (photos). Values are not rescaled. ``to_canvas`` maps image pixels to canvas pixels
    (pixel centres at integers, as everywhere in this project).
    """
    n, _, h, w = images.shape
    if identity:
        ang, s, t = torch.zeros(n), torch.ones(n), torch.zeros(n, 2)
    else:
        ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_angle)
        s = scale[0] + torch.rand(n, generator=gen) * (scale[1] - scale[0])
        t = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift * canvas
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)  # (N, 2, 2)
    c_d = torch.tensor([(w - 1) / 2, (h - 1) / 2])
    c_c = torch.full((2,), (canvas - 1) / 2)
    trans = c_c + t - (rot @ c_d)  # (N, 2)
    to_canvas = torch.cat([rot, trans.unsqueeze(-1)], 2)  # (N, 2, 3)
    # Render: every canvas pixel samples the image at the inverse-mapped position.
    ys, xs = torch.meshgrid(torch.arange(canvas, dtype=torch.float32), torch.arange(canvas, dtype=torch.float32), indexing="ij")
    q = torch.stack([xs, ys], -1).reshape(1, -1, 2)  # (1, S*S, 2)
    inv = torch.linalg.inv(rot)  # (N, 2, 2)
    p = (q - trans.unsqueeze(1)) @ inv.transpose(1, 2)  # (N, S*S, 2) image pixels
    grid = pixel_to_norm(p, (h, w)).view(n, canvas, canvas, 2).to(images.device)
    x = images.float()
    if fill is None:
        img = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    else:  # zeros padding around (x - fill) puts ``fill`` outside, with bilinear edges as before
        img = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return Perturbed(images=img, to_canvas=to_canvas, canvas=canvas)


def perturb_digits(digits: torch.Tensor, canvas: int, gen: torch.Generator, *, max_angle: float = 45.0,
                   scale: Tuple[float, float] = (0.7, 1.3), max_shift: float = 0.15,
                   identity: bool = False) -> Perturbed:
    """Place digits ``(N, H, W)`` uint8 on ``canvas`` px under random similarities about their
    centres (:func:`perturb_images`), as the models' input: ``(N, 3, S, S)`` in [-1, 1], background -1."""
    unit = digits.float().div(255).unsqueeze(1)  # (N, 1, H, W) in [0, 1]; zeros padding = background
    p = perturb_images(unit, canvas, gen, max_angle=max_angle, scale=scale, max_shift=max_shift, identity=identity, fill=0.0)
    return Perturbed(images=(p.images * 2 - 1).expand(-1, 3, -1, -1).contiguous(), to_canvas=p.to_canvas, canvas=canvas)


def stroke_points(digits: torch.Tensor, k: int, gen: torch.Generator, threshold: int = 128) -> torch.Tensor:
    """``k`` random stroke pixels ``(N, k, 2)`` (x, y) per digit ``(N, H, W)`` uint8 (with replacement if few)."""
    out = []
    for d in digits:
        ys, xs = torch.nonzero(d >= threshold, as_tuple=True)
        if ys.numel() == 0:
            ys, xs = torch.nonzero(d == d.max(), as_tuple=True)
        pick = torch.randint(ys.numel(), (k,), generator=gen) if ys.numel() < k else torch.randperm(ys.numel(), generator=gen)[:k]
        out.append(torch.stack([xs[pick], ys[pick]], -1).float())
    return torch.stack(out)
