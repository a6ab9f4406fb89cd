"""Sampling images with grids: plain bilinear and anti-aliased (mipmap) warping, grid utilities.

Convention (see :mod:`gangealing.geometry.coords`): images ``(N, C, H, W)``; grids ``(N, H', W', 2)``
holding normalised source ``(x, y)`` per output pixel, ``align_corners=False`` (an inverse warp, as
``grid_sample``). Padding modes are those of ``grid_sample``: ``'border'``, ``'reflection'``,
``'zeros'``.

The anti-aliased sampler reproduces the original GANgealing ``MipmapWarp`` (by Tim Brooks): each
output sample reads a Gaussian stack of the source at a fractional level given by how far apart,
in source pixels, neighbouring output samples land.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from gangealing.geometry.coords import hflip_norm_points
from gangealing.geometry.similarity import apply_to_points

Size = Union[int, Sequence[int]]
PADDING_MODES = ("border", "reflection", "zeros")


def _hw(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _check_padding(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def warp(images: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border", antialias: bool = False) -> torch.Tensor:
    """Sample ``images`` (N, C, H, W) at ``grid`` (N, H', W', 2) -> (N, C, H', W').

    Bilinear ``grid_sample`` (align_corners=False), or :func:`mipmap_warp` with ``antialias``.
    """
    if antialias:
        return mipmap_warp(images, grid, padding_mode=padding_mode)
    _check_padding(padding_mode)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=False)


# ------------------------------------------------------------------------------------------------
# Grids
# ------------------------------------------------------------------------------------------------


def resize_grid(grid: torch.Tensor, size: Size) -> torch.Tensor:
    """Bilinearly resample a grid ``(N, H, W, 2)`` to ``size`` (align_corners=False), as the original.

    Resizing the grid (not the warped image) keeps the output sharp at any resolution. Note that
    bilinear upsampling clamps at the borders: the outermost output pixels repeat the outermost
    input values, so an upsampled identity grid is the identity only away from a thin border (as
    in the original). Downsampling by an integer factor keeps identity grids exact.
    """
    h, w = _hw(size)
    if grid.shape[1:3] == (h, w):
        return grid
    out = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False)  # (N, 2, h, w)
    return out.permute(0, 2, 3, 1)  # (N, h, w, 2)


def compose_grids(outer: torch.Tensor, inner: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """The grid of "warp by ``outer``, then warp the result by ``inner``": ``outer(inner(p))``.

    ``outer`` (N, H1, W1, 2) is sampled bilinearly at ``inner`` (N, H2, W2, 2) -> (N, H2, W2, 2).
    Where ``outer`` is affine, prefer :func:`compose_affine_grid`, which is exact.
    """
    _check_padding(padding_mode)
    out = F.grid_sample(outer.permute(0, 3, 1, 2), inner.to(outer.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.permute(0, 2, 3, 1)  # (N, H2, W2, 2)


def compose_affine_grid(matrix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Apply affine inverse warps ``(N, 2, 3)`` to the values of a grid ``(N, H, W, 2)`` (exact composition).

    The result samples the source as "warp by ``matrix``, then by ``grid``" would, with the pixels
    read only once. This is how the original composes the similarity with the flow.
    """
    return apply_to_points(matrix, grid)


def flip_grid(grid: torch.Tensor) -> torch.Tensor:
    """Negate the x of a grid's values: a grid that addressed a mirrored image now addresses the original.

    ``warp(x.flip(3), g) == warp(x, flip_grid(g))`` (up to float rounding; border/zeros padding).
    """
    return hflip_norm_points(grid)


# ------------------------------------------------------------------------------------------------
# Anti-aliased (mipmap) sampling
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MipmapResult:
    """Output of :func:`mipmap_warp_with_levels`."""

    images: torch.Tensor  # (N, C, H', W') the warped images
    levels: torch.Tensor  # (N, H', W') the fractional stack level used per output pixel
    levels_map: torch.Tensor  # (N, H', W') levels / (max_num_levels - 1), the original's `levels_map`


def make_blur_filter(like: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The mipmap's 4x4 binomial filter: outer product of [1, 3, 3, 1], normalised to sum 1."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = k[:, None] * k[None, :]
    k2 = k2 / k2.sum()
    return k2 if like is None else k2.to(like)


class MipmapStack:
    """A lazily built Gaussian stack of source images (level k: blurred and halved k times, then
    bilinearly upsampled back to full size).

    Levels are built on demand and cached, so a forward pass that samples the same source more
    than once (the similarity pass and the final pass of a composed STN) pays for each level once,
    and levels outside the range a grid needs are never built.

    As the original, an input whose side is not a power of two is first reflect-padded to the next
    power of two (about its centre); the padding is cropped again after upsampling. Each side is
    padded on its own (the original pads both by the width's amount, which only differs, and only
    works, for square inputs).
    """

    def __init__(self, images: torch.Tensor):
        self.images = images  # (N, C, H, W)
        _, _, h, w = images.shape
        self.pads = tuple(self._pads(s) for s in (h, w))  # ((top, bottom), (left, right))
        self._down: Dict[int, torch.Tensor] = {}
        self._levels: Dict[int, torch.Tensor] = {0: images}

    @staticmethod
    def _pads(size: int) -> Tuple[int, int]:
        target = 1 << max(size - 1, 0).bit_length()
        total = target - size
        return total // 2, total - total // 2

    def _downsampled(self, k: int) -> torch.Tensor:
        """The source blurred and halved ``k`` times (power-of-two padded), ``(N, C, H_p/2^k, W_p/2^k)``."""
        if k not in self._down:
            if k == 0:
                (pt, pb), (pl, pr) = self.pads
                x = self.images
                if pt or pb or pl or pr:
                    x = F.pad(x, (pl, pr, pt, pb), mode="reflect")
            else:
                prev = self._downsampled(k - 1)
                c = prev.size(1)
                weight = make_blur_filter(prev).expand(c, 1, 4, 4)
                x = F.conv2d(F.pad(prev, (1, 1, 1, 1), mode="reflect"), weight, stride=2, groups=c)  # (N, C, h/2, w/2)
            self._down[k] = x
        return self._down[k]

    @property
    def built_levels(self) -> Tuple[int, ...]:
        """The full-resolution levels built so far (for checking that unused levels cost nothing)."""
        return tuple(sorted(self._levels))

    def level(self, k: int) -> torch.Tensor:
        """Stack level ``k`` at full resolution ``(N, C, H, W)``."""
        if k not in self._levels:
            low = self._downsampled(k)
            up = F.interpolate(low, scale_factor=float(2**k), mode="bilinear", align_corners=False)
            (pt, pb), (pl, pr) = self.pads
            self._levels[k] = up[:, :, pt : up.size(2) - pb, pl : up.size(3) - pr]
        return self._levels[k]


def mipmap_levels(grid: torch.Tensor, source_size: Size, max_num_levels: float = 3.5, min_level: float = 0.0) -> torch.Tensor:
    """The fractional stack level ``(N, H', W')`` at which each output sample of ``grid`` reads.

    The grid is converted to source pixels with the original's ``(S - 1) (g + 1) / 2`` (used for
    this choice only); the level is ``log2`` of the largest distance from a sample to its four
    neighbours (edges replicated; distances below one pixel count as one), clamped to
    ``[0, max_num_levels - 1]`` and then to at least ``min_level``.
    """
    h, w = _hw(source_size)
    coords = torch.stack([(w - 1.0) * (grid[..., 0] + 1.0) / 2.0, (h - 1.0) * (grid[..., 1] + 1.0) / 2.0], dim=3)  # (N, H', W', 2)
    # Squared distances between horizontal / vertical neighbours; a sample's left and right (up and
    # down) distances are two shifted copies, the replicated edge contributing a distance of 0.
    dh = (coords[:, :, 1:] - coords[:, :, :-1]).pow(2).sum(dim=3)  # (N, H', W'-1)
    dv = (coords[:, 1:] - coords[:, :-1]).pow(2).sum(dim=3)  # (N, H'-1, W')
    sq = torch.maximum(F.pad(dh, (1, 0)), F.pad(dh, (0, 1)))  # (N, H', W')
    sq = torch.maximum(sq, torch.maximum(F.pad(dv, (0, 0, 1, 0)), F.pad(dv, (0, 0, 0, 1))))
    # max of sqrt(clamp(d, 1)) == sqrt(clamp(max d, 1)): both are monotone, so this is the original's value.
    levels = torch.log2(sq.clamp(min=1.0).sqrt())
    return levels.clamp(min=0.0, max=max_num_levels - 1.0).clamp(min=min_level)


def sample_mipmap(stack: MipmapStack, grid: torch.Tensor, levels: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Sample a stack at ``grid`` (N, H', W', 2), interpolating linearly between the two stack levels
    around ``levels`` (N, H', W') (from :func:`mipmap_levels`) -> (N, C, H', W')."""
    lo = int(math.floor(levels.min().item()))
    hi = int(math.ceil(levels.max().item()))
    grid = grid.to(stack.images.dtype)
    sampled = [
        F.grid_sample(stack.level(k), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)  # (N, C, H', W')
        for k in range(lo, hi + 1)
    ]
    if lo == hi:
        return sampled[0]
    # The original's lerp between the floor and ceiling levels, out = o0 + frac (o1 - o0); only the
    # levels the grid touches were sampled. An integer level k > lo reads as the ceiling of
    # [k - 1, k] with frac 1 (equal to o1 up to rounding).
    floor = levels.floor().clamp(max=hi - 1)  # (N, H', W')
    frac = (levels - floor).unsqueeze(1)  # (N, 1, H', W')
    o0, o1 = sampled[0], sampled[1]
    if hi - lo > 1:
        idx = floor.unsqueeze(1)
        for k in range(lo + 1, hi):
            at_k = idx == k
            o0 = torch.where(at_k, sampled[k - lo], o0)
            o1 = torch.where(at_k, sampled[k - lo + 1], o1)
    return o0 + frac * (o1 - o0)


def mipmap_warp_with_levels(
    images: Union[torch.Tensor, MipmapStack],
    grid: torch.Tensor,
    max_num_levels: float = 3.5,
    min_level: float = 0.0,
    padding_mode: str = "border",
) -> MipmapResult:
    """Anti-aliased :func:`warp`: the original's ``MipmapWarp(max_num_levels)(images, grid, min_level, padding_mode)``.

    ``images`` is ``(N, C, H, W)`` or a :class:`MipmapStack` of them (to share levels between
    calls); ``grid`` is ``(N, H', W', 2)``. Only the stack levels between the floor of the smallest
    and the ceiling of the largest level used are built and sampled.
    """
    _check_padding(padding_mode)
    stack = images if isinstance(images, MipmapStack) else MipmapStack(images)
    levels = mipmap_levels(grid, stack.images.shape[-2:], max_num_levels, min_level)  # (N, H', W')
    out = sample_mipmap(stack, grid, levels, padding_mode)
    return MipmapResult(images=out, levels=levels, levels_map=levels / (max_num_levels - 1.0))


def mipmap_warp(
    images: Union[torch.Tensor, MipmapStack],
    grid: torch.Tensor,
    max_num_levels: float = 3.5,
    min_level: float = 0.0,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Anti-aliased warp of ``images`` (N, C, H, W) at ``grid`` (N, H', W', 2) -> (N, C, H', W').

    See :func:`mipmap_warp_with_levels`.
    """
    return mipmap_warp_with_levels(images, grid, max_num_levels, min_level, padding_mode).images
