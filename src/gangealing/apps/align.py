"""Align a folder of images: congealed images, sampling grids, flips / clusters, the average image.

Output folder layout (``gangealing align INPUTS --out DIR``; see docs/align.md)::

    DIR/congealed/000000_<stem>.png   congealed image of input 0 (R x R), input order
    DIR/grids/000000_<stem>.npy       float32 (R, R, 2) sampling grid of input 0 (see below)
    DIR/results.csv, results.json     one row per input: index, input path, outputs, size, flipped, cluster
    DIR/average.png                   average congealed image (average_cluster<k>.png for clustering models)
    DIR/skipped.txt                   inputs that could not be read, with the reason (only if any)

A grid holds, for every output pixel, the position it was sampled from in the ORIGINAL input image:
``(x, y)`` normalised with ``align_corners=False`` (``-1`` / ``+1`` are the outer edges of the
border pixels), or input pixels with ``grid_units='pixels'`` (pixel centres at integers). So
``torch.nn.functional.grid_sample(image, grid)`` reproduces the congealed image from the input.

Nothing is written into the input folders: the output folder may not be (inside) one of them,
and an output file that would overwrite an input is refused.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..distributed import barrier, gather, is_main, shard
from ..fileio import save_npy

GRID_UNITS = ("normalized", "pixels")
# What align writes into its output folder (removed by overwrite=True before a new run).
ALIGN_OUTPUTS = ("congealed", "grids", "results.csv", "results.json", "skipped.txt", "average.*", "average_cluster*.*")


@dataclass(frozen=True)
class AlignSummary:
    """What :func:`align_images` wrote (on every rank: the merged records of all ranks)."""

    out_dir: Path
    records: List[Dict[str, Any]]  # one per input in input order; skipped inputs have "error"
    num_written: int
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    averages: List[str] = field(default_factory=list)  # paths of the average image(s)


# ------------------------------------------------------------------------------------------------
# Shared by the large-folder applications
# ------------------------------------------------------------------------------------------------


def check_output_dir(out_dir: os.PathLike, inputs: Sequence[os.PathLike]) -> Path:
    """Refuse an output folder that is, or lies inside, an input folder (inputs stay untouched), or
    that is not a folder at all (a file, or a path under one)."""
    from ..fileio import check_output_folder

    check_output_folder(out_dir)
    out = Path(os.path.realpath(out_dir))
    for item in inputs:
        p = Path(str(item)).expanduser()
        if p.is_dir():
            root = Path(os.path.realpath(p))
            if out == root or root in out.parents:
                raise ValueError(f"output folder {out_dir} is inside the input folder {item}; "
                                 "choose an output folder outside the inputs (they are never modified)")
    return Path(out_dir)


def claim_output_dir(out_dir: Path, owned: Sequence[str], overwrite: bool = False, dist: Any = None) -> None:
    """Take ``out_dir`` for a command's outputs: refuse a folder that already holds anything unless
    ``overwrite``, which removes the entries this command writes (``owned``: glob patterns) and
    keeps everything else, so no file of a previous run is left beside the new results."""
    existing = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ValueError(f"output folder {out_dir} is not empty (it holds {existing[0]}{more}); pass --overwrite to "
                         "replace the outputs of a previous run, or choose a new folder")
    barrier(dist)  # every rank has looked before anything is removed or written
    if existing and is_main(dist):
        for pattern in owned:
            for p in out_dir.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
    barrier(dist)


def ignored_files(inputs: Sequence[os.PathLike]) -> List[Path]:
    """Files in input folders that are not images by suffix (reported, never read)."""
    from ..data.images import is_image_file

    out: List[Path] = []
    for item in inputs:
        p = Path(str(item)).expanduser()
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and not is_image_file(f)
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
    return out


def image_mode(congealer) -> str:
    """Pillow mode matching the model's number of image channels."""
    channels = getattr(congealer, "image_channels", None) or congealer.stn.cfg.image_channels  # onnx: no .stn
    return "L" if int(channels) == 1 else "RGB"


def read_batches(items: Sequence[Tuple[int, Path]], batch_size: int, mode: str, max_side: Optional[int] = None
                 ) -> Iterator[Tuple[List[Tuple[int, Path, np.ndarray]], List[Tuple[int, Path, str]]]]:
    """Read ``(index, path)`` items in batches: ``(readable [(index, path, uint8 HWC)], unreadable [(index, path, reason)])``.

    Unreadable files are returned separately, for the caller to report once; reading continues
    with the next file. ``max_side``: huge images are decoded smaller (:func:`read_image`).
    """
    from ..data.images import UnreadableImage, read_image

    batch: List[Tuple[int, Path, np.ndarray]] = []
    bad: List[Tuple[int, Path, str]] = []
    for idx, path in items:
        try:
            batch.append((idx, path, read_image(path, mode, max_side=max_side)))
        except (UnreadableImage, FileNotFoundError) as e:
            bad.append((idx, path, e.reason if isinstance(e, UnreadableImage) else "no such file"))
        if len(batch) >= batch_size:
            yield batch, bad
            batch, bad = [], []
    if batch or bad:
        yield batch, bad


def same_size_groups(batch: List[Tuple[int, Path, np.ndarray]]) -> List[List[Tuple[int, Path, np.ndarray]]]:
    """Split a batch into runs of equal image size (the predictor takes one size per call)."""
    groups: Dict[Tuple[int, int], List] = {}
    for item in batch:
        groups.setdefault(item[2].shape[:2], []).append(item)
    return list(groups.values())


def stack(group: List[Tuple[int, Path, np.ndarray]]) -> torch.Tensor:
    """uint8 images of one size -> ``(N, C, H, W)`` float in [-1, 1]."""
    from ..data.images import to_tensor

    return to_tensor(np.stack([a for _, _, a in group]))


def decode_side(congealer, output_resolution: int) -> int:
    """Long side worth decoding an input at: plenty for the transformer's input and a sharp output
    at ``output_resolution`` (outputs sample the decoded image), so huge photos do not fill memory."""
    return max(1024, 2 * max(congealer.input_size, int(output_resolution)))


def full_size(path: Path, decoded: np.ndarray, max_side: int) -> Tuple[int, int]:
    """``(height, width)`` of the image file, which :func:`read_batches` may have decoded smaller."""
    from ..data.images import image_size

    return image_size(path) if max(decoded.shape[:2]) >= max_side else tuple(decoded.shape[:2])


def grid_to_pixels(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised grid ``(..., 2)`` -> pixels of a ``height x width`` image (centres at integers)."""
    from ..geometry.coords import norm_to_pixel

    return norm_to_pixel(grid, (height, width))


def output_name(index: int, path: Path) -> str:
    """``000042_<stem>``: input order first, then the input's name (names can repeat across folders)."""
    return f"{index:06d}_{path.stem}"


def folder_inputs(out_dir: os.PathLike, inputs: Sequence[os.PathLike]) -> Tuple[Path, List[Path], List[str]]:
    """``(out_dir, paths, protected)``: the checked output folder (:func:`check_output_dir`), the images
    ``inputs`` names in input order, and the same paths as strings (outputs never overwrite them)."""
    from ..data.images import list_images

    out_dir = check_output_dir(out_dir, inputs)
    paths = list_images(inputs)
    return out_dir, paths, [str(p) for p in paths]


def error_record(index: int, path: Path, reason: str) -> Dict[str, Any]:
    """The record of an input that could not be read (what :func:`skipped_inputs` picks out)."""
    return {"index": index, "input": str(path), "error": reason}


def run_sharded(items: Sequence[Tuple[int, Path]], process: Callable[[list], Sequence], dist: Any, *,
                batch_size: int, mode: str, max_side: Optional[int] = None,
                unreadable: Callable[[int, Path, str], Any] = error_record, desc: str = "",
                progress: bool = False) -> list:
    """Run ``process`` over this rank's share of ``items`` and return every rank's results in input order.

    ``items`` are ``(index, path)`` pairs; this rank takes ``items[rank::world_size]``
    (:func:`gangealing.distributed.shard`), reads them ``batch_size`` at a time (:func:`read_batches`)
    and calls ``process(group)`` on each run of same-size images, ``group`` a list of
    ``(index, path, uint8 (H, W, C))``; it returns one result per entry. A file that cannot be read
    gets ``unreadable(index, path, reason)`` instead. Under ``torchrun`` the results are exchanged
    (:func:`gangealing.distributed.gather`, a collective: every rank calls this), so they must be
    picklable. ``progress``: a bar named ``desc`` on rank 0.
    """
    mine = shard(items, dist)
    done: Dict[int, Any] = {}
    bar = progress_bar(len(mine), desc, progress and is_main(dist))
    for batch, bad in read_batches(mine, batch_size, mode, max_side):
        for idx, path, reason in bad:
            done[idx] = unreadable(idx, path, reason)
        for group in same_size_groups(batch):
            for (idx, _, _), result in zip(group, process(group)):
                done[idx] = result
        bar.update(len(batch) + len(bad))
    bar.close()
    return gather([done[i] for i, _ in mine], dist)


def skipped_inputs(records: Sequence[Dict[str, Any]]) -> List[Dict[str, str]]:
    """``{"path", "reason"}`` of each record with an ``error`` (an unreadable input)."""
    return [{"path": r["input"], "reason": r["error"]} for r in records if "error" in r]


def write_skipped(out_dir: Path, skipped: Sequence[Dict[str, str]]) -> None:
    """``out_dir/skipped.txt``: one ``path<TAB>reason`` line per skipped input (only if any)."""
    if skipped:
        (out_dir / "skipped.txt").write_text("".join(f"{s['path']}\t{s['reason']}\n" for s in skipped))


def write_csv(path: Path, records: Sequence[Dict[str, Any]], cols: Sequence[str]) -> None:
    """One row per record, the columns ``cols`` (missing or None values empty); written atomically."""
    from ..fileio import atomic_write

    def write(f) -> None:
        wr = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        for r in records:
            wr.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})

    atomic_write(path, write, binary=False)


# ------------------------------------------------------------------------------------------------
# align
# ------------------------------------------------------------------------------------------------


def align_images(congealer, inputs: Sequence[os.PathLike], out_dir: os.PathLike, *,
                 output_resolution: Optional[int] = None, batch_size: int = 16, save_grids: bool = True,
                 grid_units: str = "normalized", average_count: Optional[int] = None, image_format: str = "png",
                 cluster: Optional[int] = None, dist: Any = None, progress: bool = True,
                 overwrite: bool = False) -> AlignSummary:
    """Align every image that ``inputs`` names (folders, globs, files) and write them under ``out_dir``.

    ``out_dir`` must be new or empty; ``overwrite=True`` first removes the outputs of a previous
    run there (:data:`ALIGN_OUTPUTS`; other files stay).

    Under ``torchrun`` each rank aligns every ``world_size``-th image and rank 0 writes the merged
    tables and the average. ``average_count`` limits the average to the first N inputs (all by
    default). Returns the merged :class:`AlignSummary` (on every rank).
    """
    from ..data.images import save_image

    if grid_units not in GRID_UNITS:
        raise ValueError(f"grid_units must be one of {GRID_UNITS}, got {grid_units!r}")
    if cluster is None:
        congealer.require_routing()
    congealer.check_cluster(cluster)
    out_dir, paths, protected = folder_inputs(out_dir, inputs)
    claim_output_dir(out_dir, ALIGN_OUTPUTS, overwrite, dist)
    res_out = congealer.resolution(output_resolution)
    n_avg = len(paths) if average_count is None else min(int(average_count), len(paths))
    for folder in ("congealed", "grids") if save_grids else ("congealed",):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    side = decode_side(congealer, res_out)
    average = _AverageSum(congealer.num_clusters)  # this rank's share of the first n_avg inputs

    def align_group(group) -> List[Dict[str, Any]]:
        res = congealer.align(stack(group), output_resolution=res_out, cluster=cluster)
        imgs, grids = res.images.cpu(), res.grid.float().cpu()
        records = []
        for j, (idx, path, arr) in enumerate(group):
            h, w = full_size(path, arr, side)  # grids and sizes refer to the file, at full size
            name = output_name(idx, path)
            img_path = out_dir / "congealed" / f"{name}.{image_format}"
            save_image(imgs[j], img_path, protected=protected)
            cl = None if res.cluster is None else int(res.cluster[j])
            rec = {"index": idx, "input": str(path), "image": str(img_path.relative_to(out_dir)),
                   "height": int(h), "width": int(w), "flipped": bool(res.flipped[j]), "cluster": cl}
            if save_grids:
                grid_path = out_dir / "grids" / f"{name}.npy"
                grid = grid_to_pixels(grids[j], h, w) if grid_units == "pixels" else grids[j]
                save_npy(grid_path, grid.numpy().astype(np.float32))
                rec["grid"] = str(grid_path.relative_to(out_dir))
            records.append(rec)
            if idx < n_avg:
                average.add(imgs[j], cl or 0)
        return records

    merged = run_sharded(list(enumerate(paths)), align_group, dist, batch_size=batch_size, mode=image_mode(congealer),
                         max_side=side, desc="align", progress=progress)
    sums = gather([(average.total, average.count)], dist)
    skipped = skipped_inputs(merged)
    averages: List[str] = []
    if is_main(dist):
        averages = _write_average(sums, out_dir, image_format, protected)
        _write_tables(merged, out_dir, grid_units, res_out)
        write_skipped(out_dir, skipped)
    barrier(dist)
    if not averages:
        averages = sorted(str(p) for p in out_dir.glob(f"average*.{image_format}"))
    return AlignSummary(out_dir=out_dir, records=merged, num_written=sum("error" not in r for r in merged),
                        skipped=skipped, averages=averages)


class _AverageSum:
    """Per-cluster sums of congealed images (float64) and their counts, for the average image."""

    def __init__(self, num_clusters: int):
        self.total: Optional[torch.Tensor] = None  # (K, C, R, R), allocated at the first image
        self.count = torch.zeros(num_clusters, dtype=torch.float64)

    def add(self, image: torch.Tensor, cluster: int) -> None:
        if self.total is None:
            self.total = torch.zeros(self.count.numel(), *image.shape, dtype=torch.float64)
        self.total[cluster] += image.double()
        self.count[cluster] += 1


def _write_average(sums, out_dir: Path, image_format: str, protected) -> List[str]:
    from ..data.images import save_image

    total, count = None, None
    for t, c in sums:
        if t is None:
            continue
        total = t.clone() if total is None else total + t
        count = c.clone() if count is None else count + c
    if total is None:
        return []
    written = []
    k = total.size(0)
    for cl in range(k):
        if count[cl] == 0:
            continue
        avg = (total[cl] / count[cl]).float()
        name = "average" if k == 1 else f"average_cluster{cl}"
        written.append(str(save_image(avg, out_dir / f"{name}.{image_format}", protected=protected)))
    return written


def _write_tables(records: List[Dict[str, Any]], out_dir: Path, grid_units: str, resolution: int) -> None:
    write_csv(out_dir / "results.csv", records,
              ["index", "input", "image", "grid", "height", "width", "flipped", "cluster", "error"])
    meta = {"output_resolution": resolution, "grid_units": grid_units,
            "grid_convention": "grid[i, j] = (x, y) source position in the input image of output pixel (row i, col j); "
                               + ("normalised, align_corners=False" if grid_units == "normalized"
                                  else "input pixels, centres at integers"),
            "images": records}
    from ..fileio import atomic_write

    atomic_write(out_dir / "results.json", lambda f: json.dump(meta, f, indent=1), binary=False)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on the main process (a no-op object elsewhere)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a core dependency
        return _NoBar()
    return tqdm(total=total, desc=desc, leave=False, disable=None)
