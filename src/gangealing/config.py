"""Architecture configs: plain dataclasses that are saved inside every checkpoint.

Each config holds only primitives (ints, floats, strings, tuples of them) so that
``dataclasses.asdict(cfg)`` can be stored in a checkpoint that loads with
``torch.load(..., weights_only=True)``, and ``Config.from_dict(d)`` rebuilds it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Tuple, Type, TypeVar

T = TypeVar("T", bound="_Base")


class _Base:
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: Type[T], d: Dict[str, Any]) -> T:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known fields are {sorted(names)}")
        kwargs = {}
        for k, v in d.items():
            # JSON and torch.save turn tuples into lists; restore them so configs compare equal.
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


@dataclass(frozen=True)
class GeneratorConfig(_Base):
    """StyleGAN2 generator (rosinality / GANgealing layout).

    The width at resolution r is ``min(max_channels, table[r])`` with rosinality's table
    ``{4..32: 512, 64: 256*cm, 128: 128*cm, 256: 64*cm, 512: 32*cm, 1024: 16*cm}``.
    """

    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: float = 2
    max_channels: int = 512
    blur_kernel: Tuple[int, ...] = (1, 3, 3, 1)
    lr_mlp: float = 0.01
    # StyleGAN2-ADA weight/style normalisation on the `num_fp16_res` highest resolutions
    # (needed by ADA-trained generators converted to PyTorch); computation stays in fp32.
    num_fp16_res: int = 0


@dataclass(frozen=True)
class DiscriminatorConfig(_Base):
    """StyleGAN2 residual discriminator (rosinality layout)."""

    size: int = 256
    channel_multiplier: float = 2
    max_channels: int = 512
    blur_kernel: Tuple[int, ...] = (1, 3, 3, 1)
    stddev_group: int = 4
    image_channels: int = 3


@dataclass(frozen=True)
class STNConfig(_Base):
    """Spatial transformer (GANgealing layout): similarity, flow, or both composed.

    ``input_size`` is the resolution the network is fed (the original's ``supersize`` /
    ``real_size``); it is tent-downsampled to ``flow_size`` before regression. Widths follow
    the original table ``{4..32: 512, 64: 256*cm, 128: 128*cm, ...}`` capped at ``max_channels``.
    """

    transforms: Tuple[str, ...] = ("similarity", "flow")
    flow_size: int = 128
    input_size: int = 128
    channel_multiplier: float = 0.5
    max_channels: int = 512
    num_heads: int = 1
    image_channels: int = 3


@dataclass(frozen=True)
class TargetConfig(_Base):
    """Congealing target: ``c = mean(W) + sum_i alpha_i d_i`` over the top ``num_directions`` PCs."""

    style_dim: int = 512
    n_latent: int = 14
    num_directions: int = 1
    inject: int = 5
    num_heads: int = 1


@dataclass(frozen=True)
class ClassifierConfig(_Base):
    """Cluster classifier (the original's ResnetClassifier): routes a real image to a cluster.

    It has the similarity transformer's trunk (so it can start from its weights) and predicts
    ``num_clusters * (2 if flips else 1)`` logits: with flips, class ``k + num_clusters`` means
    "cluster k, mirrored".
    """

    size: int = 128
    input_size: int = 128
    channel_multiplier: float = 0.5
    max_channels: int = 512
    num_clusters: int = 1
    flips: bool = False
    image_channels: int = 3

    @property
    def num_outputs(self) -> int:
        return self.num_clusters * (2 if self.flips else 1)


CONFIGS = {
    "generator": GeneratorConfig,
    "discriminator": DiscriminatorConfig,
    "stn": STNConfig,
    "target": TargetConfig,
    "classifier": ClassifierConfig,
}
