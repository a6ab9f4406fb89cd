"""The key-point dataset format: a prepared image dataset plus annotated key points and the PCK protocol.

A key-point dataset is a folder holding a prepared dataset (``images.npy`` and ``manifest.json``
of :mod:`gangealing.data.dataset`, readable by :func:`~gangealing.data.dataset.load_prepared`)
and ``keypoints.json``::

    {"format": "gangealing-keypoints", "version": 1,
     "dataset": "spair" | "cub" | ..., "category": "cat", "split": "test", "size": 256,
     "keypoint_names": [...] | null,
     "permutation": [...] | null,             # left/right swap of the key points under a mirror
     "protocol": {"pairs": "fixed" | "random", "num_pairs": 10000 | null,
                  "both_ways": false, "threshold": "bbox" | "image"},
     "samples": [{"image": 0,                 # row of images.npy
                  "keypoints": [[x, y, v], ...],          # pixels of the prepared image, pixel centres
                  "keypoints_legacy": [[x, y, v], ...],   # the original's mapping (no half-pixel term)
                  "bbox_size": 123.0, "scale": 0.51}],   # SPair: threshold base (original px) and resize factor
     "pairs": [[0, 1], ...] | null}           # fixed pairs of sample indices

A *sample* is one annotated view of an image: SPair annotates key points per pair, so each pair
has its own two samples (images are stored once); CUB has one sample per image. Invisible key
points are ``(0, 0, 0)``. ``protocol`` says how the original evaluates PCK-transfer on it:

* ``fixed`` pairs (SPair-71K): the listed pairs, one way, threshold ``alpha * scale * bbox_size``
  of the target (the box's larger side in the prepared frame);
* ``random`` pairs (CUB): ``num_pairs`` random pairs transferred both ways, threshold
  ``alpha * size``. :func:`random_pairs` reproduces the original's pair sequence exactly.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .dataset import PreparedDataset, load_prepared

__all__ = ["KEYPOINTS_FILE", "KeypointSample", "KeypointDataset", "write_keypoints", "load_keypoint_dataset",
           "random_pairs"]

KEYPOINTS_FILE = "keypoints.json"
FORMAT = "gangealing-keypoints"
VERSION = 1
_BIG = 9999999999999  # the original's seed range for per-epoch pair shuffles


@dataclass(frozen=True)
class KeypointSample:
    """One annotated view of a prepared image."""

    image: int
    keypoints: np.ndarray  # (K, 3) x, y, visible in the prepared frame (pixel centres)
    keypoints_legacy: np.ndarray  # (K, 3) the original's mapping of the same points
    bbox_size: Optional[float] = None  # SPair threshold base, original pixels
    scale: Optional[float] = None  # original -> prepared resize factor (SPair: size / max(W, H))


def _rows(a: np.ndarray) -> List[List[float]]:
    # float32 values round-trip exactly through JSON's float64 text.
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


def write_keypoints(folder: os.PathLike, samples: Sequence[KeypointSample], *, dataset: str, size: int,
                    protocol: Dict[str, Any], pairs: Optional[Sequence[Sequence[int]]] = None,
                    permutation: Optional[Sequence[int]] = None, category: Optional[str] = None,
                    split: Optional[str] = None, keypoint_names: Optional[Sequence[str]] = None,
                    extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``keypoints.json`` into ``folder`` (next to the prepared images)."""
    doc = {
        "format": FORMAT, "version": VERSION, "dataset": dataset, "category": category, "split": split,
        "size": int(size), "keypoint_names": list(keypoint_names) if keypoint_names is not None else None,
        "permutation": [int(i) for i in permutation] if permutation is not None else None,
        "protocol": dict(protocol),
        "samples": [{"image": int(s.image), "keypoints": _rows(s.keypoints), "keypoints_legacy": _rows(s.keypoints_legacy),
                     "bbox_size": None if s.bbox_size is None else float(np.float32(s.bbox_size)),
                     "scale": None if s.scale is None else float(np.float32(s.scale))} for s in samples],
        "pairs": [[int(a), int(b)] for a, b in pairs] if pairs is not None else None,
        **(extra or {}),
    }
    path = Path(folder) / KEYPOINTS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
    return path


def random_pairs(num_images: int, num_pairs: int, seed: int = 0) -> torch.Tensor:
    """``(num_pairs, 2)`` long: the original's random pairs (``PCKDataset`` + ``sample_infinite_pck_data``).

    Each epoch draws a seed from a generator seeded with ``seed``, shuffles all images with it,
    drops the last one if the count is odd and pairs neighbours; epochs follow each other until
    ``num_pairs`` pairs are taken.
    """
    if num_images < 2:
        raise ValueError("random pairs need at least two images")
    rng = torch.Generator().manual_seed(int(seed))
    out, total = [], 0
    while total < num_pairs:
        epoch_seed = int(torch.randint(0, _BIG, (1,), generator=rng).item())
        perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(epoch_seed))
        if perm.numel() % 2 == 1:
            perm = perm[:-1]
        pairs = perm.view(-1, 2)
        out.append(pairs)
        total += pairs.size(0)
    return torch.cat(out)[:num_pairs]


@dataclass(frozen=True)
class KeypointDataset:
    """A prepared image dataset with key-point samples, pairs and the PCK protocol (see the module docstring)."""

    images: PreparedDataset
    sample_image: torch.Tensor  # (S,) long: image row of each sample
    keypoints: torch.Tensor  # (S, K, 3) float32, pixel-centre convention
    keypoints_legacy: torch.Tensor  # (S, K, 3) float32, the original's mapping
    bbox_size: Optional[torch.Tensor]  # (S,) float32 or None
    scale: Optional[torch.Tensor]  # (S,) float32 or None
    pairs: Optional[torch.Tensor]  # (P, 2) long fixed pairs of samples, or None (random)
    permutation: Optional[tuple]
    protocol: Dict[str, Any]
    meta: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def num_samples(self) -> int:
        return int(self.sample_image.numel())

    @property
    def size(self) -> int:
        return self.images.size

    @property
    def both_ways(self) -> bool:
        return bool(self.protocol.get("both_ways", False))

    def eval_pairs(self, num_pairs: Optional[int] = None, seed: int = 0) -> torch.Tensor:
        """The ``(P, 2)`` sample pairs the protocol evaluates: the fixed pairs (at most ``num_pairs``),
        or ``num_pairs`` (default: the protocol's) random ones (:func:`random_pairs`)."""
        if self.pairs is not None:
            return self.pairs if num_pairs is None else self.pairs[:num_pairs]
        n = num_pairs if num_pairs is not None else self.protocol.get("num_pairs")
        if n is None:
            raise ValueError("this dataset has no fixed pairs: give num_pairs")
        return random_pairs(self.num_samples, int(n), seed)

    def batch(self, pairs: torch.Tensor, legacy: bool = False) -> Dict[str, torch.Tensor]:
        """The batch dict of :func:`gangealing.metrics.pck.evaluate_pck_transfer` for sample pairs ``(B, 2)``.

        ``imgsA``/``imgsB`` ``(B, C, S, S)`` in [-1, 1], ``kpsA``/``kpsB`` ``(B, K, 3)``, and with a
        bounding-box threshold ``threshA/B`` and ``scaleA/B`` ``(B,)``.
        """
        a, b = pairs[:, 0], pairs[:, 1]
        kps = self.keypoints_legacy if legacy else self.keypoints
        out = {
            "imgsA": self.images.tensor(self.sample_image[a].numpy()),
            "imgsB": self.images.tensor(self.sample_image[b].numpy()),
            "kpsA": kps[a], "kpsB": kps[b],
        }
        if self.protocol.get("threshold") == "bbox":
            if self.bbox_size is None or self.scale is None:
                raise ValueError("the bbox threshold needs bbox_size and scale for every sample")
            out.update(threshA=self.bbox_size[a], threshB=self.bbox_size[b], scaleA=self.scale[a], scaleB=self.scale[b])
        return out


def _opt_tensor(values: List[Optional[float]]) -> Optional[torch.Tensor]:
    if not values or any(v is None for v in values):
        return None
    return torch.tensor(values, dtype=torch.float32)


def load_keypoint_dataset(folder: Union[str, os.PathLike]) -> KeypointDataset:
    """Open a key-point dataset folder written by ``gangealing prepare spair|cub``."""
    folder = Path(folder)
    path = folder / KEYPOINTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {KEYPOINTS_FILE}; prepare a key-point dataset with "
                                "`gangealing prepare spair ...` or `gangealing prepare cub ...`")
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != FORMAT or int(doc.get("version", 0)) > VERSION:
        raise ValueError(f"{path}: not a gangealing key-point file of a version this code reads")
    images = load_prepared(folder)
    samples = doc["samples"]
    if not samples:
        raise ValueError(f"{path}: no samples")
    sample_image = torch.tensor([s["image"] for s in samples], dtype=torch.long)
    if int(sample_image.max()) >= len(images) or int(sample_image.min()) < 0:
        raise ValueError(f"{path}: a sample refers to an image row outside 0..{len(images) - 1}")
    kps = torch.tensor([s["keypoints"] for s in samples], dtype=torch.float32).view(len(samples), -1, 3)
    legacy = torch.tensor([s.get("keypoints_legacy", s["keypoints"]) for s in samples],
                          dtype=torch.float32).view(len(samples), -1, 3)
    pairs = doc.get("pairs")
    pairs_t = torch.tensor(pairs, dtype=torch.long).view(-1, 2) if pairs is not None else None
    if pairs_t is not None and pairs_t.numel() and (int(pairs_t.max()) >= len(samples) or int(pairs_t.min()) < 0):
        raise ValueError(f"{path}: a pair refers to a sample outside 0..{len(samples) - 1}")
    perm = doc.get("permutation")
    meta = {k: v for k, v in doc.items() if k not in ("samples", "pairs", "permutation", "protocol")}
    return KeypointDataset(
        images=images, sample_image=sample_image, keypoints=kps, keypoints_legacy=legacy,
        bbox_size=_opt_tensor([s.get("bbox_size") for s in samples]),
        scale=_opt_tensor([s.get("scale") for s in samples]),
        pairs=pairs_t, permutation=tuple(perm) if perm is not None else None,
        protocol=dict(doc.get("protocol") or {}), meta=meta, path=folder,
    )
