"""GANgealing's spatial transformer: similarity, flow, or both composed (similarity then flow).

The network regresses a warp from the image and samples the *original* input with it:

1. similarity passes (``iters`` of them): a ResBlock trunk regresses raw ``(r, s, tx, ty)`` from
   the image (tent-downsampled to ``flow_size``; later passes from the previous pass's output),
   mapped to a 2x3 matrix by angle = pi tanh(r), scale = exp(s). Passes compose as ``new = previous
   @ [S; 0 0 1]``, and each samples the input once, at ``flow_size`` (a similarity-only
   transformer's last pass samples at ``output_resolution`` instead).
2. the flow pass regresses a low-resolution flow (``flow_size / 8``, the original's; ``flow_size /
   flow_downsample`` in general) and a RAFT mask from the
   similarity-aligned image, convex-upsamples it to ``flow_size`` (the residual ``flow``), and
   composes it analytically with the similarity: ``grid = M @ [identity + flow; 1]``.
3. the grid is resized bilinearly to ``output_resolution`` and the input is sampled once, with
   mipmap anti-aliasing by default.

Both heads start at the identity (zero-initialised output layers). Grids, flows and matrices use
the convention of :mod:`gangealing.geometry.coords` (normalised, align_corners=False, inverse
warps).

State dict layout: the original ``ComposedSTN``'s keys, ``stns.0.*`` (similarity) and ``stns.1.*``
(flow), for every config; a single-transform config is ``stns.0.*`` alone. The constant tent
kernels ``stns.*.input_downsample.kernel_horz/vert`` are not saved (rebuilt); state dicts that
hold them (the original's) still load strictly, the keys are dropped on load.

K heads (``num_heads > 1``, the clustering variant): every layer predicts K warps. By default
every image is warped by every head (the original's ``warp_policy='cartesian'``) and results have
``N * K`` rows, image-major (row ``i * K + k`` is image ``i``, head ``k``;
``result.images.unflatten(0, (N, K))``); after the first similarity pass each row keeps its head
(later passes and the flow use head ``k`` for row ``i * K + k``, as the original's flow stage).
Passing ``heads`` (N,) picks one head per image for every pass (``warp_policy`` given as scores).
Without ``heads`` and with ``iters > 1`` the original would multiply rows by K again on each pass;
here they keep their head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from gangealing.config import STNConfig
from gangealing.geometry.coords import identity_grid
from gangealing.geometry.similarity import affine_grid, compose, similarity_from_params
from gangealing.geometry.warp import (
    MipmapStack,
    PADDING_MODES,
    sample_mipmap,
    compose_affine_grid,
    flip_grid,
    make_blur_filter,
    mipmap_levels,
    resize_grid,
)
from gangealing.models.flow_penalties import total_variation_loss
from gangealing.models.ops import ConvLayer, EqualConv2d, EqualLinear, ResBlock

MAX_NUM_LEVELS = 3.5  # mipmap levels of both heads' samplers, as the original


def stn_channels(cfg: STNConfig, resolution: int) -> int:
    """Width at ``resolution``: ``min(max_channels, table)``, table ``{<=32: 512, 64: 256 cm, 128: 128 cm, ...}``.

    Resolutions below 4 (reached by a flow trunk with flow_size 32, which the original cannot
    build) take the 512 entry of the small resolutions.
    """
    width = 512 if resolution <= 32 else 16384 // resolution * cfg.channel_multiplier
    return int(min(cfg.max_channels, width))


@dataclass(frozen=True)
class AlignResult:
    """What a spatial-transformer forward returns. ``B`` rows: ``N``, or ``N * K`` image-major for K heads."""

    images: torch.Tensor  # (B, C, R, R) aligned images at the output resolution
    grid: torch.Tensor  # (B, R, R, 2) full sampling grid into the input (normalised source coords)
    flow: Optional[torch.Tensor] = None  # (B, S, S, 2) residual flow at flow_size; None without flow
    matrix: Optional[torch.Tensor] = None  # (B, 2, 3) composed similarity; None without similarity
    flipped: Optional[torch.Tensor] = None  # (B,) bool, which rows came from the mirrored input (flip='auto')
    similarity_images: Optional[torch.Tensor] = None  # (B, C, S, S) similarity-aligned input (composed only)
    matrices: Tuple[torch.Tensor, ...] = ()  # composed (B, 2, 3) matrix after each similarity pass
    heads: Optional[torch.Tensor] = None  # (B,) long, the head that produced each row (K > 1)


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def _tent_kernel(factor: int) -> torch.Tensor:
    """Normalised tent ``[1, 3, ..., 2f-1, 2f-1, ..., 3, 1]`` (the original's ``BilinearDownsample``)."""
    ramp = torch.arange(1, 2 * factor + 1, 2, dtype=torch.float64)
    k = torch.cat([ramp, ramp.flip(0)])
    return (k / k.sum()).float()


class TentDownsample(nn.Module):
    """Separable tent-filter downsampling by an integer factor (reflect pad ``factor // 2``)."""

    def __init__(self, factor: int, channels: int):
        super().__init__()
        self.factor = factor
        k = _tent_kernel(factor)
        # Constants: not saved; the original's saved copies are dropped on load (see below).
        self.register_buffer("kernel_horz", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("kernel_vert", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, factor: Optional[int] = None) -> torch.Tensor:
        factor = self.factor if factor is None else factor
        kh, kv = self.kernel_horz, self.kernel_vert
        c = x.size(1)
        if factor != self.factor or kh.size(0) != c:
            k = _tent_kernel(factor).to(x)
            kh, kv = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
        pad = factor // 2
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        x = F.conv2d(x, kh.to(x.dtype), stride=(1, factor), groups=c)  # (N, C, H + 2p, W / f)
        return F.conv2d(x, kv.to(x.dtype), stride=(factor, 1), groups=c)  # (N, C, H / f, W / f)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Original checkpoints carry the constant kernels; drop them so strict loading works.
        for name in ("kernel_horz", "kernel_vert"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _WarperState(nn.Module):
    """Holds the original ``MipmapWarp``'s ``blur_filter`` buffer so state dicts keep its key.

    The sampling itself is :func:`gangealing.geometry.warp.mipmap_warp` (which builds the same
    constant filter).
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("blur_filter", make_blur_filter().view(1, 1, 4, 4))


class _Trunk(nn.Module):
    """Tent downsample to flow_size, 1x1 conv, ResBlocks, 3x3 conv (shared layout of both transforms)."""

    def __init__(self, cfg: STNConfig, is_flow: bool):
        super().__init__()
        size = cfg.flow_size
        log_size = int(round(math.log2(size)))
        if 2**log_size != size:
            raise ValueError(f"flow_size must be a power of two, got {size}")
        if cfg.input_size % size:
            raise ValueError(f"input_size ({cfg.input_size}) must be a multiple of flow_size ({size})")
        self.flow_size = size
        self.input_size = cfg.input_size
        if cfg.input_size > size:
            self.input_downsample = TentDownsample(cfg.input_size // size, cfg.image_channels)
        ch = lambda r: stn_channels(cfg, r)  # noqa: E731
        convs = [ConvLayer(cfg.image_channels, ch(size), 1)]
        # Similarity: halve down to 4x4. Flow: four blocks, the first log2(flow_downsample) halving
        # (three: flow_size / 8, the original's).
        end_log = log_size - 4 if is_flow else 2
        if end_log < 0 or (not is_flow and log_size < 3):
            raise ValueError(f"flow_size {size} is too small for the {'flow' if is_flow else 'similarity'} transform")
        num_down = int(math.log2(cfg.flow_downsample))
        if is_flow and (cfg.flow_downsample < 2 or 2**num_down != cfg.flow_downsample or num_down > log_size - end_log):
            raise ValueError(f"flow_downsample must be a power of two from 2 to {min(16, 2 ** (log_size - end_log))} "
                             f"for flow_size {size}, got {cfg.flow_downsample}")
        in_ch, downs = ch(size), 0
        for i in range(log_size, end_log, -1):
            down = (not is_flow) or downs < num_down
            downs += down
            out_ch = ch(2 ** (i - 1))
            convs.append(ResBlock(in_ch, out_ch, downsample=down))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(in_ch, ch(4), 3)
        self.out_channels = ch(4)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(N, C4, h, w)`` of images ``(N, C, H, W)``, H a multiple of flow_size."""
        size = x.size(-1)
        if size > self.flow_size:
            if size % self.flow_size or x.size(-2) != size:
                raise ValueError(f"STN input must be square with a side that is a multiple of {self.flow_size}, got {tuple(x.shape[-2:])}")
            factor = size // self.flow_size
            if hasattr(self, "input_downsample"):
                x = self.input_downsample(x, factor)  # (N, C, S, S)
            else:
                x = TentDownsample(factor, x.size(1)).to(x)(x)
        elif size != self.flow_size:
            raise ValueError(f"STN input must be at least flow_size={self.flow_size} pixels, got {size}")
        return self.final_conv(self.convs(x))  # (N, C4, h, w)


class SimilarityHead(nn.Module):
    """Linear regression of ``4 * K`` raw similarity parameters, zero-initialised (identity)."""

    def __init__(self, in_features: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.linear = nn.Linear(in_features, 4 * num_heads)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("one_hot", torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3))  # kept for the key
        self.warper = _WarperState()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Raw ``(N, 4, K)`` parameters ``(r, s, tx, ty)`` per head."""
        return self.linear(features).view(features.size(0), 4, self.num_heads)  # (N, 4, K)

    def head_rows(self, k: int) -> List[Tuple[nn.Parameter, torch.Tensor]]:
        """The rows (dim 0) of each parameter that only head ``k`` uses: output ``i K + k`` is its parameter ``i``."""
        rows = torch.arange(4) * self.num_heads + k  # (4,)
        return [(self.linear.weight, rows), (self.linear.bias, rows)]


class FlowHead(nn.Module):
    """Low-resolution flow (zero-initialised: identity) plus a RAFT convex-upsampling mask."""

    def __init__(self, channels: int, num_heads: int, factor: int):  # factor: STNConfig.flow_downsample
        super().__init__()
        self.num_heads = num_heads
        self.factor = factor
        self.flow_out = nn.Sequential(EqualConv2d(channels, channels, 3, padding=1), nn.ReLU(), EqualConv2d(channels, 2 * num_heads, 3, padding=1))
        nn.init.zeros_(self.flow_out[-1].weight)
        nn.init.zeros_(self.flow_out[-1].bias)
        self.mask_out = nn.Sequential(EqualConv2d(channels, channels, 3, padding=1), nn.ReLU(), EqualConv2d(channels, 9 * factor * factor * num_heads, 3, padding=1))
        self.warper = _WarperState()

    def forward(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Low-res flow ``(N, K, 2, h, w)`` and mask logits ``(N, K, 9 f^2, h, w)``."""
        n, _, h, w = features.shape
        flow = self.flow_out(features).view(n, self.num_heads, 2, h, w)
        mask = self.mask_out(features).view(n, self.num_heads, -1, h, w)
        return flow, mask

    def head_rows(self, k: int) -> List[Tuple[nn.Parameter, torch.Tensor]]:
        """The rows (dim 0) of each parameter that only head ``k`` uses (the last conv of the flow and of
        the mask: head-major outputs; the layers before them are shared)."""
        out = []
        for conv in (self.flow_out[-1], self.mask_out[-1]):
            per = conv.weight.shape[0] // self.num_heads
            rows = torch.arange(per) + per * k  # (per,)
            out += [(conv.weight, rows), (conv.bias, rows)]
        return out


@torch.no_grad()
def copy_head(stn: nn.Module, src: int, dst: int, optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Make head ``dst`` of a K-head transformer warp as head ``src`` does: copies the rows of every
    head's own output layers (similarity and flow; the trunk is shared by all heads) and, with
    ``optimizer`` (Adam-like: per-parameter state tensors shaped as the parameter), the same rows of
    its state, so the copy also continues the source head's step sizes."""
    heads = [m for m in stn.modules() if isinstance(m, (SimilarityHead, FlowHead))]
    k = heads[0].num_heads if heads else 1
    if not (0 <= src < k and 0 <= dst < k):
        raise ValueError(f"heads {src} and {dst} must lie in [0, {k}) for this {k}-head transformer")
    for m in heads:
        for (p, a), (_, b) in zip(m.head_rows(src), m.head_rows(dst)):
            a, b = a.to(p.device), b.to(p.device)
            p[b] = p[a]
            copy_state_rows(optimizer, p, a, b)


@torch.no_grad()
def copy_state_rows(optimizer: Optional[torch.optim.Optimizer], p: nn.Parameter, src, dst) -> None:
    """Copy rows ``src`` of ``optimizer``'s per-parameter state tensors of ``p`` (Adam's moments:
    shaped as ``p``) to rows ``dst``; nothing without an optimizer or state."""
    for v in (optimizer.state.get(p, {}) if optimizer is not None else {}).values():
        if torch.is_tensor(v) and v.shape == p.shape:
            v[dst] = v[src]


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """RAFT convex upsampling: ``(N, 2, h, w)`` flow and ``(N, 9 f^2, h, w)`` mask -> ``(N, f h, f w, 2)``.

    Each of the ``f x f`` sub-pixels of a low-res pixel is a softmax-weighted (over 9) combination
    of the zero-padded 3x3 neighbourhood of ``f * flow`` (the original scales the flow by ``f``).
    Mask channel ``j * f^2 + dy * f + dx`` weighs neighbour ``j`` for sub-pixel ``(dy, dx)``.
    """
    n, _, h, w = flow.shape
    weights = mask.view(n, 1, 9, factor, factor, h, w).softmax(dim=2)
    neigh = F.unfold(factor * flow, [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
    up = (weights * neigh).sum(dim=2)  # (N, 2, f, f, h, w)
    return up.permute(0, 4, 2, 5, 3, 1).reshape(n, factor * h, factor * w, 2)


class SimilaritySTN(_Trunk):
    """Similarity regressor (keys as the original's similarity ``SpatialTransformer``)."""

    def __init__(self, cfg: STNConfig):
        super().__init__(cfg, is_flow=False)
        c = self.out_channels
        self.final_linear = EqualLinear(c * 4 * 4, c, activation="fused_lrelu")
        self.warp_head = SimilarityHead(c, cfg.num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw parameters ``(N, 4, K)`` of images ``(N, C, H, W)``."""
        feats = self.trunk(x)  # (N, C4, 4, 4)
        feats = self.final_linear(feats.flatten(1))  # (N, C4)
        return self.warp_head(feats)  # (N, 4, K)


class FlowSTN(_Trunk):
    """Flow regressor (keys as the original's flow ``SpatialTransformer``)."""

    def __init__(self, cfg: STNConfig):
        super().__init__(cfg, is_flow=True)
        self.warp_head = FlowHead(self.out_channels, cfg.num_heads, cfg.flow_downsample)
        self.register_buffer("identity_flow", identity_grid(cfg.flow_size), persistent=False)  # (1, S, S, 2)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Low-res flow ``(N, K, 2, h, w)`` and mask ``(N, K, 9 f^2, h, w)``."""
        return self.warp_head(self.trunk(x))


# ------------------------------------------------------------------------------------------------
# The spatial transformer
# ------------------------------------------------------------------------------------------------


class _Sampler:
    """Samples one batch of source images for ``N * R`` grids (R rows per image, image-major).

    The mipmap stack is built once per forward and shared by all passes; several rows per image
    are sampled by stacking their grids along the height instead of repeating the images.
    """

    def __init__(self, source: torch.Tensor, padding_mode: str, antialias: bool):
        self.source = source
        self.padding_mode = padding_mode
        self.stack = MipmapStack(source) if antialias else None

    def __call__(self, grid: torch.Tensor) -> torch.Tensor:
        n = self.source.size(0)
        rows, h, w, _ = grid.shape
        r = rows // n
        grid = grid.to(self.source.dtype)
        flat = grid.reshape(n, r * h, w, 2)  # (N, R H, W, 2)
        if self.stack is None:
            out = F.grid_sample(self.source, flat, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)
        else:
            levels = mipmap_levels(grid, self.source.shape[-2:], MAX_NUM_LEVELS).reshape(n, r * h, w)  # per-row neighbours
            out = sample_mipmap(self.stack, flat, levels, self.padding_mode)  # (N, C, R H, W)
        if r == 1:
            return out
        c = out.size(1)
        return out.view(n, c, r, h, w).transpose(1, 2).reshape(rows, c, h, w)  # (N R, C, H, W)


def _pick_heads(values: torch.Tensor, heads: Optional[torch.Tensor], expand: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-head outputs ``(B, K, ...)`` -> rows ``(B', ...)`` and the head of each row.

    ``expand``: every head for every input row (``B' = B K``, image-major); otherwise the head
    ``heads[b]`` of each row (``B' = B``).
    """
    b, k = values.shape[:2]
    if k == 1:
        return values[:, 0], heads
    if expand:
        rows = values.reshape(b * k, *values.shape[2:])
        return rows, torch.arange(k, device=values.device).repeat(b)
    return values[torch.arange(b, device=values.device), heads], heads


class SpatialTransformer(nn.Module):
    """GANgealing's spatial transformer (similarity, flow, or similarity then flow). See the module docstring."""

    def __init__(self, cfg: STNConfig):
        super().__init__()
        transforms = tuple(cfg.transforms)
        if transforms not in {("similarity",), ("flow",), ("similarity", "flow")}:
            raise ValueError(f"transforms must be ('similarity',), ('flow',) or ('similarity', 'flow'), got {transforms}")
        self.cfg = cfg
        self.transforms = transforms
        self.num_heads = cfg.num_heads
        self.flow_size = cfg.flow_size
        self.stns = nn.ModuleList([SimilaritySTN(cfg) if t == "similarity" else FlowSTN(cfg) for t in transforms])

    @property
    def similarity(self) -> Optional[SimilaritySTN]:
        return self.stns[0] if self.transforms[0] == "similarity" else None

    @property
    def flow_net(self) -> Optional[FlowSTN]:
        return self.stns[-1] if self.transforms[-1] == "flow" else None

    # -- forward -----------------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        *,
        output_resolution: Optional[int] = None,
        iters: int = 1,
        padding_mode: str = "border",
        antialias: bool = True,
        flip: str = "none",
        heads: Optional[torch.Tensor] = None,
        source: Optional[torch.Tensor] = None,
    ) -> AlignResult:
        """Align images ``x`` (N, C, H, W), H = ``input_size`` (or ``flow_size``).

        ``output_resolution`` (default flow_size) sizes the output grid and images; ``iters``
        repeats the similarity pass on its own output; ``padding_mode`` is grid_sample's (border,
        reflection, zeros) for every pass; ``antialias`` uses mipmap sampling (the original
        always does); ``heads`` (N,) long picks one head per image when K > 1; ``source``
        (N, C, H', W'), e.g. a higher-resolution copy of ``x``, is sampled instead of ``x`` (the
        original's ``input_img_for_sampling``; grids are normalised, so any size works).

        ``flip='auto'``: also align the mirrored images and keep, per row, the one whose residual
        flow has the smaller total variation (strictly smaller for the mirror; ties keep the
        original). For mirrored rows, ``images``, ``flow`` and ``similarity_images`` are those of
        the mirror, while ``grid`` and ``matrix`` (and ``matrices``) have their x negated so that
        they address the unmirrored input; ``grid == matrix @ [identity + flow; 1]`` still holds.
        """
        if flip == "none":
            return self._forward(x, output_resolution, iters, padding_mode, antialias, heads, source=source)
        if flip != "auto":
            raise ValueError(f"flip must be 'none' or 'auto', got {flip!r}")
        if self.flow_net is None:
            raise ValueError("flip='auto' needs a flow transform (it compares residual-flow smoothness)")
        both_heads = None if heads is None else torch.cat([heads, heads])
        both_source = None if source is None else torch.cat([source, source.flip(3)])
        res = self._forward(torch.cat([x, x.flip(3)]), output_resolution, iters, padding_mode, antialias, both_heads, source=both_source)  # 2N (x R) rows
        tv = total_variation_loss(res.flow, reduce_batch=False).view(2, -1)  # (2, B)
        mirrored = tv.argmin(dim=0).bool()  # (B,) ties -> original

        def pick(t: Optional[torch.Tensor], mirror_fn=None) -> Optional[torch.Tensor]:
            if t is None:
                return None
            a, b = t.chunk(2)
            if mirror_fn is not None:
                b = mirror_fn(b)
            return torch.where(mirrored.view(-1, *([1] * (t.dim() - 1))), b, a)

        negate_x_row = lambda m: torch.cat([-m[:, :1], m[:, 1:]], dim=1)  # noqa: E731  F @ M
        return AlignResult(
            images=pick(res.images),
            grid=pick(res.grid, flip_grid),
            flow=pick(res.flow),
            matrix=pick(res.matrix, negate_x_row),
            flipped=mirrored,
            similarity_images=pick(res.similarity_images),
            matrices=tuple(pick(m, negate_x_row) for m in res.matrices),
            heads=None if res.heads is None else res.heads[: mirrored.numel()],
        )

    def _forward(
        self,
        x: torch.Tensor,
        output_resolution: Optional[int],
        iters: int,
        padding_mode: str,
        antialias: bool,
        heads: Optional[torch.Tensor],
        sample_output: bool = True,
        source: Optional[torch.Tensor] = None,
    ) -> AlignResult:
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if iters > 1 and self.similarity is None:
            raise ValueError("iters > 1 iterates the similarity transform; this STN has none")
        if heads is not None:
            heads = heads.to(device=x.device, dtype=torch.long).view(-1)
            if heads.numel() != x.size(0):
                raise ValueError(f"heads must have one entry per image ({x.size(0)}), got {heads.numel()}")
            if self.num_heads == 1:
                heads = None
        expand = self.num_heads > 1 and heads is None  # first pass warps every image with every head
        out_res = self.flow_size if output_resolution is None else int(output_resolution)
        size = self.flow_size
        if source is not None and source.size(0) != x.size(0):
            raise ValueError(f"source must hold one image per input ({x.size(0)}), got {source.size(0)}")
        sample = _Sampler(x if source is None else source, padding_mode, antialias)

        matrix, sim_images, matrices = None, None, []
        images, grid, flow = None, None, None
        sim = self.similarity
        if sim is not None:
            cur = x
            for it in range(iters):
                last = it == iters - 1
                raw = sim(cur)  # (B, 4, K)
                params, heads = _pick_heads(raw.transpose(1, 2), heads, expand and matrix is None)  # (B', 4)
                step = similarity_from_params(*params.unbind(-1))  # (B', 2, 3)
                matrix = step if matrix is None else compose(matrix, step)  # previous, then this pass
                matrices.append(matrix)
                res_t = out_res if (last and self.flow_net is None) else size
                grid = affine_grid(matrix, res_t)  # (B', res_t, res_t, 2)
                if last and self.flow_net is None and not sample_output:
                    break
                cur = sample(grid)  # (B', C, res, res)
            if self.flow_net is None:
                images = cur if sample_output else None
            else:
                sim_images = cur  # (B', C, S, S)

        fnet = self.flow_net
        if fnet is not None:
            reg_in = x if sim_images is None else sim_images
            low, mask = fnet(reg_in)  # (B, K, 2, h, w), (B, K, 9 f^2, h, w)
            # After a similarity pass rows already carry their head; a flow-only STN expands here.
            expand_flow = expand and sim is None
            low, _ = _pick_heads(low, heads, expand_flow)
            mask, heads = _pick_heads(mask, heads, expand_flow)
            flow = convex_upsample(low, mask, fnet.warp_head.factor)  # (B', S, S, 2)
            grid = fnet.identity_flow.to(flow.dtype) + flow  # (B', S, S, 2)
            if matrix is not None:
                grid = compose_affine_grid(matrix, grid)  # similarity, then flow
            grid = resize_grid(grid, out_res)  # (B', R, R, 2)
            images = sample(grid) if sample_output else None

        return AlignResult(
            images=images,
            grid=grid,
            flow=flow,
            matrix=matrix,
            similarity_images=sim_images,
            matrices=tuple(matrices),
            heads=heads if self.num_heads > 1 else None,
        )

    # -- checkpoints -------------------------------------------------------------------------

    def load_original_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        """Load an original GANgealing STN state dict (``ComposedSTN`` keys, or a single
        ``SpatialTransformer``'s unprefixed keys), dropping the constants the original skips too."""
        sd: Dict[str, torch.Tensor] = dict(state_dict)
        if not any(k.startswith("stns.") for k in sd):
            sd = {f"stns.0.{k}": v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if not k.endswith("warp_head.rebias")}
        return self.load_state_dict(sd, strict=strict)
