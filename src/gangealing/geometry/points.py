"""Key points through a congealing warp: congeal (image -> congealed frame), uncongeal (congealed
frame -> image), transfer (image A -> image B), and the mirror helpers used by flip inference.

Convention (see :mod:`gangealing.geometry.coords`): points are ``(N, K, 2)`` float tensors in
pixels, ``(x, y)``, 0-based, pixel centres at integer coordinates; grids are ``(N, H, W, 2)``
inverse warps (output pixel -> normalised source position), ``align_corners=False``. A
"similarity matrix" is the ``(N, 2, 3)`` affine map from normalised output coordinates to
normalised source coordinates (what ``F.affine_grid`` takes); a "flow" is the residual flow
``(N, F, F, 2)`` that the flow transformer adds to the identity grid, in the frame already aligned
by the similarity.

Frames:

* input frame: the image the points are annotated on, ``input_size`` pixels;
* congealed frame: the transformer's output. With a flow it is the ``F x F`` flow grid (what
  :func:`congeal` returns indices into); similarity-only, it is the similarity-aligned image at
  the input resolution.

Legacy pixel normalisation (``legacy=True``)
--------------------------------------------
The original GANgealing converts congealed-frame pixels to normalised coordinates with
``x_n = (x / (F - 1) - 0.5) * 2 * (S - 1) / S``, where ``F`` is the flow size (the congealed
frame, whatever the output resolution) and ``S`` the size of the input image (its
``uncongeal_points`` with ``normalize_input_points=True``, used by ``transfer_points`` and so by
PCK-transfer). The pixel-centre convention is ``x_n = (2x + 1) / F - 1``. Both map the frame
centre ``c = (F - 1) / 2`` to 0, but the legacy one scales offsets from the centre by
``k = F (S - 1) / ((F - 1) S)``: a congealed point ``x`` is read as if it were at
``c + k (x - c)``, i.e. displaced outwards by ``(k - 1)(x - c) = (S - F)(x - c) / ((F - 1) S)``
congealed pixels. ``k = 1`` exactly when ``S == F``. For the fixture (F = 64, S = 128),
``k = 127/126`` and the displacement reaches 0.25 congealed pixels at the frame border (about
0.5 input pixels times the similarity's scale). For a flow size of 128 on 256-pixel inputs it
is at most 0.25 congealed pixels too; in general at most ``(S - F) / (2 S)``.
All other conversions of the original (input-frame pixels <-> normalised, both ways, and the
similarity-only frame, where ``F == S``) equal the pixel-centre formulas up to float rounding;
``legacy=True`` repeats their exact order of operations so results match bitwise.
With ``legacy=False`` the congealed frame uses the pixel-centre convention, so
congeal-then-uncongeal of a pure similarity round-trips exactly (up to float rounding).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .coords import (
    Size,
    apply_affine,
    hflip_points,
    identity_grid,
    invert_affine,
    norm_to_pixel,
    norm_to_pixel_legacy,
    pixel_to_norm,
    pixel_to_norm_legacy,
)

__all__ = [
    "congeal",
    "uncongeal",
    "uncongeal_norm",
    "uncongeal_similarity",
    "transfer",
    "sample_grid",
    "nearest_grid_index",
    "compose_similarity_flow",
    "hflip_points_where",
    "repeat_rows",
    "congeal_result",
    "uncongeal_result",
    "permute_keypoints",
]


def sample_grid(grid: torch.Tensor, points_norm: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample a grid ``(N, H, W, 2)`` at normalised points ``(N, K, 2)`` -> ``(N, K, 2)``.

    Border padding, ``align_corners=False``: the value a warped image would take from that
    grid position, i.e. where in the source the point comes from.
    """
    values = grid.permute(0, 3, 1, 2)  # (N, 2, H, W)
    loc = points_norm.to(grid.dtype).unsqueeze(2)  # (N, K, 1, 2)
    out = F.grid_sample(values, loc, mode="bilinear", padding_mode="border", align_corners=False)  # (N, 2, K, 1)
    return out.squeeze(3).permute(0, 2, 1)  # (N, K, 2)


def nearest_grid_index(points_norm: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """For each point ``(N, K, 2)``, the ``(x, y)`` integer index ``(N, K, 2)`` (int64) of the grid
    position ``(N, H, W, 2)`` nearest to it (squared Euclidean distance, first minimum in
    row-major order).

    Inverts an inverse warp approximately: the grid says where each output pixel samples from;
    the output pixel whose sample lies closest to a source point is where that point goes. Points
    outside the grid's reach land on the nearest border pixel. Distances are computed as
    ``|p|^2 + |g|^2 - 2 <p, g>`` in the original's order of operations, so ties resolve as there.
    """
    n, h, w, _ = grid.shape
    k = points_norm.shape[1]
    g = grid.reshape(n, h, w, 1, 1, 2)  # (N, H, W, 1, 1, 2)
    p = points_norm.to(grid.dtype).reshape(n, 1, 1, k, 2, 1)  # (N, 1, 1, K, 2, 1)
    dot = (g @ p)[..., 0, 0]  # (N, H, W, K)
    dist = p.square().squeeze(-1).sum(dim=-1) + g.square().sum(dim=-1).squeeze(-1) - 2 * dot  # (N, H, W, K)
    flat = dist.reshape(n, h * w, k).argmin(dim=1)  # (N, K)
    return torch.stack([flat % w, torch.div(flat, w, rounding_mode="floor") % h], dim=-1)  # (N, K, 2)


def compose_similarity_flow(matrix: Optional[torch.Tensor], flow: torch.Tensor) -> torch.Tensor:
    """The full ``(N, F, F, 2)`` sampling grid of a similarity followed by a residual flow:
    ``matrix @ [identity + flow; 1]`` (the original's composition, before any resize)."""
    grid = identity_grid(tuple(flow.shape[1:3]), flow.shape[0], flow.device, flow.dtype) + flow  # (N, F, F, 2)
    return grid if matrix is None else apply_affine(grid, matrix)


def congeal(
    points_px: torch.Tensor,
    input_size: Size,
    matrix: Optional[torch.Tensor] = None,
    flow: Optional[torch.Tensor] = None,
    *,
    legacy: bool = False,
) -> torch.Tensor:
    """Map points from input-image pixels to the congealed frame.

    Args:
        points_px: ``(N, K, 2)`` (x, y) pixels in the input image (``input_size``: int or (H, W)).
        matrix: ``(N, 2, 3)`` similarity (output -> source, normalised) or None (flow only).
        flow: ``(N, F, F, 2)`` residual flow, or None (similarity only).
        legacy: repeat the original's order of float operations (including its
            pixels -> normalised -> pixels -> normalised round trip between the two stages).

    Returns:
        ``(N, K, 2)`` in the dtype of ``points_px`` (float):

        * with a flow: the ``(x, y)`` integer index (column, row) of the nearest ``F x F`` grid
          position, i.e. pixel coordinates in the congealed frame, quantised to pixel centres
          (the original returns these as int64; here they are floats holding integers);
        * similarity only: float pixel coordinates in the similarity-aligned frame at the input
          resolution (the original's ``unnormalize_output_points=True``).

    With neither matrix nor flow the points are returned unchanged (identity warp).
    """
    dtype = points_px.dtype if points_px.is_floating_point() else torch.get_default_dtype()
    points_px = points_px.to(dtype)
    to_norm = pixel_to_norm_legacy if legacy else pixel_to_norm
    to_px = norm_to_pixel_legacy if legacy else norm_to_pixel
    p = to_norm(points_px, input_size)  # (N, K, 2)
    if matrix is not None:
        # The similarity is closed-form invertible: apply source -> output directly.
        p = apply_affine(p, invert_affine(matrix.to(dtype)))  # (N, K, 2)
        if flow is None:
            return to_px(p, input_size)
        if legacy:  # the original leaves the similarity stage in pixels and re-normalises
            p = to_norm(to_px(p, input_size), input_size)
    elif flow is None:
        return points_px.clone()
    # The flow grid lives in the similarity-aligned frame, so the matrix is not applied to it.
    grid = compose_similarity_flow(None, flow)  # (N, F, F, 2)
    return nearest_grid_index(p, grid).to(dtype)


def uncongeal(
    points_px: torch.Tensor,
    grid: torch.Tensor,
    input_size: Size,
    *,
    congealed_size: Optional[Size] = None,
    legacy: bool = False,
) -> torch.Tensor:
    """Map points from congealed-frame pixels to input-image pixels through a sampling grid.

    Args:
        points_px: ``(N, K, 2)`` (x, y) pixels of the congealed frame (any real or integer dtype).
        grid: ``(N, H, W, 2)`` the full sampling grid of the target image (normalised source
            positions), at any output resolution.
        input_size: the target image's size (int or (H, W)): the frame of the result.
        congealed_size: size of the frame ``points_px`` are in; defaults to the grid's ``(H, W)``.
            Pass the flow size when sampling a grid resized to another output resolution (the
            original always reads congealed pixels in the flow-size frame).
        legacy: use the original's mixed normalisation (module docstring).

    Returns:
        ``(N, K, 2)`` float pixels in the input image (grid values bilinearly interpolated,
        border padding, align_corners=False).
    """
    congealed_size = tuple(grid.shape[1:3]) if congealed_size is None else congealed_size
    points = points_px.to(grid.dtype)
    if legacy:
        p = pixel_to_norm_legacy(points, input_size, congealed_size)  # (N, K, 2)
    else:
        p = pixel_to_norm(points, congealed_size)  # (N, K, 2)
    return uncongeal_norm(p, grid, input_size, legacy=legacy)


def uncongeal_norm(
    points_norm: torch.Tensor, grid: torch.Tensor, input_size: Size, *, legacy: bool = False
) -> torch.Tensor:
    """Like :func:`uncongeal` for points given in normalised congealed coordinates ``(N, K, 2)``
    (the original's ``normalize_input_points=False``, e.g. propagated congealed-space points)."""
    src = sample_grid(grid, points_norm)  # (N, K, 2)
    return norm_to_pixel_legacy(src, input_size) if legacy else norm_to_pixel(src, input_size)


def uncongeal_similarity(
    points_px: torch.Tensor,
    matrix: torch.Tensor,
    input_size: Size,
    *,
    congealed_size: Optional[Size] = None,
    legacy: bool = False,
) -> torch.Tensor:
    """Closed-form uncongeal for a similarity-only transformer: congealed-frame pixels
    (``congealed_size``, default ``input_size``) -> input-image pixels via ``matrix (N, 2, 3)``."""
    congealed_size = input_size if congealed_size is None else congealed_size
    points = points_px.to(matrix.dtype)
    if legacy:
        p = pixel_to_norm_legacy(points, input_size, congealed_size)
    else:
        p = pixel_to_norm(points, congealed_size)
    src = apply_affine(p, matrix)  # (N, K, 2)
    return norm_to_pixel_legacy(src, input_size) if legacy else norm_to_pixel(src, input_size)


def transfer(
    points_px: torch.Tensor,
    input_size: Size,
    *,
    matrix_a: Optional[torch.Tensor] = None,
    flow_a: Optional[torch.Tensor] = None,
    grid_b: Optional[torch.Tensor] = None,
    matrix_b: Optional[torch.Tensor] = None,
    target_size: Optional[Size] = None,
    legacy: bool = False,
) -> torch.Tensor:
    """Transfer points from image A to image B through the congealed frame.

    ``matrix_a``/``flow_a`` are A's warp (see :func:`congeal`); B's warp is its full sampling
    grid ``grid_b`` or, similarity-only, its matrix ``matrix_b`` (closed form). ``target_size``
    (B's size) defaults to ``input_size``. With a flow the congealed frame is the flow grid
    (flow-size pixels) whatever ``grid_b``'s resolution; similarity-only it is A's input frame.
    """
    target_size = input_size if target_size is None else target_size
    congealed = congeal(points_px, input_size, matrix_a, flow_a, legacy=legacy)  # (N, K, 2)
    frame = tuple(flow_a.shape[1:3]) if flow_a is not None else input_size
    if grid_b is not None:
        return uncongeal(congealed, grid_b, target_size, congealed_size=frame, legacy=legacy)
    if matrix_b is None:
        raise ValueError("transfer needs B's warp: grid_b or matrix_b")
    return uncongeal_similarity(congealed, matrix_b, target_size, congealed_size=frame, legacy=legacy)


def repeat_rows(points: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-image points ``(N, K, C)`` repeated for a result of ``rows = N M`` rows (M heads, image-major);
    points that already have ``rows`` rows pass unchanged."""
    reps = rows // points.size(0)
    return points.repeat_interleave(reps, dim=0) if reps > 1 else points


def congeal_result(res, points_px: torch.Tensor, input_size: Size, *, legacy: bool = False) -> torch.Tensor:
    """:func:`congeal` through a transformer's result ``res`` (an ``AlignResult``: ``matrix``, ``flow``,
    ``grid``), whose input the points ``(N, K, 2)`` are pixels of. With K heads the rows are ``N K``."""
    return congeal(repeat_rows(points_px, res.grid.size(0)), input_size, matrix=res.matrix, flow=res.flow,
                   legacy=legacy)


def uncongeal_result(res, points_px: torch.Tensor, input_size: Size, *, legacy: bool = False) -> torch.Tensor:
    """Congealed-frame points -> pixels of the transformer's input through its result ``res``: the
    full grid sampled at the points with a flow (the congealed frame is the flow's size, whatever
    the grid's resolution), the matrix in closed form for a similarity-only transformer."""
    pts = repeat_rows(points_px, res.grid.size(0))
    if res.flow is not None:
        return uncongeal(pts, res.grid, input_size, congealed_size=tuple(res.flow.shape[1:3]), legacy=legacy)
    return uncongeal_similarity(pts, res.matrix, input_size, legacy=legacy)


def hflip_points_where(points: torch.Tensor, width: int, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the x of points ``(N, K, C>=2)`` (``x -> W - 1 - x``) in the images where
    ``mask (N,)`` is True; other columns (e.g. visibility) are kept."""
    flipped = hflip_points(points, width)
    return torch.where(mask.reshape(-1, 1, 1).to(torch.bool), flipped, points)


def permute_keypoints(
    points: torch.Tensor, permutation: Union[Sequence[int], torch.Tensor], mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Relabel key points ``(N, K, C)`` (any trailing columns) with ``out[:, k] = points[:, permutation[k]]``
    in the images where ``mask (N,)`` is True (all when None).

    Used after mirroring: the mirror of a left-side point plays the right-side point's role.
    """
    perm = torch.as_tensor(permutation, dtype=torch.long, device=points.device)
    permuted = points[:, perm]
    if mask is None:
        return permuted
    return torch.where(mask.reshape(-1, *([1] * (points.dim() - 1))).to(torch.bool), permuted, points)
