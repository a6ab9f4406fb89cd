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

import math
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


def _parse_names(policy: str | Sequence[str], known: Sequence[str], what: str) -> tuple:
    names = tuple(p.strip() for p in (policy.split(",") if isinstance(policy, str) else policy) if p.strip())
    unknown = [p for p in names if p not in known]
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {list(known)}")
    return names


def parse_policy(policy: str | Sequence[str]) -> tuple:
    """``'color,translation'`` -> ``('color', 'translation')``; checks the names."""
    return _parse_names(policy, sorted(OPS), "augmentation")


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


# ------------------------------------------------------------------------------------ ADA
# Adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial
# Networks with Limited Data"): each op is applied to each sample with one shared probability p,
# and p follows an overfitting heuristic (:class:`AdaptiveP`). The ops are those of ADA's 'bgc'
# pipeline that mean something at 28-64 px: x-flip (only where the data is mirror-symmetric),
# integer translation (up to 1/8 of the side), isotropic scaling (log2-normal, std 0.2), rotation
# (uniform, up to ``max_angle``), brightness (additive, normal std 0.2) and contrast
# (log2-normal, std 0.5). The geometric ops are composed into one affine map per sample and
# applied by one bilinear resampling with reflection padding (ADA pads by reflection too).
ADA_OPS = ("xflip", "translation", "scale", "rotation", "brightness", "contrast")
ADA_DEFAULT_POLICY = ("translation", "scale", "rotation", "brightness", "contrast")


def parse_ada_policy(policy: str | Sequence[str]) -> tuple:
    """``'translation,scale'`` -> ``('translation', 'scale')``; checks the names."""
    return _parse_names(policy, ADA_OPS, "ADA augmentation")


def ada_augment(x: Tensor, p: float, policy: Sequence[str] = ADA_DEFAULT_POLICY,
                generator: Optional[torch.Generator] = None, max_angle: float = 180.0) -> Tensor:
    """ADA's augmentations of ``x`` (N, C, H, W) in [-1, 1], each op with probability ``p`` per sample.

    Differentiable in ``x``. All randomness comes from ``generator``; the same number of random
    values is drawn whatever ``p`` is, so a resumed run draws the same stream.
    """
    n = x.shape[0]
    if p <= 0 or not policy:
        return x
    dev = x.device if generator is None else generator.device

    def draw(*shape) -> Tensor:
        return torch.rand(n, *shape, generator=generator, device=dev).to(x.device, torch.float32)

    def randn(*shape) -> Tensor:
        return torch.randn(n, *shape, generator=generator, device=dev).to(x.device, torch.float32)

    def on() -> Tensor:  # (N,) bool: which samples get this op
        return draw() < p

    eye = torch.eye(3, device=x.device).expand(n, 3, 3)
    m = eye  # (N, 3, 3) output -> input, in normalised coordinates (align_corners=False)
    geometric = False
    h, w = x.shape[-2:]
    for name in policy:
        if name == "xflip":
            s = torch.where(on(), -1.0, 1.0)
            t = eye.clone()
            t[:, 0, 0] = s
            m, geometric = m @ t, True
        elif name == "translation":
            apply, u = on(), draw(2) * 2 - 1  # shifts in [-1/8, 1/8] of the side, rounded to whole pixels
            tx = torch.round(u[:, 0] * 0.125 * w) * 2 / w
            ty = torch.round(u[:, 1] * 0.125 * h) * 2 / h
            t = eye.clone()
            t[:, 0, 2] = torch.where(apply, tx, 0.0)
            t[:, 1, 2] = torch.where(apply, ty, 0.0)
            m, geometric = m @ t, True
        elif name == "scale":
            apply, s = on(), torch.exp2(randn() * 0.2)
            s = torch.where(apply, s, 1.0)
            t = eye.clone()
            t[:, 0, 0] = 1 / s  # content scaled by s: the grid samples 1/s
            t[:, 1, 1] = 1 / s
            m, geometric = m @ t, True
        elif name == "rotation":
            apply, a = on(), (draw() * 2 - 1) * math.radians(max_angle)
            a = torch.where(apply, a, 0.0)
            c, s = torch.cos(a), torch.sin(a)
            t = eye.clone()
            # Pixels are square but the normalised axes are not when H != W: rotate in pixel units.
            t[:, 0, 0], t[:, 0, 1] = c, -s * h / w
            t[:, 1, 0], t[:, 1, 1] = s * w / h, c
            m, geometric = m @ t, True
    if geometric:
        grid = F.affine_grid(m[:, :2].to(x.dtype), list(x.shape), align_corners=False)  # (N, H, W, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    for name in policy:
        if name == "brightness":
            apply, b = on(), randn() * 0.2
            x = x + torch.where(apply, b, 0.0).view(n, 1, 1, 1).to(x)
        elif name == "contrast":
            apply, c = on(), torch.exp2(randn() * 0.5)
            c = torch.where(apply, c, 1.0).view(n, 1, 1, 1).to(x)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * c + mean
    return x


class AdaptiveP:
    """ADA's augmentation probability ``p`` and its overfitting heuristic.

    ``r_t = E[sign(D(real))]`` is accumulated over ``interval`` steps; then ``p`` moves by
    ``sign(r_t - target) * images / (kimg * 1000)``, where ``images`` is the number of real
    images those steps showed, so ``p`` can go from 0 to 1 in ``kimg`` thousand images. ``p``
    stays in [0, 1]. :meth:`state_dict` / :meth:`load_state_dict` make a resumed run continue
    exactly.
    """

    def __init__(self, target: float = 0.6, kimg: float = 100.0, interval: int = 4, p: float = 0.0):
        if not 0 < target < 1:
            raise ValueError(f"ada_target must be in (0, 1), got {target}")
        if kimg <= 0 or interval < 1:
            raise ValueError(f"ada_kimg must be > 0 and ada_interval >= 1, got {kimg}, {interval}")
        self.target, self.kimg, self.interval = float(target), float(kimg), int(interval)
        self.p = float(p)
        self.sign_sum, self.count, self.steps = 0.0, 0, 0
        self.last_rt = float("nan")

    def update(self, real_sign_sum: float, n_real: int) -> float:
        """Account one step's ``sum(sign(D(real)))`` over ``n_real`` images (all processes); returns ``p``."""
        self.sign_sum += float(real_sign_sum)
        self.count += int(n_real)
        self.steps += 1
        if self.steps >= self.interval:
            self.last_rt = self.sign_sum / max(self.count, 1)
            adjust = math.copysign(1.0, self.last_rt - self.target) if self.last_rt != self.target else 0.0
            self.p = min(1.0, max(0.0, self.p + adjust * self.count / (self.kimg * 1000)))
            self.sign_sum, self.count, self.steps = 0.0, 0, 0
        return self.p

    def state_dict(self) -> Dict[str, float]:
        return {"p": self.p, "sign_sum": self.sign_sum, "count": self.count, "steps": self.steps,
                "last_rt": self.last_rt}

    def load_state_dict(self, d: Dict[str, float]) -> None:
        self.p, self.sign_sum = float(d["p"]), float(d["sign_sum"])
        self.count, self.steps = int(d["count"]), int(d["steps"])
        self.last_rt = float(d.get("last_rt", float("nan")))
