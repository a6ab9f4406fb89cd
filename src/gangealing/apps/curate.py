"""Flow scores and dataset curation: score every image by the smoothness of its flow, and write an
aligned, filtered copy of a dataset (the original's ``flow_scores.py`` and ``congeal_dataset.py``).

Flow score: minus the total variation of the residual flow the transformer predicts for the image
(after flip inference / cluster routing, at the model's test-time iterations and padding). Images
the model aligns with a smooth flow score near 0; images it cannot make sense of (wrong category,
clutter, extreme poses) get very negative scores.

Curation, per input image, in this order (each dropped image records why):

1. ``low_score``: with ``fraction < 1``, only the best ``ceil(fraction * n)`` images by flow score
   are kept (ties broken by input order);
2. the similarity part of the warp (rotation, scale, shift; flip included) is applied to the raw
   image at its full resolution: the output ``R x R`` crop is sampled from the original pixels
   (mipmap anti-aliasing), never from a downscaled copy;
3. ``out_of_image``: dropped when more than ``oob_threshold`` (2.5 %) of the crop's pixels, along x
   or along y, lie outside the raw image (a sample counts as outside when it is more than the image
   extent less half an output pixel of the square-padded image away from the centre, as the original);
4. ``low_resolution``: dropped when the crop's side in raw-image pixels, ``sqrt(|det M| W H)``, is
   below ``min_effective_resolution`` (a large zoom on a small object gives a blurry crop).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..distributed import barrier, is_main
from .align import decode_side, folder_inputs, image_mode, output_name, run_sharded, stack, write_csv

DROP_REASONS = ("unreadable", "low_score", "out_of_image", "low_resolution")
CURATION_COLUMNS = ("index", "input", "score", "kept", "reason", "output", "effective_resolution", "out_of_image",
                    "flipped", "cluster", "error")


# ------------------------------------------------------------------------------------------------
# Flow scores
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRecord:
    """Flow score of one input (``score`` None when it could not be read)."""

    index: int
    path: str
    score: Optional[float]
    flipped: Optional[bool] = None
    cluster: Optional[int] = None
    error: Optional[str] = None


def compute_flow_scores(congealer, inputs: Sequence[os.PathLike], *, batch_size: int = 16, dist: Any = None,
                        progress: bool = True) -> List[ScoreRecord]:
    """Flow score of every image ``inputs`` names (folders, globs, files), in input order.

    Under ``torchrun`` each rank scores every ``world_size``-th image; every rank gets the merged list.
    """
    from ..data.images import list_images

    paths = list_images(inputs)
    return _score_paths(congealer, list(enumerate(paths)), batch_size, dist, progress)


def _score_paths(congealer, items, batch_size, dist, progress) -> List[ScoreRecord]:
    if not congealer.has_flow:
        raise ValueError("flow scores need a transformer with a flow stage; this model is similarity-only")
    congealer.require_routing()

    def score_group(group) -> List[ScoreRecord]:
        fs = congealer.score(stack(group))
        return [ScoreRecord(idx, str(path), float(fs.scores[j]), bool(fs.flipped[j]),
                            None if fs.cluster is None else int(fs.cluster[j])) for j, (idx, path, _) in enumerate(group)]

    return run_sharded(items, score_group, dist, batch_size=batch_size, mode=image_mode(congealer),
                       max_side=decode_side(congealer, congealer.input_size),  # scores see the transformer's input only
                       unreadable=lambda idx, path, reason: ScoreRecord(idx, str(path), None, error=reason),
                       desc="flow scores", progress=progress)


def write_scores(records: Sequence[ScoreRecord], path: os.PathLike) -> Path:
    """Write flow scores as CSV: ``index,input,score,flipped,cluster,error`` in input order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["index", "input", "score", "flipped", "cluster", "error"])
        for r in records:
            wr.writerow([r.index, r.path, "" if r.score is None else repr(r.score), "" if r.flipped is None else r.flipped,
                         "" if r.cluster is None else r.cluster, r.error or ""])
    return path


def read_scores(path: os.PathLike) -> Dict[str, Optional[float]]:
    """Flow scores from a CSV written by :func:`write_scores` (or any CSV with ``input`` and ``score``),
    keyed by the real path of the input; None for inputs listed without a score (unreadable)."""
    out: Dict[str, Optional[float]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"input", "score"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected columns 'input' and 'score' (from `gangealing flow-scores`)")
        for row in reader:
            out[os.path.realpath(row["input"])] = float(row["score"]) if row["score"] else None
    return out


def best_fraction(scores: Sequence[Optional[float]], fraction: float) -> List[bool]:
    """Keep mask: the best ``ceil(fraction * n)`` of the ``n`` scored entries (None = unscored, never kept).

    Deliberately not the original's ``scores > quantile(scores, 1 - fraction)``, which always drops
    the lowest image even with ``fraction=1`` and keeps fewer than asked when scores tie.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    valid = [i for i, s in enumerate(scores) if s is not None]
    n_keep = math.ceil(fraction * len(valid) - 1e-9)
    order = sorted(valid, key=lambda i: (-scores[i], i))
    keep = [False] * len(scores)
    for i in order[:n_keep]:
        keep[i] = True
    return keep


# ------------------------------------------------------------------------------------------------
# Curation
# ------------------------------------------------------------------------------------------------


def out_of_image_fraction(grid: torch.Tensor, height: int, width: int, output_resolution: int) -> torch.Tensor:
    """Per crop, the larger of the fractions of samples outside the raw image along x and along y -> ``(N,)``.

    ``grid (N, R, R, 2)`` is in normalised raw-image coordinates. The tolerance is half an output
    pixel measured in the square the raw image is padded to (the original's
    ``check_if_warp_exceeds_image_boundaries`` with ``image_bounds``).
    """
    side = max(height, width)
    lim_x = 1.0 - side / (width * output_resolution)
    lim_y = 1.0 - side / (height * output_resolution)
    fx = (grid[..., 0].abs() > lim_x).flatten(1).float().mean(dim=1)
    fy = (grid[..., 1].abs() > lim_y).flatten(1).float().mean(dim=1)
    return torch.maximum(fx, fy)  # (N,)


@dataclass(frozen=True)
class CurateSummary:
    """What :func:`curate_dataset` wrote."""

    out_dir: Path
    records: List[Dict[str, Any]]  # one per input, input order: index, input, score, kept, reason, ...
    num_kept: int


def curate_dataset(congealer, inputs: Sequence[os.PathLike], out_dir: os.PathLike, *, output_resolution: int = 256,
                   fraction: float = 1.0, min_effective_resolution: float = 192, oob_threshold: float = 0.025,
                   scores: Optional[os.PathLike] = None, batch_size: int = 16, image_format: str = "png",
                   dist: Any = None, progress: bool = True) -> CurateSummary:
    """Write an aligned, filtered copy of the images ``inputs`` names into ``out_dir/images`` (see the module docstring).

    ``scores``: a CSV from :func:`write_scores` (``gangealing flow-scores``); computed here when
    ``fraction < 1`` and none is given. ``out_dir/curation.csv`` lists every input with its score,
    whether it was kept and why not, its effective resolution and out-of-image fraction.
    """
    from ..data.images import save_image
    from ..geometry.similarity import affine_grid
    from ..geometry.warp import warp

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1] (the share of images kept), got {fraction}")
    congealer.require_routing()
    if congealer.stn.similarity is None:
        raise ValueError("curation applies the similarity part of the warp; this model has no similarity stage")
    out_dir, paths, protected = folder_inputs(out_dir, inputs)
    items = list(enumerate(paths))

    # 1. Flow scores and the best fraction.
    score_of, errors = _input_scores(congealer, items, scores, fraction, batch_size, dist, progress)
    keep = best_fraction(score_of, fraction) if fraction < 1 else [i not in errors for i, _ in items]

    # 2-4. Similarity crops at full resolution, filtered.
    (out_dir / "images").mkdir(parents=True, exist_ok=True)

    def crop_group(group) -> List[Dict[str, Any]]:
        x = stack(group)  # (B, C, H, W)
        h, w = x.shape[-2:]
        res = congealer.align(x)
        grid = affine_grid(res.matrix, output_resolution)  # (B, R, R, 2) into the raw images
        crops = warp(x.to(grid.device), grid, padding_mode=congealer.padding_mode, antialias=True).cpu()
        oob = out_of_image_fraction(grid, h, w, output_resolution).cpu()
        eff = (res.matrix[:, :, :2].det().abs() * (w * h)).sqrt().cpu()  # crop side in raw pixels
        records = []
        for j, (idx, path, _) in enumerate(group):
            rec: Dict[str, Any] = {"effective_resolution": round(float(eff[j]), 2),
                                   "out_of_image": round(float(oob[j]), 4), "flipped": bool(res.flipped[j]),
                                   "cluster": None if res.cluster is None else int(res.cluster[j])}
            if float(oob[j]) > oob_threshold:
                rec["reason"] = "out_of_image"
            elif float(eff[j]) < min_effective_resolution:
                rec["reason"] = "low_resolution"
            else:
                name = f"{output_name(idx, path)}.{image_format}"
                save_image(crops[j], out_dir / "images" / name, protected=protected)
                rec["output"] = f"images/{name}"
            records.append(rec)
        return records

    todo = [(i, p) for i, p in items if keep[i]]
    cropped = run_sharded(todo, crop_group, dist, batch_size=batch_size, mode=image_mode(congealer),
                          unreadable=lambda idx, path, reason: {"reason": "unreadable", "error": reason},
                          desc="curate", progress=progress)
    by_index = {i: r for (i, _), r in zip(todo, cropped)}
    records = [_curation_record(i, p, score_of[i], by_index.get(i), errors.get(i)) for i, p in items]
    if is_main(dist):
        write_csv(out_dir / "curation.csv", records, CURATION_COLUMNS)
    barrier(dist)
    return CurateSummary(out_dir, records, sum(r["kept"] for r in records))


def _input_scores(congealer, items, scores: Optional[os.PathLike], fraction: float, batch_size: int, dist: Any,
                  progress: bool) -> Tuple[List[Optional[float]], Dict[int, str]]:
    """Flow score of each input (read from ``scores``, else computed when needed) and the inputs that failed."""
    score_of: List[Optional[float]] = [None] * len(items)
    errors: Dict[int, str] = {}
    if scores is not None:
        table = read_scores(scores)
        missing = [str(p) for _, p in items if os.path.realpath(p) not in table]
        if missing:
            raise ValueError(f"{scores}: no score for {len(missing)} input(s), e.g. {missing[0]}; "
                             "recompute them with `gangealing flow-scores` on the same inputs")
        for i, p in items:
            score_of[i] = table[os.path.realpath(p)]
            if score_of[i] is None:
                errors[i] = "unreadable (no flow score)"
    elif fraction < 1 or congealer.has_flow:
        for r in _score_paths(congealer, items, batch_size, dist, progress):
            score_of[r.index] = r.score
            if r.error:
                errors[r.index] = r.error
    return score_of, errors


def _curation_record(index: int, path: Path, score: Optional[float], cropped: Optional[Dict[str, Any]],
                     error: Optional[str]) -> Dict[str, Any]:
    """One row of curation.csv: the crop's record, else why the input was dropped before cropping."""
    rec: Dict[str, Any] = {"index": index, "input": str(path), "score": score}
    if cropped is not None:
        rec.update(cropped)
    elif error is not None:
        rec.update(reason="unreadable", error=error)
    else:
        rec["reason"] = "low_score"
    rec["kept"] = "output" in rec
    return rec
