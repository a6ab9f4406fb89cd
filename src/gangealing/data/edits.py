"""Edit and label-map files: what :mod:`gangealing.edit` carries, read from and written to PNGs.

An edit is an RGBA image ``(4, H, W)`` float: RGB in [-1, 1], alpha in [0, 1]; a label map is
``(H, W)`` int64 class ids, stored as 8- or 16-bit grayscale (or palette) PNGs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from ..fileio import atomic_write
from .images import UnreadableImage, read_image

PathLike = Union[str, os.PathLike]
# Pillow modes whose pixel values (or palette indices) are class ids.
LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "1")


def read_edit(path: PathLike) -> torch.Tensor:
    """Read an RGBA edit image -> ``(4, H, W)`` float: RGB in [-1, 1], alpha in [0, 1].

    Images without an alpha channel are fully opaque (the whole frame is the edit).
    """
    rgba = torch.from_numpy(np.array(read_image(path, mode="RGBA"))).permute(2, 0, 1).float()  # (4, H, W)
    return torch.cat([rgba[:3] / 127.5 - 1, rgba[3:] / 255.0], dim=0)


def read_label_map(path: PathLike) -> torch.Tensor:
    """Read a label map PNG -> ``(H, W)`` int64 class ids.

    Grayscale (8 or 16 bit) pixel values and palette ('P' mode) indices are the ids. A colour
    (RGB) image is refused: colours do not say which id they stand for.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in LABEL_MODES:
                arr = np.array(img, dtype=np.int64)
            else:
                raise ValueError(f"{path}: a label map must be a grayscale or palette image of class ids, got mode {mode} "
                                 "(save ids with gangealing.data.edits.save_label_map or as an 8/16-bit grayscale PNG)")
    except (OSError, SyntaxError, EOFError) as e:
        raise UnreadableImage(path, f"{type(e).__name__}: {e}") from None
    return torch.from_numpy(arr)


def save_label_map(labels: torch.Tensor, path: PathLike, *, protected: Sequence = ()) -> Path:
    """Write raw class ids ``(H, W)`` as a PNG atomically: 8-bit grayscale, 16-bit when an id exceeds 255."""
    from PIL import Image

    path = Path(path)
    if any(os.path.realpath(p) == os.path.realpath(path) for p in protected):
        raise FileExistsError(f"{path}: refusing to overwrite an input file; choose another output folder")
    arr = labels.detach().cpu().long().numpy()
    if arr.min(initial=0) < 0 or arr.max(initial=0) > 65535:
        raise ValueError("label ids must be in [0, 65535] to be stored as a PNG")
    img = Image.fromarray(arr.astype(np.uint8 if arr.max(initial=0) <= 255 else np.uint16))  # L or I;16
    return atomic_write(path, lambda f: img.save(f, format="PNG"))
