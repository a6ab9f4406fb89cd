"""Edit propagation one frame at a time, for live video: the web page's live mode and the benchmark.

:class:`LiveEditor` aligns a frame (PyTorch :class:`~gangealing.predictor.Congealer` or onnxruntime
:class:`~gangealing.export.OnnxCongealer`), optionally smooths the warp over time
(:class:`GridSmoother`), splats the edit painted on the congealed frame into the frame and
composites it. Frames are uint8 ``(H, W, 3)`` at the edges, ``(1, 3, H, W)`` in [-1, 1] inside.

Temporal smoothing: per-frame alignment jitters on real video (each frame is aligned on its own,
as the original's ``mixed_reality.py``). ``smooth = a`` in [0, 1) replaces each frame's grid by
an exponential moving average ``g_t = a g_{t-1} + (1 - a) grid_t`` of the grids (positions in the
frame, normalised). ``a = 0`` is off (the default): every frame uses its own grid, exactly.
The average restarts when the flip or the cluster of a frame changes (averaging a grid with its
mirror would fold the edit onto the axis) and when the frame size changes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch


class GridSmoother:
    """Exponential moving average of congealing grids ``(N, R, R, 2)`` over consecutive frames (module docstring)."""

    def __init__(self, smooth: float = 0.0):
        if not 0.0 <= float(smooth) < 1.0:
            raise ValueError(f"smooth must be in [0, 1) (0: off), got {smooth}")
        self.smooth = float(smooth)
        self.reset()

    def reset(self) -> None:
        self._grid: Optional[torch.Tensor] = None
        self._key = None

    def __call__(self, grid: torch.Tensor, flipped: Optional[torch.Tensor] = None,
                 cluster: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Smooth grids of consecutive frames (rows in time order) -> the same shape."""
        if self.smooth == 0.0:
            return grid
        out = []
        for i in range(grid.size(0)):
            key = (tuple(grid.shape[1:]), None if flipped is None else bool(flipped[i]),
                   None if cluster is None else int(cluster[i]))
            g = grid[i]
            if self._grid is not None and key == self._key:
                g = self.smooth * self._grid + (1.0 - self.smooth) * g
            self._grid, self._key = g, key
            out.append(g)
        return torch.stack(out)


def frame_grid(congealer, x: torch.Tensor, resolution: int):
    """Grids ``(N, R, R, 2)`` into frames ``x`` (N, C, H, W), with the flips and clusters: (grid, flipped, cluster).

    An :class:`~gangealing.export.OnnxCongealer` returns the grid alone (no congealed images are
    sampled); a PyTorch congealer goes through its ``align``.
    """
    if hasattr(congealer, "grids"):
        return congealer.grids(x, resolution)
    res = congealer.align(x, output_resolution=resolution)
    return res.grid, res.flipped, res.cluster


@dataclass(frozen=True)
class LiveFrame:
    """One processed frame."""

    image: np.ndarray  # uint8 (H, W, 3), the edit composited
    grid: torch.Tensor  # (1, R, R, 2) the (smoothed) grid used
    flipped: bool
    cluster: Optional[int]
    seconds: float  # model + splat + composite time of this frame


class LiveEditor:
    """Carry one edit (RGBA ``(4, h, w)`` on the congealed frame) onto frame after frame.

    ``resolution``: side of the congealed frame splatted (default: the frame's longest side, so a
    128 px frame splats 128^2 points); ``smooth``: temporal smoothing (module docstring);
    ``cluster``: clustering models, the cluster the edit was painted on (frames routed elsewhere
    are shown unedited).
    """

    def __init__(self, congealer, edit: Optional[torch.Tensor] = None, *, resolution: Optional[int] = None,
                 smooth: float = 0.0, opacity: float = 1.0, blend: str = "alpha", cluster: Optional[int] = None):
        self.congealer = congealer
        self.cluster = cluster
        self.resolution = resolution
        self.opacity = float(opacity)
        self.blend = blend
        self.smoother = GridSmoother(smooth)
        self._edit = None if edit is None else edit.float()
        self._resized = {}

    def set_edit(self, edit: Optional[torch.Tensor]) -> None:
        self._edit = None if edit is None else edit.float()
        self._resized = {}

    def set_smooth(self, smooth: float) -> None:
        if float(smooth) != self.smoother.smooth:
            self.smoother = GridSmoother(smooth)

    def _edit_at(self, r: int) -> Optional[torch.Tensor]:
        from ..edit import resize_edit

        if self._edit is None:
            return None
        if r not in self._resized:
            self._resized = {r: resize_edit(self._edit.unsqueeze(0), r)}  # (1, 4, r, r)
        return self._resized[r]

    @torch.no_grad()
    def process(self, frame: np.ndarray) -> LiveFrame:
        """A uint8 ``(H, W, 3)`` frame -> :class:`LiveFrame`."""
        from ..data.images import to_tensor, to_uint8
        from ..edit import carry_rgba, composite

        t0 = time.perf_counter()
        x = to_tensor(np.ascontiguousarray(frame)).unsqueeze(0)  # (1, 3, H, W)
        h, w = x.shape[-2:]
        r = int(self.resolution or max(h, w))
        grid, flipped, cluster = frame_grid(self.congealer, x, r)
        grid = self.smoother(grid, flipped, cluster)
        edit = self._edit_at(r)
        if self.cluster is not None and cluster is not None and int(cluster[0]) != self.cluster:
            edit = None
        out = x
        if edit is not None:
            carried = carry_rgba(edit, grid, (h, w), opacity=self.opacity)
            out = composite(x, carried, self.blend)
        image = to_uint8(out[0])
        return LiveFrame(image=image, grid=grid, flipped=bool(flipped[0]),
                         cluster=None if cluster is None else int(cluster[0]), seconds=time.perf_counter() - t0)


def write_y4m(path, frames, fps: int = 10):
    """uint8 ``(T, H, W, 3)`` RGB frames (even sides) -> a 4:2:0 Y4M file (BT.601, full range) at ``fps``: what
    Chromium's fake camera plays (``--use-file-for-fake-video-capture``), for tests and benchmarks."""
    t, h, w, _ = frames.shape
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode())
        for fr in frames.astype(np.float64):
            r, g, b = fr[..., 0], fr[..., 1], fr[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
            f.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                f.write(np.clip(np.round(plane), 0, 255).astype(np.uint8).tobytes())
