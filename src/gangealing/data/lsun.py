"""LSUN (Yu et al., 2015) LMDB exports: read the encoded images an LMDB database holds.

An LSUN download (``cat.zip``, ``church_outdoor_train_lmdb.zip``, ...) unpacks to a folder with
``data.mdb`` and ``lock.mdb``; every key is an image id (bytes) and every value the encoded
image (WebP for the object categories, JPEG for the scenes). The original's ``prepare_data.py
--input_is_lmdb`` decodes each value and skips the ones that fail. LSUN exported to image files
(the ``lsun`` tools' ``export``) is an ordinary image folder: read it with
:func:`gangealing.data.images.list_images`.

Needs the ``lmdb`` package (``pip install 'gangealing[lmdb]'``).
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from .images import SkippedImage, UnreadableImage, pil_convert, report_skipped

__all__ = ["find_lmdb", "lmdb_keys", "decode_image_bytes", "iter_lmdb_images"]

log = logging.getLogger(__name__)


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise ImportError("reading LMDB databases (LSUN) needs the lmdb package: pip install 'gangealing[lmdb]'") from None
    return lmdb


def find_lmdb(folder: os.PathLike) -> Path:
    """The LMDB environment folder (the one holding ``data.mdb``): ``folder`` or the first below it."""
    folder = Path(folder)
    if folder.is_file() and folder.name == "data.mdb":
        return folder.parent
    if (folder / "data.mdb").is_file():
        return folder
    found = sorted(folder.rglob("data.mdb"))
    if not found:
        raise FileNotFoundError(f"{folder}: no LMDB database (data.mdb) found")
    if len(found) > 1:
        log.warning("%s holds %d LMDB databases; using %s", folder, len(found), found[0].parent)
    return found[0].parent


def _open(path: Path):
    return _lmdb().open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=32)


def lmdb_keys(folder: os.PathLike, max_images: Optional[int] = None) -> List[bytes]:
    """The database's keys in LMDB order (sorted bytes), at most ``max_images``."""
    env = _open(find_lmdb(folder))
    try:
        keys = []
        with env.begin(write=False) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                if max_images is not None and len(keys) >= max_images:
                    break
                keys.append(bytes(key))
        return keys
    finally:
        env.close()


def decode_image_bytes(data: bytes, name: str = "<bytes>", mode: str = "RGB") -> np.ndarray:
    """Decode an encoded image (WebP, JPEG, PNG, ...) to uint8 ``(H, W, C)``; :class:`UnreadableImage` if it fails."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = np.asarray(pil_convert(img, mode), dtype=np.uint8)
    except UnidentifiedImageError:
        raise UnreadableImage(name, "not an image Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UnreadableImage(name, f"{type(e).__name__}: {e}") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


def iter_lmdb_images(folder: os.PathLike, max_images: Optional[int] = None, mode: str = "RGB",
                     skipped: Optional[List[SkippedImage]] = None) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(key, uint8 (H, W, C))`` for the first ``max_images`` keys, in LMDB order.

    Values that do not decode are skipped and reported once, in ``skipped`` or else as a warning
    naming the key, as :func:`gangealing.data.images.iter_images` does for files. ``max_images``
    counts keys, not decoded images (as the original).
    """
    path = find_lmdb(folder)
    env = _open(path)
    try:
        with env.begin(write=False) as txn:
            for n, (key, value) in enumerate(txn.cursor()):
                if max_images is not None and n >= max_images:
                    break
                name = bytes(key).decode("utf-8", errors="replace")
                try:
                    yield name, decode_image_bytes(bytes(value), f"{path}[{name}]", mode)
                except UnreadableImage as e:
                    report_skipped(skipped, f"{path}[{name}]", e.reason)
    finally:
        env.close()
