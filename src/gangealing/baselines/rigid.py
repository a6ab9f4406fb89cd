"""Gradient congealing: per-image similarity parameters optimised by Adam against the running mean
of the warped set. A stronger rigid baseline than entropy congealing (issue 16), and no GAN.

Every image ``n`` has parameters ``(angle, log_scale, tx, ty)`` (those of
:func:`gangealing.baselines.congealing.params_to_matrix`: an inverse warp, congealed frame ->
image, normalised coordinates). Each step warps every (blurred, grayscale) image, takes the mean
of the warped stack as the template (no gradient through it: a running mean, re-estimated every
step) and moves each image's parameters down the squared distance to it. The blur shrinks over
``blurs`` (coarse to fine: a wide blur sees the whole silhouette, so far-apart images still
overlap). After each step the mean pose is re-centred to the identity, as in classic congealing:
only the relative alignment is defined, and a set that drifts or shrinks as a whole would make the
mean easier to match without aligning anything. Parameters are clamped to the same bounds as
classic congealing, so no image can zoom onto a patch.

With ``flow_cells > 0`` a second stage adds a smooth per-image flow: a ``flow_cells`` square grid of
offsets per image, bilinearly upsampled, applied before the similarity (``grid = M @ [identity +
flow; 1]``, the spatial transformer's composition), penalised by the paper's total variation and
re-centred to a zero mean flow after each step. That is set-level dense congealing (the level an
amortised transformer is measured against), and the targets :mod:`gangealing.train.refine` can
distil into a transformer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..geometry.coords import identity_grid
from ..geometry.similarity import affine_grid
from ..geometry.warp import compose_affine_grid, warp
from ..losses.flow import total_variation_loss
from .congealing import ClassicCongealingConfig, ClassicCongealingResult, _to_unit, params_to_matrix

_CLASSIC = ClassicCongealingConfig()


@dataclass(frozen=True)
class RigidCongealingConfig:
    """Hyper-parameters of gradient congealing; the defaults suit 28-64 px masks and digits."""

    steps_per_blur: int = 60
    blurs: Sequence[float] = (3.0, 2.0, 1.0, 0.5)  # Gaussian sigma (pixels) per stage, coarse to fine
    lr: float = 0.02
    max_angle: float = _CLASSIC.max_angle
    max_log_scale: float = _CLASSIC.max_log_scale
    max_shift: float = _CLASSIC.max_shift
    padding_mode: str = "border"
    flow_cells: int = 0  # per-image flow resolution (0: similarity only)
    flow_blurs: Sequence[float] = (1.5, 1.0, 0.5, 0.0)  # stages of the flow fit, after the similarity stages
    flow_tv_weight: float = 0.1
    flow_lr: float = 0.05


@dataclass(frozen=True)
class RigidCongealingResult(ClassicCongealingResult):
    """As :class:`ClassicCongealingResult`; ``objective`` is the mean squared distance to the mean per
    step; ``grids`` ``(N, H, W, 2)`` the full sampling grids (similarity and flow) into each image."""

    objective: List[float] = field(default_factory=list)
    grids: Optional[torch.Tensor] = None
    flow: Optional[torch.Tensor] = None  # (N, H, W, 2) residual flow before the similarity; None without


def _grid(params: torch.Tensor, flow: Optional[torch.Tensor], size) -> torch.Tensor:
    """Sampling grids ``(N, H, W, 2)``: the similarity after the upsampled per-image flow (if any)."""
    m = params_to_matrix(params)
    if flow is None:
        return affine_grid(m, size)
    h, w = size
    up = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)  # (N, H, W, 2)
    return compose_affine_grid(m, identity_grid((h, w), device=flow.device, dtype=flow.dtype) + up)


def rigid_congeal(images: torch.Tensor, cfg: RigidCongealingConfig = RigidCongealingConfig()) -> RigidCongealingResult:
    """Congeal ``images`` (N, C, H, W) in [-1, 1] jointly with similarities; deterministic."""
    n = images.size(0)
    if n < 2:
        raise ValueError("congealing needs at least two images")
    size = images.shape[-2:]
    limits = torch.tensor([cfg.max_angle, cfg.max_log_scale, cfg.max_shift, cfg.max_shift], device=images.device,
                          dtype=images.dtype)
    params = torch.zeros(n, 4, device=images.device, dtype=images.dtype, requires_grad=True)
    opt = torch.optim.Adam([params], lr=cfg.lr)
    history: List[float] = []
    flow = None
    stages = [(b, False) for b in cfg.blurs] + ([(b, True) for b in cfg.flow_blurs] if cfg.flow_cells > 0 else [])
    with torch.enable_grad():
        for blur, with_flow in stages:
            if with_flow and flow is None:
                flow = torch.zeros(n, 2, cfg.flow_cells, cfg.flow_cells, device=images.device, dtype=images.dtype,
                                   requires_grad=True)
                opt.add_param_group({"params": [flow], "lr": cfg.flow_lr})
            unit = _to_unit(images, blur)  # (N, 1, H, W) in [0, 1]
            for _ in range(cfg.steps_per_blur):
                grid = _grid(params, flow, size)
                warped = warp(unit, grid, padding_mode=cfg.padding_mode)
                loss = (warped - warped.mean(0, keepdim=True).detach()).square().mean()
                total = loss * n  # per-image gradients independent of N
                if flow is not None:
                    total = total + cfg.flow_tv_weight * n * total_variation_loss(flow.permute(0, 2, 3, 1))
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                with torch.no_grad():
                    params.sub_(params.mean(0, keepdim=True))  # the mean pose stays the identity
                    params.copy_(torch.maximum(torch.minimum(params, limits), -limits))
                    if flow is not None:
                        flow.sub_(flow.mean(0, keepdim=True))  # so does the mean flow
                history.append(float(loss.detach()))
    params = params.detach()
    flow = None if flow is None else flow.detach()
    matrices = params_to_matrix(params)
    grids = _grid(params, flow, size)
    congealed = warp(images, grids, padding_mode=cfg.padding_mode)
    up = None if flow is None else F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    return RigidCongealingResult(params=params, matrices=matrices, images=congealed, objective=history, grids=grids,
                                 flow=up)
