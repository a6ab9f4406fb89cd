"""SPair-71K (Min et al., 2019): read the fixed image pairs of one category and split.

Layout of the release (``SPair-71k.tar.gz``, top folder ``SPair-71k/``)::

    JPEGImages/<category>/<name>.jpg
    ImageAnnotation/<category>/<name>.json     # per image: "kps": {"0": [x, y] or null, ...}, "bndbox", ...
    PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<category>.json
    Layout/{large,small}/{trn,val,test}.txt    # the pair names of each split
    Segmentation/<category>/<name>.png

A pair annotation holds ``src_imname`` / ``trg_imname``, ``src_imsize`` / ``trg_imsize``
(``[W, H, C]``), ``src_bndbox`` / ``trg_bndbox`` (``[x1, y1, x2, y2]`` pixels), ``src_kps`` /
``trg_kps`` (``[[x, y], ...]``, the key points annotated in *both* images), ``kps_ids`` (their ids
in the category's key-point list, as strings), ``category``, ``mirror``, and viewpoint / scale /
truncation / occlusion difficulty levels.

The original GANgealing evaluation (``prepare_data.py``) takes the pairs of a split in file-name
order, scatters each pair's key points into the category's full key-point list (visibility 1
where annotated), drops the key points no pair uses, resizes every image so its long side is
``size`` and border-pads it to a square, and uses ``max(x2 - x1, y2 - y1)`` of the bounding box
(original pixels) times the resize factor as the PCK threshold base.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "SPAIR_CATEGORIES",
    "SPAIR_SPLITS",
    "SPAIR_PERMUTATIONS",
    "SPairImage",
    "SPairPair",
    "SPairSplit",
    "find_spair_root",
    "read_spair_pairs",
]

SPAIR_CATEGORIES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dog", "horse",
    "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)
SPAIR_SPLITS = ("trn", "val", "test")

# Left/right swap of the key points a category keeps after unused ones are dropped (indices into
# that reduced list), from the original's prepare_data.py. Other categories have none published.
SPAIR_PERMUTATIONS: Dict[str, Tuple[int, ...]] = {
    "bicycle": (0, 1, 3, 2, 4, 5, 7, 6, 8, 10, 9, 11),
    "cat": (1, 0, 3, 2, 5, 4, 7, 6, 8, 10, 9, 12, 11, 13, 14),
    "dog": (1, 0, 3, 2, 5, 4, 6, 7, 8, 10, 9, 12, 11, 13, 14, 15),
    "tvmonitor": (2, 1, 0, 7, 6, 5, 4, 3, 10, 9, 8, 15, 14, 13, 12, 11),
}


@dataclass(frozen=True)
class SPairImage:
    """One side of a pair: the image, its size, box and the pair's key points on it."""

    path: Path  # the JPEG
    width: int
    height: int
    bbox: Tuple[float, float, float, float]  # (x1, y1, x2, y2), original pixels
    keypoints: np.ndarray  # (K, 3) float64: x, y (original pixels), visible (0/1); invisible rows are 0

    @property
    def bbox_size(self) -> float:
        """``max(x2 - x1, y2 - y1)``: the PCK threshold base in original pixels (as the original, no +1)."""
        x1, y1, x2, y2 = self.bbox
        return float(max(y2 - y1, x2 - x1))


@dataclass(frozen=True)
class SPairPair:
    """One annotated pair (source -> target)."""

    name: str  # the annotation's file stem, e.g. "000001-2008_000585-2008_000850:aeroplane"
    source: SPairImage
    target: SPairImage
    viewpoint_variation: Optional[int] = None


@dataclass(frozen=True)
class SPairSplit:
    """The pairs of one category and split, key points restricted to those used."""

    category: str
    split: str
    pairs: Tuple[SPairPair, ...]
    keypoint_ids: Tuple[int, ...]  # category key-point id of each kept column
    permutation: Optional[Tuple[int, ...]]  # over the kept columns, or None when unknown


def find_spair_root(folder: os.PathLike) -> Path:
    """The folder holding ``PairAnnotation/`` and ``JPEGImages/``: ``folder`` itself or one below it."""
    folder = Path(folder)
    candidates = [folder] + sorted(p for p in folder.glob("*") if p.is_dir()) + sorted(
        p for p in folder.glob("*/*") if p.is_dir())
    for c in candidates:
        if (c / "PairAnnotation").is_dir() and (c / "JPEGImages").is_dir():
            return c
    raise FileNotFoundError(
        f"{folder}: not an SPair-71k folder (expected PairAnnotation/ and JPEGImages/, as in SPair-71k.tar.gz)")


def _num_category_keypoints(root: Path, category: str) -> Optional[int]:
    annos = sorted((root / "ImageAnnotation" / category).glob("*.json"))
    if not annos:
        return None
    with open(annos[0]) as f:
        return len(json.load(f)["kps"])


def _side(root: Path, category: str, data: dict, prefix: str, num_kps: int) -> SPairImage:
    w, h = (int(v) for v in data[f"{prefix}_imsize"][:2])  # [W, H, C]
    kps = np.zeros((num_kps, 3), dtype=np.float64)
    ids = [int(i) for i in data["kps_ids"]]
    xy = np.asarray(data[f"{prefix}_kps"], dtype=np.float64).reshape(-1, 2)
    if len(ids) != xy.shape[0]:
        raise ValueError(f"{data.get('filename', '?')}: {len(ids)} kps_ids but {xy.shape[0]} {prefix}_kps")
    kps[ids, :2] = xy
    kps[ids, 2] = 1.0
    bbox = tuple(float(v) for v in data[f"{prefix}_bndbox"])
    return SPairImage(root / "JPEGImages" / category / data[f"{prefix}_imname"], w, h, bbox, kps)


def read_spair_pairs(folder: os.PathLike, category: str, split: str = "test",
                     permutation: Optional[Sequence[int]] = None) -> SPairSplit:
    """The pairs of ``category`` in ``split`` (``trn``, ``val``, ``test``), in file-name order.

    Key points: ``(K, 3)`` per image over the category's key points that at least one pair
    uses (the original drops the others). ``permutation`` overrides the published left/right
    swap (:data:`SPAIR_PERMUTATIONS`); it must index the kept key points.
    """
    if split not in SPAIR_SPLITS:
        raise ValueError(f"split must be one of {SPAIR_SPLITS}, got {split!r}")
    root = find_spair_root(folder)
    files = sorted((root / "PairAnnotation" / split).glob(f"*:{category}.json"))
    if not files:
        known = sorted(p.name for p in (root / "JPEGImages").iterdir() if p.is_dir())
        raise FileNotFoundError(f"{root}: no {split} pairs for category {category!r} (categories here: {known})")
    datas = []
    max_id = -1
    for path in files:
        with open(path) as f:
            data = json.load(f)
        if data.get("category", category) != category:
            raise ValueError(f"{path}: category {data.get('category')!r}, expected {category!r}")
        if int(data.get("mirror", 0)) != 0:  # the original asserts this too: no test pair is mirrored
            raise ValueError(f"{path}: mirrored pairs are not supported")
        max_id = max([max_id] + [int(i) for i in data["kps_ids"]])
        datas.append((path, data))
    num_kps = max(_num_category_keypoints(root, category) or 0, max_id + 1)
    pairs = []
    for path, data in datas:
        pairs.append(SPairPair(path.stem, _side(root, category, data, "src", num_kps),
                               _side(root, category, data, "trg", num_kps), data.get("viewpoint_variation")))
    used = np.zeros(num_kps, dtype=bool)
    for p in pairs:
        used |= (p.source.keypoints[:, 2] > 0) | (p.target.keypoints[:, 2] > 0)
    kept = np.flatnonzero(used)

    def keep(img: SPairImage) -> SPairImage:
        return SPairImage(img.path, img.width, img.height, img.bbox, img.keypoints[kept])

    pairs = tuple(SPairPair(p.name, keep(p.source), keep(p.target), p.viewpoint_variation) for p in pairs)
    if permutation is not None:
        perm: Optional[Tuple[int, ...]] = tuple(int(i) for i in permutation)
        if sorted(perm) != list(range(len(kept))):
            raise ValueError(f"the permutation has {len(perm)} entries but {len(kept)} key points of {category!r} "
                             f"are used in {split}: give one that permutes 0..{len(kept) - 1}")
    else:
        perm = SPAIR_PERMUTATIONS.get(category)
        if perm is not None and len(perm) != len(kept):  # published for the test split's key points
            warnings.warn(f"SPair {category} {split}: {len(kept)} key points are used but the published "
                          f"left/right permutation has {len(perm)}; flip inference will not relabel points "
                          f"(pass a permutation to fix this)", stacklevel=2)
            perm = None
    return SPairSplit(category, split, pairs, tuple(int(k) for k in kept), perm)
