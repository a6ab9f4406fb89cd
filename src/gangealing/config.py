"""Architecture configs: plain dataclasses that are saved inside every checkpoint.

Each config holds only primitives (ints, floats, strings, tuples of them, or other configs) so
that ``dataclasses.asdict(cfg)`` can be stored in a checkpoint that loads with
``torch.load(..., weights_only=True)``, and ``Config.from_dict(d)`` rebuilds it. The training
configs (:mod:`gangealing.train.presets`, :mod:`gangealing.train.gan`) share the same base; their
fields carry the help text of the CLI flags made from them (:func:`setting`).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple, Type, TypeVar

T = TypeVar("T", bound="ConfigBase")


def setting(default: Any = dataclasses.MISSING, doc: str = "", **field_kwargs: Any) -> Any:
    """A dataclass field whose ``metadata['help']`` is ``doc`` (the help of the CLI flag made from it)."""
    return dataclasses.field(default=default, metadata={"help": doc}, **field_kwargs)


def help_of(f: dataclasses.Field) -> str:
    """A field's help text, else its name in words."""
    return f.metadata.get("help") or f.name.replace("_", " ")


class ConfigBase:
    """``to_dict`` / ``from_dict`` for the config dataclasses (nested configs become nested dicts)."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def upgrade(cls, d: Dict[str, Any]) -> Dict[str, Any]:
        """Rewrite an older layout of the stored dict into the current one (none by default)."""
        return d

    @classmethod
    def from_dict(cls: Type[T], d: Mapping[str, Any]) -> T:
        d = cls.upgrade(dict(d))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known fields are {sorted(names)}")
        types = typing.get_type_hints(cls)
        kwargs = {}
        for k, v in d.items():
            if isinstance(types[k], type) and issubclass(types[k], ConfigBase) and isinstance(v, Mapping):
                v = types[k].from_dict(v)
            # JSON and torch.save turn tuples into lists; restore them so configs compare equal.
            kwargs[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kwargs)


@dataclass(frozen=True)
class GeneratorConfig(ConfigBase):
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
class DiscriminatorConfig(ConfigBase):
    """StyleGAN2 residual discriminator (rosinality layout)."""

    size: int = 256
    channel_multiplier: float = 2
    max_channels: int = 512
    blur_kernel: Tuple[int, ...] = (1, 3, 3, 1)
    stddev_group: int = 4
    image_channels: int = 3


@dataclass(frozen=True)
class STNConfig(ConfigBase):
    """Spatial transformer (GANgealing layout): similarity, flow, or both composed.

    ``input_size`` is the resolution the network is fed (the original's ``supersize`` /
    ``real_size``); it is tent-downsampled to ``flow_size`` before regression. Widths follow
    the original table ``{4..32: 512, 64: 256*cm, 128: 128*cm, ...}`` capped at ``max_channels``.
    """

    transforms: Tuple[str, ...] = setting(("similarity", "flow"),
                                          "transformer warps: similarity, flow, or similarity flow")
    flow_size: int = setting(128, "resolution the transformer regresses and warps at")
    input_size: int = setting(256, "resolution of the real images it is fed at test time (the original's --real_size)")
    channel_multiplier: float = setting(0.5, "transformer width multiplier")
    max_channels: int = setting(512, "cap on the transformer's widths")
    num_heads: int = setting(1, "number of clusters K (K targets, K transformer heads); 1 = unimodal GANgealing")
    image_channels: int = setting(3, "channels of the images")
    flow_downsample: int = setting(8, "the flow is regressed at flow_size / flow_downsample and convex-upsampled "
                                      "(a power of two, 2-16; the original: 8)")


@dataclass(frozen=True)
class TargetConfig(ConfigBase):
    """Congealing target: ``c = mean(W) + sum_i alpha_i d_i`` over the top ``num_directions`` PCs."""

    style_dim: int = setting(512, "width of W (the generator's)")
    n_latent: int = setting(14, "rows of W+ (the generator's)")
    num_directions: int = setting(1, "PCA directions of W spanning the target's search space (the original's --ndirs)")
    inject: int = setting(5, "W+ rows taken from the target c (the rest keep the sample's own w)")
    num_heads: int = setting(1, "number of targets, one per cluster")


@dataclass(frozen=True)
class ClassifierConfig(ConfigBase):
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
