"""Importer for NVlabs stylegan2-ada-pytorch ``.pkl`` generators, without running their code.

NVlabs network pickles are "persistent" pickles (``torch_utils.persistence``): every network
object is stored as a call ``_reconstruct_persistent_obj(meta)`` whose ``meta`` holds the full
source code of the defining module plus the object's ``__dict__`` (``_parameters``, ``_buffers``,
``_modules``, ``_init_kwargs``, attributes). Loading such a file with ``pickle.load`` executes that
source code. This importer never does: its :class:`pickle.Unpickler` resolves only

* ``_reconstruct_persistent_obj`` and ``dnnlib.EasyDict`` to inert stand-ins that keep the
  recorded state (the embedded source is dropped unread),
* torch's tensor/parameter rebuild functions (storages are read with
  ``torch.load(weights_only=True)``), ``collections.OrderedDict``, ``set``/``frozenset`` and
  numpy's scalar/array/dtype reconstruction (NVlabs layers keep numpy floats as attributes),

and turns every other global into an opaque record that is never called. A pickle is still an
attack surface (a hostile file can, for example, exhaust memory), so reading one requires
``trust_pickle=True``.

Conversion facts (NVlabs ``G_ema`` -> rosinality ``g_ema``), checked against an independent
re-computation of the NVlabs forward pass in ``tests/test_stylegan2_ada.py``:

* ``mapping.fc{i}.{weight,bias}`` -> ``style.{i+1}.*`` unchanged: both store weights divided by
  the mapping lr multiplier and scale by ``lr/sqrt(fan_in)`` / ``lr`` at run time, so
  ``lr_mlp`` must equal the pickle's ``lr_multiplier`` (read from the layer's ``bias_gain``).
* ``synthesis.b4.const`` (C, 4, 4) -> ``input.input`` (1, C, 4, 4).
* ``b{r}.conv0`` / ``conv1`` / ``torgb`` -> ``convs.{2k}`` / ``convs.{2k+1}`` / ``to_rgbs.{k}``
  with ``k = log2(r) - 3`` (``b4.conv1`` -> ``conv1``, ``b4.torgb`` -> ``to_rgb1``):
  ``weight`` (O, I, k, k) -> ``conv.weight`` (1, O, I, k, k), no flip (NVlabs' up-sampling conv
  runs ``conv_transpose2d`` on the unflipped weight, as rosinality's does); ``affine`` ->
  ``conv.modulation`` (both lr 1, bias init 1); ``bias`` -> ``activate.bias`` (ToRGB: ``bias``
  (1, 3, 1, 1)); ``noise_strength`` () -> ``noise.weight`` (1,); ``noise_const`` (r, r) ->
  ``noises.noise_{j}`` (1, 1, r, r).
* Equalised-lr scales: NVlabs multiplies ToRGB styles by ``1/sqrt(fan_in)``, rosinality scales
  the weight by the same factor: identical. For demodulated convs NVlabs applies no weight scale
  at all; demodulation cancels it, except that the 1e-8 inside the demodulation is relatively
  ``fan_in`` times smaller in NVlabs (a difference far below float32 resolution).
* ``mapping.w_avg`` (D,) -> the mean latent for truncation, returned as (1, D).
* ``num_fp16_res``: the number of synthesis blocks with ``use_fp16`` (their fp16
  pre-normalisation is emulated in fp32, see :mod:`gangealing.models.stylegan2`).
* ``resample_filter`` buffers -> ``blur_kernel`` (rosinality's kernel buffers are rebuilt).
* ``conv_clamp`` (NVlabs clamps conv outputs to +-256 in trained configs) is not applied; it only
  touches extreme activations. Conditional (``c_dim > 0``), non-'skip' and StyleGAN3 generators
  are refused with a clear error. The discriminator is not converted.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from ..checkpoint import Checkpoint, CheckpointError
from ..config import GeneratorConfig
from ..models.ops import make_kernel
from ..models.stylegan2 import Generator, infer_generator_config

TRUST_MESSAGE = (
    "NVlabs .pkl files are Python pickles whose network objects rebuild themselves by executing source code "
    "stored in the file. This importer never executes that code (it reads the tensors through a restricted "
    "unpickler), but parsing a pickle from an unknown source is still risky. Pass trust_pickle=True "
    "(CLI: --trust-pickle) only for files from a source you trust, then keep the converted .pt."
)


class PersistentRecord:
    """Inert stand-in for an NVlabs persistent object: its class name and recorded ``__dict__``."""

    def __init__(self, class_name: str, state: Mapping[str, Any]):
        self.class_name = class_name
        self.state = dict(state)

    @property
    def modules(self) -> Dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    @property
    def init_kwargs(self) -> Dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name})"


def _reconstruct_persistent_obj(meta: Mapping[str, Any]) -> PersistentRecord:
    # The embedded module source (meta['module_src']) is deliberately ignored.
    return PersistentRecord(str(meta.get("class_name", "?")), meta.get("state") or {})


class _EasyDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a dict with attribute access): kept as a plain dict."""


class _Opaque:
    """Any other global in the pickle: records its arguments and state, never runs anything."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Opaque":
        # Pickle's NEWOBJ calls only __new__, so the record is set up here.
        self = object.__new__(cls)
        self.args, self.kwargs, self.items, self.state = args, kwargs, [], None
        return self

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _opaque(module: str, name: str) -> type:
    return type("Opaque", (_Opaque,), {"qualname": f"{module}.{name}"})


def _load_storage_from_bytes(b: bytes) -> Any:
    return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")


def _rebuild_parameter(data: Tensor, requires_grad: bool = False, backward_hooks: Any = None, *state: Any) -> Tensor:
    return data  # we only need the values


def _numpy_globals() -> Dict[Tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a torch dependency in practice
        return {}
    core = getattr(np, "_core", None) or np.core
    out: Dict[Tuple[str, str], Any] = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = core.multiarray.scalar
        out[(mod, "_reconstruct")] = core.multiarray._reconstruct
    return out


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that maps NVlabs persistence to records and never resolves an unknown global."""

    _ALLOWED: Dict[Tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            allowed = _numpy_globals().get((module, name))
        return allowed if allowed is not None else _opaque(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not expected in an NVlabs network pickle")


def read_network_pickle(path: Union[str, os.PathLike], *, trust_pickle: bool = False) -> Any:
    """The objects of an NVlabs ``.pkl`` (``{'G': ..., 'G_ema': ..., ...}``) as inert records."""
    if not trust_pickle:
        raise CheckpointError(f"{path}: refusing to read a pickle without trust_pickle=True. {TRUST_MESSAGE}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        try:
            return _SafeUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a readable NVlabs network pickle ({type(e).__name__}: {e})") from e


def flatten_record(rec: PersistentRecord, prefix: str = "") -> Dict[str, Tensor]:
    """NVlabs-named tensors (``mapping.fc0.weight``, ``synthesis.b4.const``, ...) of a record tree."""
    out: Dict[str, Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, t in (rec.state.get(group) or {}).items():
            if isinstance(t, Tensor):
                out[prefix + name] = t
    for name, child in rec.modules.items():
        if isinstance(child, PersistentRecord):
            out.update(flatten_record(child, f"{prefix}{name}."))
        elif child is not None:
            raise CheckpointError(f"module {prefix}{name} is not an NVlabs network object ({child!r}); cannot convert")
    return out


@dataclass(frozen=True, eq=False)
class AdaGenerator:
    """A converted NVlabs generator: our config, a rosinality-layout state dict and its mean W."""

    config: GeneratorConfig
    state_dict: Dict[str, Tensor]
    w_avg: Optional[Tensor]  # (1, D), NVlabs' tracked mean latent (for truncation)
    notes: Tuple[str, ...]


def _attr(rec: PersistentRecord, name: str, default: Any = None) -> Any:
    v = rec.state.get(name, default)
    return v.item() if hasattr(v, "item") and not isinstance(v, Tensor) else v


def _blur_kernel(f: Optional[Tensor]) -> Tuple[float, ...]:
    if f is None:
        return (1, 3, 3, 1)
    k = f.detach().float()
    if k.ndim == 2:
        k = k.sum(0)
    k = k / k.min()
    r = k.round()
    k = r if torch.allclose(k, r, atol=1e-4) else k
    return tuple(int(v) if float(v).is_integer() else float(v) for v in k.tolist())


def convert_generator(rec: PersistentRecord, *, num_fp16_res: Optional[int] = None) -> AdaGenerator:
    """Convert an NVlabs ``Generator`` record (``pkl['G_ema']``) to our layout."""
    if not isinstance(rec, PersistentRecord) or rec.class_name != "Generator":
        raise CheckpointError(f"expected an NVlabs Generator, got {rec!r}")
    mods = rec.modules
    mapping, synthesis = mods.get("mapping"), mods.get("synthesis")
    if not isinstance(mapping, PersistentRecord) or not isinstance(synthesis, PersistentRecord):
        raise CheckpointError("the NVlabs Generator has no mapping/synthesis networks")
    if "b4" not in synthesis.modules:
        kinds = ", ".join(sorted(synthesis.modules)[:4])
        raise CheckpointError(f"not a StyleGAN2 synthesis network (layers {kinds}, ...): StyleGAN3 pickles are not supported")
    if int(_attr(rec, "c_dim", 0) or 0) > 0 or "embed" in mapping.modules:
        raise CheckpointError("conditional generators (c_dim > 0) are not supported")
    notes: List[str] = []
    p = flatten_record(rec)

    n_mlp = int(_attr(mapping, "num_layers", 0) or len([k for k in mapping.modules if k.startswith("fc")]))
    fc0 = mapping.modules.get("fc0")
    lr_mlp = float(_attr(fc0, "bias_gain", 0.01)) if isinstance(fc0, PersistentRecord) else 0.01
    resolutions = sorted(int(k[1:]) for k in synthesis.modules if k.startswith("b") and k[1:].isdigit())
    fp16_blocks = sum(bool(_attr(synthesis.modules[f"b{r}"], "use_fp16", False)) for r in resolutions)
    if num_fp16_res is None:
        num_fp16_res = fp16_blocks
    for r in resolutions:
        blk = synthesis.modules[f"b{r}"]
        arch = _attr(blk, "architecture", "skip")
        if arch != "skip":
            raise CheckpointError(f"synthesis block b{r} uses architecture {arch!r}; only 'skip' (the default) converts")
        if int(_attr(blk, "img_channels", 3) or 3) != 3:
            raise CheckpointError("only 3-channel generators convert")
    clamps = {_attr(layer, "conv_clamp") for r in resolutions
              for layer in synthesis.modules[f"b{r}"].modules.values() if isinstance(layer, PersistentRecord)}
    if clamps - {None}:
        notes.append(f"conv_clamp={sorted(clamps - {None})} is not applied (it only clips extreme activations)")

    sd: Dict[str, Tensor] = {}
    try:
        for i in range(n_mlp):
            sd[f"style.{i + 1}.weight"] = p[f"mapping.fc{i}.weight"]
            sd[f"style.{i + 1}.bias"] = p[f"mapping.fc{i}.bias"]
        sd["input.input"] = p["synthesis.b4.const"].unsqueeze(0)

        def layer(src: str, dst: str, noise_index: int) -> None:
            sd[f"{dst}.conv.weight"] = p[f"{src}.weight"].unsqueeze(0)
            sd[f"{dst}.conv.modulation.weight"] = p[f"{src}.affine.weight"]
            sd[f"{dst}.conv.modulation.bias"] = p[f"{src}.affine.bias"]
            sd[f"{dst}.noise.weight"] = p[f"{src}.noise_strength"].reshape(1)
            sd[f"{dst}.activate.bias"] = p[f"{src}.bias"]
            const = p[f"{src}.noise_const"]
            sd[f"noises.noise_{noise_index}"] = const.reshape(1, 1, *const.shape[-2:])

        def torgb(src: str, dst: str) -> None:
            sd[f"{dst}.conv.weight"] = p[f"{src}.weight"].unsqueeze(0)
            sd[f"{dst}.conv.modulation.weight"] = p[f"{src}.affine.weight"]
            sd[f"{dst}.conv.modulation.bias"] = p[f"{src}.affine.bias"]
            sd[f"{dst}.bias"] = p[f"{src}.bias"].reshape(1, -1, 1, 1)

        layer("synthesis.b4.conv1", "conv1", 0)
        torgb("synthesis.b4.torgb", "to_rgb1")
        blur = _blur_kernel(p.get("synthesis.b8.conv0.resample_filter"))
        up_kernel = make_kernel(blur) * 4
        for k, r in enumerate(resolutions[1:]):
            layer(f"synthesis.b{r}.conv0", f"convs.{2 * k}", 2 * k + 1)
            layer(f"synthesis.b{r}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
            torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{k}")
            sd[f"convs.{2 * k}.conv.blur.kernel"] = up_kernel.clone()
            sd[f"to_rgbs.{k}.upsample.kernel"] = up_kernel.clone()
    except KeyError as e:
        raise CheckpointError(f"the NVlabs Generator lacks tensor {e.args[0]!r} (use_noise=False or an unknown variant?)") from e
    sd = {k: v.detach().float().contiguous() for k, v in sd.items()}

    try:
        cfg = infer_generator_config(sd, num_fp16_res=num_fp16_res, lr_mlp=lr_mlp)
    except ValueError as e:
        raise CheckpointError(f"NVlabs generator widths cannot be expressed in our config: {e}") from e
    cfg = GeneratorConfig(**{**cfg.to_dict(), "blur_kernel": blur})
    if cfg.size != resolutions[-1] or 2 ** (len(resolutions) + 1) != cfg.size:
        raise CheckpointError(f"unexpected synthesis blocks {resolutions}")
    z_dim = int(_attr(rec, "z_dim", cfg.style_dim) or cfg.style_dim)
    if z_dim != cfg.style_dim or p["mapping.fc0.weight"].shape[1] != cfg.style_dim:
        raise CheckpointError(f"z_dim {z_dim} differs from w_dim {cfg.style_dim}; rosinality's mapping needs them equal")
    w_avg = p.get("mapping.w_avg")
    if fp16_blocks:
        notes.append(f"{fp16_blocks} fp16 synthesis blocks -> num_fp16_res={num_fp16_res} (normalisation emulated in fp32)")
    return AdaGenerator(config=cfg, state_dict=sd, w_avg=None if w_avg is None else w_avg.detach().float().reshape(1, -1),
                        notes=tuple(notes))


def load_stylegan2_ada(path: Union[str, os.PathLike], *, trust_pickle: bool = False, key: str = "G_ema",
                       num_fp16_res: Optional[int] = None) -> AdaGenerator:
    """Read ``pkl[key]`` (default ``G_ema``) of an NVlabs stylegan2-ada-pytorch pickle and convert it."""
    obj = read_network_pickle(path, trust_pickle=trust_pickle)
    if not isinstance(obj, Mapping) or key not in obj:
        have = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path}: expected an NVlabs network pickle with {key!r}; it holds {have}")
    try:
        return convert_generator(obj[key], num_fp16_res=num_fp16_res)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_stylegan2_ada_generator(path: Union[str, os.PathLike], *, trust_pickle: bool = False,
                                 device: Union[str, torch.device, None] = None) -> Tuple[Generator, Optional[Tensor]]:
    """A loaded :class:`Generator` (eval mode) and its mean latent (1, D) from an NVlabs pickle."""
    ada = load_stylegan2_ada(path, trust_pickle=trust_pickle)
    g = Generator(ada.config)
    g.load_state_dict(ada.state_dict, strict=True)
    w_avg = ada.w_avg
    if device is not None:
        g, w_avg = g.to(device), (w_avg.to(device) if w_avg is not None else None)
    return g.eval(), w_avg


def import_stylegan2_ada(path: Union[str, os.PathLike], *, trust_pickle: bool = False,
                         num_fp16_res: Optional[int] = None) -> Tuple[Checkpoint, str]:
    """An NVlabs pickle as a gangealing ``generator`` :class:`Checkpoint` plus a description."""
    ada = load_stylegan2_ada(path, trust_pickle=trust_pickle, num_fp16_res=num_fp16_res)
    meta: Dict[str, Any] = {"source": "stylegan2-ada-pytorch", "notes": list(ada.notes)}
    if ada.w_avg is not None:
        meta["w_avg"] = ada.w_avg.reshape(-1).tolist()
    ckpt = Checkpoint(kind="generator", config={"generator": ada.config.to_dict()},
                      state={"generator": dict(ada.state_dict)}, meta=meta)
    return ckpt, f"an NVlabs StyleGAN2-ADA generator ({ada.config.size} px, num_fp16_res={ada.config.num_fp16_res})"
