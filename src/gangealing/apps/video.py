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

from ..distributed import barrier, gather, is_main
from ..fileio import save_npy
from ..edit import EditStyle
from .align import check_output_dir

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


class FrameEditor:
    """What is drawn on each batch of frames: the edit, the congealed frames, the tracked points.

    The options are given once, here; calling it on frames ``(B, 3, H, W)`` in [-1, 1] aligns them
    and returns ``({kind: uint8 (B, H, W, 3)}, correspondences)``, the kinds of :attr:`kinds`
    ('propagated', 'congealed') and the points' ``(B, P, 2)`` float32 (x, y) pixels in each frame
    (None without points). ``smooth``: :class:`gangealing.apps.live.GridSmoother` (frames must come
    in time order).
    """

    def __init__(self, congealer, edit: Optional[torch.Tensor] = None, style: EditStyle = EditStyle(), *,
                 points: Optional[torch.Tensor] = None, points_size: Optional[int] = None, congealed: bool = False,
                 smooth: float = 0.0):
        from .live import GridSmoother

        self.congealer, self.edit, self.style, self.points = congealer, edit, style, points
        self.congealed_size = congealer.resolution(None)
        self.points_size = int(points_size or self.congealed_size)
        self.smoother = GridSmoother(smooth) if smooth else None
        self.kinds = (("propagated",) if edit is not None else ()) + (("congealed",) if congealed else ())

    def __call__(self, x: torch.Tensor) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
        from ..data.images import to_uint8
        from ..geometry.points import uncongeal

        r = (self.style.side(self.edit, x.shape[-2:]) if self.edit is not None
             else int(self.style.resolution or self.congealed_size))
        res = self.congealer.align(x, output_resolution=r)
        grid = res.grid if self.smoother is None else self.smoother(res.grid, res.flipped, res.cluster)  # (B, r, r, 2)
        frames = {}
        if self.edit is not None:
            frames["propagated"] = to_uint8(self.style.render(x, self.edit, grid))
        if "congealed" in self.kinds:
            same = r == self.congealed_size
            frames["congealed"] = to_uint8(res.images if same else self.congealer.align(x, output_resolution=self.congealed_size).images)
        if self.points is None:
            return frames, None
        p = self.points.to(grid.device, grid.dtype).unsqueeze(0).expand(x.size(0), -1, -1)  # (B, P, 2)
        return frames, uncongeal(p, grid, tuple(x.shape[-2:]), congealed_size=self.points_size).float().cpu().numpy()


@dataclass
class _Chunk:
    """The frames one rank processed (or, merged, all of them): source indices, skipped frames, size, points."""

    written: List[int] = field(default_factory=list)
    skipped: List[SkippedFrame] = field(default_factory=list)
    size: Optional[Tuple[int, int]] = None  # (H, W) of the first frame
    corr: List[np.ndarray] = field(default_factory=list)  # (B, P, 2) per batch

    def correspondences(self, num_points: Optional[int]) -> np.ndarray:
        """``(frames, P, 2)`` of all batches (``num_points``: P, None without points)."""
        return np.concatenate(self.corr) if self.corr else np.zeros((0, num_points or 0, 2), np.float32)


class _VideoSink:
    """One process: frames go straight into one :class:`VideoWriter` per kind."""

    def __init__(self, out_dir: Path, kinds: Sequence[str], video_format: str, rate: float):
        self.writers = {kind: VideoWriter(out_dir / f"{kind}.{video_format}", rate) for kind in kinds}

    def write(self, kind: str, index: int, frame: np.ndarray) -> None:
        self.writers[kind].write(frame)

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()

    def finish(self, chunk: _Chunk, num_points: Optional[int]) -> Tuple[_Chunk, Dict[str, str]]:
        outputs: Dict[str, str] = {}
        for kind, w in self.writers.items():
            if w.count:
                outputs[kind] = str(w.close())
            else:
                w.abort()
        return _Chunk(chunk.written, chunk.skipped, chunk.size, [chunk.correspondences(num_points)]), outputs


class _PartsSink:
    """Under torchrun: each rank writes its frames as PNGs into ``DIR/.parts``; rank 0 encodes them in order."""

    def __init__(self, out_dir: Path, kinds: Sequence[str], video_format: str, rate: float, dist: Any,
                 protected: List[str], first: int):
        self.out_dir, self.kinds, self.video_format, self.rate = out_dir, kinds, video_format, rate
        self.dist, self.protected, self.first = dist, protected, first
        self.parts = out_dir / ".parts"
        if is_main(dist):
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir()
        barrier(dist)

    def write(self, kind: str, index: int, frame: np.ndarray) -> None:
        from ..data.images import save_image

        save_image(frame, self.parts / kind / f"{index:08d}.png", protected=self.protected)

    def abort(self) -> None:
        pass

    def finish(self, chunk: _Chunk, num_points: Optional[int]) -> Tuple[_Chunk, Dict[str, str]]:
        from ..data.images import read_image

        corr = chunk.correspondences(num_points)
        if num_points is not None:
            save_npy(self.parts / f"correspondences_{self.first:08d}.npy", corr)
        merged = gather([(chunk.written, chunk.skipped, chunk.size)], self.dist)
        sizes = [s for _, _, s in merged if s is not None]
        out = _Chunk([i for w, _, _ in merged for i in w], [s for _, sk, _ in merged for s in sk],
                     sizes[0] if sizes else None, [corr])
        outputs: Dict[str, str] = {}
        if is_main(self.dist):
            for kind in self.kinds:
                with VideoWriter(self.out_dir / f"{kind}.{self.video_format}", self.rate) as w:
                    for i in out.written:
                        w.write(read_image(self.parts / kind / f"{i:08d}.png", "RGB"))
                outputs[kind] = str(self.out_dir / f"{kind}.{self.video_format}")
            chunks = sorted(self.parts.glob("correspondences_*.npy")) if num_points is not None else []
            if chunks:
                out.corr = [np.concatenate([np.load(c) for c in chunks])]
        return out, outputs


@torch.no_grad()
def process_video(congealer, source: Any, out_dir: os.PathLike, *, edit: Optional[torch.Tensor] = None,
                  style: Optional[EditStyle] = None, points: Optional[torch.Tensor] = None,
                  points_size: Optional[int] = None, congealed: bool = False, batch_size: int = 16,
                  fps: Optional[float] = None, video_format: str = "mp4", dist: Any = None, progress: bool = True,
                  smooth: float = 0.0, **options: Any) -> VideoSummary:
    """Carry ``edit`` (RGBA ``(4, h, w)`` or label map ``(h, w)``) and/or ``points`` to every frame of ``source``.

    Args:
        source: a video file (mp4, mov, webm, ...), a folder / glob / list of frame images.
        out_dir: output folder (module docstring); never inside an input folder.
        style: how the edit is drawn (:class:`gangealing.edit.EditStyle`; or its fields as keywords,
            ``options``: resolution, blend, kernel, sigma, opacity, label_opacity).
        points: ``(P, 2)`` (x, y) pixels of a ``points_size`` congealed frame (default: the
            model's congealed resolution); writes ``correspondences.npy`` ``(frames, P, 2)`` in
            pixels of each frame (use :func:`dense_points` for a dense set).
        congealed: also write the congealed video (at the model's congealed resolution).
        fps: output frame rate (default: the video's, else 30).
        smooth: temporal smoothing of the warp in [0, 1), 0 = off (:class:`FrameEditor`; under
            torchrun each process smooths its own chunk of frames).
    """
    if edit is None and points is None and not congealed:
        raise ValueError("nothing to do: give an edit, points and/or congealed=True")
    if video_format not in OUTPUT_FORMATS:
        raise ValueError(f"video_format must be one of {OUTPUT_FORMATS}, got {video_format!r}")
    src = FrameSource(source)
    out_dir = check_output_dir(out_dir, source if isinstance(source, (list, tuple)) else [source])
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(src) == 0:
        raise ValueError(f"{source}: no frames")
    rate = float(fps) if fps else (src.fps or 30.0)
    editor = FrameEditor(congealer, edit, EditStyle.of(style, **options), points=points, points_size=points_size,
                         congealed=congealed, smooth=smooth)
    mine = chunk_range(len(src), dist)
    protected = [str(src.path)] if src.is_video else [str(p) for p in src.paths]
    sink = (_VideoSink(out_dir, editor.kinds, video_format, rate) if int(getattr(dist, "world_size", 1) or 1) == 1
            else _PartsSink(out_dir, editor.kinds, video_format, rate, dist, protected, mine.start))
    chunk = _edit_chunk(editor, src, mine, batch_size, sink, progress and is_main(dist))
    num_points = None if points is None else points.size(0)
    merged, outputs = sink.finish(chunk, num_points)
    if not merged.written:
        first = merged.skipped[0].reason if merged.skipped else "no frames"
        raise ValueError(f"{source}: no frame could be read ({first}); give a video file (mp4, mov, webm, mkv) or a "
                         "folder of frame images")
    if is_main(dist):
        if points is not None:
            save_npy(out_dir / "correspondences.npy", merged.corr[0].astype(np.float32))
            save_npy(out_dir / "points.npy", points.cpu().numpy().astype(np.float32))
            outputs["correspondences"] = str(out_dir / "correspondences.npy")
        _write_info(out_dir / "video.json", source, merged, rate, editor.points_size, outputs)
        if isinstance(sink, _PartsSink):
            shutil.rmtree(sink.parts, ignore_errors=True)
    barrier(dist)
    if not outputs:  # the other ranks: what rank 0 wrote
        outputs = {k: str(out_dir / f"{k}.{video_format}") for k in ("propagated", "congealed")
                   if (out_dir / f"{k}.{video_format}").exists()}
        if points is not None:
            outputs["correspondences"] = str(out_dir / "correspondences.npy")
    return VideoSummary(out_dir=out_dir, num_frames=len(merged.written), size=merged.size or (0, 0), fps=rate,
                        outputs=outputs, frame_sources=merged.written, skipped=merged.skipped)


def _edit_chunk(editor: FrameEditor, src: FrameSource, frames: range, batch_size: int, sink, progress: bool) -> _Chunk:
    """Run ``editor`` over ``src``'s frames in ``frames``, batches of equal size, into ``sink`` (dropped on error)."""
    from ..data.images import to_tensor

    chunk = _Chunk()
    bar = _progress(len(frames), progress)

    def flush(batch: List[Tuple[int, np.ndarray]]) -> None:
        x = to_tensor(np.stack([f for _, f in batch]))  # (B, 3, H, W)
        chunk.size = chunk.size or tuple(x.shape[-2:])
        out, corr = editor(x)
        if corr is not None:
            chunk.corr.append(corr)
        for j, (idx, _) in enumerate(batch):
            chunk.written.append(idx)
            for kind, arr in out.items():
                sink.write(kind, idx, arr[j])
        bar.update(len(batch))

    try:
        batch: List[Tuple[int, np.ndarray]] = []
        for idx, frame in src.frames(frames.start, frames.stop, chunk.skipped):
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
        sink.abort()
        raise
    bar.close()
    return chunk


def _write_info(path: Path, source: Any, merged: _Chunk, rate: float, points_size: int, outputs: Dict[str, str]) -> None:
    """``video.json``: frame count, size, fps, outputs, the source frame of each output frame, skipped frames."""
    h, w = merged.size if merged.size else (None, None)
    info = {"source": str(source), "frames": len(merged.written), "height": h, "width": w, "fps": rate,
            "points_frame_size": points_size, "outputs": {k: os.path.basename(v) for k, v in outputs.items()},
            "frame_sources": merged.written, "skipped": [s.__dict__ for s in merged.skipped]}
    path.write_text(json.dumps(info, indent=1))


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
