"""The demo model and images the page starts with."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .workspace import Limits, Workspace

DEFAULT_CHECKPOINT = Path("models") / "gangealing-tiny-cat" / "model.pt"
DEFAULT_DEMO = "animals:cat"


def default_checkpoint_candidates() -> List[Path]:
    """Where the committed demo model is looked for: under the current folder, then the repository."""
    repo = Path(__file__).resolve().parents[3]  # src/gangealing/web/demo.py -> repository root
    return [Path.cwd() / DEFAULT_CHECKPOINT, repo / DEFAULT_CHECKPOINT]


def find_default_checkpoint() -> Path:
    """The demo checkpoint ``models/gangealing-tiny-cat/model.pt``; ``FileNotFoundError`` saying where it looked."""
    tried = default_checkpoint_candidates()
    for p in tried:
        if p.is_file():
            return p
    raise FileNotFoundError(
        "no --ckpt given and the demo model was not found (looked for "
        + ", ".join(str(p) for p in dict.fromkeys(tried))
        + "); run from a clone of the repository, or pass --ckpt PATH (or a released name such as cat)")


def load_demo_images(name: str = DEFAULT_DEMO, split: str = "test") -> Tuple[torch.Tensor, str]:
    """Embedded held-out images ``(N, 3, 28, 28)`` in [-1, 1] and their canonical name."""
    from ..data.embedded import load_embedded
    from ..data.images import to_tensor

    data = load_embedded(name, split=split)
    x = to_tensor(data.images)  # (N, 1, 28, 28)
    return x.expand(-1, 3, -1, -1).contiguous(), data.name


def demo_workspace(congealer, *, demo: Optional[str] = DEFAULT_DEMO, demo_count: int = 8, demo_side: int = 128,
                   canvas: int = 256, limits: Limits = Limits(), cluster: int = 0) -> Workspace:
    """A :class:`Workspace` whose average comes from all of ``demo``'s test images and whose demo set
    holds the first ``demo_count`` of them, upscaled (bilinear) to ``demo_side`` so edits are visible.

    ``demo=None``: no demo images; the average is then that of a blank image (upload images to see more).
    """
    if demo:
        images, _ = load_demo_images(demo)
        shown = torch.nn.functional.interpolate(images[:demo_count], size=(demo_side, demo_side), mode="bilinear",
                                                align_corners=False).clamp(-1, 1)  # (n, 3, S, S)
        return Workspace(congealer, images, shown, canvas=canvas, limits=limits, cluster=cluster)
    blank = torch.zeros(1, 3, congealer.input_size, congealer.input_size)
    return Workspace(congealer, blank, None, canvas=canvas, limits=limits, cluster=cluster)


def resolve_checkpoint_arg(ckpt: Optional[str]) -> str:
    """``--ckpt`` as given, or the demo checkpoint's path."""
    return os.fspath(ckpt) if ckpt else os.fspath(find_default_checkpoint())
