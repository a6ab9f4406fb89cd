"""The spatial transformer exported to ONNX, and an onnxruntime predictor that runs it.

``export_onnx(congealer, "model.onnx")`` writes the transformer of a :class:`~gangealing.predictor.Congealer`
(similarity and flow, every head, the cluster classifier of a clustering model, flip inference where
the model uses it) as one ONNX graph at the congealer's input size, plus a JSON side file
(``model.onnx.json``) with what a runtime needs to use it: sizes, padding, outputs. The template
edit, when given, is written beside it (``model.onnx.edit.png``, RGBA on the congealed frame).

The graph (opset 18)::

    input   image   (N, C, S, S) float32 in [-1, 1], the transformer input (see predictor.InputFrame)
    output  grid    (N, F, F, 2) float32 sampling grid into the input, F = flow_size; with a flow, the
                    grid at any resolution R is this grid resized bilinearly (as the transformer does);
                    similarity-only, the grid is the matrix's affine grid at F
            matrix  (N, 2, 3)    composed similarity (normalised congealed -> input coordinates); models
                    with a similarity only
            flow    (N, F, F, 2) residual flow; models with a flow only
            flipped (N,) bool    aligned through the mirror (grid and matrix address the unmirrored input)
            cluster (N,) int64   clustering models only

Convention: :mod:`gangealing.geometry.coords` (normalised grids, ``align_corners=False``).

:class:`OnnxCongealer` has :class:`~gangealing.predictor.Congealer`'s ``align`` and the few
properties the applications read, so ``align``, ``propagate`` and ``video`` take either
(``--backend onnx``). onnxruntime and onnx are the ``onnx`` extra (``pip install 'gangealing[onnx]'``),
imported only here and only when used.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .fileio import atomic_write

OPSET = 18
BACKENDS = ("torch", "onnx", "auto")
FORMAT_VERSION = 1


def import_onnxruntime():
    """onnxruntime, or an ImportError naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("the onnx back-end needs onnxruntime: pip install 'gangealing[onnx]' "
                          "(or pip install onnxruntime onnx)") from None
    return onnxruntime


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# The exported graph
# ------------------------------------------------------------------------------------------------


def _sample_mipmap_all_levels(stack, grid: torch.Tensor, levels: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """:func:`gangealing.geometry.warp.sample_mipmap` without data-dependent branches (traceable).

    The eager sampler reads only the stack levels between the smallest and largest level a grid
    uses (``.item()`` calls a trace would freeze); here every level the transformer can use
    (0 .. ceil(MAX_NUM_LEVELS - 1)) is sampled and the two around each pixel's level are blended.
    Same values up to float rounding: the blend weights are the eager sampler's.
    """
    from .models.stn import MAX_NUM_LEVELS

    top = int(math.ceil(MAX_NUM_LEVELS - 1))
    grid = grid.to(stack.images.dtype)
    sampled = [F.grid_sample(stack.level(k), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
               for k in range(top + 1)]  # (N, C, H', W') each
    floor = levels.floor().clamp(max=top - 1).unsqueeze(1)  # (N, 1, H', W')
    frac = levels.unsqueeze(1) - floor
    o0, o1 = sampled[0], sampled[1]
    for k in range(1, top):
        at_k = floor == k
        o0 = torch.where(at_k, sampled[k], o0)
        o1 = torch.where(at_k, sampled[k + 1], o1)
    return o0 + frac * (o1 - o0)


@contextlib.contextmanager
def traceable_sampling():
    """Swap the transformer's mipmap sampler for the branch-free one while tracing (and read the
    image sides the stack pads to a power of two as Python ints: the tracer hands out tensors)."""
    from .geometry.warp import MipmapStack
    from .models import stn as stn_module

    eager, pads = stn_module.sample_mipmap, MipmapStack.__dict__["_pads"]
    stn_module.sample_mipmap = _sample_mipmap_all_levels
    MipmapStack._pads = staticmethod(lambda size: pads.__func__(int(size)))
    try:
        yield
    finally:
        stn_module.sample_mipmap = eager
        MipmapStack._pads = pads


class TransformerGraph(nn.Module):
    """A congealer's transformer as a pure tensor function: input (N, C, S, S) -> grid, matrix, flow, flipped, cluster."""

    def __init__(self, congealer):
        super().__init__()
        self.congealer = congealer
        self.stn = congealer.stn  # registered so .eval() and parameters reach it
        self.classifier = congealer.classifier

    @property
    def output_names(self) -> Tuple[str, ...]:
        c = self.congealer
        names = ["grid"]
        if c.stn.similarity is not None:
            names.append("matrix")
        if c.has_flow:
            names.append("flow")
        names.append("flipped")
        if c.num_clusters > 1:
            names.append("cluster")
        return tuple(names)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        c = self.congealer
        a = c._run(x, c.flow_size)  # grid at F; the unused congealed images are pruned from the graph
        res = a.res
        grid = res.grid if c.has_flow else _affine(res.matrix, c.flow_size)  # (N, F, F, 2)
        out = {"grid": grid, "matrix": res.matrix, "flow": res.flow, "flipped": a.flipped, "cluster": a.cluster}
        return tuple(out[k] for k in self.output_names)


def _affine(matrix: torch.Tensor, size: int) -> torch.Tensor:
    from .geometry.similarity import affine_grid

    return affine_grid(matrix, size)  # (N, size, size, 2)


@dataclass(frozen=True)
class ExportInfo:
    """What the JSON side file of an exported transformer holds."""

    input_size: int
    flow_size: int
    image_channels: int
    has_flow: bool
    has_similarity: bool
    num_clusters: int
    padding_mode: str
    iters: int
    flip: bool
    output_resolution: Optional[int]
    outputs: Tuple[str, ...]
    source: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["outputs"] = list(self.outputs)
        return json.dumps(d, indent=1)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ExportInfo":
        d = dict(d)
        if int(d.get("format_version", 0)) != FORMAT_VERSION:
            raise ValueError(f"unsupported export format version {d.get('format_version')!r} (expected {FORMAT_VERSION})")
        d["outputs"] = tuple(d["outputs"])
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def export_info(congealer, source: str = "") -> ExportInfo:
    c = congealer
    return ExportInfo(input_size=c.input_size, flow_size=c.flow_size, image_channels=int(c.stn.cfg.image_channels),
                      has_flow=c.has_flow, has_similarity=c.stn.similarity is not None, num_clusters=c.num_clusters,
                      padding_mode=c.padding_mode, iters=c.iters, flip=bool(c.flip),
                      output_resolution=c.output_resolution, outputs=TransformerGraph(c).output_names,
                      source=str(source))


def export_bytes(congealer) -> bytes:
    """The serialized ONNX model of ``congealer``'s transformer, for one image per run (the exporter
    fixes the batch of flip inference and routing; :meth:`OnnxCongealer.run` loops over a batch)."""
    import warnings

    if congealer.num_clusters > 1:
        congealer.require_routing()
    graph = TransformerGraph(congealer).eval().cpu()
    if congealer.device.type != "cpu":
        raise ValueError("export from a CPU congealer (device='cpu')")
    s, ch = congealer.input_size, int(congealer.stn.cfg.image_channels)
    example = torch.zeros(1, ch, s, s)
    names = graph.output_names
    buf = io.BytesIO()
    with traceable_sampling(), torch.no_grad(), warnings.catch_warnings(), _quiet_loggers():
        warnings.simplefilter("ignore")  # exporter chatter; the parity test is the check
        torch.onnx.export(graph, (example,), buf, input_names=["image"], output_names=list(names),
                          opset_version=OPSET, dynamo=True, optimize=True, verbose=False)
    return buf.getvalue()


@contextlib.contextmanager
def _quiet_loggers():
    """The exporter logs progress and notes (missing torchvision ops, skipped passes) as warnings."""
    import logging

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass(frozen=True)
class ExportSummary:
    onnx: Path
    info: Path
    edit: Optional[Path]
    bytes: int


def side_paths(path: Union[str, os.PathLike]) -> Tuple[Path, Path]:
    """The JSON side file and the template-edit file of an exported model."""
    p = Path(path)
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".edit.png")


def export_onnx(congealer, path: Union[str, os.PathLike], *, edit: Optional[torch.Tensor] = None,
                source: str = "") -> ExportSummary:
    """Write ``path`` (the ONNX graph), ``path.json`` (:class:`ExportInfo`) and, with ``edit``
    (RGBA ``(4, h, w)`` on the congealed frame), ``path.edit.png``; all atomically."""
    from .data.images import to_uint8
    from .fileio import check_output_file

    path = Path(path)
    check_output_file(path)
    data = export_bytes(congealer)
    info_path, edit_path = side_paths(path)
    atomic_write(path, lambda f: f.write(data))
    atomic_write(info_path, lambda f: f.write(export_info(congealer, source).to_json()), binary=False)
    written_edit = None
    if edit is not None:
        from PIL import Image

        rgb = to_uint8(edit[:3].clamp(-1, 1))  # (h, w, 3)
        a = (edit[3].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        import numpy as np

        img = Image.fromarray(np.dstack([rgb, a]), "RGBA")
        written_edit = atomic_write(edit_path, lambda f: img.save(f, format="PNG"))
    return ExportSummary(onnx=path, info=info_path, edit=written_edit, bytes=len(data))


# ------------------------------------------------------------------------------------------------
# Running it
# ------------------------------------------------------------------------------------------------


def load_backend(args, device, backend: str) -> Optional["OnnxCongealer"]:
    """The onnxruntime congealer the commands' ``--ckpt`` / ``--backend`` ask for; None means PyTorch.

    A ``--ckpt`` ending in ``.onnx`` is an export (its settings are fixed); otherwise ``onnx``
    exports the checkpoint in memory, and ``auto`` does so on the CPU when onnxruntime is installed.
    """
    from .predictor import Congealer

    ckpt = str(args.ckpt)
    on_cpu = torch.device(device).type == "cpu"
    if ckpt.lower().endswith(".onnx"):
        fixed = [flag for flag, name in (("--iters", "iters"), ("--padding-mode", "padding_mode"), ("--flip", "flip"),
                                         ("--input-size", "input_size")) if getattr(args, name, None) is not None]
        if fixed:
            raise ValueError(f"{ckpt} is an ONNX export whose settings were fixed by gangealing export; drop "
                             f"{', '.join(fixed)} (or export again with them)")
        c = OnnxCongealer.load(ckpt)
    elif backend == "auto" and not (on_cpu and onnx_available()):
        return None
    else:
        if not on_cpu:
            raise ValueError(f"--backend onnx runs on the CPU; drop --device {device} (or use --backend torch)")
        import_onnxruntime()
        base = Congealer.from_checkpoint(ckpt, device="cpu", iters=args.iters, padding_mode=args.padding_mode,
                                         flip=args.flip, input_size=args.input_size)
        if base.router is not None:  # a clustering model routed by its GAN targets (it has no classifier)
            if backend == "auto":
                return None
            raise ValueError(f"{ckpt} routes by its GAN targets (it has no cluster classifier), which runs with "
                             "PyTorch only; use --backend torch")
        c = OnnxCongealer.from_congealer(base)
    if getattr(args, "output_resolution", None) is not None:
        c.output_resolution = int(args.output_resolution)
    return c


def make_session(model: Union[bytes, str, os.PathLike], threads: Optional[int] = None):
    """An onnxruntime CPU session for a serialized model or a path (``threads``: intra-op threads, default torch's)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    src = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxCongealer:
    """An exported transformer run by onnxruntime, with :class:`~gangealing.predictor.Congealer`'s
    ``align`` (grids into the original images, congealed images sampled from them in PyTorch)."""

    backend = "onnx"

    def __init__(self, session, info: ExportInfo):
        self.session = session
        self.info = info
        self.device = torch.device("cpu")
        self.output_resolution = info.output_resolution
        self.padding_mode = info.padding_mode
        self.flip = info.flip
        self.iters = info.iters
        self.meta: Dict[str, Any] = {}
        self._names = tuple(o.name for o in session.get_outputs())

    @classmethod
    def from_congealer(cls, congealer, threads: Optional[int] = None) -> "OnnxCongealer":
        """Export ``congealer`` in memory and load it into onnxruntime (a CPU copy is exported)."""
        if congealer.device.type != "cpu":
            import copy

            from .predictor import Congealer

            cpu = lambda m: None if m is None else copy.deepcopy(m).cpu()  # noqa: E731  (the caller's stays put)
            congealer = Congealer(cpu(congealer.stn), cpu(congealer.classifier),
                                  iters=congealer.iters, padding_mode=congealer.padding_mode, flip=congealer.flip,
                                  output_resolution=congealer.output_resolution, device="cpu", meta=congealer.meta)
        return cls(make_session(export_bytes(congealer), threads), export_info(congealer))

    @classmethod
    def load(cls, path: Union[str, os.PathLike], threads: Optional[int] = None) -> "OnnxCongealer":
        """Load ``path`` (written by :func:`export_onnx`) and its JSON side file."""
        path = Path(path)
        info_path, _ = side_paths(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        if not info_path.is_file():
            raise ValueError(f"{path}: its side file {info_path.name} is missing (write both with gangealing export)")
        try:
            info = ExportInfo.from_dict(json.loads(info_path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{info_path}: not a gangealing export side file ({e})") from None
        return cls(make_session(path, threads), info)

    # -- what the applications read ----------------------------------------------------------------

    @property
    def num_clusters(self) -> int:
        return self.info.num_clusters

    @property
    def input_size(self) -> int:
        return self.info.input_size

    @property
    def flow_size(self) -> int:
        return self.info.flow_size

    @property
    def has_flow(self) -> bool:
        return self.info.has_flow

    @property
    def image_channels(self) -> int:
        return self.info.image_channels

    def resolution(self, output_resolution: Optional[int] = None) -> int:
        r = output_resolution if output_resolution is not None else self.output_resolution
        return int(r) if r is not None else self.flow_size

    def require_routing(self) -> None:
        """Exported clustering models always carry their classifier (export refuses one without)."""

    def check_cluster(self, cluster) -> None:
        if cluster is not None:
            raise ValueError("the onnx back-end routes every image with the exported classifier; "
                             "--cluster needs --backend torch")

    def frame(self, height: int, width: int):
        from .predictor import InputFrame

        return InputFrame.for_image(int(height), int(width), self.input_size)

    def prepare(self, images: torch.Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        fr = self.frame(images.size(-2), images.size(-1))
        return fr.prepare(images.float()), fr

    # -- running ---------------------------------------------------------------------------------

    def run(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The graph's outputs (module docstring) for transformer input ``x`` (N, C, S, S)."""
        arr = x.detach().float().contiguous().cpu().numpy()
        rows = [self.session.run(None, {"image": arr[i : i + 1]}) for i in range(arr.shape[0])]
        return {name: torch.from_numpy(np.concatenate([r[k] for r in rows])) for k, name in enumerate(self._names)}

    def grid(self, out: Dict[str, torch.Tensor], resolution: int) -> torch.Tensor:
        """The sampling grid ``(N, R, R, 2)`` into the transformer input at ``resolution``."""
        from .geometry.warp import resize_grid

        if self.has_flow:
            return resize_grid(out["grid"], resolution)
        return _affine(out["matrix"], resolution)

    @torch.no_grad()
    def grids(self, images: torch.Tensor, resolution: int):
        """Grids ``(N, R, R, 2)`` into the ORIGINAL images ``(N, C, H, W)``, flips ``(N,)`` and clusters (or None),
        without sampling congealed images: what edit propagation needs."""
        grid, out, _ = self._grids(images, resolution)
        return grid, out["flipped"].bool(), out.get("cluster")

    def _grids(self, images: torch.Tensor, resolution: int):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        x, fr = self.prepare(images)
        out = self.run(x)
        return fr.grid_to_original(self.grid(out, resolution)), out, fr  # (N, R, R, 2)

    @torch.no_grad()
    def align(self, images: torch.Tensor, *, output_resolution: Optional[int] = None, cluster=None):
        """As :meth:`gangealing.predictor.Congealer.align` (``cluster`` must be None)."""
        from .geometry.warp import warp
        from .predictor import CongealResult

        self.check_cluster(cluster)
        if images.dim() == 3:
            images = images.unsqueeze(0)
        grid, out, fr = self._grids(images, self.resolution(output_resolution))
        imgs = warp(images.float(), grid, padding_mode=self.padding_mode, antialias=True)
        matrix = out.get("matrix")
        return CongealResult(images=imgs, grid=grid, flow=out.get("flow"),
                             matrix=None if matrix is None else fr.matrix_to_original(matrix),
                             flipped=out["flipped"].bool(), cluster=out.get("cluster"), frame=fr)

    def propagate(self, images: torch.Tensor, edit, **kw):
        from .edit import propagate

        return propagate(self, images, edit, **kw)
