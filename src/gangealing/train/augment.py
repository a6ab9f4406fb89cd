"""Differentiable augmentation for GAN training on small datasets (DiffAugment, Zhao et al. 2020).

The same random transformations are applied to real and generated images before the
discriminator sees them, and gradients flow through them to the generator, so the discriminator
cannot memorise a small training set while the generator still learns the un-augmented
distribution. Policies (comma-separated): ``color`` (brightness +-0.5, saturation x[0, 2],
contrast x[0.5, 1.5]), ``translation`` (integer shifts up to 1/8 of the size, zero fill),
``cutout`` (one zeroed square of half the size). Each sample is transformed with probability
``p`` per policy (``p = 1`` is DiffAugment; smaller ``p`` weakens it). All randomness comes from
the passed ``torch.Generator``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_POLICY = ("color", "translation", "cutout")


def _rand(n: int, x: Tensor, g: Optional[torch.Generator]) -> Tensor:
    """(n, 1, 1, 1) uniform [0, 1) on x's device and dtype."""
    return torch.rand(n, 1, 1, 1, generator=g, device=x.device if g is None else g.device).to(x)


def _color(x: Tensor, g: Optional[torch.Generator]) -> Tensor:
    n = x.shape[0]
    x = x + (_rand(n, x, g) - 0.5)  # brightness, (N, C, H, W)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, x, g) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(n, x, g) + 0.5) + mean  # contrast


def _randint(low: int, high: int, n: int, x: Tensor, g: Optional[torch.Generator]) -> Tensor:
    dev = x.device if g is None else g.device
    return torch.randint(low, high, (n, 1, 1), generator=g, device=dev).to(x.device)


def _translation(x: Tensor, g: Optional[torch.Generator], ratio: float = 0.125) -> Tensor:
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty, tx = _randint(-sy, sy + 1, n, x, g), _randint(-sx, sx + 1, n, x, g)  # (N, 1, 1)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    # Index into a 1-pixel zero frame: shifted-in pixels read the frame.
    iy = (gy + ty + 1).clamp(0, h + 1).expand(n, h, w)
    ix = (gx + tx + 1).clamp(0, w + 1).expand(n, h, w)
    padded = F.pad(x, [1, 1, 1, 1])  # (N, C, H + 2, W + 2)
    flat = padded.flatten(2)  # (N, C, (H + 2)(W + 2))
    idx = (iy * (w + 2) + ix).flatten(1).unsqueeze(1).expand(n, c, h * w)  # (N, C, H W)
    return flat.gather(2, idx).view(n, c, h, w)


def _cutout(x: Tensor, g: Optional[torch.Generator], ratio: float = 0.5) -> Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - ch % 2), n, x, g)  # top-left of the square's centre range, as DiffAugment
    ox = _randint(0, w + (1 - cw % 2), n, x, g)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    ry, rx = gy - oy + ch // 2, gx - ox + cw // 2  # position inside the square, (N, H, 1) / (N, 1, W)
    inside = (ry >= 0) & (ry < ch) & (rx >= 0) & (rx < cw)
    return x * (~inside).unsqueeze(1).to(x)  # (N, C, H, W)


OPS: Dict[str, Callable[[Tensor, Optional[torch.Generator]], Tensor]] = {
    "color": _color, "translation": _translation, "cutout": _cutout,
}


def parse_policy(policy: str | Sequence[str]) -> tuple:
    """``'color,translation'`` -> ``('color', 'translation')``; checks the names."""
    names = tuple(p.strip() for p in (policy.split(",") if isinstance(policy, str) else policy) if p.strip())
    unknown = [p for p in names if p not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; known: {sorted(OPS)}")
    return names


def diff_augment(x: Tensor, policy: Sequence[str] = DEFAULT_POLICY, p: float = 1.0,
                 generator: Optional[torch.Generator] = None) -> Tensor:
    """Apply each op of ``policy`` to each sample with probability ``p``; differentiable in ``x`` (N, C, H, W)."""
    if p <= 0:
        return x
    for name in policy:
        y = OPS[name](x, generator)
        if p < 1:
            keep = _rand(x.shape[0], x, generator) < p  # (N, 1, 1, 1)
            y = torch.where(keep, y, x)
        x = y
    return x
