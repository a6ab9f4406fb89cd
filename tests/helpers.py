"""Helpers shared by test modules (no test module imports another)."""
import torch

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import save_checkpoint
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


def tiny_checkpoint(path, size=16, translate=0.0, heads=1, max_channels=16):
    """A model checkpoint file whose transformer is the identity (optionally a translation by
    ``translate``); returns its path as a string."""
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=size, input_size=size, channel_multiplier=0.125, max_channels=max_channels,
                                 num_heads=heads))
    if translate:
        with torch.no_grad():
            stn.stns[0].warp_head.linear.bias[2] = translate  # raw tx of the similarity (normalised units)
    save_checkpoint(make_checkpoint("model", {"stn": stn}), path)
    return str(path)
