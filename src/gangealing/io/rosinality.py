"""Importer for rosinality/stylegan2-pytorch checkpoints (also what the original GANgealing loads).

A rosinality training checkpoint is a dict ``{"g": ..., "d": ..., "g_ema": ..., "g_optim": ...,
"d_optim": ..., "args": argparse.Namespace}``; ``convert_weight.py`` writes ``{"g_ema": ...,
"latent_avg": (D,)}``. Bare generator state dicts (keys ``style.1.weight``, ``input.input``, ...)
are accepted too. The architecture is read from the tensor shapes
(:func:`~gangealing.models.stylegan2.infer_generator_config`); ``num_fp16_res`` leaves no trace
in a checkpoint and must be given for generators converted from StyleGAN2-ADA.

Files are read with ``torch.load(weights_only=True)``. The ``args`` Namespace that rosinality and
GANgealing store is allowed through ``torch.serialization.safe_globals([argparse.Namespace])``:
a Namespace is a plain attribute container whose reconstruction runs no code from the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from ..checkpoint import Checkpoint, CheckpointError, args_to_dict, describe_foreign, read_any
from ..config import DiscriminatorConfig, GeneratorConfig
from ..models.stylegan2 import Discriminator, Generator, infer_discriminator_config, infer_generator_config

_G_MARKERS = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight")


@dataclass(frozen=True, eq=False)
class RosinalityCheckpoint:
    """What a rosinality checkpoint holds, in our configs; state dicts keep rosinality's keys."""

    g_config: GeneratorConfig
    g_ema: Dict[str, Tensor]
    d_config: Optional[DiscriminatorConfig] = None
    d: Optional[Dict[str, Tensor]] = None
    latent_avg: Optional[Tensor] = None  # (1, D) when the file has one (convert_weight.py output)
    args: Optional[Dict[str, Any]] = None  # the primitive-valued training options, if any


def _strip_prefix(sd: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    # (Distributed)DataParallel wrappers save every key under "module.".
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _check_fits(module_cls: type, cfg: Any, sd: Mapping[str, Tensor], what: str) -> None:
    """One short error if ``sd`` does not load strictly into ``module_cls(cfg)`` (built on the meta device)."""
    with torch.device("meta"):
        ref = module_cls(cfg).state_dict()
    missing, unexpected = sorted(ref.keys() - sd.keys()), sorted(sd.keys() - ref.keys())
    wrong = sorted(k for k in ref.keys() & sd.keys() if tuple(ref[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("with other shapes", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise CheckpointError(f"{what} does not fit the architecture inferred from its shapes ({cfg}): {'; '.join(parts)}")


def load_rosinality(
    path_or_dict: Union[str, os.PathLike, Mapping[str, Any]],
    *,
    num_fp16_res: int = 0,
    lr_mlp: float = 0.01,
    stddev_group: int = 4,
    map_location: Any = "cpu",
) -> RosinalityCheckpoint:
    """Read a rosinality checkpoint (file or loaded dict) or a bare ``g_ema`` state dict.

    Raises :class:`~gangealing.checkpoint.CheckpointError` with one message saying what the
    input holds when it is not a rosinality generator checkpoint or does not fit the inferred
    architecture.
    """
    obj = read_any(path_or_dict, map_location) if isinstance(path_or_dict, (str, os.PathLike)) else path_or_dict
    where = f"{path_or_dict}: " if isinstance(path_or_dict, (str, os.PathLike)) else ""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}this is {describe_foreign(obj)}; expected a rosinality StyleGAN2 checkpoint "
                              "(a dict with 'g_ema') or a generator state dict")
    if "g_ema" in obj:
        g_sd, d_sd = obj["g_ema"], obj.get("d")
    elif any(k in obj for k in _G_MARKERS):
        g_sd, d_sd = obj, None
    else:
        raise CheckpointError(f"{where}this is {describe_foreign(obj)}; expected a rosinality StyleGAN2 checkpoint (a dict "
                              f"with 'g_ema') or a generator state dict (keys like {', '.join(_G_MARKERS[:3])})")
    if not isinstance(g_sd, Mapping):
        raise CheckpointError(f"{where}'g_ema' is {describe_foreign(g_sd)}, not a state dict")
    g_sd = _strip_prefix(g_sd)
    try:
        g_cfg = infer_generator_config(g_sd, num_fp16_res=num_fp16_res, lr_mlp=lr_mlp)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{where}generator: {e}") from e
    _check_fits(Generator, g_cfg, g_sd, f"{where}generator")

    d_cfg = None
    if isinstance(d_sd, Mapping) and d_sd:
        d_sd = _strip_prefix(d_sd)
        try:
            d_cfg = infer_discriminator_config(d_sd, stddev_group=stddev_group)
            _check_fits(Discriminator, d_cfg, d_sd, f"{where}discriminator")
        except (ValueError, KeyError):
            d_cfg, d_sd = None, None  # a foreign discriminator does not stop the generator import
    else:
        d_sd = None

    latent_avg = obj.get("latent_avg") if "g_ema" in obj else None
    if isinstance(latent_avg, Tensor):
        latent_avg = latent_avg.detach().reshape(1, -1).float()
    else:
        latent_avg = None
    args = obj.get("args") if "g_ema" in obj else None
    args = args_to_dict(args) if args is not None else None
    return RosinalityCheckpoint(g_config=g_cfg, g_ema=dict(g_sd), d_config=d_cfg, d=dict(d_sd) if d_sd else None,
                                latent_avg=latent_avg, args=dict(args) if args is not None else None)


def load_rosinality_generator(
    path_or_dict: Union[str, os.PathLike, Mapping[str, Any]],
    *,
    num_fp16_res: int = 0,
    lr_mlp: float = 0.01,
    device: Union[str, torch.device, None] = None,
) -> Generator:
    """A :class:`Generator` (eval mode) loaded strictly from a rosinality checkpoint."""
    ck = load_rosinality(path_or_dict, num_fp16_res=num_fp16_res, lr_mlp=lr_mlp)
    g = Generator(ck.g_config)
    g.load_state_dict(ck.g_ema, strict=True)
    return g.to(device).eval() if device is not None else g.eval()


def import_rosinality(obj: Mapping[str, Any], *, num_fp16_res: Optional[int] = None) -> Tuple[Checkpoint, str]:
    """A loaded rosinality checkpoint dict as a gangealing ``generator`` :class:`Checkpoint` plus a description.

    ``num_fp16_res=None`` takes it from the checkpoint's ``args`` when recorded there, else 0.
    The mean latent (``latent_avg``), when present, goes to ``meta['w_avg']`` as a list of floats.
    """
    args = obj.get("args") if isinstance(obj, Mapping) else None
    if num_fp16_res is None:
        recorded = getattr(args, "num_fp16_res", None) if args is not None and not isinstance(args, Mapping) else \
            (args or {}).get("num_fp16_res")
        num_fp16_res = int(recorded or 0)
    ck = load_rosinality(obj, num_fp16_res=num_fp16_res)
    config = {"generator": ck.g_config.to_dict()}
    state = {"generator": {k: v.detach().cpu() for k, v in ck.g_ema.items()}}
    what = f"a rosinality StyleGAN2 generator ({ck.g_config.size} px"
    if ck.d_config is not None and ck.d is not None:
        config["discriminator"] = ck.d_config.to_dict()
        state["discriminator"] = {k: v.detach().cpu() for k, v in ck.d.items()}
        what += ", with discriminator"
    what += ")"
    meta: Dict[str, Any] = {"source": "rosinality"}
    if ck.latent_avg is not None:
        meta["w_avg"] = ck.latent_avg.reshape(-1).tolist()
    if ck.args:
        meta["original_args"] = ck.args
    return Checkpoint(kind="generator", config=config, state=state, meta=meta), what
