"""Reading, converting and writing image files: the uint8 edge of the library.

Inside the library images are ``(N, C, H, W)`` float tensors in [-1, 1]; on disk and in numpy they
are ``(H, W, C)`` uint8 arrays. This module converts between the two and reads whatever users
have: PNG / JPEG / WebP / BMP / TIFF / GIF, grayscale, RGBA, palette, CMYK, 16-bit, EXIF-rotated
phone photos. A file that cannot be decoded raises :class:`UnreadableImage`; :func:`iter_images`
reports such files (a warning with the path and the reason), skips them and records them.
"""
from __future__ import annotations

import glob as _glob
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..fileio import atomic_write

if TYPE_CHECKING:
    import zipfile


# One image file larger than this is refused; archive members before they are decompressed (zip bombs).
MAX_IMAGE_FILE_BYTES = 256 * 2**20
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")
MODES = ("RGB", "L", "RGBA")
PathLike = Union[str, os.PathLike]
Source = Union[PathLike, Sequence[PathLike]]


class UnreadableImage(ValueError):
    """A file that is not an image we can decode (corrupt, truncated, not an image at all)."""

    def __init__(self, path: PathLike, reason: str):
        super().__init__(f"{path}: cannot read image: {reason}")
        self.path, self.reason = Path(path), reason


@dataclass(frozen=True)
class SkippedImage:
    """One input file that was reported and skipped, with why."""

    path: str
    reason: str


def report_skipped(skipped: Optional[List[SkippedImage]], path: PathLike, reason: str, stacklevel: int = 3) -> None:
    """Report an unreadable input exactly once: into ``skipped`` when the caller collects them (it
    reports them: a command prints one line each, a dataset lists them), else as a ``UserWarning``."""
    if skipped is not None:
        skipped.append(SkippedImage(str(path), reason))
    else:
        warnings.warn(f"skipping {path}: {reason}", stacklevel=stacklevel)


class MemberTooLarge(ValueError):
    """An archive member that expands past the size allowed for it."""


def copy_bounded(src: IO[bytes], dst: IO[bytes], limit: int, name: str) -> int:
    """Copy a stream in chunks, raising :class:`MemberTooLarge` once more than ``limit`` bytes came out
    (a header's size can lie; what the stream yields cannot). Returns the bytes copied."""
    n = 0
    while True:
        chunk = src.read(min(1 << 20, limit + 1 - n))
        if not chunk:
            return n
        n += len(chunk)
        if n > limit:
            raise MemberTooLarge(f"{name}: expands to more than {limit:,} bytes, the limit for one image")
        dst.write(chunk)


def read_member(zf: "zipfile.ZipFile", name: str, limit: Optional[int] = None) -> bytes:
    """The bytes of one zip member, streamed and refused (:class:`MemberTooLarge`) past ``limit``
    (default :data:`MAX_IMAGE_FILE_BYTES`)."""
    import io

    limit = MAX_IMAGE_FILE_BYTES if limit is None else limit
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise MemberTooLarge(f"{name}: expands to {info.file_size:,} bytes, over the {limit:,}-byte limit for one image")
    buf = io.BytesIO()
    with zf.open(info) as f:
        copy_bounded(f, buf, limit, name)
    return buf.getvalue()


def is_image_file(path: PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def list_images(source: Source) -> List[Path]:
    """The image files ``source`` names, sorted.

    ``source``: a folder (searched recursively for :data:`IMAGE_SUFFIXES`), a glob pattern
    (``"photos/*.jpg"``, ``"**"`` recurses), a single file (taken whatever its suffix, so a corrupt
    or mislabelled file is reported later instead of silently dropped), or a list of those.
    Raises ``FileNotFoundError`` when nothing matches.
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    found: List[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f)
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            found.append(p)
        elif _glob.has_magic(str(item)):
            found += sorted(Path(f) for f in _glob.glob(str(p), recursive=True)
                            if os.path.isfile(f) and is_image_file(f))
        else:
            raise FileNotFoundError(f"{item}: no such file, folder or matching glob pattern")
    # Keep the first occurrence of each file (a file named twice is used once).
    seen, out = set(), []
    for f in found:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            out.append(f)
    if not out:
        raise FileNotFoundError(f"no images found in {source!s} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return out


def _to_8bit(img):
    """Pillow image with more than 8 bits per channel -> 'L' (16-bit and float grayscale)."""
    from PIL import Image

    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a  # float images are usually [0, 1]
    else:
        a = a.astype(np.float64)
        # 16-bit PNG / TIFF grayscale: the full range is 0..65535 (Pillow's 'I' mode too).
        a = a * (255.0 / 65535.0) if a.size and a.max() > 255 else a
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def pil_convert(img, mode: str = "RGB", background: Tuple[int, int, int] = (0, 0, 0)):
    """Convert a Pillow image to ``mode`` ('RGB', 'L', 'RGBA'), compositing transparency over ``background``.

    Compositing over black equals the original GANgealing's ``convert('RGB')`` (which drops alpha)
    for the usual fully transparent black pixels, and is correct for the others.
    """
    from PIL import Image

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa") or (img.mode == "L" and "transparency" in img.info):
        img = img.convert("RGBA")
    if mode == "RGBA":
        return img.convert("RGBA")
    if img.mode == "RGBA":
        bg = Image.new("RGBA", img.size, tuple(background) + (255,))
        img = Image.alpha_composite(bg, img)
    return img.convert(mode)


def read_image(path: PathLike, mode: str = "RGB", background: Tuple[int, int, int] = (0, 0, 0),
               max_side: Optional[int] = None) -> np.ndarray:
    """Read an image file as uint8 ``(H, W, C)`` (C = 3, 1 or 4 for 'RGB', 'L', 'RGBA').

    EXIF orientation is applied; palette, grayscale+alpha, CMYK, 16-bit and float images are
    converted; transparency is composited over ``background``. Raises :class:`UnreadableImage`
    for a corrupt, truncated or non-image file, ``FileNotFoundError`` for a missing one.

    ``max_side``: what the caller needs; an image at least twice as large is decoded smaller, its
    long side in ``[max_side, 2 max_side)`` where the format allows: JPEGs with Pillow's ``draft``
    (DCT scaling, never decoded at full size), others with ``Image.reduce`` by an integer factor.
    A huge photo then costs its reduced size in a batch. :func:`image_size` gives the full size.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            if max_side is not None:
                img.draft(None, (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, both sides >= max_side
            img.load()  # decode now: truncated files fail here, not later
            img = ImageOps.exif_transpose(img)
            img = pil_convert(img, mode, background)
            if max_side is not None and max(img.size) >= 2 * max_side:
                img = img.reduce(max(img.size) // max_side)
            arr = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise UnreadableImage(path, f"{type(e).__name__}: {e}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    return np.ascontiguousarray(arr)


def iter_images(paths: Iterable[PathLike], mode: str = "RGB",
                skipped: Optional[List[SkippedImage]] = None) -> Iterator[Tuple[Path, np.ndarray]]:
    """Yield ``(path, uint8 (H, W, C))`` for each readable file; report and skip the others.

    Each unreadable file is appended to ``skipped`` (a list the caller passes in and reports
    afterwards) as a :class:`SkippedImage`; without that list it gives a ``UserWarning`` naming
    the path and the reason (:func:`report_skipped`).
    """
    for p in paths:
        try:
            yield Path(p), read_image(p, mode)
        except (UnreadableImage, FileNotFoundError) as e:
            report_skipped(skipped, p, e.reason if isinstance(e, UnreadableImage) else "no such file")


def image_size(path: PathLike) -> Tuple[int, int]:
    """``(height, width)`` of an image file at full size, EXIF orientation applied, from its header."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # orientations that swap the axes
            w, h = h, w
    return h, w


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, C)`` -> float ``(C, H, W)`` in [-1, 1] (``(N, H, W, C)`` -> ``(N, C, H, W)``, ``(H, W)`` -> ``(1, H, W)``)."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # Pillow-backed arrays are read-only; torch wants to own writable memory
        a = a.copy()
    t = torch.from_numpy(a)
    t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)  # (C, H, W) / (N, C, H, W)
    return t.float().div(127.5).sub(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float ``(C, H, W)`` / ``(N, C, H, W)`` in [-1, 1] -> uint8 ``(H, W, C)`` / ``(N, H, W, C)`` (clamped, rounded)."""
    t = tensor.detach().float().cpu()
    if t.ndim not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(t.shape)}")
    t = t.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    t = t.permute(1, 2, 0) if t.ndim == 3 else t.permute(0, 2, 3, 1)  # (H, W, C) / (N, H, W, C)
    return t.contiguous().numpy()


def save_image(image: Union[np.ndarray, torch.Tensor], path: PathLike, *, protected: Iterable[PathLike] = (),
               **save_kwargs) -> Path:
    """Write ``image`` to ``path`` atomically (temporary file, then ``os.replace``); format from the suffix.

    ``image``: uint8 ``(H, W, C)`` / ``(H, W)`` array, or a float ``(C, H, W)`` tensor in [-1, 1].
    ``protected``: input files that must never be overwritten (``FileExistsError`` if ``path`` is one).
    """
    from PIL import Image

    path = Path(path)
    target = os.path.realpath(path)
    if any(os.path.realpath(p) == target for p in protected):
        raise FileExistsError(f"{path}: refusing to overwrite an input image; choose another output folder")
    arr = to_uint8(image) if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels or a float tensor in [-1, 1], got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    pil = Image.fromarray(arr)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unknown image suffix {path.suffix!r}")
    if fmt == "JPEG" and pil.mode == "RGBA":
        pil = pil.convert("RGB")
    return atomic_write(path, lambda f: pil.save(f, format=fmt, **save_kwargs))
