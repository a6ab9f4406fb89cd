"""Importers: files from other StyleGAN2 / GANgealing code bases into the gangealing format."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Tuple

from ..checkpoint import FORMAT, Checkpoint, CheckpointError, describe_foreign, load_checkpoint, read_any


def import_checkpoint(
    path,
    *,
    trust_pickle: bool = False,
    num_fp16_res: Optional[int] = None,
    inject: Optional[int] = None,
) -> Tuple[Checkpoint, str]:
    """Read any supported file and return it as a :class:`Checkpoint` plus a description of the source.

    Supported: gangealing checkpoints (returned as they are), original GANgealing checkpoints,
    rosinality / original-GANgealing StyleGAN2 checkpoints (``g_ema``) and bare generator state
    dicts, and NVlabs stylegan2-ada-pytorch ``.pkl`` files (only with ``trust_pickle=True``).
    """
    path = Path(path)
    if path.suffix == ".pkl":
        from .stylegan2_ada import import_stylegan2_ada

        return import_stylegan2_ada(path, trust_pickle=trust_pickle, num_fp16_res=num_fp16_res)
    obj = read_any(path, trust_pickle=trust_pickle)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return load_checkpoint(path), "a gangealing checkpoint"
    if isinstance(obj, Mapping) and {"g_ema", "t_ema", "ll"} <= set(obj):
        from .original import import_original

        return import_original(obj, num_fp16_res=num_fp16_res, inject=inject)
    if isinstance(obj, Mapping) and ("g_ema" in obj or any(str(k).startswith("style.") for k in obj)):
        from .rosinality import import_rosinality

        return import_rosinality(obj, num_fp16_res=num_fp16_res)
    raise CheckpointError(
        f"{path}: this is {describe_foreign(obj)}; expected a gangealing checkpoint, an original GANgealing "
        "checkpoint (g_ema, t_ema, ll), a rosinality StyleGAN2 checkpoint (g_ema) or an NVlabs .pkl"
    )
