"""The prepared-dataset format: images preprocessed once to the training resolution, cached.

A prepared dataset is a folder holding

* ``images.npy`` -- uint8 ``(N, C, S, S)`` (memory-mapped when read, so large sets need no RAM),
* ``labels.npy`` -- int64 ``(N,)``, only for embedded datasets,
* ``manifest.json`` -- what went in and how: the source, the file list, the skipped files and
  why, the size, the crop/pad mode, the colour mode, the count and the format version.

:func:`prepare_dataset` writes it into the cache (``$GANGEALING_CACHE`` or
``~/.cache/gangealing``, sub-folder ``datasets/<key>``), where ``key`` hashes the sources
(path, byte size and modification time of every input file) and the preprocessing parameters,
so a second run with the same inputs starts at once and any change to them prepares afresh. The
folder is built under a temporary name and renamed into place, so a killed run never leaves a
half-written dataset. A prepared folder can itself be passed as the source.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..fileio import save_npy
from .embedded import is_embedded_name, load_embedded
from .images import (MODES, MemberTooLarge, SkippedImage, is_image_file, iter_images, list_images, pil_convert,
                     read_member, report_skipped, to_tensor, UnreadableImage)
from .preprocess import PAD_MODES, preprocess

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PathLike = Union[str, os.PathLike]


def default_cache_dir() -> Path:
    """``$GANGEALING_CACHE`` or ``~/.cache/gangealing``."""
    return Path(os.environ.get("GANGEALING_CACHE", Path.home() / ".cache" / "gangealing")).expanduser()


@dataclass(frozen=True)
class PreparedDataset:
    """Images uint8 ``(N, C, S, S)`` (numpy, possibly memory-mapped), optional labels, and the manifest."""

    images: np.ndarray
    manifest: Dict[str, Any]
    path: Optional[Path] = None
    labels: Optional[np.ndarray] = None
    cached: bool = field(default=False, compare=False)  # True when it was loaded from the cache

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def skipped(self) -> List[SkippedImage]:
        return [SkippedImage(**s) for s in self.manifest.get("skipped", [])]

    def tensor(self, index: Union[int, Sequence[int], slice, np.ndarray, torch.Tensor, None] = None) -> torch.Tensor:
        """Images as float ``(N, C, S, S)`` in [-1, 1] (all of them, or ``index``)."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        a = self.images if index is None else self.images[index]
        # np.array copies: the memory-mapped cache is read-only and torch wants writable memory.
        return torch.from_numpy(np.array(a)).float().div(127.5).sub(1.0)

    def uint8(self) -> torch.Tensor:
        """All images as a uint8 tensor ``(N, C, S, S)`` (loads them into memory)."""
        return torch.from_numpy(np.array(self.images))


class ImageDataset(Dataset):
    """A torch ``Dataset`` over a :class:`PreparedDataset`: float ``(C, S, S)`` in [-1, 1], optional random mirror."""

    def __init__(self, prepared: PreparedDataset, flip: bool = False):
        self.prepared, self.flip = prepared, flip

    def __len__(self) -> int:
        return len(self.prepared)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(np.array(self.prepared.images[i])).float().div(127.5).sub(1.0)  # (C, S, S)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x


# ----------------------------------------------------------------------------------- sources
def _stat_entry(p: Path) -> List[Any]:
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _source_key(source: Any, split: str) -> Dict[str, Any]:
    """What identifies the inputs (paths, sizes and mtimes; for embedded data the package files)."""
    if is_embedded_name(source):
        return {"embedded": source, "split": split}
    if isinstance(source, (str, os.PathLike)) and zipfile.is_zipfile(source) and Path(source).is_file():
        return {"zip": _stat_entry(Path(source))}
    return {"files": [_stat_entry(p) for p in list_images(source)]}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _iter_zip(path: Path, mode: str, skipped: List[SkippedImage]):
    """Yield ``(name, uint8 (H, W, C))`` for the images inside a zip, one member in memory at a time
    and none past :data:`~gangealing.data.images.MAX_IMAGE_FILE_BYTES`; unreadable or oversized
    members go to ``skipped``."""
    import io

    from PIL import Image, ImageOps

    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if not n.endswith("/") and is_image_file(n)
                       and not any(part.startswith(".") or part == "__MACOSX" for part in n.split("/")))
        if not names:
            raise FileNotFoundError(f"{path}: the zip holds no images")
        for n in names:
            label = f"{path}!{n}"
            try:
                data = read_member(zf, n)  # one member at a time, its size bounded (zip bombs)
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    arr = np.asarray(pil_convert(ImageOps.exif_transpose(img), mode), np.uint8)
            except Exception as e:  # noqa: BLE001 - any decoding failure is a skipped image
                report_skipped(skipped, label, str(e) if isinstance(e, MemberTooLarge) else f"{type(e).__name__}: {e}")
                continue
            yield label, (arr[:, :, None] if arr.ndim == 2 else arr)


def _write_prepared(out: Path, source: Any, size: int, mode: str, image_mode: str, split: str,
                    progress: bool) -> None:
    """Preprocess every image of ``source`` into ``out`` (a fresh folder)."""
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[image_mode]
    skipped: List[SkippedImage] = []
    labels = None
    files: List[str] = []
    if is_embedded_name(source):
        data = load_embedded(source, split)
        gray = data.images  # (N, 28, 28, 1)
        n_max = len(gray)
        labels = data.labels
        files = list(data.files)

        def items():
            for i in range(n_max):
                img = gray[i]
                if channels != 1:
                    img = np.repeat(img, 3, axis=2)
                    if channels == 4:
                        img = np.concatenate([img, np.full_like(img[:, :, :1], 255)], axis=2)
                yield f"{data.name}[{i}]", img
        it = items()
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            n_max = sum(1 for n in zf.namelist() if is_image_file(n))
        it = _iter_zip(Path(source), image_mode, skipped)
        files = None  # type: ignore[assignment]  # filled with the member names below
    else:
        paths = list_images(source)
        n_max = len(paths)
        it = iter_images(paths, image_mode, skipped)
        files = None  # type: ignore[assignment]
    tmp_npy = out / "images.tmp.npy"
    buf = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=(max(n_max, 1), channels, size, size))
    names: List[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_max, desc="preparing images", unit="img", leave=False)
    n = 0
    for name, img in it:
        buf[n] = preprocess(img, size, mode).transpose(2, 0, 1)  # (C, S, S)
        names.append(str(name))
        n += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    for s in skipped:  # reported once here; the manifest lists them too
        warnings.warn(f"skipping {s.path}: {s.reason}", stacklevel=3)
    if n == 0:
        raise FileNotFoundError(f"no readable images in {source}: {len(skipped)} files skipped "
                                f"({'; '.join(f'{s.path}: {s.reason}' for s in skipped[:3])})")
    buf.flush()
    if n == buf.shape[0]:
        del buf
        os.replace(tmp_npy, out / "images.npy")
    else:  # some files were skipped: copy the filled rows into a file of the right length
        final = np.lib.format.open_memmap(out / "images.npy", mode="w+", dtype=np.uint8, shape=(n, channels, size, size))
        for i in range(0, n, 4096):
            final[i:min(n, i + 4096)] = buf[i:min(n, i + 4096)]
        final.flush()
        del final, buf
        os.unlink(tmp_npy)
    if labels is not None:
        save_npy(out / "labels.npy", labels[:n])
    manifest = {
        "format": "gangealing-dataset",
        "version": FORMAT_VERSION,
        "source": str(source),
        "split": split if is_embedded_name(source) else None,
        "size": size,
        "mode": mode,
        "image_mode": image_mode,
        "channels": channels,
        "count": n,
        "files": files if files is not None else names,
        "skipped": [s.__dict__ for s in skipped],
    }
    from ..fileio import atomic_write

    # Written last and atomically: a folder whose manifest exists is complete.
    atomic_write(out / MANIFEST, lambda f: json.dump(manifest, f, indent=1), binary=False)


def load_prepared(path: PathLike, mmap: bool = True) -> PreparedDataset:
    """Open a prepared-dataset folder (images memory-mapped unless ``mmap=False``)."""
    path = Path(path)
    with open(path / MANIFEST) as f:
        manifest = json.load(f)
    if manifest.get("format") != "gangealing-dataset" or manifest.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: not a gangealing prepared dataset of a version this code reads")
    images = np.load(path / "images.npy", mmap_mode="r" if mmap else None)
    labels = np.load(path / "labels.npy") if (path / "labels.npy").is_file() else None
    return PreparedDataset(images, manifest, path, labels, cached=True)


def prepare_dataset(source: Union[PathLike, Sequence[PathLike], str], size: int, mode: str = "center",
                    cache_dir: Optional[PathLike] = None, *, image_mode: str = "RGB", split: str = "train",
                    progress: bool = False, refresh: bool = False) -> PreparedDataset:
    """Preprocess ``source`` to ``size x size`` once and cache it; later calls load the cache.

    ``source``: a folder of images (recursive), a zip of images, a glob pattern, a list of files,
    an embedded dataset name (``'animals:cat'``, ``'mnist:3'``; ``split`` picks train / test / all),
    or a prepared-dataset folder (returned as it is). ``mode``: crop/pad mode of
    :func:`gangealing.data.preprocess.preprocess`. ``image_mode``: 'RGB' (grayscale sources are
    replicated to 3 channels), 'L' or 'RGBA'. Unreadable files are reported (a warning each),
    skipped and listed in ``manifest['skipped']``. ``refresh=True`` rebuilds the cached copy.
    """
    if isinstance(source, (str, os.PathLike)) and (Path(source) / MANIFEST).is_file():
        return load_prepared(source)
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    if image_mode not in MODES:
        raise ValueError(f"image_mode must be one of {MODES}, got {image_mode!r}")
    if isinstance(source, (list, tuple)):
        source = [str(s) for s in source]
    key = _hash({"v": FORMAT_VERSION, "source": _source_key(source, split), "size": int(size), "mode": mode,
                 "image_mode": image_mode})
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / "datasets" / key
    if (final / MANIFEST).is_file() and not refresh:
        return load_prepared(final)
    root.joinpath("datasets").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root / "datasets"))
    try:
        _write_prepared(tmp, source, int(size), mode, image_mode, split, progress)
        if final.exists():  # refresh, or another process finished first
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # a concurrent run won the race: its copy is equivalent
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    ds = load_prepared(final)
    return PreparedDataset(ds.images, ds.manifest, ds.path, ds.labels, cached=False)


__all__ = ["PreparedDataset", "ImageDataset", "prepare_dataset", "load_prepared", "default_cache_dir",
           "UnreadableImage", "to_tensor"]
