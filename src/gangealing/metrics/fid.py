"""Fréchet distance between real and generated images on offline MobileNetV2 features.

The FID of the literature uses Inception-v3 features, whose weights are not available offline
here; this is the same statistic on another ImageNet network, so its values are *not* comparable
with published FIDs, only with each other (same features, same sample counts, same resolution).

Features, exactly: images in [-1, 1] (grayscale replicated to RGB) are mapped to [0, 1],
normalised with the ImageNet mean ``(0.485, 0.456, 0.406)`` and std ``(0.229, 0.224, 0.225)``,
resized to ``resolution x resolution`` (default 128) with bilinear interpolation
(``antialias=True``, ``align_corners=False``), fed to torchvision's ImageNet MobileNetV2
``features`` trunk (weights ``mobilenet_v2-b0353104.pth``, BatchNorm folded, eval mode), and the
output of its last layer (``features[18]``, 1280 channels after ReLU6) is averaged over space:
one 1280-d vector per image. The distance is
``|mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2))`` in float64, the matrix square root's
trace computed from the eigenvalues of the symmetric ``S_r^(1/2) S_g S_r^(1/2)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = 128
FEATURE_DIM = 1280


@dataclass(frozen=True)
class FeatureStats:
    """Mean ``(D,)`` and covariance ``(D, D)`` of features (float64), and how many images gave them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


class MobileNetFeatures(nn.Module):
    """Images (N, C, H, W) in [-1, 1] -> pooled MobileNetV2 features (N, 1280) (see the module docstring)."""

    def __init__(self, weights: Union[str, None, dict] = None, resolution: int = DEFAULT_RESOLUTION):
        super().__init__()
        from ..losses.perceptual import MOBILENET_V2_IMAGENET, load_weights
        from ..models.perceptual import MobileNetV2Features, features_state_dict

        net = MobileNetV2Features(taps=(18,))
        net.load_state_dict(features_state_dict(load_weights(MOBILENET_V2_IMAGENET, weights)), strict=True)
        self.net = net.fuse_batchnorm().eval().requires_grad_(False)
        self.resolution = int(resolution)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "MobileNetFeatures":
        return super().train(False)  # always eval: BatchNorm statistics are ImageNet's

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (N, 3, H, W)
        x = ((x.clamp(-1, 1) + 1) / 2 - self.mean) / self.std  # (N, 3, H, W)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)  # (N, 3, R, R)
        f = self.net(x)[0]  # (N, 1280, R/32, R/32)
        return f.mean(dim=(2, 3)).double()  # (N, 1280)


def feature_stats(features: Union[torch.Tensor, np.ndarray]) -> FeatureStats:
    """Mean and (unbiased) covariance of ``(N, D)`` features, in float64."""
    f = np.asarray(features.cpu().numpy() if isinstance(features, torch.Tensor) else features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {f.shape}")
    return FeatureStats(f.mean(0), np.cov(f, rowvar=False), int(f.shape[0]))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two Gaussians ``N(mu_a, S_a)`` and ``N(mu_b, S_b)`` (float64)."""
    diff = a.mu - b.mu
    w, v = np.linalg.eigh(a.sigma)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # S_a^(1/2), symmetric
    m = sqrt_a @ b.sigma @ sqrt_a
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * tr_sqrt)


@torch.no_grad()
def extract_features(extractor: MobileNetFeatures, batches: Iterable[torch.Tensor],
                     device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """Features ``(N, 1280)`` for an iterable of image batches ``(B, C, H, W)`` in [-1, 1]."""
    device = device or next(extractor.buffers()).device
    return torch.cat([extractor(b.to(device)).cpu() for b in batches])


def real_batches(images: Union[np.ndarray, torch.Tensor], n: int, batch: int = 100) -> Iterable[torch.Tensor]:
    """Float [-1, 1] batches of the first ``n`` of uint8 ``(N, C, H, W)`` images."""
    for i in range(0, min(n, len(images)), batch):
        chunk = images[i:min(n, i + batch)]
        t = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.array(chunk))
        yield t.float().div(127.5).sub(1.0)


def generated_batches(sample: Callable[[int, torch.Generator], torch.Tensor], n: int, batch: int = 100,
                      seed: int = 0) -> Iterable[torch.Tensor]:
    """``n`` images from ``sample(batch_size, generator)``, in batches, reproducibly from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < n:
        b = min(batch, n - done)
        yield sample(b, g)
        done += b


@dataclass(frozen=True)
class FDResult:
    """A Fréchet distance and what it was measured on."""

    fd: float
    n_real: int
    n_fake: int
    resolution: int
    features: str = "mobilenet_v2 features[18], spatial mean, 1280-d"


def generator_sampler(generator: nn.Module, psi: float = 1.0, seed: int = 0) -> Callable[[int, torch.Generator], torch.Tensor]:
    """``sample(b, g)``: ``b`` images (B, 3, S, S) of a gangealing ``Generator`` from random z and noise drawn from ``g``."""
    device = next(generator.parameters()).device
    w_avg = generator.mean_latent(4096, torch.Generator(device=device).manual_seed(seed)) if psi != 1 else None

    def sample(b: int, g: torch.Generator) -> torch.Tensor:
        z = torch.randn(b, generator.style_dim, generator=g).to(device)
        noise = [torch.randn(s, generator=g).to(device) for s in generator.noise_shapes(b)]
        return generator(z=z, psi=psi, w_avg=w_avg, noise=noise)  # (B, 3, S, S)

    return sample


@torch.no_grad()
def generator_features(generator: nn.Module, n_fake: int, extractor: MobileNetFeatures, batch: int = 100,
                       seed: int = 0, psi: float = 1.0) -> torch.Tensor:
    """Features (n_fake, 1280) of ``n_fake`` samples (random z from ``seed``, random noise)."""
    device = next(generator.parameters()).device
    return extract_features(extractor, generated_batches(generator_sampler(generator, psi, seed), n_fake, batch, seed),
                            device)


def generator_fd(generator: nn.Module, real_images: Union[np.ndarray, torch.Tensor], n_fake: int = 5000,
                 n_real: Optional[int] = None, extractor: Optional[MobileNetFeatures] = None,
                 real_stats: Optional[FeatureStats] = None, batch: int = 100, seed: int = 0,
                 psi: float = 1.0) -> FDResult:
    """FD between ``n_fake`` samples of a gangealing ``Generator`` and real uint8 ``(N, C, H, W)`` images.

    Samples use random z (from ``seed``), random noise and no truncation unless ``psi < 1``.
    """
    device = next(generator.parameters()).device
    extractor = (extractor or MobileNetFeatures()).to(device)
    if real_stats is None:
        n_real = len(real_images) if n_real is None else min(n_real, len(real_images))
        real_stats = feature_stats(extract_features(extractor, real_batches(real_images, n_real, batch), device))
    fake = feature_stats(generator_features(generator, n_fake, extractor, batch, seed, psi))
    return FDResult(frechet_distance(real_stats, fake), real_stats.count, fake.count, extractor.resolution)
