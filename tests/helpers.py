"""Helpers shared by test modules (no test module imports another)."""
import torch

from gangealing.config import STNConfig
from gangealing.models.stn import SpatialTransformer

# The composed similarity + flow transformer of the parity fixtures (../shared/parity/stn).
PARITY_STN = STNConfig(transforms=("similarity", "flow"), flow_size=64, input_size=128, channel_multiplier=0.125,
                       max_channels=32, num_heads=1)


def parity_stn(parity_dir) -> SpatialTransformer:
    """The fixtures' transformer with the original's weights, in eval mode."""
    model = SpatialTransformer(PARITY_STN)
    model.load_original_state_dict(torch.load(parity_dir / "stn" / "stn.pt"))
    return model.eval()
