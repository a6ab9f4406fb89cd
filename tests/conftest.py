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
        pytest.skip(f"parity fixtures not found at {PARITY} (set GANGEALING_PARITY)")
    return PARITY

try:  # Property tests draw the same examples on every run: CI failures reproduce locally.
    from hypothesis import settings

    settings.register_profile("gangealing", derandomize=True, deadline=None, print_blob=True)
    settings.load_profile("gangealing")
except ImportError:  # pragma: no cover - hypothesis is a test extra
    pass
