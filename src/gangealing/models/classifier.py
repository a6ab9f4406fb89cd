"""Cluster classifier: routes a real image to one of the K clusters of a clustering model.

Same trunk as the similarity transformer (so it starts from its weights, as the original does),
with ``to_logits`` in place of the similarity head. Keys match the original's ``ResnetClassifier``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ClassifierConfig, STNConfig
from .ops import EqualLinear
from .stn import SpatialTransformer, _Trunk


@dataclass(frozen=True)
class ClusterAssignment:
    """Routing of ``N`` images: cluster index, whether to mirror the image first, the logits."""

    cluster: torch.Tensor  # (N,) long in [0, K)
    flipped: torch.Tensor  # (N,) bool; always False for a classifier trained without flips
    logits: torch.Tensor  # (N, K) or (N, 2K) with flips: class k + K means "cluster k, mirrored"


class ClusterClassifier(_Trunk):
    """ResNet classifier over ``num_clusters`` (times 2 with flips) classes."""

    def __init__(self, cfg: ClassifierConfig):
        trunk_cfg = STNConfig(transforms=("similarity",), flow_size=cfg.size, input_size=cfg.input_size,
                              channel_multiplier=cfg.channel_multiplier, max_channels=cfg.max_channels,
                              num_heads=1, image_channels=cfg.image_channels)
        super().__init__(trunk_cfg, is_flow=False)
        self.cfg = cfg
        # The original ends with a leaky-ReLU on the logits too; kept so its weights mean the same.
        self.to_logits = EqualLinear(self.out_channels * 4 * 4, cfg.num_outputs, activation="fused_lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_outputs)`` of images ``(N, C, H, W)`` in [-1, 1]."""
        return self.to_logits(self.trunk(x).flatten(1))  # (N, K') from (N, C4, 4, 4)

    @torch.no_grad()
    def route(self, x: torch.Tensor) -> ClusterAssignment:
        """The most likely cluster of each image (and whether it should be mirrored first)."""
        logits = self.forward(x)
        cls = logits.argmax(dim=1)
        k = self.cfg.num_clusters
        return ClusterAssignment(cluster=cls % k, flipped=cls >= k if self.cfg.flips else torch.zeros_like(cls, dtype=torch.bool),
                                 logits=logits)

    def init_from_stn(self, stn: SpatialTransformer) -> None:
        """Copy the similarity transformer's trunk (convs, final_conv) into this classifier."""
        sim = stn.stns[0]
        if not hasattr(sim, "final_linear"):
            raise ValueError("the transformer's first stage is not a similarity transformer; nothing to copy")
        trunk = {k: v for k, v in sim.state_dict().items() if k.startswith(("convs.", "final_conv."))}
        own = self.state_dict()
        bad = [k for k, v in trunk.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise ValueError(f"classifier and transformer trunks differ in shape ({bad[:3]}); build the classifier "
                             "with the transformer's size, input_size, channel_multiplier and max_channels")
        self.load_state_dict(trunk, strict=False)


def classifier_config_for(stn_cfg: STNConfig, flips: bool = False) -> ClassifierConfig:
    """The classifier config that shares ``stn_cfg``'s trunk, for its number of heads."""
    return ClassifierConfig(size=stn_cfg.flow_size, input_size=stn_cfg.input_size,
                            channel_multiplier=stn_cfg.channel_multiplier, max_channels=stn_cfg.max_channels,
                            num_clusters=stn_cfg.num_heads, flips=flips, image_channels=stn_cfg.image_channels)
