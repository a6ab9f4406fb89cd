"""Key-point transfer between two images through the congealed frame, with a picture of the result.

Key-point JSON (read and written; see docs/align.md)::

    {
      "points":  [[x, y], ...],           # pixels of the image, (x, y), pixel centres at integers
      "names":   ["left_eye", ...],       # optional, one per point
      "visible": [true, ...],             # optional, one per point (default: all visible)
      "permutation": [1, 0, ...],         # optional: left/right swap of the point order, used with flips
      "image": "a.png", "width": 640, "height": 480   # written by gangealing (informative)
    }

A bare list ``[[x, y], ...]`` and a list of objects ``[{"x": .., "y": .., "name": .., "visible": ..}]``
are read too. Transferred points keep their names and visibility; ``in_image`` says whether each
landed inside image B.
"""
from __future__ import annotations

import colorsys
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch


@dataclass(frozen=True)
class KeyPoints:
    """Key points of one image: ``(P, 2)`` pixels ``(x, y)``, names, visibility, optional left/right permutation."""

    points: torch.Tensor  # (P, 2) float
    names: Optional[List[str]] = None
    visible: Optional[List[bool]] = None
    permutation: Optional[List[int]] = None

    def to_json(self, **extra: Any) -> Dict[str, Any]:
        out: Dict[str, Any] = {"points": [[round(float(x), 4), round(float(y), 4)] for x, y in self.points.tolist()]}
        if self.names is not None:
            out["names"] = list(self.names)
        if self.visible is not None:
            out["visible"] = [bool(v) for v in self.visible]
        if self.permutation is not None:
            out["permutation"] = list(self.permutation)
        out.update(extra)
        return out


def check_finite_points(points: torch.Tensor) -> None:
    """A ``ValueError`` naming the first point that is NaN or infinite (``(P, 2)`` pixels)."""
    bad = (~torch.isfinite(points)).any(dim=-1).nonzero()
    if bad.numel():
        k = int(bad[0, 0])
        raise ValueError(f"key point {k} is {points[k].tolist()}: coordinates must be finite numbers (pixels)")


def check_permutation(permutation: Sequence[int], n: int, what: str = "permutation") -> None:
    """A ``ValueError`` unless ``permutation`` reorders ``0..n-1`` (each index exactly once)."""
    try:
        ok = sorted(int(i) for i in permutation) == list(range(n))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{what} must list each of 0..{n - 1} exactly once (one entry per key point), "
                         f"got {list(permutation)}")


def parse_keypoints(obj: Any) -> KeyPoints:
    """Key points from parsed JSON (any of the accepted forms; see the module docstring)."""
    names = visible = permutation = None
    if isinstance(obj, dict):
        if "points" not in obj:
            raise ValueError("key-point JSON object needs a 'points' list of [x, y]")
        names, visible, permutation = obj.get("names"), obj.get("visible"), obj.get("permutation")
        obj = obj["points"]
    if not isinstance(obj, list) or not obj:
        raise ValueError("key points must be a non-empty list of [x, y] (or of {'x': .., 'y': ..})")
    if all(isinstance(p, dict) for p in obj):
        if any(p.get("name") is not None for p in obj):
            names = [str(p.get("name", "")) for p in obj]
        if any("visible" in p for p in obj):
            visible = [bool(p.get("visible", True)) for p in obj]
        obj = [[p["x"], p["y"]] for p in obj]
    try:
        pts = torch.tensor([[float(p[0]), float(p[1])] for p in obj], dtype=torch.float32)
    except (TypeError, IndexError, KeyError, ValueError):
        raise ValueError("each key point must be [x, y] numbers (pixels)") from None
    check_finite_points(pts)
    n = pts.size(0)
    for what, v in (("names", names), ("visible", visible)):
        if v is not None and len(v) != n:
            raise ValueError(f"'{what}' has {len(v)} entries for {n} points")
    if permutation is not None:
        check_permutation(permutation, n, "'permutation'")
    return KeyPoints(pts, None if names is None else [str(s) for s in names],
                     None if visible is None else [bool(v) for v in visible],
                     None if permutation is None else [int(i) for i in permutation])


def read_keypoints(path: os.PathLike) -> KeyPoints:
    """Read a key-point JSON file."""
    with open(path) as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        return parse_keypoints(obj)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def palette(n: int) -> List[tuple]:
    """``n`` distinct saturated RGB colours."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.9, 1.0)) for i in range(n)]


def draw_transfer(image_a: np.ndarray, image_b: np.ndarray, points_a: torch.Tensor, points_b: torch.Tensor,
                  visible: Optional[Sequence[bool]] = None, height: int = 384):
    """A and B side by side (both scaled to ``height``) with matching coloured dots -> Pillow image."""
    from PIL import Image, ImageDraw

    tiles, scales = [], []
    for img in (image_a, image_b):
        h, w = img.shape[:2]
        s = height / h
        pil = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img[:, :, :3]).convert("RGB")
        tiles.append(pil.resize((max(1, round(w * s)), height), Image.Resampling.BICUBIC))
        scales.append(s)
    gap = 8
    canvas = Image.new("RGB", (tiles[0].width + gap + tiles[1].width, height), (255, 255, 255))
    canvas.paste(tiles[0], (0, 0))
    canvas.paste(tiles[1], (tiles[0].width + gap, 0))
    draw = ImageDraw.Draw(canvas)
    r = max(3, height // 80)
    colours = palette(points_a.size(0))
    for k, colour in enumerate(colours):
        if visible is not None and not visible[k]:
            continue
        for pts, s, dx in ((points_a, scales[0], 0), (points_b, scales[1], tiles[0].width + gap)):
            x, y = (float(pts[k, 0]) + 0.5) * s - 0.5 + dx, (float(pts[k, 1]) + 0.5) * s - 0.5
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(0, 0, 0))
    return canvas


@dataclass(frozen=True)
class TransferResult:
    """Points transferred to B, and the files written."""

    points: KeyPoints
    in_image: List[bool]
    points_path: Optional[Path]
    picture_path: Optional[Path]


def transfer_keypoints(congealer, image_a: Union[str, os.PathLike], image_b: Union[str, os.PathLike],
                       keypoints: Union[KeyPoints, os.PathLike, str], out_dir: Optional[os.PathLike] = None, *,
                       permutation: Optional[Sequence[int]] = None, picture_height: int = 384,
                       legacy: bool = False) -> TransferResult:
    """Transfer ``keypoints`` of image A to image B; with ``out_dir``, write ``<B>_points.json`` and ``transfer.png``.

    ``legacy``: the original's key-point normalisation (:meth:`Congealer.transfer_points`), which
    reproduces its numbers exactly.
    """
    from ..data.images import read_image, to_tensor
    from .align import image_mode

    from ..fileio import check_output_folder

    if out_dir is not None:
        check_output_folder(out_dir)
    kp = keypoints if isinstance(keypoints, KeyPoints) else read_keypoints(keypoints)
    if permutation is not None:
        check_permutation(permutation, kp.points.size(0), "permutation")
    mode = image_mode(congealer)
    a, b = read_image(image_a, mode), read_image(image_b, mode)
    perm = permutation if permutation is not None else kp.permutation
    moved = congealer.transfer_points(to_tensor(np.array(a))[None], to_tensor(np.array(b))[None], kp.points[None],
                                     permutation=perm, legacy=legacy)[0].cpu()
    h, w = b.shape[:2]
    inside = ((moved[:, 0] >= -0.5) & (moved[:, 0] <= w - 0.5) & (moved[:, 1] >= -0.5) & (moved[:, 1] <= h - 0.5)).tolist()
    out_kp = KeyPoints(moved, kp.names, kp.visible, kp.permutation)
    points_path = picture_path = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        points_path = out / f"{Path(image_b).stem}_points.json"
        from ..fileio import atomic_write

        doc = out_kp.to_json(in_image=inside, image=str(image_b), width=w, height=h, source=str(image_a))
        atomic_write(points_path, lambda f: json.dump(doc, f, indent=1), binary=False)
        picture_path = out / "transfer.png"
        picture = draw_transfer(a, b, kp.points, moved, kp.visible, picture_height)
        atomic_write(picture_path, lambda f: picture.save(f, format="PNG"))
    return TransferResult(out_kp, inside, points_path, picture_path)
