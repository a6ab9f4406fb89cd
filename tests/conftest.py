import os
from pathlib import Path

import pytest
import torch

from gangealing.build import make_checkpoint
from gangealing.checkpoint import save_checkpoint
from helpers import PARITY_FIXTURES, tiny_generator, unpack_parity

# One thread: deterministic floating point and no contention on shared 2-core machines.
torch.set_num_threads(1)

# The original's recorded numbers: the repository's packed copy (tests/fixtures/parity), unpacked once
# per session, or an upstream-layout folder named by GANGEALING_PARITY. Missing fixtures fail.
PARITY_ENV = os.environ.get("GANGEALING_PARITY")


@pytest.fixture(scope="session")
def parity_dir(tmp_path_factory) -> Path:
    if PARITY_ENV:
        if not Path(PARITY_ENV).is_dir():
            pytest.fail(f"GANGEALING_PARITY={PARITY_ENV}: no such folder")
        return Path(PARITY_ENV)
    if not PARITY_FIXTURES.is_dir():
        pytest.fail(f"parity fixtures not found at {PARITY_FIXTURES}")
    return unpack_parity(PARITY_FIXTURES, tmp_path_factory.mktemp("parity"))


@pytest.fixture
def gen_file(tmp_path):
    """A tiny random generator saved as a generator checkpoint (helpers.tiny_generator)."""
    return save_checkpoint(make_checkpoint("generator", {"generator": tiny_generator()}), tmp_path / "g.pt")


try:  # Property tests draw the same examples on every run: CI failures reproduce locally.
    from hypothesis import settings

    settings.register_profile("gangealing", derandomize=True, deadline=None, print_blob=True)
    settings.load_profile("gangealing")
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass


@pytest.fixture
def noise_images(tmp_path):
    """A folder of six random 12 x 10 RGB PNGs (tiny GAN training data)."""
    import numpy as np
    from PIL import Image

    d = tmp_path / "data"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d
