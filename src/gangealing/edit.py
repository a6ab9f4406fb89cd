"""Edits and label maps painted once on the congealed frame, carried to every image.

An *edit* is an RGBA image drawn on the average congealed image: a float tensor ``(4, h, w)`` (or
``(N, 4, h, w)``) whose RGB is in [-1, 1] and alpha in [0, 1]. A *label map* is an integer tensor
``(h, w)`` (or ``(N, h, w)``) of class ids on the same frame.

How an edit reaches an image: the congealing grid ``(N, R, R, 2)`` says, for every pixel of the
congealed frame, where in the input image it comes from. Pushing each congealed pixel's value to
that position (forward splatting, :func:`splat`) carries the edit along the image's dense
correspondence into the image frame, at any image resolution (grids are normalised). The carried
colour and alpha are then alpha-composited (or Laplacian-pyramid blended) onto the image. Label
maps are carried the same way, one weight channel per class, and each image pixel takes the class
with the largest weight that landed on it (nearest / majority semantics: class ids are kept, never
averaged).

Splatting is pure PyTorch (``index_add_``), so it runs wherever the inputs are (CPU or GPU). Two
kernels: ``'bilinear'`` (each point spreads over its four neighbouring pixel centres with bilinear
weights) and ``'gaussian'`` (the original GANgealing's Splat2D: ``exp(-d^2 / (2 sigma^2))`` over a
``[x - 2 sigma, x + 2 sigma]`` window, which also fills holes where the image is magnified).

Carried alpha at an image pixel is ``sum_p k_p a_p / max(1, sum_p k_p)`` over the congealed pixels
``p`` that landed there (the original's soft normalisation: where few points land, as in regions
the congealed frame magnifies, coverage fades instead of being blown up); the carried colour is
the alpha-weighted mean ``sum_p k_p a_p c_p / sum_p k_p a_p``. Unlike the original, transparent
edit pixels are splatted too (they add to ``sum k`` but not to alpha), which anti-aliases the
edit's outline in the image.

Only tensors here: edit and label-map files are read and written by :mod:`gangealing.data.edits`,
folders of images are edited by :func:`gangealing.apps.propagate.propagate_files`.

Convention: :mod:`gangealing.geometry.coords` (grids normalised, align_corners=False; points in
pixels, ``(x, y)``, pixel centres at integers).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from gangealing.geometry.coords import norm_to_pixel

__all__ = [
    "Splat",
    "Carried",
    "Propagation",
    "EditStyle",
    "KERNELS",
    "BLENDS",
    "splat",
    "splat_grid",
    "carry_rgba",
    "carry_labels",
    "alpha_composite",
    "laplacian_blend",
    "composite",
    "resize_edit",
    "resize_labels",
    "label_palette",
    "colorize_labels",
    "labels_to_edit",
    "is_label_map",
    "propagate",
]

Size = Union[int, Sequence[int]]
KERNELS = ("bilinear", "gaussian")
# Laplacian presets: (levels, kernel size, sigma); sigma doubles per level (the original's).
BLENDS = {"alpha": None, "laplacian": (5, 45, 1.0), "laplacian-light": (3, 11, 0.5)}
SNAP = 1e-4  # px: positions this close to a pixel centre land on it exactly (see splat)


def _hw(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# ------------------------------------------------------------------------------------------------
# Splatting
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Splat:
    """Forward-splatted values: per-pixel weighted sums and the total weight that landed."""

    total: torch.Tensor  # (N, C, H, W) sum_p k_p v_p
    weight: torch.Tensor  # (N, 1, H, W) sum_p k_p

    def mean(self) -> torch.Tensor:
        """Weighted mean ``(N, C, H, W)`` of the values that landed on each pixel; 0 where none did."""
        w = self.weight
        return torch.where(w > 0, self.total / w.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(self.total))


def _bilinear_taps(pts: torch.Tensor, sigma: float):
    """(ix, iy, k) of the four pixel centres around each point ``(N, P, 2)``."""
    base = pts.floor()
    frac = pts - base  # (N, P, 2)
    x0, y0 = base[..., 0].long(), base[..., 1].long()
    fx, fy = frac[..., 0], frac[..., 1]
    yield x0, y0, (1 - fx) * (1 - fy)
    yield x0 + 1, y0, fx * (1 - fy)
    yield x0, y0 + 1, (1 - fx) * fy
    yield x0 + 1, y0 + 1, fx * fy


def _gaussian_taps(pts: torch.Tensor, sigma: float):
    """(ix, iy, k) of a Gaussian footprint: pixels in ``[floor(x - 2s), ceil(x + 2s)]`` (the original's window)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = math.ceil(2 * sigma)
    lo, hi = (pts - 2 * sigma).floor(), (pts + 2 * sigma).ceil()  # (N, P, 2) window per point
    base = pts.floor().long()
    inv = -1.0 / (2 * sigma * sigma)
    for oy in range(-radius - 1, radius + 2):
        iy = base[..., 1] + oy
        dy = iy.to(pts.dtype) - pts[..., 1]
        in_y = (iy >= lo[..., 1]) & (iy <= hi[..., 1])
        for ox in range(-radius - 1, radius + 2):
            ix = base[..., 0] + ox
            dx = ix.to(pts.dtype) - pts[..., 0]
            inside = in_y & (ix >= lo[..., 0]) & (ix <= hi[..., 0])
            yield ix, iy, torch.where(inside, torch.exp(inv * (dx * dx + dy * dy)), torch.zeros_like(dx))


def splat(
    points: torch.Tensor,
    values: torch.Tensor,
    size: Size,
    *,
    kernel: str = "bilinear",
    sigma: float = 1.0,
) -> Splat:
    """Forward-splat per-point values onto an ``(H, W)`` pixel grid.

    Args:
        points: ``(N, P, 2)`` ``(x, y)`` pixel positions in the target image (pixel centres at
            integers). Non-finite points are ignored; points partly outside spread only onto the
            pixels inside.
        values: ``(N, P, C)`` what each point carries.
        size: target ``(H, W)`` (or an int for square).
        kernel: ``'bilinear'`` or ``'gaussian'`` (with ``sigma`` in pixels); see the module docstring.

    Returns:
        :class:`Splat` with ``total`` (N, C, H, W) = sum of kernel-weighted values and ``weight``
        (N, 1, H, W) = sum of kernel weights. Computed in at least float32, on ``values``' device.

    Positions within ``SNAP`` (1e-4) px of a pixel centre are snapped onto it, so a grid that maps
    congealed pixels exactly onto image pixels up to float rounding (an identity warp) moves
    every value to exactly one pixel with weight exactly 1.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if points.dim() != 3 or points.size(-1) != 2 or values.dim() != 3 or values.shape[:2] != points.shape[:2]:
        raise ValueError(f"expected points (N, P, 2) and values (N, P, C), got {tuple(points.shape)} and {tuple(values.shape)}")
    n, p, c = values.shape
    h, w = _hw(size)
    dtype = torch.promote_types(values.dtype, torch.float32)
    device = values.device
    vals = values.to(dtype)
    pts = points.to(device=device, dtype=dtype)
    finite = torch.isfinite(pts).all(dim=-1)  # (N, P)
    # Far-away points only need to stay far away: clamping keeps the integer casts in range.
    margin = 4 + (math.ceil(2 * sigma) if kernel == "gaussian" else 0)
    pts = torch.where(finite.unsqueeze(-1), pts, torch.full_like(pts, -float(margin)))
    pts = torch.stack([pts[..., 0].clamp(-margin, w - 1 + margin), pts[..., 1].clamp(-margin, h - 1 + margin)], dim=-1)
    nearest = pts.round()
    pts = torch.where((pts - nearest).abs() <= SNAP, nearest, pts)  # (N, P, 2)

    total = torch.zeros(n * h * w, c, dtype=dtype, device=device)
    weight = torch.zeros(n * h * w, dtype=dtype, device=device)
    offset = (torch.arange(n, device=device) * (h * w)).view(n, 1)  # (N, 1)
    taps = _bilinear_taps(pts, sigma) if kernel == "bilinear" else _gaussian_taps(pts, sigma)
    for ix, iy, k in taps:
        keep = finite & (k > 0) & (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)  # (N, P)
        index = (offset + iy * w + ix)[keep]  # (M,)
        kk = k[keep]  # (M,)
        total.index_add_(0, index, vals[keep] * kk.unsqueeze(1))
        weight.index_add_(0, index, kk)
    total = total.view(n, h, w, c).permute(0, 3, 1, 2)  # (N, C, H, W)
    return Splat(total=total.contiguous(), weight=weight.view(n, 1, h, w))


def splat_grid(image: torch.Tensor, grid: torch.Tensor, size: Size, *, kernel: str = "bilinear", sigma: float = 1.0) -> Splat:
    """Carry an image on the congealed frame to the input frame along a congealing grid.

    Pixel ``(i, j)`` of ``image`` (N or 1, C, R, R') goes to ``grid[n, i, j]`` (normalised source
    position, ``grid`` (N, R, R', 2)) in an image of ``size`` (H, W): the forward warp that undoes
    sampling with ``grid``. Returns the :class:`Splat` (N, C, H, W).
    """
    n, r, r2, _ = grid.shape
    if image.shape[-2:] != (r, r2):
        raise ValueError(f"image {tuple(image.shape[-2:])} and grid {(r, r2)} must have the same resolution")
    image = image.expand(n, *image.shape[1:]) if image.size(0) == 1 else image
    points = norm_to_pixel(grid.to(torch.promote_types(grid.dtype, torch.float32)), _hw(size)).reshape(n, r * r2, 2)  # (N, P, 2)
    values = image.flatten(2).transpose(1, 2)  # (N, P, C)
    return splat(points, values, size, kernel=kernel, sigma=sigma)


# ------------------------------------------------------------------------------------------------
# Carrying edits and labels
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Carried:
    """An RGBA edit carried to the image frame: colour and how opaquely it covers each pixel."""

    color: torch.Tensor  # (N, 3, H, W) in [-1, 1]; 0 where nothing landed
    alpha: torch.Tensor  # (N, 1, H, W) in [0, 1]
    covered: torch.Tensor  # (N, 1, H, W) bool, pixels where the edit (any alpha) landed


def _as_batch(t: torch.Tensor, dims: int) -> torch.Tensor:
    return t.unsqueeze(0) if t.dim() == dims else t


def carry_rgba(
    edit: torch.Tensor,
    grid: torch.Tensor,
    size: Size,
    *,
    kernel: str = "bilinear",
    sigma: float = 1.0,
    opacity: float = 1.0,
) -> Carried:
    """Carry an RGBA edit ``(4, R, R)`` / ``(N or 1, 4, R, R)`` along grids ``(N, R, R, 2)`` to images of ``size``.

    Colour is the alpha-weighted mean of what landed, alpha the soft-normalised coverage times
    ``opacity`` (module docstring).
    """
    edit = _as_batch(edit, 3)
    if edit.size(1) != 4:
        raise ValueError(f"an edit is RGBA (4 channels), got {edit.size(1)}")
    rgb, a = edit[:, :3], edit[:, 3:4].clamp(0, 1)
    packed = torch.cat([rgb * a, a, torch.ones_like(a)], dim=1)  # (N, 5, R, R): premultiplied colour, alpha, count
    s = splat_grid(packed, grid, size, kernel=kernel, sigma=sigma)
    premult, alpha_sum, count = s.total[:, :3], s.total[:, 3:4], s.total[:, 4:5]
    color = torch.where(alpha_sum > 0, premult / alpha_sum.clamp_min(torch.finfo(alpha_sum.dtype).tiny), torch.zeros_like(premult))
    alpha = (alpha_sum / count.clamp_min(1.0)) * opacity
    return Carried(color=color, alpha=alpha.clamp(0, 1), covered=s.weight > 0)


def carry_labels(
    labels: torch.Tensor,
    grid: torch.Tensor,
    size: Size,
    *,
    kernel: str = "bilinear",
    sigma: float = 1.0,
    fill: int = 0,
) -> torch.Tensor:
    """Carry a label map ``(R, R)`` / ``(N or 1, R, R)`` (integer ids) along grids ``(N, R, R, 2)``.

    Every class present is splatted as its own weight channel; each image pixel takes the class
    with the largest total weight (ties: the smallest id), ``fill`` where nothing landed.
    Returns ``(N, H, W)`` int64 holding only ids from ``labels`` (and ``fill``).
    """
    labels = _as_batch(labels, 2).long()
    classes = torch.unique(labels)  # (K,) sorted
    onehot = (labels.unsqueeze(1) == classes.view(1, -1, 1, 1)).to(torch.float32)  # (N, K, R, R)
    s = splat_grid(onehot, grid, size, kernel=kernel, sigma=sigma)
    best = classes[s.total.argmax(dim=1)]  # (N, H, W)
    return torch.where(s.weight[:, 0] > 0, best, torch.full_like(best, fill))


# ------------------------------------------------------------------------------------------------
# Blending
# ------------------------------------------------------------------------------------------------


def alpha_composite(background: torch.Tensor, foreground: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha * foreground + (1 - alpha) * background`` (exact where alpha is 0 or 1)."""
    return alpha * foreground + (1 - alpha) * background


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return (k / k.sum()).to(dtype=dtype, device=device)


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with replicate padding (same size)."""
    c, pad = x.size(1), kernel.numel() // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # (N, C, H + 2p, W)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # (N, C, H, W)


def laplacian_blend(
    background: torch.Tensor,
    foreground: torch.Tensor,
    mask: torch.Tensor,
    *,
    levels: int = 5,
    kernel_size: int = 45,
    sigma: float = 1.0,
    sigma_multiplier: float = 2.0,
) -> torch.Tensor:
    """Laplacian-stack blending of ``foreground`` over ``background`` (N, C, H, W) by ``mask`` (N, 1, H, W) in [0, 1].

    Level ``l`` blurs with a ``kernel_size`` Gaussian of ``sigma * sigma_multiplier**l`` (no
    downsampling: stacks, as the original's ``LaplacianBlender``); each band is blended with the
    mask blurred as far, and the bands are summed. A constant mask gives alpha blending.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    dtype, device = background.dtype, background.device
    bg, fg, m = background, foreground.to(dtype), mask.to(dtype)
    out = torch.zeros_like(bg)
    for level in range(levels):
        if level == levels - 1:  # the residual low-pass band
            return out + torch.lerp(bg, fg, m)
        k = _gaussian_1d(kernel_size, sigma * sigma_multiplier**level, dtype, device)
        bg_low, fg_low = _blur(bg, k), _blur(fg, k)
        out = out + torch.lerp(bg - bg_low, fg - fg_low, m)
        bg, fg, m = bg_low, fg_low, _blur(m, k)
    return out


def composite(images: torch.Tensor, carried: Carried, blend: str = "alpha") -> torch.Tensor:
    """Blend a carried edit onto ``images`` (N, 3, H, W): ``'alpha'``, ``'laplacian'`` or ``'laplacian-light'``.

    With alpha compositing, pixels the edit's alpha does not reach are returned unchanged (bit for
    bit). Laplacian blending softens the seam over a few pixels; where nothing landed the
    foreground is the image itself, so the blend does not pull in a dark halo.
    """
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {tuple(BLENDS)}, got {blend!r}")
    color = carried.color.to(images.dtype)
    alpha = carried.alpha.to(images.dtype)
    if blend == "alpha":
        return alpha_composite(images, color, alpha)
    levels, size, sigma = BLENDS[blend]
    fg = torch.where(carried.alpha > 0, color, images)  # (N, 3, H, W)
    return laplacian_blend(images, fg, alpha, levels=levels, kernel_size=size, sigma=sigma)


# ------------------------------------------------------------------------------------------------
# Resizing, colours
# ------------------------------------------------------------------------------------------------


def resize_edit(edit: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize an RGBA edit (N, 4, h, w) in premultiplied alpha (transparent colours do not bleed)."""
    h, w = _hw(size)
    if tuple(edit.shape[-2:]) == (h, w):
        return edit
    rgb, a = edit[:, :3], edit[:, 3:4]
    down = h < edit.size(-2) or w < edit.size(-1)
    pm = F.interpolate(torch.cat([rgb * a, a], 1), size=(h, w), mode="bilinear", align_corners=False, antialias=down)
    a = pm[:, 3:4].clamp(0, 1)
    rgb = torch.where(a > 0, pm[:, :3] / a.clamp_min(1e-12), torch.zeros_like(pm[:, :3])).clamp(-1, 1)
    return torch.cat([rgb, a], 1)  # (N, 4, h, w)


def resize_labels(labels: torch.Tensor, size: Size) -> torch.Tensor:
    """Nearest-neighbour resize of label maps (N, h, w) (ids are never interpolated)."""
    h, w = _hw(size)
    if tuple(labels.shape[-2:]) == (h, w):
        return labels
    out = F.interpolate(labels.unsqueeze(1).double(), size=(h, w), mode="nearest-exact")
    return out[:, 0].round().long()


def label_palette(num: int = 256) -> torch.Tensor:
    """A fixed colour per class id, ``(num, 3)`` uint8: the PASCAL VOC palette (0 is black)."""
    ids = torch.arange(num, dtype=torch.int64)
    rgb = torch.zeros(num, 3, dtype=torch.int64)
    c = ids.clone()
    for bit in range(8):
        for ch in range(3):
            rgb[:, ch] |= ((c >> ch) & 1) << (7 - bit)
        c = c >> 3
    return rgb.to(torch.uint8)


def colorize_labels(labels: torch.Tensor) -> torch.Tensor:
    """Colour-code label maps (..., H, W) -> (..., 3, H, W) float in [-1, 1] (:func:`label_palette`)."""
    labels = labels.long()
    n = int(labels.max().item()) + 1 if labels.numel() else 1
    palette = label_palette(max(n, 1)).to(labels.device).float() / 127.5 - 1  # (K, 3)
    return palette[labels.clamp_min(0)].movedim(-1, -3)  # (..., 3, H, W)


def labels_to_edit(labels: torch.Tensor, opacity: float = 0.5, background: Optional[int] = 0) -> torch.Tensor:
    """An RGBA edit (..., 4, H, W) showing label maps (..., H, W) in their palette colours.

    Alpha is ``opacity`` on labelled pixels and 0 on ``background`` (None: every pixel is labelled).
    """
    rgb = colorize_labels(labels)
    a = torch.full_like(rgb[..., :1, :, :], float(opacity))
    if background is not None:
        a = torch.where((labels != background).unsqueeze(-3), a, torch.zeros_like(a))
    return torch.cat([rgb, a], dim=-3)


def is_label_map(edit: Any) -> bool:
    """Whether ``edit`` (a tensor, or a per-cluster sequence of them) is an integer label map."""
    first = edit[0] if isinstance(edit, (list, tuple)) else edit
    return isinstance(first, torch.Tensor) and not first.is_floating_point()


# ------------------------------------------------------------------------------------------------
# Propagation through a congealer
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Propagation:
    """An edit or label map carried from the congealed frame to each image (what :func:`propagate` returns)."""

    images: Optional[torch.Tensor] = None  # RGBA edit: composited images (N, 3, H, W) in [-1, 1]
    alpha: Optional[torch.Tensor] = None  # RGBA edit: the carried alpha (N, 1, H, W)
    labels: Optional[torch.Tensor] = None  # label map: carried ids (N, H, W) int64
    grid: Optional[torch.Tensor] = None  # (N, R, R, 2) the congealing grids used
    flipped: Optional[torch.Tensor] = None  # (N,) bool
    cluster: Optional[torch.Tensor] = None  # (N,) long, or None for single-mode models


def _edit_rows(edit: Any, cluster: Optional[torch.Tensor], label: bool, size: int, device) -> torch.Tensor:
    """Per-image edits ``(N or 1, ...)`` at the congealed resolution, picking per-cluster edits by ``cluster``."""
    edits = list(edit) if isinstance(edit, (list, tuple)) else [edit]
    resized = []
    for e in edits:
        e = e.to(device)
        if label:
            resized.append(resize_labels(_as_batch(e, 2).long(), size))
        else:
            resized.append(resize_edit(_as_batch(e, 3).float(), size))
    if len(resized) == 1:
        return resized[0]
    if cluster is None:
        raise ValueError(f"{len(resized)} edits (one per cluster) were given, but the model has no clusters")
    if any(r.size(0) != 1 for r in resized):
        raise ValueError("per-cluster edits must each be a single (4, h, w) edit or (h, w) label map")
    stacked = torch.cat(resized)  # (K, ...)
    if int(cluster.max()) >= stacked.size(0):
        raise ValueError(f"an image was assigned cluster {int(cluster.max())}, but only {stacked.size(0)} edits were given")
    return stacked[cluster.to(device).long()]  # (N, ...)


@dataclass(frozen=True)
class EditStyle:
    """How an edit is drawn into images: the rendering options of propagation, videos and the CLI, once.

    ``resolution``: side ``R`` of the congealed frame sampled, i.e. ``R * R`` points are splatted
    (None: the larger of the edit's side and the images' longest side, so regions the congealed
    frame magnifies stay dense). ``blend``: one of :data:`BLENDS` (:func:`composite`). ``kernel``,
    ``sigma``: :func:`splat`. ``opacity`` multiplies an RGBA edit's alpha; ``label_opacity`` is the
    alpha of a label map's colour-coded overlay (:meth:`render`); ``fill``: the label of pixels no
    label lands on.
    """

    resolution: Optional[int] = None
    blend: str = "alpha"
    kernel: str = "bilinear"
    sigma: float = 1.0
    opacity: float = 1.0
    label_opacity: float = 0.5
    fill: int = 0

    @classmethod
    def of(cls, style: Optional["EditStyle"] = None, **fields: Any) -> "EditStyle":
        """``style``, or a style of ``fields`` (for functions that also take the options as keywords)."""
        if style is not None and fields:
            raise TypeError(f"give a style or its fields ({', '.join(sorted(fields))}), not both")
        return style if style is not None else cls(**fields)

    def side(self, edit: Any, size: Size) -> int:
        """The congealed-frame side ``R`` at which ``edit`` (or the first of per-cluster edits) is splatted into images of ``size``."""
        if self.resolution is not None:
            return int(self.resolution)
        first = edit[0] if isinstance(edit, (list, tuple)) else edit
        return int(max(max(first.shape[-2:]), max(_hw(size))))

    def carry(self, edit: torch.Tensor, grid: torch.Tensor, size: Size) -> Carried:
        """:func:`carry_rgba` with this style's kernel, sigma and opacity."""
        return carry_rgba(edit, grid, size, kernel=self.kernel, sigma=self.sigma, opacity=self.opacity)

    def carry_labels(self, labels: torch.Tensor, grid: torch.Tensor, size: Size) -> torch.Tensor:
        """:func:`carry_labels` with this style's kernel, sigma and fill."""
        return carry_labels(labels, grid, size, kernel=self.kernel, sigma=self.sigma, fill=self.fill)

    def render(self, images: torch.Tensor, edit: Any, grid: torch.Tensor,
               cluster: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``images`` (N, 3, H, W) with ``edit`` drawn along ``grid`` (N, R, R, 2) -> (N, 3, H, W).

        An RGBA edit is composited with ``blend``; a label map is shown as its colour-coded
        overlay at ``label_opacity`` (:func:`labels_to_edit`). ``cluster`` picks per-cluster edits.
        """
        size = tuple(images.shape[-2:])
        label = is_label_map(edit)
        rows = _edit_rows(edit, cluster, label, grid.size(1), grid.device)  # (N or 1, ...)
        images = images.to(grid.device)
        if label:
            over = labels_to_edit(self.carry_labels(rows, grid, size), opacity=self.label_opacity)  # (N, 4, H, W)
            return alpha_composite(images, over[:, :3], over[:, 3:])
        return composite(images, self.carry(rows, grid, size), self.blend)

    @torch.no_grad()
    def propagate(self, congealer: Any, images: torch.Tensor, edit: Any) -> Propagation:
        """:func:`propagate` in this style."""
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        label = is_label_map(edit)
        size = tuple(images.shape[-2:])
        resolution = self.side(edit, size)
        res = congealer.align(images, output_resolution=resolution)
        grid = res.grid  # (N, R, R, 2)
        cluster = getattr(res, "cluster", None)
        rows = _edit_rows(edit, cluster, label, resolution, grid.device)  # (N or 1, ...)
        common = dict(flipped=getattr(res, "flipped", None), cluster=cluster, grid=grid)
        if label:
            return Propagation(labels=self.carry_labels(rows, grid, size), **common)
        carried = self.carry(rows, grid, size)
        return Propagation(images=composite(images.to(grid.device), carried, self.blend), alpha=carried.alpha, **common)


def propagate(
    congealer: Any,
    images: torch.Tensor,
    edit: Any,
    *,
    resolution: Optional[int] = None,
    blend: str = "alpha",
    kernel: str = "bilinear",
    sigma: float = 1.0,
    opacity: float = 1.0,
    fill: int = 0,
) -> Propagation:
    """Carry an edit or label map from the congealed frame to each image and composite it.

    Args:
        congealer: anything with ``align(images, output_resolution=R)`` returning an object with
            ``grid`` (N, R, R, 2) (normalised positions in the *original* images, flips included),
            and optionally ``flipped`` and ``cluster``: a :class:`gangealing.predictor.Congealer`.
        images: ``(N, 3, H, W)`` in [-1, 1], any size (the congealer prepares its own input);
            the edit is composited onto them at this size.
        edit: an RGBA edit (float ``(4, h, w)``, RGB in [-1, 1], alpha in [0, 1]) or a label map
            (integer ``(h, w)``), on the congealed frame; or a list with one per cluster (each
            image uses its cluster's).
        resolution: side of the congealed frame sampled, i.e. ``R * R`` points are splatted
            (default: the larger of the edit's side and the images' longest side, so regions the
            congealed frame magnifies stay dense).
        blend, kernel, sigma, opacity, fill: see :class:`EditStyle`.

    Returns:
        :class:`Propagation` (``images`` and ``alpha`` for an RGBA edit, ``labels`` for a label map).
    """
    return EditStyle(resolution=resolution, blend=blend, kernel=kernel, sigma=sigma, opacity=opacity,
                     fill=fill).propagate(congealer, images, edit)
