"""``gangealing pck``: PCK-transfer on a key-point dataset with the original's protocols.

The protocol comes with the dataset (``gangealing prepare spair|cub``, see
:mod:`gangealing.data.keypoints`):

* SPair-71K: the category's fixed test pairs, A -> B only, threshold ``alpha * max side of B's
  bounding box`` in the prepared (long side 256, border-padded) frame;
* CUB: ``num_pairs`` (10,000) random pairs of ACSM's validation split, transferred both ways,
  threshold ``alpha * 256``.

Flip inference (a single-cluster model with a flow): for every pair, A and/or B is mirrored where
that makes the residual flows smoother (:func:`gangealing.metrics.pck.match_flows_pick`, the
original's ``match_flows``), and the key points follow with the dataset's left/right
permutation. Clustering models route each image with their classifier instead.

``legacy=True`` reproduces the original's numbers exactly: its key-point preprocessing (no
half-pixel term), its congealed-frame normalisation (:mod:`gangealing.geometry.points`) and its
mirror quirks (:func:`gangealing.metrics.pck.apply_match`). The standard deviation resamples the
evaluated pairs (:func:`gangealing.metrics.pck.bootstrap_std`).

Under ``torchrun`` every process takes every ``world``-th pair; the per-pair counts are gathered
in pair order, so the result equals a single-process run.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..data.keypoints import KeypointDataset, load_keypoint_dataset
from ..metrics.pck import PCKResult, bootstrap_std, evaluate_pck_transfer, match_flows_pick
from ..distributed import gather, is_main, shard

__all__ = ["PCKReport", "evaluate_pck", "save_transfer_picture", "write_report", "DEFAULT_ALPHAS"]

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (0.1, 0.05, 0.01)


@dataclass(frozen=True)
class PCKReport:
    """PCK-transfer per alpha with its bootstrap standard deviation."""

    dataset: str
    category: Optional[str]
    alphas: tuple
    pck: tuple  # fractions in [0, 1]
    std: Optional[tuple]  # bootstrap std per alpha, None without bootstrap
    num_pairs: int
    both_ways: bool
    flip_inference: bool
    legacy: bool
    result: Optional[PCKResult] = None  # per-pair counts (rank 0 has all pairs)
    input_size: Optional[int] = None  # the side the transformer was fed at

    def format(self) -> str:
        """``PCK-Transfer@0.1: 61.23% (+- 0.41)`` per alpha, one line."""
        parts = []
        for i, a in enumerate(self.alphas):
            s = f"PCK-Transfer@{a}: {100 * self.pck[i]:.2f}%"
            if self.std is not None:
                s += f" (+- {100 * self.std[i]:.2f})"
            parts.append(s)
        return " | ".join(parts)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("result")
        return d


def _flip_inference_possible(congealer) -> bool:
    return congealer.num_clusters == 1 and congealer.has_flow


def _fns(congealer, flip: bool, permutation, legacy: bool):
    """(transfer_fn, pick_fn) for :func:`evaluate_pck_transfer`."""
    if congealer.num_clusters > 1:
        # Clusters (and mirrors) come from the classifier; the predictor relabels mirrored points.
        def transfer_routed(src, dst, pts):
            return congealer.transfer_points(src, dst, pts, permutation=permutation, legacy=legacy)

        return transfer_routed, None
    # The matching below decides the mirrors; the transformer itself must not flip again.
    plain = congealer.with_settings(flip=False)

    def transfer(src, dst, pts):
        return plain.transfer_points(src, dst, pts, legacy=legacy)

    def pick(imgs_a, imgs_b):
        tv = -plain.flow_scores(torch.cat([imgs_a, imgs_b, imgs_a.flip(3), imgs_b.flip(3)]))  # (4N,)
        tv_a, tv_b, tv_af, tv_bf = tv.chunk(4)
        return match_flows_pick(tv_a, tv_b, tv_af, tv_bf)

    return transfer, (pick if flip else None)


def _batches(data: KeypointDataset, pairs: torch.Tensor, batch_size: int, legacy: bool, device: torch.device):
    for i in range(0, pairs.size(0), batch_size):
        yield {k: v.to(device) for k, v in data.batch(pairs[i:i + batch_size], legacy).items()}


@torch.no_grad()
def evaluate_pck(congealer, dataset: Union[KeypointDataset, str, os.PathLike], *,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, num_pairs: Optional[int] = None,
                 both_ways: Optional[bool] = None, flip: bool = True, legacy: bool = False, batch_size: int = 16,
                 bootstrap: int = 1000, seed: int = 0, dist: Any = None, progress: bool = False) -> PCKReport:
    """PCK-transfer of ``congealer`` (:class:`gangealing.predictor.Congealer`) on a key-point dataset.

    ``num_pairs``: at most this many of the fixed pairs, or this many random pairs (default:
    the dataset's protocol). ``both_ways``: override the protocol's direction. ``flip``: flip
    inference (single-cluster models with a flow; ignored otherwise). ``bootstrap``: resamples
    for the standard deviation (0: none). ``dist``: the torchrun process info (see
    :mod:`gangealing.apps.sharding`); every rank must call this, each evaluates its share.
    """
    data = dataset if isinstance(dataset, KeypointDataset) else load_keypoint_dataset(dataset)
    both = data.both_ways if both_ways is None else bool(both_ways)
    flip = bool(flip) and _flip_inference_possible(congealer)
    transfer_fn, pick_fn = _fns(congealer, flip, data.permutation, legacy)
    pairs = data.eval_pairs(num_pairs, seed)  # (P, 2) sample indices, identical on every rank
    mine = shard(list(range(pairs.size(0))), dist)
    per_pair: List[tuple] = []
    if mine:
        my_pairs = pairs[torch.tensor(mine, dtype=torch.long)]
        batches = _batches(data, my_pairs, batch_size, legacy, congealer.device)
        if progress and is_main(dist):
            from tqdm import tqdm

            batches = tqdm(batches, total=(len(mine) + batch_size - 1) // batch_size, desc="PCK", unit="batch")
        res = evaluate_pck_transfer(batches, transfer_fn, list(alphas), both_ways=both, pick_fn=pick_fn,
                                    permutation=data.permutation if pick_fn is not None else None, legacy=legacy)
        per_pair = [(c.tolist(), float(v)) for c, v in zip(res.per_pair_correct.cpu(), res.per_pair_visible.cpu())]
    merged = gather(per_pair, dist)
    correct = torch.tensor([c for c, _ in merged], dtype=torch.float32).view(-1, len(alphas))  # (P, A)
    visible = torch.tensor([v for _, v in merged], dtype=torch.float32)  # (P,)
    if visible.sum() <= 0:
        raise ValueError("no visible key points in the evaluated pairs")
    pck = correct.sum(dim=0) / visible.sum()  # (A,)
    result = PCKResult(tuple(float(a) for a in alphas), pck, correct, visible)
    std = None
    if bootstrap > 0:
        std = tuple(bootstrap_std(correct, visible, bootstrap, torch.Generator().manual_seed(seed)).tolist())
    return PCKReport(
        dataset=str(data.meta.get("dataset")), category=data.meta.get("category"), alphas=result.alphas,
        pck=tuple(pck.tolist()), std=std, num_pairs=int(visible.numel()), both_ways=both, flip_inference=flip,
        legacy=legacy, result=result, input_size=congealer.input_size,
    )


_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
           (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180)]


@torch.no_grad()
def save_transfer_picture(congealer, dataset: Union[KeypointDataset, str, os.PathLike], path: os.PathLike, *,
                          num: int = 8, seed: int = 0, legacy: bool = False, scale: int = 1) -> Path:
    """A grid of sample transfers: row 1 the source images with their key points, row 2 the
    targets with the transferred points (filled) and the ground truth (rings), one colour per
    key point; only points visible in both are drawn."""
    from PIL import Image, ImageDraw

    from ..data.images import save_image, to_uint8

    data = dataset if isinstance(dataset, KeypointDataset) else load_keypoint_dataset(dataset)
    pairs = data.eval_pairs(None if data.pairs is not None else max(num, 1), seed)[:num]
    b = data.batch(pairs, legacy)
    vis = (b["kpsA"][..., 2] > 0) & (b["kpsB"][..., 2] > 0)  # (n, K)
    est = congealer.transfer_points(b["imgsA"], b["imgsB"], b["kpsA"][..., :2], permutation=data.permutation,
                                    legacy=legacy).cpu()
    s = data.size * scale
    r = max(2, s // 64)
    tiles = []
    for imgs, pts, rings in ((b["imgsA"], b["kpsA"][..., :2], None), (b["imgsB"], est, b["kpsB"][..., :2])):
        row = []
        for i in range(imgs.size(0)):
            im = Image.fromarray(to_uint8(imgs[i])).resize((s, s), Image.Resampling.NEAREST)
            draw = ImageDraw.Draw(im)
            for k in range(pts.size(1)):
                if not vis[i, k]:
                    continue
                color = _COLORS[k % len(_COLORS)]
                x, y = ((pts[i, k] + 0.5) * scale - 0.5).tolist()
                draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=(0, 0, 0))
                if rings is not None:
                    gx, gy = ((rings[i, k] + 0.5) * scale - 0.5).tolist()
                    draw.ellipse([gx - r - 1, gy - r - 1, gx + r + 1, gy + r + 1], outline=color, width=max(1, r // 2))
            row.append(np.asarray(im))
        tiles.append(np.concatenate(row, axis=1))
    return save_image(np.concatenate(tiles, axis=0), path)


def write_report(report: PCKReport, path: os.PathLike) -> Path:
    """``pck.json``: the report, plus the per-pair counts for later analysis."""
    d = report.to_dict()
    if report.result is not None:
        d["per_pair_correct"] = report.result.per_pair_correct.tolist()
        d["per_pair_visible"] = report.result.per_pair_visible.tolist()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(d, f, indent=1)
    os.replace(tmp, path)
    return path
