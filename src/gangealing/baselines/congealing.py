"""Classic congealing (Learned-Miller, PAMI 2006): joint alignment by minimising the sum of
pixel-stack entropies over similarity transforms. A baseline that needs no training and no GAN.

Every image ``n`` has similarity parameters ``(angle, log_scale, tx, ty)``; its transformed image
is ``warp(image_n, affine_grid(M_n))`` with ``M_n`` an inverse warp (congealed frame -> image,
normalised coordinates, see :mod:`gangealing.geometry.similarity`). The objective is
``sum_pixels H(stack of the N transformed values at that pixel)``, each stack's entropy estimated
with a soft histogram of ``bins`` bins over [0, 1] (two bins and binary images give the original
binary congealing). Optimisation is the original's coordinate descent: try ``±step`` on each
parameter, keep what lowers the objective; all images are updated at once against the current
stack (a Jacobi sweep, which vectorises), the mean transform is re-centred to the identity after
each sweep (as Learned-Miller does, so the stack cannot drift away or shrink to nothing), and the
steps shrink when a sweep stops improving. Because of that re-centring, a move is judged by its
gain minus the mean gain of the same move over all images (the gain it keeps after re-centring);
without this, a move every image prefers (a smaller scale lowers any stack's entropy) wins every
time, is undone by the re-centring, and the images never move.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..geometry.similarity import affine_grid, compose, invert, similarity_matrix
from ..geometry.warp import warp

PARAMS = ("angle", "log_scale", "tx", "ty")


@dataclass(frozen=True)
class ClassicCongealingConfig:
    """Hyper-parameters of classic congealing; the defaults suit 28-64 px masks and digits."""

    iters: int = 150
    steps: Sequence[float] = (math.radians(8.0), 0.08, 0.08, 0.08)  # angle (rad), log-scale, tx, ty
    min_step_fraction: float = 0.05  # stop when every step has shrunk below this fraction
    shrink: float = 0.5  # step multiplier after a sweep that improves less than `tolerance`
    tolerance: float = 0.0  # relative objective improvement that counts as progress
    bins: int = 2
    max_angle: float = math.radians(60.0)
    max_log_scale: float = math.log(1.6)
    max_shift: float = 0.5
    padding_mode: str = "border"
    blur: float = 0.0  # Gaussian sigma (pixels) applied before measuring entropy: a smoother objective
    chunk: int = 256  # images evaluated at once (memory: chunk * 9 * bins * H * W floats)


@dataclass(frozen=True)
class ClassicCongealingResult:
    """Per-image parameters ``(N, 4)``, matrices ``(N, 2, 3)``, congealed images and the objective per sweep."""

    params: torch.Tensor
    matrices: torch.Tensor
    images: torch.Tensor  # (N, C, H, W) in the input's range
    objective: List[float] = field(default_factory=list)


def params_to_matrix(params: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` parameters ``(angle, log_scale, tx, ty)`` -> ``(..., 2, 3)`` inverse warps."""
    return similarity_matrix(params[..., 0], params[..., 1].exp(), params[..., 2], params[..., 3])


def _soft_bins(values: torch.Tensor, bins: int) -> torch.Tensor:
    """Triangular-kernel soft assignment of values in [0, 1] to ``bins`` centres: ``(..., P) -> (..., B, P)``."""
    if bins < 2:
        raise ValueError("bins must be at least 2")
    centres = torch.linspace(0, 1, bins, device=values.device, dtype=values.dtype)
    width = 1.0 / (bins - 1)
    return (1 - (values.unsqueeze(-2) - centres.view(-1, 1)).abs() / width).clamp(min=0)


def _plogp(hist: torch.Tensor) -> torch.Tensor:
    """Elementwise ``-h log h`` of histogram values (0 at 0)."""
    return -(hist * hist.clamp(min=1e-12).log())


def _entropy(hist: torch.Tensor) -> torch.Tensor:
    """Sum over pixels of the entropy of normalised histograms ``(..., B, P)`` -> ``(...)``."""
    return _plogp(hist).sum(dim=(-2, -1))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (``sigma`` pixels, edges replicated) of ``(N, C, H, W)``; ``sigma <= 0``: unchanged."""
    if sigma <= 0:
        return images
    c = images.size(1)
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, device=images.device, dtype=images.dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    out = F.conv2d(F.pad(images, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _to_unit(images: torch.Tensor, blur: float) -> torch.Tensor:
    """Images in [-1, 1] -> grayscale in [0, 1], ``(N, 1, H, W)``, optionally Gaussian-blurred."""
    return gaussian_blur(((images.mean(dim=1, keepdim=True) + 1) / 2).clamp(0, 1), blur)


def _render(unit: torch.Tensor, params: torch.Tensor, padding_mode: str) -> torch.Tensor:
    grid = affine_grid(params_to_matrix(params), unit.shape[-2:])
    return warp(unit, grid, padding_mode=padding_mode).flatten(1)  # (N, P)


def classic_congeal(images: torch.Tensor, cfg: ClassicCongealingConfig = ClassicCongealingConfig(),
                    init: Optional[torch.Tensor] = None) -> ClassicCongealingResult:
    """Congeal ``images`` (N, C, H, W) in [-1, 1] jointly; deterministic (no randomness)."""
    n = images.size(0)
    if n < 2:
        raise ValueError("congealing needs at least two images")
    unit = _to_unit(images, cfg.blur)  # (N, 1, H, W)
    params = torch.zeros(n, 4, device=images.device, dtype=images.dtype) if init is None else init.clone()
    steps = torch.tensor(list(cfg.steps), device=images.device, dtype=images.dtype)
    limits = torch.tensor([cfg.max_angle, cfg.max_log_scale, cfg.max_shift, cfg.max_shift], device=images.device,
                          dtype=images.dtype)
    # Candidate moves: stay, then -/+ step on each parameter.
    moves = torch.zeros(9, 4, device=images.device, dtype=images.dtype)
    for d in range(4):
        moves[1 + 2 * d, d], moves[2 + 2 * d, d] = -1, 1
    history: List[float] = []
    # The objective and every move's gain are kept in float64, each gain summed from per-pixel
    # changes: one image's move changes a stack's entropy by about 1/N of a pixel's, and as the
    # difference of two float32 totals (hundreds of nats) that change was rounding noise, so the
    # moves chosen (and the result) depended on the order of the images.
    current = _render(unit, params, cfg.padding_mode)  # (N, P)
    hist = _soft_bins(current.double(), cfg.bins).mean(0)  # (B, P)
    history.append(float(_entropy(hist)))
    best_value, best_params, initial_steps = history[0], params, steps.clone()
    for _ in range(cfg.iters):
        cand = (params.unsqueeze(1) + moves * steps).clamp(-limits, limits)  # (N, 9, 4)
        gain = torch.empty(n, 9, device=images.device, dtype=torch.float64)
        base = _plogp(hist)  # (B, P)
        for s in range(0, n, cfg.chunk):
            c = cand[s : s + cfg.chunk]  # (c, 9, 4)
            rendered = _render(unit[s : s + cfg.chunk].repeat_interleave(9, 0), c.flatten(0, 1), cfg.padding_mode)
            delta = (_soft_bins(rendered.view(-1, 9, rendered.size(-1)).double(), cfg.bins)
                     - _soft_bins(current[s : s + cfg.chunk].double(), cfg.bins).unsqueeze(1))
            # (c, 9): how the stack's entropy changes if only this image moved (0 for staying)
            gain[s : s + cfg.chunk] = (_plogp(hist + delta / n) - base).sum(dim=(-2, -1))
        # Judge each move against the same move made by every image: the mean transform is pinned
        # to the identity below, so a move all images like (shrinking every image lowers the
        # entropy of any stack) would be undone and must not crowd out the relative moves that
        # align. This is the first-order change of the objective under that constraint.
        relative = gain - gain.mean(0, keepdim=True)
        relative[:, 0] = 0.0
        new_params = cand[torch.arange(n, device=images.device), relative.argmin(1)]
        # Keep the mean transform at the identity: only the relative alignment is defined.
        new_params = new_params - new_params.mean(0, keepdim=True)
        rendered = _render(unit, new_params, cfg.padding_mode)
        new_hist = _soft_bins(rendered.double(), cfg.bins).mean(0)
        value = float(_entropy(new_hist))
        # Each image's move was chosen against the stack before anyone moved; together the moves
        # can overshoot. Keep them anyway (later sweeps correct), remember the best stack, and
        # shrink the steps when a sweep does not make clear progress.
        if value < best_value:
            best_value, best_params = value, new_params
        if value > history[-1] * (1 - cfg.tolerance):
            steps = steps * cfg.shrink
        params, current, hist = new_params, rendered, new_hist
        history.append(value)
        if (steps < initial_steps * cfg.min_step_fraction).all():
            break
    params = best_params
    matrices = params_to_matrix(params)
    congealed = warp(images, affine_grid(matrices, images.shape[-2:]), padding_mode=cfg.padding_mode)
    return ClassicCongealingResult(params=params, matrices=matrices, images=congealed, objective=history)


def transfer_grid(matrix_a: torch.Tensor, matrix_b: torch.Tensor, size) -> torch.Tensor:
    """Grid that samples image A in image B's frame through the congealed frame: ``M_a ∘ M_b^-1``.

    ``warp(A, transfer_grid(M_a, M_b, size))`` shows A's content where B's corresponding pixels are.
    """
    return affine_grid(compose(matrix_a, invert(matrix_b)), size)
