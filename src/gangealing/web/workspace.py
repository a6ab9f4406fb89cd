"""What the web page does, without the web: image sets held in memory, propagation, point transfer, PNG I/O."""
from __future__ import annotations

import base64
import io
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch


class BadInput(ValueError):
    """A request the user can fix (not an image, too many files, unknown set...): shown as a message."""


@dataclass(frozen=True)
class Limits:
    """Safety limits of one server."""

    max_images: int = 16  # images per upload
    max_side: int = 512  # larger uploads are downscaled (long side) before anything else
    max_pixels: int = 40_000_000  # refuse decoding anything larger (decompression bombs)
    max_sets: int = 8  # image sets kept in memory; the oldest is dropped


@dataclass
class ImageSet:
    """Images uploaded together: ``(3, H, W)`` tensors in [-1, 1] and their display names."""

    images: List[torch.Tensor]
    names: List[str]
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def png_bytes(image: np.ndarray, fast: bool = False) -> bytes:
    """uint8 ``(H, W, C)`` (C = 3 or 4) -> PNG bytes (``fast``: least compression, for live frames)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1 if fast else 6)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    """PNG bytes -> a ``data:image/png;base64,...`` URL."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def tensor_png(image: torch.Tensor) -> bytes:
    """``(3, H, W)`` in [-1, 1] -> PNG bytes."""
    from ..data.images import to_uint8

    return png_bytes(to_uint8(image))


def decode_image(data: bytes, name: str, mode: str, limits: Limits) -> np.ndarray:
    """Image file bytes -> uint8 ``(H, W, C)`` in ``mode`` ('RGB' or 'RGBA'); :class:`BadInput` if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from ..data.images import pil_convert

    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > limits.max_pixels:
                raise BadInput(f"{name}: {img.width}x{img.height} is too large (at most {limits.max_pixels} pixels)")
            img.load()  # decode now: truncated files fail here
            img = ImageOps.exif_transpose(img)
            img = pil_convert(img, mode) if mode == "RGB" else img.convert("RGBA")
            if max(img.size) > limits.max_side:
                img = img.copy()
                img.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
            return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    except UnidentifiedImageError:
        raise BadInput(f"{name}: not an image (PNG or JPEG expected)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        if isinstance(e, BadInput):
            raise
        raise BadInput(f"{name}: unreadable image ({type(e).__name__})") from None


def edit_tensor(rgba: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGBA ``(h, w, 4)`` -> edit ``(4, size, size)``: RGB in [-1, 1], alpha in [0, 1] (resized if needed)."""
    from ..edit import resize_edit

    t = torch.from_numpy(np.array(rgba)).permute(2, 0, 1).float()  # (4, h, w)
    edit = torch.cat([t[:3] / 127.5 - 1, t[3:] / 255.0], dim=0)
    if tuple(edit.shape[-2:]) != (size, size):
        edit = resize_edit(edit.unsqueeze(0), (size, size))[0]  # (4, size, size)
    return edit


class Workspace:
    """A congealer, its average congealed image on a ``canvas`` x ``canvas`` frame, and image sets.

    Every model call holds one lock: the server is threaded, the model is not meant to be shared.
    """

    def __init__(self, congealer, average_images: torch.Tensor, demo_images: Optional[torch.Tensor] = None, *,
                 canvas: int = 256, limits: Limits = Limits(), cluster: int = 0, blend: str = "alpha",
                 live_backend: str = "auto"):
        self.congealer = congealer
        self.live_backend = live_backend  # torch, onnx or auto (onnxruntime on the CPU when installed)
        self._live_runner = None
        self._live_edit: Optional[torch.Tensor] = None
        self._live_opacity = 1.0
        self._live_streams: "OrderedDict[str, object]" = OrderedDict()
        self.canvas = int(canvas)
        self.limits = limits
        self.cluster = int(cluster)
        self.blend = blend
        self._lock = threading.Lock()
        self._sets: "OrderedDict[str, ImageSet]" = OrderedDict()
        k = congealer.num_clusters
        if not 0 <= self.cluster < k:
            raise ValueError(f"cluster must be in [0, {k}), got {cluster}")
        with torch.no_grad():
            avg = congealer.average(average_images, output_resolution=self.canvas,
                                    cluster=self.cluster if k > 1 else None)  # (3, R, R)
        self.average = avg.cpu()
        self.average_png = tensor_png(self.average)
        if demo_images is not None:
            self._sets["demo"] = ImageSet([im for im in demo_images.cpu()], [f"demo_{i:02d}" for i in range(len(demo_images))])

    @property
    def frame_size(self) -> int:
        """Side of the congealed frame in which the congealer takes / returns points."""
        c = self.congealer
        return c.flow_size if c.has_flow else c.input_size

    # -- image sets ----------------------------------------------------------------------------

    def add_set(self, files: Sequence[Tuple[str, bytes]]) -> str:
        """Decode uploaded ``(name, bytes)`` files into a new set; returns its id."""
        from ..data.images import to_tensor

        if not files:
            raise BadInput("no files received: choose one or more PNG / JPEG images")
        if len(files) > self.limits.max_images:
            raise BadInput(f"too many images: {len(files)} (at most {self.limits.max_images})")
        images = [to_tensor(decode_image(data, name, "RGB", self.limits)) for name, data in files]  # (3, H, W) each
        key = secrets.token_urlsafe(9)
        with self._lock:
            self._sets[key] = ImageSet(images, [name for name, _ in files])
            while len(self._sets) > self.limits.max_sets:
                oldest = next(k for k in self._sets if k != "demo")
                del self._sets[oldest]
        return key

    def get_set(self, key: str) -> ImageSet:
        with self._lock:
            s = self._sets.get(str(key))
        if s is None:
            raise BadInput(f"unknown image set {key!r} (it may have expired): upload the images again")
        return s

    def originals(self, key: str) -> List[bytes]:
        """PNGs of a set's images as the server holds them (after any downscaling)."""
        return [tensor_png(im) for im in self.get_set(key).images]

    # -- model calls ---------------------------------------------------------------------------

    def _edit_arg(self, edit: torch.Tensor):
        """The edit as :func:`gangealing.edit.propagate` takes it (one per cluster for clustering models)."""
        k = self.congealer.num_clusters
        if k == 1:
            return edit
        blank = torch.zeros_like(edit)  # transparent: the other clusters' images stay as they are
        return [edit if i == self.cluster else blank for i in range(k)]

    def propagate(self, key: str, edit: torch.Tensor, opacity: float = 1.0) -> List[torch.Tensor]:
        """Composite ``edit`` ``(4, R, R)`` onto every image of a set -> ``(3, H, W)`` each, in input order."""
        s = self.get_set(key)
        out: List[Optional[torch.Tensor]] = [None] * len(s.images)
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, im in enumerate(s.images):
            groups.setdefault(tuple(im.shape[-2:]), []).append(i)
        with self._lock, torch.no_grad():
            for idx in groups.values():
                batch = torch.stack([s.images[i] for i in idx])  # (n, 3, H, W)
                res = self.congealer.propagate(batch, self._edit_arg(edit), blend=self.blend, opacity=opacity)
                for j, i in enumerate(idx):
                    out[i] = res.images[j].cpu()
        return out  # type: ignore[return-value]

    def _to_frame(self, p: torch.Tensor) -> torch.Tensor:
        """Canvas pixels -> congealed-frame pixels (pixel centres at integers in both)."""
        return (p + 0.5) * (self.frame_size / self.canvas) - 0.5

    def _to_canvas(self, p: torch.Tensor) -> torch.Tensor:
        return (p + 0.5) * (self.canvas / self.frame_size) - 0.5

    def points(self, key: str, source, x: float, y: float) -> dict:
        """Where a point clicked on ``source`` (an image index of the set, or ``'average'``) lands everywhere.

        Returns ``{"average": [x, y], "images": [[x, y], ...]}`` in canvas / image pixels.
        """
        s = self.get_set(key)
        p = torch.tensor([[[float(x), float(y)]]])  # (1, 1, 2)
        c = self.congealer
        cl = self.cluster if c.num_clusters > 1 else None
        with self._lock, torch.no_grad():
            if source == "average":
                frame_pt = self._to_frame(p)
                out = [c.uncongeal_points(im.unsqueeze(0), frame_pt, cluster=cl)[0, 0] for im in s.images]
                avg_pt = p[0, 0]
            else:
                i = int(source)
                if not 0 <= i < len(s.images):
                    raise BadInput(f"image index {i} out of range (the set has {len(s.images)} images)")
                a = s.images[i].unsqueeze(0)  # (1, 3, H, W)
                out = [p[0, 0] if j == i else c.transfer_points(a, b.unsqueeze(0), p)[0, 0]
                       for j, b in enumerate(s.images)]
                avg_pt = self._to_canvas(c.congeal_points(a, p)[0, 0])
        return {"average": [float(v) for v in avg_pt], "images": [[float(v) for v in q] for q in out]}

    # -- live video ----------------------------------------------------------------------------

    def live_runner(self):
        """What aligns live frames: the congealer exported to onnxruntime (``live_backend`` onnx, or
        auto on the CPU with the onnx extra installed; measured faster, docs/web.md), else itself."""
        if self._live_runner is None:
            from ..export import OnnxCongealer, onnx_available

            c = self.congealer
            want = self.live_backend
            use_onnx = want == "onnx" or (want == "auto" and onnx_available() and c.device.type == "cpu")
            self._live_runner = OnnxCongealer.from_congealer(c) if use_onnx else c
        return self._live_runner

    @property
    def live_backend_name(self) -> str:
        return getattr(self._live_runner, "backend", "torch") if self._live_runner is not None else "?"

    def set_live_edit(self, edit: Optional[torch.Tensor], opacity: float = 1.0) -> str:
        """The edit ``(4, R, R)`` carried onto live frames (None: frames pass unedited); prepares the runner."""
        with self._lock:
            self.live_runner()
            self._live_edit, self._live_opacity = edit, float(opacity)
            for editor in self._live_streams.values():
                editor.set_edit(edit)
                editor.opacity = float(opacity)
            return self.live_backend_name

    def live_frame(self, stream: str, data: bytes, smooth: float = 0.0) -> Tuple[bytes, dict]:
        """One frame of a live stream (image file bytes) -> (PNG of the frame with the edit, timings).

        Each ``stream`` keeps its own temporal smoothing state (:class:`gangealing.apps.live.GridSmoother`).
        """
        import time

        from ..apps.live import LiveEditor

        if not 0.0 <= smooth < 1.0:
            raise BadInput("smooth must be a number in [0, 1)")
        t0 = time.perf_counter()
        frame = decode_image(data, "frame", "RGB", self.limits)
        t1 = time.perf_counter()
        with self._lock:
            editor = self._live_streams.get(stream)
            if editor is None:
                k = self.congealer.num_clusters
                editor = LiveEditor(self.live_runner(), self._live_edit, opacity=self._live_opacity,
                                    blend=self.blend, cluster=self.cluster if k > 1 else None)
                self._live_streams[stream] = editor
                while len(self._live_streams) > self.limits.max_sets:
                    self._live_streams.popitem(last=False)
            editor.set_smooth(smooth)
            out = editor.process(frame)
        t2 = time.perf_counter()
        png = png_bytes(out.image, fast=True)
        t3 = time.perf_counter()
        return png, {"decode_ms": 1000 * (t1 - t0), "model_ms": 1000 * out.seconds, "encode_ms": 1000 * (t3 - t2),
                     "backend": self.live_backend_name, "flipped": out.flipped, "cluster": out.cluster}
