"""Builders: configs -> modules, checkpoints -> modules, modules -> checkpoints.

Every module class takes its config dataclass as its only constructor argument and keeps it as
``module.cfg``; that is what makes a checkpoint rebuild its models without extra flags.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .config import CONFIGS


def module_class(name: str) -> type:
    """The module class that a checkpoint entry ``name`` holds (imported lazily)."""
    if name == "generator":
        from .models.stylegan2 import Generator

        return Generator
    if name == "discriminator":
        from .models.stylegan2 import Discriminator

        return Discriminator
    if name == "stn":
        from .models.stn import SpatialTransformer

        return SpatialTransformer
    if name == "target":
        from .models.target import CongealingTarget

        return CongealingTarget
    if name == "classifier":
        from .models.classifier import ClusterClassifier

        return ClusterClassifier
    raise CheckpointError(f"unknown module {name!r} in checkpoint; known: {sorted(CONFIGS)}")


def build(name: str, cfg: Union[Mapping[str, Any], Any]) -> nn.Module:
    """Build the module ``name`` ('generator', 'stn', ...) from its config (dataclass or dict)."""
    if isinstance(cfg, Mapping):
        cfg = CONFIGS[name].from_dict(dict(cfg))
    return module_class(name)(cfg)


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with one short error instead of a wall of keys."""
    missing, unexpected = module.state_dict().keys() - state.keys(), state.keys() - module.state_dict().keys()
    if missing or unexpected:
        def show(keys):
            keys = sorted(keys)
            return f"{len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"

        raise CheckpointError(
            f"{what}: weights do not fit the architecture in its config: missing {show(missing)}, "
            f"unexpected {show(unexpected)}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"{what}: weights do not fit the architecture in its config: {first}") from e


def build_from_checkpoint(ckpt: Checkpoint, name: str, device: Union[str, torch.device, None] = None) -> nn.Module:
    """Rebuild and load one module of a checkpoint, in eval mode."""
    if name not in ckpt.config:
        raise CheckpointError(f"this {ckpt.kind} checkpoint has no {name!r} (it holds {sorted(ckpt.config)})")
    module = build(name, ckpt.config[name])
    load_state_strict(module, ckpt.state[name], f"checkpoint entry {name!r}")
    return module.to(device).eval() if device is not None else module.eval()


@dataclass
class GANgealingModel:
    """The modules of a GANgealing checkpoint; ``classifier`` is present for clustering models."""

    generator: Optional[nn.Module]
    stn: nn.Module
    target: Optional[nn.Module]
    classifier: Optional[nn.Module] = None
    step: int = 0
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_clusters(self) -> int:
        return self.stn.cfg.num_heads


def load_model(source: Union[str, Path, Checkpoint], device: Union[str, torch.device, None] = None,
               with_generator: bool = True) -> GANgealingModel:
    """Load a GANgealing model checkpoint (ours; see :func:`gangealing.io.import_checkpoint` for others)."""
    ckpt = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    if ckpt.kind != "model":
        raise CheckpointError(f"expected a GANgealing model checkpoint (generator + transformer), got a {ckpt.kind} "
                              "checkpoint; train one with `gangealing train --generator THIS_FILE`")
    get = lambda n: build_from_checkpoint(ckpt, n, device) if n in ckpt.config else None  # noqa: E731
    return GANgealingModel(
        generator=get("generator") if with_generator else None,
        stn=get("stn"),
        target=get("target"),
        classifier=get("classifier"),
        step=ckpt.step,
        meta=ckpt.meta,
    )


def make_checkpoint(kind: str, modules: Mapping[str, nn.Module], step: int = 0,
                    meta: Optional[Dict[str, Any]] = None) -> Checkpoint:
    """A :class:`Checkpoint` of ``modules`` (each must carry its config as ``.cfg``)."""
    config, state = {}, {}
    for name, m in modules.items():
        if m is None:
            continue
        if not hasattr(m, "cfg"):
            raise TypeError(f"module {name!r} ({type(m).__name__}) has no .cfg config; cannot describe it in a checkpoint")
        config[name] = m.cfg.to_dict()
        state[name] = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    return Checkpoint(kind=kind, config=config, state=state, step=step, meta=dict(meta or {}))
