"""The user-facing predictor: a trained GANgealing model applied to real images of any size.

:class:`Congealer` owns the model (spatial transformer, and the cluster classifier of a clustering
model) and its device, and exposes what applications need::

    c = Congealer.from_checkpoint("cat")            # a released name, our checkpoint or an original one
    res = c.align(images)                           # CongealResult: congealed images, grids into the inputs, ...
    avg = c.average(images)                         # (C, R, R) average congealed image
    pts_b = c.transfer_points(img_a, img_b, pts_a)  # key points A -> B through the congealed frame
    scores = c.flow_scores(images)                  # (N,) higher = smoother flow = better aligned

Input images
------------
``images`` are ``(N, C, H, W)`` float tensors in [-1, 1], any ``H x W`` (one size per call). The
transformer sees them at its ``input_size`` (``S``), prepared as the original ``prepare_data.py
--pad border`` does: the long side is resized to ``S`` (bilinear with anti-aliasing), the short side
to ``round(S * short / long)``, and it is padded to ``S`` by repeating the edge pixels
(``floor`` of the padding before, the rest after). Square images of size ``S`` go in untouched.
:class:`InputFrame` holds this map.

Every output that refers to positions is expressed in the ORIGINAL images: ``grid`` holds
normalised ``(x, y)`` positions of the original image (``align_corners=False``; outside [-1, 1]
where the warp leaves the image), ``matrix`` maps normalised congealed coordinates to normalised
original coordinates, and key points are pixels of the original image. Congealed images are
sampled from the original (full resolution, mipmap anti-aliasing) with that grid, so large inputs
give sharp outputs at any ``output_resolution``.

Flips and clusters
------------------
A single-cluster model with a flow decides per image whether to align the image or its mirror
(``flip=True``: the one with the smoother residual flow, the original's flip inference). A
clustering model routes every image through its cluster classifier, which also says whether to
mirror it, or, with ``routing="targets"`` (:mod:`gangealing.routing`, an extension), to the head
whose congealed image is nearest that head's GAN target, as training assigns generated samples;
a clustering checkpoint without a classifier cannot route through one and raises a
:class:`~gangealing.checkpoint.CheckpointError` (pass ``cluster=`` to force one, or route by targets). Where an image was
mirrored, ``images`` and ``flow`` are those of the mirror, while ``grid`` and ``matrix`` address the
unmirrored original (their x is negated), so ``grid_sample(original, grid)`` always reproduces
``images``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .checkpoint import Checkpoint, CheckpointError

if TYPE_CHECKING:
    from .routing import TargetRouter

Device = Union[str, torch.device, None]


def default_device() -> torch.device:
    """The first accelerator when there is one, else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# Input frame: original image <-> the transformer's square input
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFrame:
    """Map between an original ``height x width`` image and the transformer's ``size x size`` input.

    Per axis ``input_px = (original_px + 0.5) * scale - 0.5 + offset`` (pixel centres at integers),
    the geometry of :func:`gangealing.data.preprocess.preprocess_transform` in ``'border'`` mode.
    """

    height: int
    width: int
    size: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    @classmethod
    def for_image(cls, height: int, width: int, size: int) -> "InputFrame":
        from .data.preprocess import preprocess_transform

        if (height, width) == (size, size):
            return cls(height, width, size, 1.0, 1.0, 0.0, 0.0)
        t = preprocess_transform(height, width, size, "border")
        return cls(height, width, size, float(t.scale_x), float(t.scale_y), float(t.offset_x), float(t.offset_y))

    @property
    def is_identity(self) -> bool:
        return (self.height, self.width) == (self.size, self.size)

    @property
    def resized_hw(self) -> Tuple[int, int]:
        """Size of the resized image before padding."""
        return int(round(self.height * self.scale_y)), int(round(self.width * self.scale_x))

    def _vec(self, like: torch.Tensor, a: float, b: float) -> torch.Tensor:
        return torch.tensor([a, b], dtype=like.dtype, device=like.device)

    def to_input(self, points: torch.Tensor) -> torch.Tensor:
        """Original-image pixels ``(..., 2)`` -> transformer-input pixels."""
        scale, off = self._vec(points, self.scale_x, self.scale_y), self._vec(points, self.offset_x, self.offset_y)
        return (points + 0.5) * scale - 0.5 + off

    def to_original(self, points: torch.Tensor) -> torch.Tensor:
        """Transformer-input pixels ``(..., 2)`` -> original-image pixels."""
        scale, off = self._vec(points, self.scale_x, self.scale_y), self._vec(points, self.offset_x, self.offset_y)
        return (points + 0.5 - off) / scale - 0.5

    def _norm_affine(self) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        # Normalised input u -> normalised original: u_o = a u + b per axis, from
        # x_in = ((u + 1) S - 1) / 2, the pixel map above, and u_o = (2 x_o + 1) / W - 1.
        s = self.size
        nw, nh = self.width * self.scale_x, self.height * self.scale_y
        a = (s / nw, s / nh)
        b = ((s - 2 * self.offset_x) / nw - 1.0, (s - 2 * self.offset_y) / nh - 1.0)
        return a, b

    def grid_to_original(self, grid: torch.Tensor) -> torch.Tensor:
        """A grid ``(N, H, W, 2)`` of normalised input positions -> normalised original positions."""
        if self.is_identity:
            return grid
        a, b = self._norm_affine()
        return grid * self._vec(grid, *a) + self._vec(grid, *b)

    def grid_to_input(self, grid: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`grid_to_original`."""
        if self.is_identity:
            return grid
        a, b = self._norm_affine()
        return (grid - self._vec(grid, *b)) / self._vec(grid, *a)

    def matrix_to_original(self, matrix: torch.Tensor) -> torch.Tensor:
        """A ``(N, 2, 3)`` map to normalised input coordinates -> a map to normalised original coordinates."""
        if self.is_identity:
            return matrix
        a, b = self._norm_affine()
        return matrix * self._vec(matrix, *a).view(1, 2, 1) + torch.cat(
            [matrix.new_zeros(1, 2, 2), self._vec(matrix, *b).view(1, 2, 1)], dim=2)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Original images ``(N, C, H, W)`` -> transformer input ``(N, C, S, S)`` (resize long side, edge-pad)."""
        if self.is_identity:
            return images
        nh, nw = self.resized_hw
        x = images
        if (nh, nw) != (self.height, self.width):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)  # (N, C, nh, nw)
        top, left = int(self.offset_y), int(self.offset_x)
        pad = (left, self.size - nw - left, top, self.size - nh - top)
        return F.pad(x, pad, mode="replicate") if any(pad) else x  # (N, C, S, S)


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CongealResult:
    """What :meth:`Congealer.align` returns for ``N`` images (one row per image)."""

    images: torch.Tensor  # (N, C, R, R) congealed images
    grid: torch.Tensor  # (N, R, R, 2) sampling grid into the ORIGINAL images (normalised, align_corners=False)
    flow: Optional[torch.Tensor]  # (N, F, F, 2) residual flow in the congealed frame; None without flow
    matrix: Optional[torch.Tensor]  # (N, 2, 3) similarity: congealed -> original normalised coords; None without
    flipped: torch.Tensor  # (N,) bool, aligned through the mirror
    cluster: Optional[torch.Tensor]  # (N,) long for clustering models, else None
    frame: Optional[InputFrame] = None  # the original <-> transformer-input map of this batch


@dataclass(frozen=True)
class FlowScores:
    """Flow scores of ``N`` images and the orientation / cluster each was scored in."""

    scores: torch.Tensor  # (N,) minus the total variation of the residual flow; higher is better
    flipped: torch.Tensor  # (N,) bool
    cluster: Optional[torch.Tensor]  # (N,) long for clustering models, else None


@dataclass(frozen=True)
class _Aligned:
    """Internal: the transformer's view of a batch (input frame, routing, raw STN output)."""

    x: torch.Tensor  # (N, C, S, S) transformer input (unmirrored)
    frame: InputFrame
    res: object  # AlignResult in the input frame; grid/matrix address the unmirrored input
    flipped: torch.Tensor  # (N,) bool
    cluster: Optional[torch.Tensor]  # (N,) long or None
    heads: Optional[torch.Tensor]  # heads passed to the STN (None for K = 1)


def _batch(images: torch.Tensor) -> torch.Tensor:
    """Accept one image ``(C, H, W)`` as a batch of one."""
    return images.unsqueeze(0) if images.dim() == 3 else images


def _negate_x_row(m: torch.Tensor) -> torch.Tensor:
    return torch.cat([-m[:, :1], m[:, 1:]], dim=1)


# ------------------------------------------------------------------------------------------------
# The predictor
# ------------------------------------------------------------------------------------------------


def target_router(model, ckpt: Checkpoint, loss: Optional[str], device: torch.device) -> "TargetRouter":
    """The nearest-target router of a clustering model loaded with its generator."""
    from .routing import TargetRouter

    if model.generator is None or model.target is None:
        raise CheckpointError("routing by GAN targets needs the generator and the target latents in the checkpoint; "
                              "this one has none: use its cluster classifier (--route classifier)")
    train = dict(ckpt.meta.get("train") or {})
    loss = loss or train.get("loss")
    if not loss:
        from .losses.perceptual import DEFAULT_PERCEPTUAL_LOSS

        loss = DEFAULT_PERCEPTUAL_LOSS
    return TargetRouter.from_model(model.generator, model.target, int(model.stn.cfg.flow_size), loss=loss,
                                   flips=bool(train.get("flips", False)), device=device)


class Congealer:
    """A trained GANgealing model on one device, applied to real images (see the module docstring)."""

    def __init__(self, stn: torch.nn.Module, classifier: Optional[torch.nn.Module] = None, *,
                 iters: int = 1, padding_mode: str = "border", flip: Optional[bool] = None,
                 output_resolution: Optional[int] = None, device: Device = None, meta: Optional[dict] = None,
                 router: Optional["TargetRouter"] = None):
        self.device = torch.device(device) if device is not None else next(stn.parameters()).device
        self.stn = stn.to(self.device).eval()
        self.classifier = classifier.to(self.device).eval() if classifier is not None else None
        # Nearest-target routing (gangealing.routing); when set it routes instead of the classifier.
        self.router = router.to(self.device) if router is not None else None
        if self.router is not None and self.router.num_clusters != self.num_clusters:
            raise ValueError(f"the router has {self.router.num_clusters} targets but the model has "
                             f"{self.num_clusters} clusters")
        self.iters = int(iters)
        self.padding_mode = padding_mode
        has_flow = self.stn.flow_net is not None
        # Flip inference compares flow smoothness, so it needs a flow (clustering models flip by classifier).
        self.flip = bool(has_flow and self.num_clusters == 1) if flip is None else bool(flip)
        if self.flip and not has_flow and self.num_clusters == 1:
            raise ValueError("flip inference compares residual-flow smoothness; this transformer has no flow")
        self.output_resolution = output_resolution
        self.meta = dict(meta or {})

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, source: Union[str, os.PathLike, Checkpoint], *, device: Device = None,
                        iters: Optional[int] = None, padding_mode: Optional[str] = None, flip: Optional[bool] = None,
                        output_resolution: Optional[int] = None, input_size: Optional[int] = None,
                        routing: Optional[str] = None, route_loss: Optional[str] = None) -> "Congealer":
        """Load a model from a path (ours or any format :func:`gangealing.io.import_checkpoint` reads),
        a :class:`Checkpoint`, or a released model name (:mod:`gangealing.pretrained`).

        The checkpoint's test-time settings (``meta["test"]``: ``iters``, ``padding_mode``, ``flip``)
        apply unless given here. ``device`` defaults to the first GPU when there is one, else CPU.
        ``input_size``: feed the transformer at this size instead of the one it was trained at (see
        :meth:`with_input_size`). ``routing``: how a clustering model picks each image's cluster,
        ``"classifier"`` (the original's) or ``"targets"`` (nearest GAN target, :mod:`gangealing.routing`;
        needs the generator in the checkpoint; ``route_loss`` defaults to the model's training loss).
        Default: the checkpoint's ``meta["test"]["routing"]``, else the classifier, or the targets
        when the checkpoint has no classifier but has the generator (a model straight from ``train``).
        """
        from .build import load_model
        from .pretrained import resolve_checkpoint
        from .routing import ROUTINGS

        ckpt = resolve_checkpoint(source)
        test = dict(ckpt.meta.get("test") or {})
        routing = routing if routing is not None else test.get("routing")
        if routing is not None and routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
        clusters = int(ckpt.config.get("stn", {}).get("num_heads", 1))
        if routing is None:  # the stated automatic choice: what this checkpoint can route with
            routing = "targets" if "classifier" not in ckpt.config and "generator" in ckpt.config else "classifier"
        dev = torch.device(device) if device is not None else default_device()
        by_targets = routing == "targets" and clusters > 1
        model = load_model(ckpt, device=dev, with_generator=by_targets)
        router = target_router(model, ckpt, route_loss, dev) if by_targets else None
        congealer = cls(
            model.stn,
            model.classifier,
            iters=int(iters if iters is not None else test.get("iters", 1)),
            padding_mode=padding_mode if padding_mode is not None else test.get("padding_mode", "border"),
            flip=flip if flip is not None else test.get("flip"),
            output_resolution=output_resolution,
            device=dev,
            meta=ckpt.meta,
            router=router,
        )
        return congealer if input_size is None else congealer.with_input_size(input_size)

    def with_input_size(self, size: int) -> "Congealer":
        """This model with its transformer (and cluster classifier) built for ``size`` pixel inputs,
        the original's ``--real_size``; the same weights, on the same device.

        Only the input downsampling to ``flow_size`` depends on the input size, so the weights fit
        any multiple of ``flow_size``. Images are then prepared to ``size`` (:class:`InputFrame`)
        and the legacy key-point normalisation uses ``S = size``: the original's ``pck.py`` builds
        the transformer for the evaluation's 256 px images, whatever size it was trained at.
        """
        from dataclasses import replace

        from .build import build

        size, f = int(size), self.flow_size
        if size == self.input_size:
            return self
        if size < f or size % f:
            raise ValueError(f"input size {size} must be a multiple of the model's flow size {f} "
                             f"(e.g. {f}, {2 * f} or {4 * f})")

        def rebuilt(name: str, module: Optional[torch.nn.Module]) -> Optional[torch.nn.Module]:
            if module is None:
                return None
            new = build(name, replace(module.cfg, input_size=size))
            new.load_state_dict(module.state_dict())
            return new.to(self.device).eval()

        return Congealer(rebuilt("stn", self.stn), rebuilt("classifier", self.classifier), iters=self.iters,
                         padding_mode=self.padding_mode, flip=self.flip, output_resolution=self.output_resolution,
                         device=self.device, meta=self.meta, router=self.router)

    def with_settings(self, *, iters: Optional[int] = None, padding_mode: Optional[str] = None,
                      flip: Optional[bool] = None) -> "Congealer":
        """This model with other test-time settings: a new predictor that shares the same modules
        (nothing is copied), so a caller can try a setting without changing the predictor others use."""
        return Congealer(self.stn, self.classifier, iters=self.iters if iters is None else iters,
                         padding_mode=self.padding_mode if padding_mode is None else padding_mode,
                         flip=self.flip if flip is None else flip, output_resolution=self.output_resolution,
                         device=self.device, meta=self.meta, router=self.router)

    # -- properties --------------------------------------------------------------------------

    @property
    def num_clusters(self) -> int:
        return int(self.stn.cfg.num_heads)

    @property
    def input_size(self) -> int:
        """Side of the transformer's square input (images are prepared to it, see :class:`InputFrame`)."""
        return int(self.stn.cfg.input_size)

    @property
    def flow_size(self) -> int:
        """Side of the congealed frame (key points in the congealed frame are pixels of it)."""
        return int(self.stn.cfg.flow_size)

    @property
    def has_flow(self) -> bool:
        return self.stn.flow_net is not None

    def resolution(self, output_resolution: Optional[int] = None) -> int:
        """The output resolution used: the argument, else the predictor's, else ``flow_size``."""
        r = output_resolution if output_resolution is not None else self.output_resolution
        return int(r) if r is not None else self.flow_size

    def require_routing(self) -> None:
        """Raise a clear error when a clustering model has no classifier (nor router) to route images with."""
        if self.num_clusters > 1 and self.classifier is None and self.router is None:
            raise CheckpointError(
                f"this clustering model ({self.num_clusters} clusters) has no cluster classifier, so real images "
                "cannot be routed to a cluster; train one with `gangealing train-classifier` (or use a checkpoint "
                "that includes it), route by the GAN targets instead (routing='targets' / --route targets), "
                "or pick a cluster explicitly (cluster=K / --cluster K)")

    def check_cluster(self, cluster: Union[int, torch.Tensor, None]) -> None:
        """Raise a ``ValueError`` naming the valid range when ``cluster`` is not one of this model's."""
        if cluster is None:
            return
        k = self.num_clusters
        values = torch.as_tensor(cluster)
        if values.is_floating_point() or values.dtype == torch.bool or ((values < 0) | (values >= k)).any():
            shown = cluster if not isinstance(cluster, torch.Tensor) else cluster.tolist()
            raise ValueError(f"cluster {shown} does not exist: this model has {k} cluster{'s' if k > 1 else ''} "
                             f"(0..{k - 1})")

    def frame(self, height: int, width: int) -> InputFrame:
        """The :class:`InputFrame` of an original ``height x width`` image."""
        return InputFrame.for_image(int(height), int(width), self.input_size)

    def prepare(self, images: torch.Tensor) -> Tuple[torch.Tensor, InputFrame]:
        """Images ``(N, C, H, W)`` in [-1, 1] -> transformer input ``(N, C, S, S)`` on the device, and its frame."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        fr = self.frame(images.size(-2), images.size(-1))
        return fr.prepare(images.to(self.device, torch.float32)), fr

    # -- routing and the transformer ---------------------------------------------------------

    def route(self, x: torch.Tensor, cluster: Union[int, torch.Tensor, None] = None) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """Cluster ``(N,)`` (None for one cluster) and mirror flags ``(N,)`` from the classifier, or
        from the nearest GAN target when the predictor has a :attr:`router`.

        ``x`` is transformer input ``(N, C, S, S)``. ``cluster`` forces a cluster (int or ``(N,)``);
        the classifier, when present, then only decides the mirror (the larger of the two logits
        of that cluster), as the original's ``run_flip_target`` (a flips router: the nearer orientation).
        """
        n = x.size(0)
        no_flip = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.check_cluster(cluster)
        if self.num_clusters == 1:
            return None, no_flip
        if self.router is not None:
            cl = None if cluster is None else torch.as_tensor(cluster, dtype=torch.long, device=x.device).expand(n).clone()
            if cl is not None and not self.router.flips:
                return cl, no_flip
            return self.router.route(self.stn, x, cl, iters=self.iters, padding_mode=self.padding_mode)
        if cluster is not None:
            cl = torch.as_tensor(cluster, dtype=torch.long, device=x.device).expand(n).clone()
            if self.classifier is None or not self.classifier.cfg.flips:
                return cl, no_flip
            logits = self.classifier(x)  # (N, 2K)
            k = self.num_clusters
            rows = torch.arange(n, device=x.device)
            return cl, logits[rows, cl + k] > logits[rows, cl]
        self.require_routing()
        a = self.classifier.route(x)
        return a.cluster, a.flipped

    def _run(self, images: torch.Tensor, output_resolution: Optional[int], cluster=None) -> _Aligned:
        x, fr = self.prepare(images)
        res_out = self.resolution(output_resolution)
        kw = dict(output_resolution=res_out, iters=self.iters, padding_mode=self.padding_mode)
        if self.num_clusters == 1:
            flip = "auto" if self.flip else "none"
            res = self.stn(x, flip=flip, **kw)
            flipped = res.flipped if res.flipped is not None else torch.zeros(x.size(0), dtype=torch.bool, device=x.device)
            return _Aligned(x, fr, res, flipped, None, None)
        cl, flipped = self.route(x, cluster)
        x_reg = torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x)
        res = self.stn(x_reg, heads=cl, **kw)
        # Address the unmirrored input, as the STN's own flip='auto' does.
        from .geometry.warp import flip_grid

        where = lambda t, f: None if t is None else torch.where(flipped.view(-1, *([1] * (t.dim() - 1))), f(t), t)  # noqa: E731
        res = type(res)(images=res.images, grid=where(res.grid, flip_grid), flow=res.flow,
                        matrix=where(res.matrix, _negate_x_row), flipped=flipped,
                        similarity_images=res.similarity_images,
                        matrices=tuple(where(m, _negate_x_row) for m in res.matrices), heads=res.heads)
        return _Aligned(x, fr, res, flipped, cl, cl)

    # -- alignment ---------------------------------------------------------------------------

    @torch.no_grad()
    def align(self, images: torch.Tensor, *, output_resolution: Optional[int] = None,
              cluster: Union[int, torch.Tensor, None] = None) -> CongealResult:
        """Congeal images ``(N, C, H, W)`` in [-1, 1] -> :class:`CongealResult` at ``R = output_resolution``.

        Images are sampled from the originals at full resolution with the grid mapped into them
        (mipmap anti-aliasing, the predictor's padding mode). For images that are already
        ``input_size`` squares this is exactly the transformer's own output.
        """
        from .geometry.warp import warp

        images = _batch(images)
        a = self._run(images, output_resolution, cluster)
        fr, res = a.frame, a.res
        grid = fr.grid_to_original(res.grid)  # (N, R, R, 2)
        if fr.is_identity:
            out = res.images
        else:
            out = warp(images.to(self.device, torch.float32), grid, padding_mode=self.padding_mode, antialias=True)
        matrix = None if res.matrix is None else fr.matrix_to_original(res.matrix)
        return CongealResult(images=out, grid=grid, flow=res.flow, matrix=matrix, flipped=a.flipped,
                             cluster=a.cluster, frame=fr)

    @torch.no_grad()
    def average(self, images: Union[torch.Tensor, Iterable[torch.Tensor]], *, output_resolution: Optional[int] = None,
                cluster: Optional[int] = None) -> torch.Tensor:
        """Average congealed image ``(C, R, R)`` of images ``(N, C, H, W)`` or an iterable of such batches.

        Clustering models: ``cluster=k`` averages the images routed to cluster ``k``; without it
        the result is ``(K, C, R, R)``, one average per cluster (zeros where no image landed).
        """
        batches = [_batch(images)] if isinstance(images, torch.Tensor) else images
        k = self.num_clusters
        total, count = None, torch.zeros(k, dtype=torch.float64, device=self.device)
        for b in batches:
            res = self.align(b, output_resolution=output_resolution)
            imgs = res.images.double()  # (N, C, R, R)
            cl = res.cluster if res.cluster is not None else torch.zeros(imgs.size(0), dtype=torch.long, device=imgs.device)
            if total is None:
                total = imgs.new_zeros(k, *imgs.shape[1:])  # (K, C, R, R)
            total.index_add_(0, cl, imgs)
            count.index_add_(0, cl, torch.ones_like(cl, dtype=torch.float64))
        if total is None:
            raise ValueError("average needs at least one image")
        mean = (total / count.clamp(min=1).view(-1, 1, 1, 1)).float()  # (K, C, R, R)
        if k == 1:
            return mean[0]
        return mean if cluster is None else mean[int(cluster)]

    @torch.no_grad()
    def score(self, images: torch.Tensor, cluster: Union[int, torch.Tensor, None] = None) -> "FlowScores":
        """Flow scores of images ``(N, C, H, W)`` with the flip / cluster each was scored in."""
        from .losses.flow import total_variation_loss

        if not self.has_flow:
            raise ValueError("flow scores need a transformer with a flow stage; this one is similarity-only")
        a = self._run(images, None, cluster)
        scores = 0.0 - total_variation_loss(a.res.flow, reduce_batch=False).float()  # (N,); 0 - x avoids -0.0
        return FlowScores(scores=scores, flipped=a.flipped, cluster=a.cluster)

    def flow_scores(self, images: torch.Tensor, cluster: Union[int, torch.Tensor, None] = None) -> torch.Tensor:
        """Flow score per image ``(N,)``: minus the total variation of its residual flow (the
        original's ``flow_scores.py``), after flip / cluster selection. Higher = smoother = better
        aligned; the lowest scores flag images the model cannot align."""
        return self.score(images, cluster).scores

    # -- key points --------------------------------------------------------------------------

    def _point_views(self, images: torch.Tensor, cluster=None):
        """Transformer input (mirrored where routed so), heads, mirror flags and frame of a batch."""
        x, fr = self.prepare(images)
        if self.num_clusters == 1:
            return x, None, None, fr
        cl, flipped = self.route(x, cluster)
        return torch.where(flipped.view(-1, 1, 1, 1), x.flip(3), x), cl, flipped, fr

    def _point_warp(self, images, cluster, output_resolution):
        """One transformer pass for key points: (input, frame, AlignResult, mirrored, heads).

        The result's grid and matrix address the (possibly mirrored) transformer input ``x``;
        ``mirrored`` says where ``x`` is the mirror of the original (clustering models only: a
        single-cluster model's flip inference returns grids that address the unmirrored input).
        """
        x, heads, mirrored, fr = self._point_views(images, cluster)
        flip = "auto" if (heads is None and self.flip and self.has_flow) else "none"
        res = self.stn(x, flip=flip, heads=heads, output_resolution=output_resolution, iters=self.iters,
                       padding_mode=self.padding_mode)
        no = torch.zeros(x.size(0), dtype=torch.bool, device=x.device)
        flipped = mirrored if mirrored is not None else (res.flipped if res.flipped is not None else no)
        return x, fr, res, (mirrored if mirrored is not None else no), flipped, heads

    def _congeal(self, images, points, cluster=None, legacy=False):
        from .geometry.points import congeal_result, hflip_points_where

        x, fr, res, mirrored, flipped, heads = self._point_warp(images, cluster, None)
        pts = fr.to_input(points.to(self.device, torch.float32))
        pts = hflip_points_where(pts, x.size(-1), mirrored)
        return congeal_result(res, pts, x.size(-1), legacy=legacy), flipped, heads

    def _uncongeal(self, images, points, cluster=None, legacy=False, output_resolution=None):
        from .geometry.points import hflip_points_where, uncongeal_result

        x, fr, res, mirrored, flipped, heads = self._point_warp(images, cluster, output_resolution)
        out = uncongeal_result(res, points.to(self.device, torch.float32), x.size(-1), legacy=legacy)
        out = hflip_points_where(out, x.size(-1), mirrored)  # back to the unmirrored input
        return fr.to_original(out), flipped, heads

    @torch.no_grad()
    def congeal_points(self, images: torch.Tensor, points: torch.Tensor, *, cluster=None, legacy: bool = False) -> torch.Tensor:
        """Key points ``(N, P, 2)`` in pixels of the original ``images`` -> the congealed frame ``(N, P, 2)``.

        The congealed frame is ``flow_size`` pixels wide with a flow (the similarity-aligned input
        at ``input_size`` without). Points are ``(x, y)``, pixel centres at integers.
        """
        return self._congeal(images, points, cluster, legacy)[0]

    @torch.no_grad()
    def uncongeal_points(self, images: torch.Tensor, points: torch.Tensor, *, cluster=None, legacy: bool = False,
                         output_resolution: Optional[int] = None) -> torch.Tensor:
        """Congealed-frame points ``(N, P, 2)`` (or ``(1, P, 2)``, broadcast) -> pixels of the original ``images``."""
        images = _batch(images)
        n = images.size(0)
        if points.size(0) == 1 and n > 1:
            points = points.expand(n, *points.shape[1:])
        return self._uncongeal(images, points, cluster, legacy, output_resolution)[0]

    @torch.no_grad()
    def transfer_points(self, images_a: torch.Tensor, images_b: torch.Tensor, points: torch.Tensor, *,
                        permutation: Optional[Sequence[int]] = None, legacy: bool = False,
                        output_resolution: Optional[int] = None) -> torch.Tensor:
        """Key points ``(N, P, 2)`` of ``images_a`` -> pixels of ``images_b`` through the congealed frame.

        A and B may differ in size. Where exactly one of A and B was aligned through its mirror, a
        left point of A lands on B's right counterpart; ``permutation`` (the left/right swap of the
        key-point order) relabels those rows: ``out[:, k] = t[:, permutation[k]]``. Clustering
        models route A with the classifier and align B in A's cluster.
        """
        from .geometry.points import permute_keypoints

        congealed, flipped_a, heads = self._congeal(images_a, points, None, legacy)
        out, flipped_b, _ = self._uncongeal(images_b, congealed, heads, legacy, output_resolution)
        if permutation is not None:
            out = permute_keypoints(out, permutation, mask=flipped_a ^ flipped_b)
        return out

    # -- edits -------------------------------------------------------------------------------

    def propagate(self, images: torch.Tensor, edit, **kw):
        """Carry an edit drawn on the average congealed image to ``images``: :func:`gangealing.edit.propagate`."""
        from .edit import propagate

        return propagate(self, images, edit, **kw)
