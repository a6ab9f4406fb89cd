"""Route real images to clusters by their GAN targets, without a classifier (an extension).

A clustering model is trained with a hard min-assignment: every generated sample goes to the head
(and, with flips, the orientation) whose congealed image is perceptually closest to that head's
target. Real images have no per-sample target, so the original trains a cluster classifier on
generated samples to imitate the rule (``gangealing train-classifier``). :class:`TargetRouter`
applies the rule itself to real images instead, against each head's *mean* target
``G(c_k)`` (every injected W+ row at ``c_k``, the appearance rows at the mean latent; the image
:func:`gangealing.models.target.gan_template` renders): K transformer passes and K distances per
image (2K with flips), under the distance the model was trained with.

Why: a classifier trained for a few hundred CPU steps imitates the rule poorly on real images
(on MNIST K = 10: 0.421 accuracy through the classifier against 0.484 by this rule on the same
1,000 test digits, BENCHMARKS.md section 3), and a model straight from ``gangealing train`` can
route without one. The cost is K times the transformer plus K distances per image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["ROUTINGS", "TargetRouter"]

ROUTINGS = ("classifier", "targets")


@dataclass(eq=False)
class TargetRouter:
    """Nearest-target routing: ``templates`` ``(K, C, S, S)`` in [-1, 1] at the transformer's flow
    size, ``distance`` maps two ``(N, C, S, S)`` batches to ``(N,)``, ``flips`` also tries each
    image's mirror (models trained with ``--flips``). ``loss`` names the distance (for reports)."""

    templates: torch.Tensor
    distance: nn.Module
    flips: bool = False
    loss: str = ""
    chunk: int = 512  # transformer rows per distance call: memory stays flat for any batch

    def __post_init__(self) -> None:
        # The perceptual and squared-pixel distances embed each image once (squared Euclidean
        # distances of the embeddings are the distances), so the targets' half of the work is done
        # here, once; distances without an embedding (L1, LPIPS heads with a negative weight) compare pairs.
        self._embedded: Optional[torch.Tensor] = None  # (K, E)
        embed = getattr(self.distance, "embed", None)
        if embed is not None:
            try:
                with torch.no_grad():
                    self._embedded = embed(self.templates)
            except ValueError:
                pass

    @property
    def num_clusters(self) -> int:
        return int(self.templates.size(0))

    @classmethod
    def from_model(cls, generator: nn.Module, target: nn.Module, flow_size: int, *, loss: str,
                   flips: bool = False, device: Union[str, torch.device, None] = None) -> "TargetRouter":
        """Render every head's mean target with ``generator`` at ``flow_size`` and build ``loss``
        (a name of :data:`gangealing.losses.perceptual.PERCEPTUAL_LOSSES`)."""
        from .losses.perceptual import build_perceptual_loss
        from .models.target import gan_template

        heads = int(target.cfg.num_heads)
        with torch.no_grad():
            templates = torch.cat([gan_template(generator, target, flow_size, head=h) for h in range(heads)])
        distance = build_perceptual_loss(loss)
        dev = torch.device(device) if device is not None else templates.device
        return cls(templates=templates.to(dev), distance=distance.to(dev).eval(), flips=bool(flips), loss=loss)

    def to(self, device: Union[str, torch.device]) -> "TargetRouter":
        """This router on ``device`` (itself when it is there already)."""
        if self.templates.device == torch.device(device):
            return self
        return TargetRouter(self.templates.to(device), self.distance.to(device), self.flips, self.loss, self.chunk)

    @torch.no_grad()
    def distances(self, stn: nn.Module, x: torch.Tensor, *, iters: int = 1,
                  padding_mode: str = "border") -> torch.Tensor:
        """``(N, F K)`` distances of transformer inputs ``x`` ``(N, C, S, S)`` to every head's target,
        candidate ``f K + k`` = head ``k`` of the input (f = 0) or of its mirror (f = 1)."""
        k, size = self.num_clusters, int(self.templates.size(-1))
        if int(stn.cfg.num_heads) != k:
            raise ValueError(f"the router has {k} targets but the transformer has {stn.cfg.num_heads} heads")
        views = [x, x.flip(3)] if self.flips else [x]
        rows_per_image = max(1, self.chunk // k)
        out = []
        for v in views:
            per = []
            for s in range(0, v.size(0), rows_per_image):
                part = v[s:s + rows_per_image]
                # Without heads every image is warped by every head, rows image-major (i K + k); the
                # similarity trunk then runs once per image (1.6x faster than K rows with given heads).
                res = stn(part, output_resolution=size, iters=iters, padding_mode=padding_mode)
                per.append(self._to_templates(res.images).reshape(part.size(0), k))
            out.append(torch.cat(per))  # (N, K)
        return torch.cat(out, 1)  # (N, F K)

    def _to_templates(self, images: torch.Tensor) -> torch.Tensor:
        """Distances ``(n K,)`` of congealed rows (image-major, head-minor) to their heads' targets."""
        n = images.size(0) // self.num_clusters
        if self._embedded is not None:
            return (self.distance.embed(images) - self._embedded.repeat(n, 1)).square().sum(1)  # (n K,)
        return self.distance(images, self.templates.repeat(n, 1, 1, 1))  # (n K,)

    def route(self, stn: nn.Module, x: torch.Tensor, cluster: Optional[torch.Tensor] = None, *, iters: int = 1,
              padding_mode: str = "border") -> Tuple[torch.Tensor, torch.Tensor]:
        """Cluster ``(N,)`` and mirror flags ``(N,)``: the nearest candidate; with ``cluster``
        ``(N,)`` given, only the orientation of that cluster is chosen."""
        d = self.distances(stn, x, iters=iters, padding_mode=padding_mode)  # (N, F K)
        k = self.num_clusters
        if cluster is not None:
            heads = torch.arange(d.size(1), device=d.device) % k  # (F K,)
            d = d.masked_fill(heads.unsqueeze(0) != cluster.to(d.device).unsqueeze(1), float("inf"))
        best = d.argmin(1)  # ties: the unmirrored input, then the lower head (as training's assignment)
        return best % k, best >= k
