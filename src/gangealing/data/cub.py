"""CUB-200-2011 (Wah et al., 2011) with ACSM's validation split and crops.

Layout of the release (``CUB_200_2011.tgz``, top folder ``CUB_200_2011/``)::

    images.txt               # "<image_id> <class folder>/<file>.jpg", ids from 1
    images/<class folder>/<file>.jpg
    parts/parts.txt          # "<part_id> <name>" for the 15 parts
    parts/part_locs.txt      # "<image_id> <part_id> <x> <y> <visible>", 1-based pixels; 0 0 0 when absent
    bounding_boxes.txt       # "<image_id> <x> <y> <width> <height>"
    train_test_split.txt     # "<image_id> <1 train | 0 test>"

ACSM (Kulkarni et al., 2020) evaluates on a cleaned validation split, ``val_cub_cleaned.mat``
(MATLAB v5, from CMR): a struct array ``images`` whose entries have ``id`` (the CUB image id),
``rel_path`` (as in images.txt) and ``bbox`` (a struct with ``x1, y1, x2, y2``, 1-based pixels),
among other fields. The original GANgealing prepares it as ACSM does: the box (made 0-based) is
grown by 5% of its width / height on each side, made square around its centre (Python 2
rounding, half away from zero), cut out of the image with edge replication where it leaves the
image, and resized to ``size``; key points follow the crop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "CUB_PART_NAMES",
    "CUB_PERMUTATION",
    "CUB_SPLITS",
    "CUBImage",
    "find_cub_root",
    "read_cub_keypoints",
    "read_acsm_split",
    "read_cub_split",
    "acsm_square_box",
    "acsm_crop",
    "crop_keypoints",
]

CUB_PART_NAMES = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
    "right eye", "right leg", "right wing", "tail", "throat",
)
# Mirroring swaps the left and right eye, leg and wing (the original's CUB_PERMUTATION).
CUB_PERMUTATION = (0, 1, 2, 3, 4, 5, 10, 11, 12, 9, 6, 7, 8, 13, 14)
CUB_SPLITS = ("acsm_val", "train", "test", "all")

Box = Tuple[int, int, int, int]


@dataclass(frozen=True)
class CUBImage:
    """One CUB image with its square crop box and 15 key points."""

    image_id: int
    rel_path: str  # as in images.txt
    path: Path
    box: Box  # square crop (x1, y1, x2, y2), 0-based inclusive pixels; may leave the image
    keypoints: np.ndarray  # (15, 3) float64: x, y 0-based pixels of the full image, visible; absent rows 0


def find_cub_root(folder: os.PathLike) -> Path:
    """The folder holding ``images.txt`` and ``parts/part_locs.txt``: ``folder`` or one below it."""
    folder = Path(folder)
    for c in [folder] + sorted(p for p in folder.glob("*") if p.is_dir()):
        if (c / "images.txt").is_file() and (c / "parts" / "part_locs.txt").is_file():
            return c
    raise FileNotFoundError(
        f"{folder}: not a CUB-200-2011 folder (expected images.txt and parts/part_locs.txt, as in CUB_200_2011.tgz)")


def _read_table(path: Path) -> List[List[str]]:
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def read_cub_keypoints(root: os.PathLike) -> Dict[int, np.ndarray]:
    """``image_id -> (15, 3)`` key points: 0-based ``x, y`` (the file is 1-based) and visibility."""
    root = find_cub_root(root)
    n_parts = len(_read_table(root / "parts" / "parts.txt")) if (root / "parts" / "parts.txt").is_file() else 15
    out: Dict[int, np.ndarray] = {}
    for row in _read_table(root / "parts" / "part_locs.txt"):
        img, part, x, y, vis = int(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4])
        kps = out.setdefault(img, np.zeros((n_parts, 3), dtype=np.float64))
        if vis > 0:
            kps[part - 1] = (x - 1.0, y - 1.0, 1.0)
    return out


def _round_half_away(x: float) -> int:
    """Python 2's ``round``: halves go away from zero (ACSM is Python 2 code)."""
    with localcontext() as ctx:
        ctx.rounding = ROUND_HALF_UP
        return int(Decimal(float(x)).to_integral_value())


def acsm_square_box(bbox: Sequence[float], pad_fraction: float = 0.05) -> Box:
    """ACSM's crop box from a tight 0-based inclusive box ``(x1, y1, x2, y2)``: grown by
    ``pad_fraction`` of its size on each side, rounded, then made square about the centre
    along the shorter side."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    grown = (x1 - pad_fraction * bw, y1 - pad_fraction * bh, x2 + pad_fraction * bw, y2 + pad_fraction * bh)
    x1, y1, x2, y2 = (_round_half_away(v) for v in grown)
    bw, bh = x2 - x1 + 1, y2 - y1 + 1
    side = max(bw, bh)
    x1 -= _round_half_away((side - bw) / 2.0)
    y1 -= _round_half_away((side - bh) / 2.0)
    return x1, y1, x1 + side - 1, y1 + side - 1


def acsm_crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Cut ``box`` (0-based inclusive) out of uint8 ``(H, W, C)``, replicating edge pixels where
    the box leaves the image (ACSM's ``crop`` with ``border=True``)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    sx1, sx2, sy1, sy2 = max(0, x1), min(w, x2 + 1), max(0, y1), min(h, y2 + 1)
    if sx1 >= sx2 or sy1 >= sy2:
        raise ValueError(f"crop box {box} lies outside the {w}x{h} image")
    inside = image[sy1:sy2, sx1:sx2]
    pad = [(sy1 - y1, y2 + 1 - sy2), (sx1 - x1, x2 + 1 - sx2)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(inside, pad, mode="edge")


def crop_keypoints(keypoints: np.ndarray, box: Box, size: int, legacy: bool = False) -> np.ndarray:
    """Key points ``(K, 3)`` (0-based pixels of the full image) in the ``size x size`` resized crop.

    Pixel-centre convention: ``(x - x1 + 0.5) * size / side - 0.5``. ``legacy=True``: the
    original's ``(x - x1) * size / side``, which ignores the half-pixel shift of resizing (at most
    half an output pixel). Absent points stay at 0.
    """
    kps = np.array(keypoints, dtype=np.float64)
    side = box[2] - box[0] + 1
    if box[3] - box[1] + 1 != side:
        raise ValueError(f"crop box {box} is not square")
    k = size / float(side)
    xy = kps[:, :2] - np.array([box[0], box[1]], dtype=np.float64)
    xy = xy * k if legacy else (xy + 0.5) * k - 0.5
    kps[:, :2] = np.where(kps[:, 2:3] > 0, xy, 0.0)
    return kps


def _load_mat(path: Path):
    try:
        from scipy.io import loadmat
    except ImportError:
        raise ImportError(f"reading ACSM's {path.name} needs scipy: pip install 'gangealing[cub]' "
                          f"(or pip install scipy)") from None
    try:
        return loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except NotImplementedError as e:  # v7.3 files are HDF5
        raise ValueError(f"{path}: a MATLAB v7.3 file; ACSM's val_cub_cleaned.mat is MATLAB v5 ({e})") from None


def read_acsm_split(mat_path: os.PathLike) -> List[Tuple[int, str, Tuple[float, float, float, float]]]:
    """``(image_id, rel_path, (x1, y1, x2, y2) 1-based)`` for each image of ACSM's ``val_cub_cleaned.mat``, in file order."""
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"{mat_path}: no such file (ACSM's CUB validation split, val_cub_cleaned.mat)")
    mat = _load_mat(mat_path)
    if "images" not in mat:
        raise ValueError(f"{mat_path}: no 'images' struct array; is this ACSM's val_cub_cleaned.mat?")
    out = []
    for entry in np.atleast_1d(mat["images"]):
        bb = entry.bbox
        box = tuple(float(np.asarray(getattr(bb, k)).reshape(-1)[0]) for k in ("x1", "y1", "x2", "y2"))
        rel = entry.rel_path
        rel = str(rel if isinstance(rel, str) else np.asarray(rel).reshape(-1)[0])
        out.append((int(np.asarray(entry.id).reshape(-1)[0]), rel, box))
    return out


def read_cub_split(folder: os.PathLike, split: str = "acsm_val", acsm_mat: Optional[os.PathLike] = None) -> List[CUBImage]:
    """The images of ``split`` with ACSM-style square boxes and key points.

    ``acsm_val``: ACSM's cleaned validation split (needs ``acsm_mat``, their
    ``val_cub_cleaned.mat``), boxes from the file. ``train`` / ``test`` / ``all``: CUB's own
    split and ``bounding_boxes.txt`` (``x, y, w, h`` read as the 0-based box
    ``(x, y, x + w - 1, y + h - 1)``), cropped the same way; these are not part of the
    original's evaluation.
    """
    if split not in CUB_SPLITS:
        raise ValueError(f"split must be one of {CUB_SPLITS}, got {split!r}")
    root = find_cub_root(folder)
    kps = read_cub_keypoints(root)
    if split == "acsm_val":
        if acsm_mat is None:
            raise ValueError("the acsm_val split needs ACSM's val_cub_cleaned.mat (--acsm-mat)")
        entries = [(i, rel, tuple(v - 1.0 for v in box)) for i, rel, box in read_acsm_split(acsm_mat)]
    else:
        names = {int(r[0]): r[1] for r in _read_table(root / "images.txt")}
        boxes = {int(r[0]): tuple(float(v) for v in r[1:5]) for r in _read_table(root / "bounding_boxes.txt")}
        is_train = {int(r[0]): r[1] == "1" for r in _read_table(root / "train_test_split.txt")} if split != "all" else {}
        entries = []
        for i in sorted(names):
            if split != "all" and is_train.get(i) != (split == "train"):
                continue
            x, y, w, h = boxes[i]
            entries.append((i, names[i], (x, y, x + w - 1, y + h - 1)))
    out = []
    for image_id, rel, box in entries:
        if image_id not in kps:
            raise ValueError(f"CUB image id {image_id} ({rel}) has no key points in parts/part_locs.txt")
        out.append(CUBImage(image_id, rel, root / "images" / rel, acsm_square_box(box), kps[image_id]))
    return out
