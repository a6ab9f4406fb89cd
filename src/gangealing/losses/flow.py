"""The flow regularisers as losses (TV and identity on the residual flow).

They live beside the transformer in :mod:`gangealing.models.flow_penalties`, which uses the TV for
flip inference; this module is their home among the losses, so models never import losses (and
losses may import models).
"""
from ..models.flow_penalties import flow_identity_loss, total_variation_loss

__all__ = ["total_variation_loss", "flow_identity_loss"]
