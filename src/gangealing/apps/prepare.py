"""``gangealing prepare``: turn a downloaded dataset (folder or archive) into the project's dataset format.

Readers for each layout live in :mod:`gangealing.data` (``spair``, ``cub``, ``lsun``); this
module resolves archives, preprocesses the images as the original ``prepare_data.py`` does and
writes

* a prepared dataset (``images.npy`` + ``manifest.json``, :mod:`gangealing.data.dataset`), and
* for SPair-71K and CUB also ``keypoints.json`` (:mod:`gangealing.data.keypoints`), which
  ``gangealing pck`` evaluates.

Archives (``.tar``, ``.tar.gz`` / ``.tgz``, ``.tar.bz2``, ``.tar.xz``, ``.zip``) are unpacked into
a temporary folder (members that would land outside it are refused) and removed afterwards;
nothing in the source is modified. The output folder is built under a temporary name and
renamed into place, so a failed run leaves nothing half-written.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data.dataset import FORMAT_VERSION, MANIFEST
from ..data.images import (MAX_IMAGE_FILE_BYTES, MemberTooLarge, SkippedImage, UnreadableImage, copy_bounded,
                           is_image_file, iter_images, list_images, read_image, report_skipped)
from ..data.keypoints import KeypointSample, write_keypoints
from ..data.preprocess import PAD_MODES, preprocess, preprocess_transform
from ..fileio import check_output_folder

__all__ = ["PrepareResult", "is_archive", "open_source", "prepare_spair", "prepare_cub", "prepare_lsun",
           "prepare_images"]

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare`` wrote."""

    path: Path
    num_images: int
    num_samples: int = 0
    num_pairs: int = 0
    skipped: Tuple[SkippedImage, ...] = field(default_factory=tuple)


# ------------------------------------------------------------------------------------------- sources


def is_archive(path: os.PathLike) -> bool:
    """Whether ``path`` is a file we unpack (tar in any compression, or zip)."""
    p = Path(path)
    return p.is_file() and (p.name.lower().endswith(ARCHIVE_SUFFIXES) or tarfile.is_tarfile(p) or zipfile.is_zipfile(p))


def _safe_target(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if not str(target).startswith(str(root.resolve()) + os.sep) and target != root.resolve():
        raise ValueError(f"archive member {name!r} would be written outside the extraction folder")
    return target


def _members(archive: Path, keep: Optional[Callable[[str], bool]]) -> List[Tuple[str, int]]:
    """``(name, declared size)`` of the regular files to unpack (links and devices are never needed)."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return [(i.filename, i.file_size) for i in zf.infolist()
                    if not i.is_dir() and (keep is None or keep(i.filename))]
    with tarfile.open(archive) as tf:
        return [(m.name, m.size) for m in tf if m.isfile() and (keep is None or keep(m.name))]


def _open_members(archive: Path) -> Iterator[Tuple[str, IO[bytes]]]:
    """Stream ``(name, file object)`` of every regular member, in archive order."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    with zf.open(info) as f:
                        yield info.filename, f
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            f = tf.extractfile(member) if member.isfile() else None
            if f is not None:
                with f:
                    yield member.name, f


def _extract(archive: Path, dest: Path, keep: Optional[Callable[[str], bool]],
             skipped: Optional[List[SkippedImage]] = None) -> None:
    """Unpack the kept members, streamed one by one, after checking what they expand to: an image
    member past :data:`MAX_IMAGE_FILE_BYTES` is skipped (reported), and the whole must fit the free space."""
    sizes = dict(_members(archive, keep))
    wanted = {n for n, size in sizes.items() if not (is_image_file(n) and size > MAX_IMAGE_FILE_BYTES)}
    for n, size in sizes.items():
        if n not in wanted:
            report_skipped(skipped, f"{archive}!{n}", f"expands to {size:,} bytes, over the {MAX_IMAGE_FILE_BYTES:,}-byte "
                                                       "limit for one image")
    total, free = sum(sizes[n] for n in wanted), shutil.disk_usage(dest).free
    if total > free:
        raise ValueError(f"{archive} expands to {total / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB free in "
                         f"{dest.parent}; unpack it where there is room and pass the folder (or set TMPDIR)")
    for name, src in _open_members(archive):
        if name not in wanted:
            continue
        target = _safe_target(dest, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "wb") as dst:
                copy_bounded(src, dst, sizes[name], f"{archive}!{name}")  # no more than its header said
        except MemberTooLarge as e:  # its header said less than it holds
            target.unlink()
            report_skipped(skipped, f"{archive}!{name}", str(e).split(": ", 1)[-1])


@contextlib.contextmanager
def open_source(source: os.PathLike, keep: Optional[Callable[[str], bool]] = None,
                skipped: Optional[List[SkippedImage]] = None) -> Iterator[Path]:
    """A folder with the contents of ``source``: the folder itself, or an archive unpacked into a
    temporary folder (only members for which ``keep(name)`` is true) that is removed on exit.
    Image members too large to be an image are not unpacked but added to ``skipped``."""
    source = Path(source).expanduser()
    if source.is_dir():
        yield source
        return
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if not is_archive(source):
        raise ValueError(f"{source}: neither a folder nor a tar / tar.gz / zip archive")
    with tempfile.TemporaryDirectory(prefix="gangealing-prepare-") as tmp:
        log.info("unpacking %s", source)
        _extract(source, Path(tmp), keep, skipped)
        yield Path(tmp)


# ------------------------------------------------------------------------------------------- writing


class _Writer:
    """Streams uint8 ``(S, S, C)`` images into ``images.npy`` of a fresh temporary output folder."""

    def __init__(self, out: Path, capacity: int, size: int, channels: int = 3, overwrite: bool = False):
        out = check_output_folder(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise FileExistsError(f"{out}: exists and is not empty (pass overwrite=True / --overwrite to replace it)")
        out.parent.mkdir(parents=True, exist_ok=True)
        self.out, self.size, self.channels = out, size, channels
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        self._buf = np.lib.format.open_memmap(self.tmp / "images.tmp.npy", mode="w+", dtype=np.uint8,
                                              shape=(max(capacity, 1), channels, size, size))
        self.names: List[str] = []

    def add(self, name: str, image: np.ndarray) -> int:
        if image.shape != (self.size, self.size, self.channels):
            raise ValueError(f"{name}: expected a {self.size}x{self.size}x{self.channels} image, got {image.shape}")
        i = len(self.names)
        self._buf[i] = image.transpose(2, 0, 1)  # (C, S, S)
        self.names.append(name)
        return i

    def finish(self, *, source: str, mode: str, skipped: Sequence[SkippedImage], extra: Optional[dict] = None) -> Path:
        n = len(self.names)
        if n == 0:
            self.abort()
            raise FileNotFoundError(f"no readable images in {source} ({len(skipped)} skipped)")
        self._buf.flush()
        final = np.lib.format.open_memmap(self.tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n,) + self._buf.shape[1:])
        for i in range(0, n, 4096):
            final[i:i + 4096] = self._buf[i:min(n, i + 4096)]
        final.flush()
        del final, self._buf
        os.unlink(self.tmp / "images.tmp.npy")
        manifest = {
            "format": "gangealing-dataset", "version": FORMAT_VERSION, "source": source, "split": None,
            "size": self.size, "mode": mode, "image_mode": "RGB", "channels": self.channels, "count": n,
            "files": self.names, "skipped": [s.__dict__ for s in skipped], **(extra or {}),
        }
        with open(self.tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
        return self.tmp

    def commit(self) -> Path:
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return self.out

    def abort(self) -> None:
        self._buf = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def _read(path: Path, skipped: List[SkippedImage]) -> Optional[np.ndarray]:
    try:
        return read_image(path, "RGB")
    except (UnreadableImage, FileNotFoundError) as e:
        report_skipped(skipped, path, e.reason if isinstance(e, UnreadableImage) else "no such file")
        return None


# ------------------------------------------------------------------------------------------- SPair


def _spair_frame_points(kps: np.ndarray, height: int, width: int, size: int) -> Tuple[np.ndarray, np.ndarray, float]:
    """Key points ``(K, 3)`` in the border-padded frame: (pixel-centre, the original's mapping, scale)."""
    vis = kps[:, 2:3] > 0
    centre = kps.copy()
    centre[:, :2] = preprocess_transform(height, width, size, "border").apply(kps[:, :2])
    centre[:, :2] = np.where(vis, centre[:, :2], 0.0)
    # The original (prepare_data.py preprocess_kps_pad): x * size / max(W, H) plus the padding
    # offset, in float32, with no half-pixel term.
    scale = size / max(width, height)
    t = torch.tensor(kps, dtype=torch.float32)
    t[:, :2] *= scale
    if height < width:
        t[:, 1] += int((size - int(np.around(size * height / width))) / 2)
    elif width < height:
        t[:, 0] += int((size - int(np.around(size * width / height))) / 2)
    t *= t[:, 2:3]
    return centre, t.numpy().astype(np.float64), scale


def prepare_spair(source: os.PathLike, out: os.PathLike, category: str, *, split: str = "test", size: int = 256,
                  permutation: Optional[Sequence[int]] = None, overwrite: bool = False) -> PrepareResult:
    """SPair-71K ``category`` / ``split`` -> a key-point dataset with the fixed pairs (one way, bbox threshold).

    Images: long side resized to ``size``, border-padded to a square (each image stored once).
    ``source``: the SPair-71k folder or ``SPair-71k.tar.gz`` (only the category's files are unpacked).
    """
    from ..data.spair import read_spair_pairs

    def keep(name: str) -> bool:
        parts = name.split("/")
        return (f"/JPEGImages/{category}/" in f"/{name}" or f"/ImageAnnotation/{category}/" in f"/{name}"
                or (f"/PairAnnotation/{split}/" in f"/{name}" and parts[-1].endswith(f":{category}.json")))

    with open_source(source, keep) as folder:
        data = read_spair_pairs(folder, category, split, permutation)
        image_paths = sorted({p for pair in data.pairs for p in (pair.source.path, pair.target.path)})
        writer = _Writer(Path(out), len(image_paths), size, overwrite=overwrite)
        try:
            skipped: List[SkippedImage] = []
            rows: Dict[Path, Tuple[int, int, int]] = {}  # path -> (row, H, W)
            for p in image_paths:
                img = _read(p, skipped)
                if img is not None:
                    rows[p] = (writer.add(f"JPEGImages/{category}/{p.name}", preprocess(img, size, "border")),
                               img.shape[0], img.shape[1])
            samples, pairs = [], []
            for pair in data.pairs:
                if pair.source.path not in rows or pair.target.path not in rows:
                    warnings.warn(f"SPair pair {pair.name} dropped: an image could not be read", stacklevel=2)
                    continue
                for side in (pair.source, pair.target):
                    row, h, w = rows[side.path]
                    if (h, w) != (side.height, side.width):
                        warnings.warn(f"{side.path}: annotated as {side.width}x{side.height} but the image is "
                                      f"{w}x{h}; using the image's size", stacklevel=2)
                    centre, legacy, scale = _spair_frame_points(side.keypoints, h, w, size)
                    samples.append(KeypointSample(row, centre, legacy, side.bbox_size, scale))
                pairs.append((len(samples) - 2, len(samples) - 1))
            if not pairs:
                raise ValueError(f"no SPair {category} {split} pair has both images readable")
            tmp = writer.finish(source=str(source), mode="border", skipped=skipped)
            write_keypoints(tmp, samples, dataset="spair", size=size, category=category, split=split,
                            protocol={"pairs": "fixed", "num_pairs": None, "both_ways": False, "threshold": "bbox"},
                            pairs=pairs, permutation=data.permutation,
                            extra={"keypoint_ids": list(data.keypoint_ids), "pair_names": [
                                p.name for p in data.pairs if p.source.path in rows and p.target.path in rows]})
            path = writer.commit()
        except BaseException:
            writer.abort()
            raise
    return PrepareResult(path, len(rows), len(samples), len(pairs), tuple(skipped))


# ------------------------------------------------------------------------------------------- CUB


def prepare_cub(source: os.PathLike, out: os.PathLike, *, acsm_mat: Optional[os.PathLike] = None,
                split: str = "acsm_val", size: int = 256, num_pairs: int = 10000,
                overwrite: bool = False) -> PrepareResult:
    """CUB-200-2011 -> a key-point dataset of ACSM's validation split (random pairs, both ways, threshold ``alpha * size``).

    Images are cropped as ACSM does (5% padded, squared box, edge replication) and resized to
    ``size``. ``source``: the CUB_200_2011 folder or ``CUB_200_2011.tgz``; ``acsm_mat``: ACSM's
    ``val_cub_cleaned.mat`` (a path; also looked for inside ``source``).
    """
    from ..data.cub import CUB_PART_NAMES, CUB_PERMUTATION, acsm_crop, crop_keypoints, read_cub_split

    def keep(name: str) -> bool:  # the images, the text tables and any .mat shipped alongside
        return not name.endswith("/") and ("/images/" in f"/{name}" or name.endswith((".txt", ".mat")))

    with open_source(source, keep) as folder:
        mat = acsm_mat
        if split == "acsm_val" and mat is None:
            found = sorted(Path(folder).rglob("val_cub_cleaned*.mat"))
            if not found:
                raise FileNotFoundError("the acsm_val split needs ACSM's val_cub_cleaned.mat: pass it with --acsm-mat")
            mat = found[0]
        images = read_cub_split(folder, split, mat)
        writer = _Writer(Path(out), len(images), size, overwrite=overwrite)
        try:
            skipped: List[SkippedImage] = []
            samples, ids = [], []
            for im in images:
                img = _read(im.path, skipped)
                if img is None:
                    continue
                try:
                    crop = acsm_crop(img, im.box)
                except ValueError as e:
                    report_skipped(skipped, im.path, str(e))
                    continue
                row = writer.add(im.rel_path, preprocess(crop, size, "none"))
                samples.append(KeypointSample(row, crop_keypoints(im.keypoints, im.box, size),
                                              crop_keypoints(im.keypoints, im.box, size, legacy=True)))
                ids.append(im.image_id)
            if len(samples) < 2:
                raise ValueError("fewer than two readable CUB images: no pairs can be formed")
            tmp = writer.finish(source=str(source), mode="acsm_crop", skipped=skipped)
            write_keypoints(tmp, samples, dataset="cub", size=size, split=split,
                            protocol={"pairs": "random", "num_pairs": int(num_pairs), "both_ways": True,
                                      "threshold": "image"},
                            permutation=CUB_PERMUTATION, keypoint_names=CUB_PART_NAMES,
                            extra={"image_ids": ids})
            path = writer.commit()
        except BaseException:
            writer.abort()
            raise
    return PrepareResult(path, len(samples), len(samples), 0, tuple(skipped))


# ------------------------------------------------------------------------------------------- LSUN / folders


def prepare_lsun(source: os.PathLike, out: os.PathLike, *, size: int = 256, mode: str = "center",
                 max_images: Optional[int] = None, overwrite: bool = False) -> PrepareResult:
    """An LSUN LMDB export (folder with ``data.mdb``, or its zip) -> a prepared dataset.

    ``mode``: crop/pad of :func:`gangealing.data.preprocess.preprocess` (``center``, the original's
    default, as StyleGAN2's LSUN preparation). Values that do not decode are reported and skipped.
    """
    from ..data.lsun import iter_lmdb_images, lmdb_keys

    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    with open_source(source) as folder:
        n = len(lmdb_keys(folder, max_images))
        writer = _Writer(Path(out), n, size, overwrite=overwrite)
        try:
            skipped: List[SkippedImage] = []
            for key, img in iter_lmdb_images(folder, max_images, skipped=skipped):
                writer.add(key, preprocess(img, size, mode))
            writer.finish(source=str(source), mode=mode, skipped=skipped)
            path = writer.commit()
        except BaseException:
            writer.abort()
            raise
    return PrepareResult(path, len(writer.names), skipped=tuple(skipped))


def prepare_images(source: os.PathLike, out: os.PathLike, *, size: int = 256, mode: str = "center",
                   max_images: Optional[int] = None, overwrite: bool = False) -> PrepareResult:
    """A folder / glob / archive of image files -> a prepared dataset (unreadable files reported and skipped).

    A folder holding an LMDB database (``data.mdb``) is read as LSUN (:func:`prepare_lsun`).
    """
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {PAD_MODES}, got {mode!r}")
    src = Path(source).expanduser()
    skipped: List[SkippedImage] = []  # members too large to unpack, then unreadable files
    unpack = src.exists() and (src.is_dir() or is_archive(src))
    ctx = open_source(src, skipped=skipped) if unpack else contextlib.nullcontext(source)
    with ctx as folder:
        if Path(folder).is_dir() and ((Path(folder) / "data.mdb").is_file() or any(Path(folder).rglob("data.mdb"))):
            return prepare_lsun(folder, out, size=size, mode=mode, max_images=max_images, overwrite=overwrite)
        paths = list_images(folder)
        if max_images is not None:
            paths = paths[:max_images]
        base = Path(folder) if Path(folder).is_dir() else None
        writer = _Writer(Path(out), len(paths), size, overwrite=overwrite)
        try:
            for p, img in iter_images(paths, "RGB", skipped):
                name = str(p.relative_to(base)) if base is not None and p.is_relative_to(base) else str(p)
                writer.add(name, preprocess(img, size, mode))
            if base is not None and base != src:  # unpacked from an archive: name members, not temp paths
                skipped = [SkippedImage(f"{src}!{Path(s.path).relative_to(base)}", s.reason)
                           if Path(s.path).is_relative_to(base) else s for s in skipped]
            writer.finish(source=str(source), mode=mode, skipped=skipped)
            path = writer.commit()
        except BaseException:
            writer.abort()
            raise
    return PrepareResult(path, len(writer.names), skipped=tuple(skipped))
