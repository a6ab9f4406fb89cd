"""Edits and correspondences carried to every frame of a video (or a folder of frames).

GANgealing is applied to each frame independently (no temporal model, as the original's
``mixed_reality.py``): every frame is aligned, the edit painted on the average congealed image is
splatted into it (:mod:`gangealing.edit`), and, on request, points given on the congealed frame
are mapped into it, giving correspondences ``(frames, points, 2)`` across time.

Output folder (``gangealing video INPUT --ckpt C --out DIR``; see docs/video.md)::

    DIR/propagated.<fmt>      the edited video (mp4 / mov / webm / mkv / gif)
    DIR/congealed.<fmt>       the congealed video (``congealed=True``)
    DIR/correspondences.npy   float32 (frames, points, 2): (x, y) pixels of each frame
    DIR/points.npy            float32 (points, 2): the congealed-frame points, (x, y) pixels
    DIR/video.json            frame count, size, fps, the source frame of each output frame, skipped frames

Videos are read and written with PyAV (``pip install gangealing[video]``), imported only here.
Under ``torchrun`` each rank processes a contiguous chunk of frames and writes them as PNGs into
``DIR/.parts``; rank 0 then encodes the video in frame order and removes the parts.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .sharding import barrier, gather, is_main

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
OUTPUT_FORMATS = ("mp4", "mov", "webm", "mkv", "gif")
# PyAV container format and codecs to try, best first.
_CONTAINERS = {
    "mp4": ("mp4", ("libx264", "h264", "mpeg4")),
    "m4v": ("mp4", ("libx264", "h264", "mpeg4")),
    "mov": ("mov", ("libx264", "h264", "mpeg4")),
    "mkv": ("matroska", ("libx264", "h264", "mpeg4")),
    "avi": ("avi", ("mpeg4",)),
    "webm": ("webm", ("libvpx-vp9", "libvpx")),
}


def import_av():
    """PyAV, or an error naming the extra that installs it."""
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is installed in the test environment
        raise ImportError("reading and writing videos needs PyAV: pip install 'gangealing[video]' (or pip install av)") from e
    return av


def is_video_file(path: os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedFrame:
    """A frame that could not be read (frames folders: a corrupt or non-image file)."""

    index: int
    path: str
    reason: str


class FrameSource:
    """Frames of a video file or of a folder (glob, list) of images, in order, as uint8 ``(H, W, 3)``."""

    def __init__(self, source: Any):
        self.source = source
        items = source if isinstance(source, (list, tuple)) else [source]
        self.is_video = len(items) == 1 and Path(str(items[0])).is_file() and is_video_file(items[0])
        if self.is_video:
            self.path = Path(str(items[0]))
            self.paths: List[Path] = []
        else:
            from ..data.images import list_images

            self.paths = list_images(source)
        self._count: Optional[int] = None

    @property
    def fps(self) -> Optional[float]:
        """Frame rate of a video file (None for a folder of frames)."""
        if not self.is_video:
            return None
        with self._open() as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate or s.base_rate
            return float(rate) if rate else None

    def __len__(self) -> int:
        """Number of frames (a frames folder counts unreadable files too; they are skipped when read)."""
        if self._count is None:
            self._count = self._count_video() if self.is_video else len(self.paths)
        return self._count

    def _open(self):
        """The video's container, or a clear error for a file that is not a readable video."""
        av = import_av()
        try:
            c = av.open(str(self.path))
        except av.error.FFmpegError as e:
            raise ValueError(f"{self.path}: not a readable video ({e.strerror or type(e).__name__}); give a video "
                             "file (mp4, mov, webm, mkv) or a folder of frame images") from None
        if not c.streams.video:
            c.close()
            raise ValueError(f"{self.path}: holds no video stream")
        return c

    def _count_video(self) -> int:
        with self._open() as c:
            # Containers' frame counts are often missing or wrong: count decodable packets instead.
            return sum(1 for p in c.demux(video=0) if p.size > 0)

    def frames(self, start: int = 0, stop: Optional[int] = None,
               skipped: Optional[List[SkippedFrame]] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """Yield ``(index, uint8 (H, W, 3))`` for frames ``start <= index < stop``; unreadable ones are reported and skipped."""
        if self.is_video:
            yield from self._video_frames(start, stop)
            return
        from ..data.images import UnreadableImage, read_image

        stop = len(self.paths) if stop is None else min(stop, len(self.paths))
        for i in range(start, stop):
            try:
                yield i, read_image(self.paths[i], "RGB")
            except (UnreadableImage, FileNotFoundError) as e:
                reason = e.reason if isinstance(e, UnreadableImage) else "no such file"
                if skipped is not None:  # the caller reports it
                    skipped.append(SkippedFrame(i, str(self.paths[i]), reason))
                else:
                    warnings.warn(f"skipping frame {i} ({self.paths[i]}): {reason}", stacklevel=2)

    def _video_frames(self, start: int, stop: Optional[int]) -> Iterator[Tuple[int, np.ndarray]]:
        with self._open() as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            # Decoding from the start is exact where seeking is not (keyframes); chunks skip ahead.
            for i, frame in enumerate(c.decode(stream)):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    yield i, frame.to_ndarray(format="rgb24")

    def name(self, index: int) -> str:
        return str(self.paths[index]) if not self.is_video else f"{self.path}#{index}"


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad a frame by its last row / column to even sides (4:2:0 video needs them)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Write uint8 ``(H, W, 3)`` frames to a video (PyAV) or an animated GIF (Pillow), atomically.

    The container and codec follow the suffix: .mp4 / .mov / .mkv (H.264, else MPEG-4 Part 2),
    .webm (VP9, else VP8), .gif. Odd frame sides are padded by one edge row / column for 4:2:0
    codecs. The file appears under its name only when :meth:`close` succeeds.
    """

    def __init__(self, path: os.PathLike, fps: float = 30.0, quality: int = 18):
        self.path = Path(path)
        self.fps = float(fps)
        self.quality = int(quality)
        self.suffix = self.path.suffix.lower().lstrip(".")
        if self.suffix != "gif" and self.suffix not in _CONTAINERS:
            raise ValueError(f"{self.path}: unknown video suffix; use one of {', '.join(OUTPUT_FORMATS)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._gif: List[Any] = []
        self._container = self._stream = None
        self.count = 0

    def _open(self, h: int, w: int) -> None:
        av = import_av()
        fmt, codecs = _CONTAINERS[self.suffix]
        codec = next((c for c in codecs if c in av.codecs_available), None)
        if codec is None:
            raise RuntimeError(f"no encoder for .{self.suffix} in this PyAV build (tried {', '.join(codecs)})")
        self._container = av.open(self._tmp, mode="w", format=fmt)
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = w, h
        self._stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "libvpx-vp9", "libvpx"):
            self._stream.options = {"crf": str(self.quality)} if codec == "libx264" else {"crf": str(self.quality + 12), "b:v": "0"}
        else:
            self._stream.bit_rate = 8_000_000

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 ``(H, W, 3)`` frame (every frame must have the first frame's size)."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        self.count += 1
        if self.suffix == "gif":
            from PIL import Image

            self._gif.append(Image.fromarray(frame[:, :, :3]))
            return
        av = import_av()
        frame = _even(frame[:, :, :3])
        if self._container is None:
            self._open(*frame.shape[:2])
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        try:
            if self.suffix == "gif":
                if not self._gif:
                    raise ValueError("no frames to write")
                # Pillow merges identical consecutive GIF frames (their durations add up).
                self._gif[0].save(self._tmp, format="GIF", save_all=True, append_images=self._gif[1:],
                                  duration=max(1, round(1000 / self.fps)), loop=0)
            else:
                if self._container is None:
                    raise ValueError("no frames to write")
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._container.close()
            os.replace(self._tmp, self.path)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being discarded anyway
                pass
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(frames: Sequence[np.ndarray], path: os.PathLike, fps: float = 30.0) -> Path:
    """Write uint8 ``(H, W, 3)`` frames to ``path`` (:class:`VideoWriter`)."""
    with VideoWriter(path, fps) as w:
        for f in frames:
            w.write(f)
    return Path(path)


def read_video(path: os.PathLike) -> np.ndarray:
    """All frames of a video ``(T, H, W, 3)`` uint8 (for tests and small clips)."""
    src = FrameSource(path) if is_video_file(path) else None
    if src is None:
        from PIL import Image, ImageSequence

        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    return np.stack([f for _, f in src.frames()])


# ------------------------------------------------------------------------------------------------
# Processing
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSummary:
    """What :func:`process_video` wrote."""

    out_dir: Path
    num_frames: int  # frames written
    size: Tuple[int, int]  # (H, W) of the frames
    fps: float
    outputs: Dict[str, str]  # kind -> path
    frame_sources: List[int]  # source frame index of each written frame
    skipped: List[SkippedFrame] = field(default_factory=list)


def chunk_range(n: int, dist: Any) -> range:
    """The contiguous chunk of ``range(n)`` this rank handles (ranks in order, sizes differ by at most one)."""
    rank = int(getattr(dist, "rank", 0)) if dist is not None else 0
    world = int(getattr(dist, "world_size", 1)) if dist is not None else 1
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def dense_points(size: int) -> torch.Tensor:
    """Every pixel centre of a ``size x size`` congealed frame, row-major, ``(size * size, 2)`` (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2).float()


def load_points(path: os.PathLike) -> torch.Tensor:
    """Congealed-frame points ``(P, 2)`` (x, y) pixels from ``.npy`` or JSON (``[[x, y], ...]`` or ``{"points": ...}``)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        arr = np.load(path)
    else:
        data = json.loads(path.read_text())
        arr = np.asarray(data["points"] if isinstance(data, dict) else data, dtype=np.float64)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{path}: points must be a list of (x, y) pairs, got shape {arr.shape}")
    from .transfer import check_finite_points

    pts = torch.from_numpy(arr)
    try:
        check_finite_points(pts)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return pts


def _edit_frames(congealer, x: torch.Tensor, edit, *, resolution: int, blend: str, kernel: str, sigma: float,
                 opacity: float, label_opacity: float, smoother=None):
    """Align a batch of frames (N, 3, H, W) and composite the edit: (edited frames, alignment, grid used).

    ``smoother`` (:class:`gangealing.apps.live.GridSmoother`) replaces the grids by their running average."""
    from ..edit import carry_labels, carry_rgba, composite, is_label_map, labels_to_edit, resize_edit, resize_labels

    res = congealer.align(x, output_resolution=resolution)
    grid = res.grid if smoother is None else smoother(res.grid, res.flipped, res.cluster)
    if edit is None:
        return x, res, grid
    size = tuple(x.shape[-2:])
    xd = x.to(grid.device)
    if is_label_map(edit):
        labels = carry_labels(resize_labels(edit.unsqueeze(0).to(grid.device), resolution), grid, size,
                              kernel=kernel, sigma=sigma)  # (N, H, W)
        overlay = labels_to_edit(labels, opacity=label_opacity)  # (N, 4, H, W)
        return overlay[:, 3:] * overlay[:, :3] + (1 - overlay[:, 3:]) * xd, res, grid
    carried = carry_rgba(resize_edit(edit.unsqueeze(0).to(grid.device).float(), resolution), grid, size,
                         kernel=kernel, sigma=sigma, opacity=opacity)
    return composite(xd, carried, blend), res, grid


@torch.no_grad()
def process_video(
    congealer,
    source: Any,
    out_dir: os.PathLike,
    *,
    edit: Optional[torch.Tensor] = None,
    points: Optional[torch.Tensor] = None,
    points_size: Optional[int] = None,
    congealed: bool = False,
    batch_size: int = 16,
    resolution: Optional[int] = None,
    blend: str = "alpha",
    kernel: str = "bilinear",
    sigma: float = 1.0,
    opacity: float = 1.0,
    label_opacity: float = 0.5,
    fps: Optional[float] = None,
    video_format: str = "mp4",
    dist: Any = None,
    progress: bool = True,
    smooth: float = 0.0,
) -> VideoSummary:
    """Carry ``edit`` (RGBA ``(4, h, w)`` or label map ``(h, w)``) and/or ``points`` to every frame of ``source``.

    Args:
        source: a video file (mp4, mov, webm, ...), a folder / glob / list of frame images.
        out_dir: output folder (module docstring); never inside an input folder.
        points: ``(P, 2)`` (x, y) pixels of a ``points_size`` congealed frame (default: the
            model's congealed resolution); writes ``correspondences.npy`` ``(frames, P, 2)`` in
            pixels of each frame (use :func:`dense_points` for a dense set).
        congealed: also write the congealed video (at the model's congealed resolution).
        resolution: congealed-frame side sampled for the edit (default as :func:`gangealing.edit.propagate`).
        label_opacity: opacity of the colour-coded label overlay when ``edit`` is a label map.
        fps: output frame rate (default: the video's, else 30).
        smooth: temporal smoothing of the warp in [0, 1), 0 = off (:class:`gangealing.apps.live.GridSmoother`;
            under torchrun each process smooths its own chunk of frames).
    """
    from ..data.images import to_uint8, to_tensor
    from ..geometry.points import uncongeal
    from .align import check_output_dir

    if edit is None and points is None and not congealed:
        raise ValueError("nothing to do: give an edit, points and/or congealed=True")
    if video_format not in OUTPUT_FORMATS:
        raise ValueError(f"video_format must be one of {OUTPUT_FORMATS}, got {video_format!r}")
    src = FrameSource(source)
    items = source if isinstance(source, (list, tuple)) else [source]
    out_dir = check_output_dir(out_dir, items)
    out_dir.mkdir(parents=True, exist_ok=True)
    protected = [str(src.path)] if src.is_video else [str(p) for p in src.paths]
    n = len(src)
    if n == 0:
        raise ValueError(f"{source}: no frames")
    rate = float(fps) if fps else (src.fps or 30.0)
    cong_res = congealer.resolution(None)
    points_size = int(points_size or cong_res)
    mine = chunk_range(n, dist)
    from .live import GridSmoother

    smoother = GridSmoother(smooth) if smooth else None
    world = int(getattr(dist, "world_size", 1)) if dist is not None else 1
    parts = out_dir / ".parts"
    if world > 1:
        if is_main(dist):
            shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir()
        barrier(dist)

    writers: Dict[str, VideoWriter] = {}
    if world == 1:
        if edit is not None:
            writers["propagated"] = VideoWriter(out_dir / f"propagated.{video_format}", rate)
        if congealed:
            writers["congealed"] = VideoWriter(out_dir / f"congealed.{video_format}", rate)
    skipped: List[SkippedFrame] = []
    written: List[int] = []
    corr: List[np.ndarray] = []
    size: Optional[Tuple[int, int]] = None
    bar = _progress(len(mine), progress and is_main(dist))

    def flush(batch: List[Tuple[int, np.ndarray]]) -> None:
        nonlocal size
        x = to_tensor(np.stack([f for _, f in batch]))  # (B, 3, H, W)
        if size is None:
            size = tuple(x.shape[-2:])
        r = resolution
        if r is None:
            r = max(max(edit.shape[-2:]), max(x.shape[-2:])) if edit is not None else cong_res
        edited, res, grid = _edit_frames(congealer, x, edit, resolution=int(r), blend=blend, kernel=kernel,
                                         sigma=sigma, opacity=opacity, label_opacity=label_opacity, smoother=smoother)
        frames = {}
        if edit is not None:
            frames["propagated"] = to_uint8(edited)
        if congealed:
            cimg = res.images if int(r) == cong_res else congealer.align(x, output_resolution=cong_res).images
            frames["congealed"] = to_uint8(cimg)
        if points is not None:
            p = points.to(grid.device, grid.dtype).unsqueeze(0).expand(x.size(0), -1, -1)
            corr.append(uncongeal(p, grid, tuple(x.shape[-2:]), congealed_size=points_size).float().cpu().numpy())
        for j, (idx, _) in enumerate(batch):
            written.append(idx)
            for kind, arr in frames.items():
                if world == 1:
                    writers[kind].write(arr[j])
                else:
                    from ..data.images import save_image

                    save_image(arr[j], parts / kind / f"{idx:08d}.png", protected=protected)
        bar.update(len(batch))

    try:
        batch: List[Tuple[int, np.ndarray]] = []
        for idx, frame in src.frames(mine.start, mine.stop, skipped):
            if batch and frame.shape != batch[0][1].shape:
                flush(batch)
                batch = []
            batch.append((idx, frame))
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    bar.close()
    corr_arr = np.concatenate(corr) if corr else np.zeros((0, 0 if points is None else points.size(0), 2), np.float32)

    outputs: Dict[str, str] = {}
    if world == 1:
        for kind, w in writers.items():
            if w.count:
                outputs[kind] = str(w.close())
            else:
                w.abort()
        frame_sources, all_skipped, sizes = written, skipped, [s for s in [size] if s is not None]
    else:
        if points is not None:
            np.save(parts / f"correspondences_{mine.start:08d}.npy", corr_arr)
        merged = gather([(written, skipped, size)], dist)
        frame_sources = [i for w, _, _ in merged for i in w]
        all_skipped = [s for _, sk, _ in merged for s in sk]
        sizes = [s for _, _, s in merged if s is not None]
        if is_main(dist):
            kinds = (["propagated"] if edit is not None else []) + (["congealed"] if congealed else [])
            from ..data.images import read_image

            for kind in kinds:
                with VideoWriter(out_dir / f"{kind}.{video_format}", rate) as w:
                    for i in frame_sources:
                        w.write(read_image(parts / kind / f"{i:08d}.png", "RGB"))
                outputs[kind] = str(out_dir / f"{kind}.{video_format}")
            if points is not None:
                chunks = sorted(parts.glob("correspondences_*.npy"))
                corr_arr = np.concatenate([np.load(c) for c in chunks]) if chunks else corr_arr
    if not frame_sources:
        first = all_skipped[0].reason if all_skipped else "no frames"
        raise ValueError(f"{source}: no frame could be read ({first}); give a video file (mp4, mov, webm, mkv) or a "
                         "folder of frame images")
    if is_main(dist):
        if points is not None:
            np.save(out_dir / "correspondences.npy", corr_arr.astype(np.float32))
            np.save(out_dir / "points.npy", points.cpu().numpy().astype(np.float32))
            outputs["correspondences"] = str(out_dir / "correspondences.npy")
        info = {"source": str(source), "frames": len(frame_sources), "height": sizes[0][0] if sizes else None,
                "width": sizes[0][1] if sizes else None, "fps": rate, "points_frame_size": points_size,
                "outputs": {k: os.path.basename(v) for k, v in outputs.items()}, "frame_sources": frame_sources,
                "skipped": [s.__dict__ for s in all_skipped]}
        (out_dir / "video.json").write_text(json.dumps(info, indent=1))
        if world > 1:
            shutil.rmtree(parts, ignore_errors=True)
    barrier(dist)
    if not outputs:
        for kind in ("propagated", "congealed"):
            p = out_dir / f"{kind}.{video_format}"
            if p.exists():
                outputs[kind] = str(p)
        if points is not None:
            outputs["correspondences"] = str(out_dir / "correspondences.npy")
    return VideoSummary(out_dir=out_dir, num_frames=len(frame_sources), size=sizes[0] if sizes else (0, 0), fps=rate,
                        outputs=outputs, frame_sources=frame_sources, skipped=all_skipped)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return _NoBar()
    return tqdm(total=total, desc="video", leave=False, disable=None)
