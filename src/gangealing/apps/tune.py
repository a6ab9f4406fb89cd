"""Choose a model's test-time similarity passes (``iters``) by measurement on unlabelled images.

The spatial transformer regresses a similarity in one pass; the original (and ``gangealing
align --iters N``) can run the similarity pass again on its own output, which corrects what one
pass left, or overshoots. Which count is best depends on the model and the images, so it is
measured here, without labels, by **self-consistency under known perturbations**: every image is
placed twice on a canvas under two random similarities (``data.perturb.perturb_images``); the two
copies show the same content, so the exact correspondence between them is known. Points on the
image's content (where it differs from its border colour) are transferred from copy 1 to copy 2
through the congealed frame (``Congealer.transfer_points``) and compared with the truth: PCK at
``alpha * canvas`` and the mean error. This is the "same digit, two perturbations" measure of
``gangealing bench`` (section 2), computed on any image set.

The count with the best PCK at ``select_alpha`` wins (ties: the fewest passes). A model tuned this
way is written as a copy with ``meta["test"]["iters"]`` set (every command applies it unless told
otherwise) and the measured table in ``meta["tune"]``; the input model is never overwritten.

What it does not measure: alignment *between different images* (no ground truth without labels).
Measure that with ``gangealing bench`` or ``gangealing pck`` where labels exist.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from ..data.perturb import perturb_images
from ..geometry.coords import apply_affine

__all__ = ["TuneConfig", "TuneRow", "TuneResult", "PerturbedPairs", "content_points", "perturbed_pairs", "consistency",
           "tune_iters", "save_tuned", "images_for"]


@dataclass(frozen=True)
class TuneConfig:
    """The perturbations, the points and the candidates of :func:`tune_iters`."""

    iters: Tuple[int, ...] = (1, 2, 3, 4)  # candidate similarity passes
    images: int = 200  # images measured (spread evenly over the set)
    max_angle: float = 20.0  # degrees, uniform in +-max_angle
    scale: Tuple[float, float] = (0.8, 1.2)  # uniform content scale
    max_shift: float = 0.1  # uniform shift, +- this fraction of the canvas
    margin: float = 0.0  # canvas side = round(image side * (1 + margin)); room for content to move on blank backgrounds
    points: int = 10  # content points per image
    alphas: Tuple[float, ...] = (0.05, 0.1)  # PCK thresholds, fractions of the canvas side
    select_alpha: float = 0.05  # the PCK that picks the winner
    seed: int = 0
    batch: int = 100

    def __post_init__(self) -> None:
        if not self.iters or min(self.iters) < 1:
            raise ValueError(f"iters candidates must be >= 1, got {self.iters}")
        if self.images < 1 or self.points < 1 or self.batch < 1:
            raise ValueError("images, points and batch must be >= 1")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be 0 < low <= high, got {self.scale}")
        if self.margin < 0 or self.max_shift < 0 or self.max_angle < 0:
            raise ValueError("margin, max_shift and max_angle must be >= 0")
        if self.select_alpha not in self.alphas:
            raise ValueError(f"select_alpha {self.select_alpha} must be one of alphas {self.alphas}")


@dataclass(frozen=True)
class TuneRow:
    """Self-consistency of one candidate: PCK per alpha, mean error (fraction of the canvas), seconds."""

    iters: int
    pck: Dict[float, float]
    mean_error: float
    points: int
    seconds: float


@dataclass(frozen=True)
class TuneResult:
    """Every candidate's row and the winner; ``config`` is what was measured."""

    rows: List[TuneRow]
    best_iters: int
    images: int
    canvas: int
    config: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> Dict[str, Any]:
        return {"best_iters": self.best_iters, "images": self.images, "canvas": self.canvas,
                "config": asdict(self.config),
                "rows": [{"iters": r.iters, **{f"pck@{a:g}": round(v, 4) for a, v in r.pck.items()},
                          "mean_error": round(r.mean_error, 5), "points": r.points, "seconds": round(r.seconds, 2)}
                         for r in self.rows]}

    def to_markdown(self) -> str:
        alphas = self.config.alphas
        head = "| iters | " + " | ".join(f"PCK@{a:g}" for a in alphas) + " | mean error | seconds |"
        lines = [head, "| " + " | ".join(["---"] * (len(alphas) + 3)) + " |"]
        for r in self.rows:
            mark = " (chosen)" if r.iters == self.best_iters else ""
            lines.append(f"| {r.iters}{mark} | " + " | ".join(f"{r.pck[a]:.3f}" for a in alphas)
                         + f" | {r.mean_error:.4f} | {r.seconds:.1f} |")
        return "\n".join(lines)


def content_points(images: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` pixels ``(N, k, 2)`` (x, y) per image ``(N, C, H, W)``, drawn with probability proportional
    to how far the pixel is from the image's border colour (its median border pixel): strokes of a
    digit, the silhouette of an animal; uniform over a flat image. Without replacement when enough
    pixels differ."""
    n, _, h, w = images.shape
    x = images.float().cpu()
    border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2)  # (N, C, 2H + 2W)
    weight = (x - border.median(dim=2).values[..., None, None]).abs().mean(1).flatten(1)  # (N, H*W)
    out = []
    for wi in weight:
        nz = int((wi > 0).sum())
        if nz == 0:
            wi, nz = torch.ones_like(wi), wi.numel()
        idx = torch.multinomial(wi, k, replacement=nz < k, generator=gen)
        out.append(torch.stack([idx % w, idx // w], -1).float())
    return torch.stack(out)


@dataclass(frozen=True)
class PerturbedPairs:
    """Two perturbed copies of each image, content points in copy 1 and where they truly are in copy 2."""

    first: torch.Tensor  # (N, C, S, S)
    second: torch.Tensor  # (N, C, S, S)
    src: torch.Tensor  # (N, P, 2) canvas pixels in ``first``
    gt: torch.Tensor  # (N, P, 2) the same content in ``second``
    visible: torch.Tensor  # (N, P) bool: inside both canvases
    canvas: int


def perturbed_pairs(images: torch.Tensor, cfg: TuneConfig = TuneConfig()) -> PerturbedPairs:
    """The known-answer task of :func:`consistency` for square ``images`` ``(N, C, H, H)``, seeded by ``cfg.seed``."""
    n, _, h, w = images.shape
    if h != w:
        raise ValueError(f"images must be square (fit them as `gangealing align` does), got {h}x{w}")
    canvas = int(round(h * (1 + cfg.margin)))
    g = torch.Generator().manual_seed(cfg.seed)
    kw = dict(max_angle=cfg.max_angle, scale=cfg.scale, max_shift=cfg.max_shift)
    c1, c2 = perturb_images(images, canvas, g, **kw), perturb_images(images, canvas, g, **kw)
    pts = content_points(images, cfg.points, g)
    src, gt = apply_affine(pts, c1.to_canvas), apply_affine(pts, c2.to_canvas)
    inside = lambda p: ((p >= -0.5) & (p <= canvas - 0.5)).all(-1)  # noqa: E731
    return PerturbedPairs(c1.images, c2.images, src, gt, inside(src) & inside(gt), canvas)


def consistency(congealer, task: PerturbedPairs, cfg: TuneConfig = TuneConfig(), iters: Optional[int] = None) -> TuneRow:
    """Self-consistency of ``congealer`` at ``iters`` similarity passes (default: its own) on ``task``
    (:func:`perturbed_pairs`): see the module docstring."""
    from ..metrics.alignment import pck_at

    iters = int(iters if iters is not None else congealer.iters)
    tried = congealer.with_settings(iters=iters)  # shares the modules; the caller's predictor is untouched
    t0 = time.time()
    dev, b = tried.device, cfg.batch
    est = torch.cat([tried.transfer_points(task.first[s:s + b].to(dev), task.second[s:s + b].to(dev),
                                           task.src[s:s + b].to(dev)).cpu()
                     for s in range(0, task.first.size(0), b)])
    seconds = time.time() - t0
    vis, canvas = task.visible, task.canvas
    pcks = pck_at(est, task.gt, vis, canvas, cfg.alphas)
    err = (est - task.gt).norm(dim=-1)[vis].mean().item() / canvas if vis.any() else float("nan")
    return TuneRow(iters=iters, pck=dict(zip(cfg.alphas, pcks)), mean_error=err, points=int(vis.sum()), seconds=seconds)


def tune_iters(congealer, images: torch.Tensor, cfg: TuneConfig = TuneConfig(), progress: bool = False) -> TuneResult:
    """Measure every candidate of ``cfg.iters`` on the first ``cfg.images`` of ``images`` and pick the
    one with the best PCK at ``cfg.select_alpha`` (ties: fewest passes). Every candidate sees the same
    perturbations and points. Needs a transformer with a similarity part when a candidate is > 1."""
    from tqdm import tqdm

    if max(cfg.iters) > 1 and congealer.stn.similarity is None:
        raise ValueError("this transformer has no similarity part: only iters 1 applies, nothing to tune")
    images = images[: cfg.images]
    if images.size(0) == 0:
        raise ValueError("no images to measure")
    task = perturbed_pairs(images, cfg)
    rows = [consistency(congealer, task, cfg, iters=it)
            for it in tqdm(sorted(set(cfg.iters)), disable=not progress, desc="iters", unit="candidate", leave=False)]
    best = max(rows, key=lambda r: (r.pck[cfg.select_alpha], -r.iters)).iters
    return TuneResult(rows=rows, best_iters=best, images=int(images.size(0)), canvas=task.canvas, config=cfg)


def save_tuned(source, result: TuneResult, out: Union[str, os.PathLike], *, data: str = "") -> Path:
    """Write a copy of the model ``source`` (path or released name) whose test-time ``iters`` is the
    winner, with the measured table in ``meta["tune"]``. Never the input file."""
    from ..checkpoint import save_checkpoint
    from ..fileio import check_not_input
    from ..pretrained import resolve_checkpoint

    out = check_not_input(out, source)
    ckpt = resolve_checkpoint(source)
    ckpt.meta = dict(ckpt.meta)
    ckpt.meta["test"] = {**dict(ckpt.meta.get("test") or {}), "iters": int(result.best_iters)}
    ckpt.meta["tune"] = {**result.to_dict(), "data": data, "source": str(source)}
    return save_checkpoint(ckpt, out)


def images_for(congealer, source: Union[str, os.PathLike], *, split: str = "train", count: int = 200,
               progress: bool = False) -> torch.Tensor:
    """``count`` images spread evenly over a folder / zip / glob, a prepared dataset or an embedded name
    (in their sorted order), at the model's input size, fitted to squares as ``gangealing align`` does,
    in [-1, 1]. Of a large folder only the picked files are read."""
    from ..data.dataset import MANIFEST
    from ..data.embedded import is_embedded_name
    from ..data.images import list_images
    from ..train.refine import load_refine_images

    def spread(n: int) -> List[int]:
        return sorted({int(round(i * (n - 1) / max(count - 1, 1))) for i in range(min(count, n))})

    src: Any = source
    if not is_embedded_name(source) and not Path(source).is_file() and not (Path(source) / MANIFEST).is_file():
        files = list_images(source)  # a folder or a glob (raises when nothing matches): read only the picked files
        src = [files[i] for i in spread(len(files))]
    ds = load_refine_images(src, congealer.input_size, split=split, channels=congealer.stn.cfg.image_channels,
                            progress_bar=progress)
    return ds.tensor(spread(len(ds)))
