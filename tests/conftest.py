import os
from pathlib import Path

import pytest
import torch

# One thread: deterministic floating point and no contention on shared 2-core machines.
torch.set_num_threads(1)

PARITY = Path(os.environ.get("GANGEALING_PARITY", Path(__file__).resolve().parents[1].parent / "shared" / "parity"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY.is_dir():
        message = f"parity fixtures not found at {PARITY} (set GANGEALING_PARITY)"
        if os.environ.get("CI"):  # CI has ../shared/parity beside the clone: a missing fixture is a failure there
            pytest.fail(message)
        pytest.skip(message)
    return PARITY

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
