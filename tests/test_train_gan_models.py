"""The committed generators (models/*/generator.pt) load as GANgealing generators and sample."""
from pathlib import Path

import pytest
import torch

from gangealing.build import build_from_checkpoint
from gangealing.checkpoint import load_checkpoint

MODELS = sorted((Path(__file__).resolve().parents[1] / "models").glob("gan-*/generator.pt"))


@pytest.mark.parametrize("path", MODELS, ids=[p.parent.name for p in MODELS])
def test_committed_generator(path):
    ckpt = load_checkpoint(path)
    assert ckpt.kind == "generator" and set(ckpt.state) == {"generator"} and ckpt.step > 0
    assert ckpt.meta["train_config"]["preset"] == "tiny" and path.stat().st_size < 5 * 2**20
    G = build_from_checkpoint(ckpt, "generator")
    with torch.no_grad():
        x = G(z=torch.randn(4, G.style_dim, generator=torch.Generator().manual_seed(0)), noise="const")
    assert x.shape == (4, 3, G.size, G.size) and torch.isfinite(x).all()
    assert x.std() > 0.05  # not collapsed to a constant image
    assert (path.parent / "README.md").is_file() and (path.parent / "samples.png").is_file()
