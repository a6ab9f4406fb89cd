"""GANgealing training configurations: one dataclass, and presets keyed by the paper's dataset names.

The paper's presets reproduce the original's ``scripts/training/*.sh`` (8 GPUs x batch 5 = 40,
1.5M steps, psi annealed over 150k steps, learning-rate cycles of 37.5k steps doubling, LPIPS).
On fewer devices the total batch stays 40 through gradient accumulation: ``batch`` is the total
per optimisation step, ``micro_batch`` what one process renders per forward pass.

The ``tiny*`` presets are for 28-32 px generators on a CPU (``gangealing train-gan`` tiny
presets): a 32 px transformer, MobileNetV2 perceptual loss, a few hundred steps of 40 samples
(about 20 minutes on 2 cores).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from gangealing.config import ConfigBase, STNConfig, TargetConfig, setting
from gangealing.geometry.warp import PADDING_MODES

__all__ = ["GANgealingTrainConfig", "ClassifierTrainConfig", "MODEL_SETTINGS", "PRESETS", "get_preset", "preset_names"]

# The model settings a training run chooses, by their flat names (the CLI flags, and the keys of the
# flat ``config.json`` of older runs) -> the nested fields they set. The rest of the model configs
# follows the generator (:meth:`GANgealingTrainConfig.for_generator`).
MODEL_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "transforms": ("stn.transforms",),
    "num_heads": ("stn.num_heads", "target.num_heads"),
    "num_directions": ("target.num_directions",),
    "inject": ("target.inject",),
    "flow_size": ("stn.flow_size",),
    "input_size": ("stn.input_size",),
    "stn_channel_multiplier": ("stn.channel_multiplier",),
    "stn_max_channels": ("stn.max_channels",),
    "flow_downsample": ("stn.flow_downsample",),
}


def _pop_model_settings(d: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Remove the flat model settings from ``d``; return them as ``{section: {field: value}}``."""
    nested: Dict[str, Dict[str, Any]] = {}
    for name in [k for k in d if k in MODEL_SETTINGS]:
        value = d.pop(name)
        for path in MODEL_SETTINGS[name]:
            section, field = path.split(".")
            nested.setdefault(section, {})[field] = value
    return nested


@dataclass(frozen=True)
class GANgealingTrainConfig(ConfigBase):
    """Every hyperparameter of a GANgealing run (saved as ``config.json`` and in checkpoints).

    The models are their own configs, ``stn`` and ``target``; the training code, the CLI and
    :meth:`replace` also name their settings flat (:data:`MODEL_SETTINGS`: ``cfg.flow_size`` is
    ``cfg.stn.flow_size``, ``replace(num_heads=4)`` sets both heads), and :meth:`from_dict` reads
    the flat layout of older runs and checkpoints.
    """

    # -- models (the target's style_dim and n_latent are the generator's: see for_generator)
    stn: STNConfig = setting(doc="the spatial transformer", default_factory=STNConfig)
    target: TargetConfig = setting(doc="the congealing target", default_factory=TargetConfig)
    # -- objective
    flips: bool = setting(False, "let the mirrored sample compete in the min over clusters (clustering variant)")
    loss: str = setting("lpips-vgg", "perceptual loss: lpips-vgg, vgg-ssl, mobilenet (offline), l1, l2, l1-ms, l2-ms (3-level pyramids)")
    tv_weight: float = setting(1000.0, "weight of the Huber total-variation loss on the residual flow")
    identity_weight: float = setting(1.0, "weight of the L2 identity loss on the residual flow")
    freeze_target: bool = setting(False, "keep the target c at its initialisation")
    sample_from_full_res: bool = setting(False, "sample pixels from the full-resolution generator output")
    padding_mode: str = setting("reflection", "grid-sample padding: " + ", ".join(PADDING_MODES))
    # Random similarity applied to each generated input (not to its target): angle uniform in
    # +-max_angle, content scale uniform in [min_scale, max_scale], shifts uniform in +-max_shift of
    # the image side. () = off, the paper's setting. An extension: it teaches the transformer to undo
    # poses that the generator's data never shows (e.g. rotated digits from a GAN of centred MNIST).
    input_jitter: Tuple[float, ...] = setting((), "random similarity on each generated input, not its target "
                                              "(extension, off by default): MAX_ANGLE_DEG MIN_SCALE MAX_SCALE "
                                              "MAX_SHIFT, e.g. 45 0.5 0.9 0.15")
    # -- optimisation
    iters: int = setting(1_500_000, "optimisation steps")
    batch: int = setting(40, "total samples per step over all processes and accumulation passes (paper: 40)")
    micro_batch: int = setting(5, "samples per process per forward pass (batch / (micro_batch x processes) passes "
                               "per step)")
    stn_lr: float = setting(1e-3, "transformer learning rate (Adam)")
    target_lr: float = setting(1e-2, "target-coefficient learning rate (Adam)")
    anneal_psi: int = setting(150_000, "steps over which psi anneals from 1 to 0")
    anneal_fn: str = setting("cosine", "psi schedule: cosine or linear")
    period: float = setting(37_500, "first learning-rate cycle after annealing, in steps")
    t_mult: int = setting(2, "cycle-length multiplier of the learning-rate restarts")
    decay: float = setting(0.9, "peak decay per learning-rate restart")
    ema_decay: float = setting(0.5 ** (32 / (10 * 1000)),
                               "per-step decay of the transformer's EMA (the test-time transformer)")
    # -- initialisation
    pca_samples: int = setting(1_000_000, "W samples for the PCA of W")
    kmeans_candidates: int = setting(50_000, "candidate latents for the k-means++ initialisation of K targets")
    kmeans_lloyd: int = setting(0, "Lloyd iterations moving the K k-means++ seeds to cluster medoids (0: the "
                                   "original's seeds; needs a loss with a Euclidean embedding: mobilenet, "
                                   "lpips-vgg, vgg-ssl, l2)")
    # -- clustering: re-seeding heads the others could replace (an extension; off: the original).
    # k-means-style re-seeding of empty or redundant clusters (as DTI-clustering reassigns its empty
    # prototypes): a head whose target duplicates another's wins few samples that the other would not
    # serve as well; it restarts at the medoid of the samples the heads serve worst, with the
    # transformer of the head that serves that sample.
    reseed_every: int = setting(0, "with K > 1 heads: every this many steps once psi has annealed, re-seed each head "
                                   "whose removal cost is below reseed_below x the heads' mean (extension; 0: off)")
    reseed_below: float = setting(0.25, "a head is re-seeded when the other heads would serve its samples almost as "
                                        "well: its removal cost below this fraction of the heads' mean")
    reseed_samples: int = setting(1000, "fresh samples that measure the heads' removal costs and place a re-seeded target")
    # -- logging and visuals
    log_every: int = setting(25, "steps between metric lines")
    vis_every: int = setting(5000, "steps between visuals")
    ckpt_every: int = setting(50_000, "steps between numbered checkpoints")
    n_sample: int = setting(64, "images per visual (generated and real)")
    n_mean: int = setting(8000, "real images averaged in the congealed-average visual")
    seed: int = setting(0, "random seed")

    def __getattr__(self, name: str) -> Any:
        # Only for names that are not fields: the flat names of the model settings.
        if name in MODEL_SETTINGS:
            section, field = MODEL_SETTINGS[name][0].split(".")
            return getattr(getattr(self, section), field)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def flat_fields(cls) -> Dict[str, dataclasses.Field]:
        """The field behind each flat name (its type and help): the model settings, then the training's own."""
        sections = {"stn": STNConfig, "target": TargetConfig}
        out = {}
        for name, paths in MODEL_SETTINGS.items():
            section, field = paths[0].split(".")
            out[name] = next(f for f in dataclasses.fields(sections[section]) if f.name == field)
        out.update((f.name, f) for f in dataclasses.fields(cls) if f.name not in sections)
        return out

    def flat(self) -> Dict[str, Any]:
        """Every setting by its flat name (the CLI's flags; the layout of older runs' ``config.json``)."""
        return {name: getattr(self, name) for name in self.flat_fields()}

    def replace(self, **changes: Any) -> "GANgealingTrainConfig":
        """A copy with ``changes``, by field or flat name (unknown names raise TypeError)."""
        for section, values in _pop_model_settings(changes).items():
            changes[section] = dataclasses.replace(changes.get(section, getattr(self, section)), **values)
        return dataclasses.replace(self, **changes)

    def for_generator(self, generator: Any) -> "GANgealingTrainConfig":
        """This config with the target's ``style_dim`` and ``n_latent`` taken from ``generator``."""
        return dataclasses.replace(self, target=dataclasses.replace(
            self.target, style_dim=generator.style_dim, n_latent=generator.n_latent))

    @classmethod
    def upgrade(cls, d: Dict[str, Any]) -> Dict[str, Any]:
        """The flat layout of older runs (``flow_size``, ``stn_channel_multiplier``, ...) -> nested."""
        for section, values in _pop_model_settings(d).items():
            d[section] = {**d.get(section, {}), **values}
        return d

    def accumulation(self, world_size: int = 1) -> int:
        """Forward passes per process per step: ``batch / (micro_batch * world_size)`` (must divide)."""
        per = self.micro_batch * world_size
        if self.batch % per:
            raise ValueError(f"total batch {self.batch} is not a multiple of micro_batch {self.micro_batch} x "
                             f"{world_size} processes; choose --micro-batch so that it divides")
        return self.batch // per

    def validate(self) -> "GANgealingTrainConfig":
        """Raise ValueError on inconsistent settings; return self."""
        transforms = tuple(self.stn.transforms)
        if transforms not in {("similarity",), ("flow",), ("similarity", "flow")}:
            raise ValueError(f"transforms must be similarity, flow or similarity flow, got {transforms}")
        if "flow" not in transforms and self.tv_weight:
            raise ValueError("a similarity-only transformer has no flow: set tv_weight 0 (as the original requires)")
        if self.stn.num_heads != self.target.num_heads:
            raise ValueError(f"the transformer has {self.stn.num_heads} heads and the target {self.target.num_heads}: "
                             "set both with num_heads")
        _check_positive(self, ("iters", "batch", "micro_batch", "num_heads", "num_directions", "flow_size",
                               "input_size", "period", "pca_samples", "log_every", "vis_every", "ckpt_every"))
        if self.stn.input_size % self.stn.flow_size:
            raise ValueError(f"input_size {self.stn.input_size} must be a multiple of flow_size {self.stn.flow_size}")
        if self.anneal_fn not in ("cosine", "linear"):
            raise ValueError(f"anneal_fn must be cosine or linear, got {self.anneal_fn!r}")
        if self.input_jitter:
            if len(self.input_jitter) != 4:
                raise ValueError("input_jitter takes 4 numbers: max_angle_deg min_scale max_scale max_shift "
                                 f"(e.g. 45 0.5 0.9 0.15), got {self.input_jitter}")
            _, lo, hi, shift = self.input_jitter
            if not 0 < lo <= hi or shift < 0:
                raise ValueError(f"input_jitter needs 0 < min_scale <= max_scale and max_shift >= 0, got {self.input_jitter}")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {self.padding_mode!r}")
        if self.reseed_every < 0 or not 0 < self.reseed_below <= 1 or self.reseed_samples < 1:
            raise ValueError(f"reseed_every must be >= 0 (0: off), reseed_below in (0, 1] and reseed_samples >= 1, got "
                             f"{self.reseed_every}, {self.reseed_below}, {self.reseed_samples}")
        if self.reseed_every and self.stn.num_heads < 2:
            raise ValueError("reseed_every re-seeds the heads of a clustering run: it needs --num-heads 2 or more "
                             "(or set it to 0)")
        return self


@dataclass(frozen=True)
class ClassifierTrainConfig(ConfigBase):
    """Cluster-classifier training (the original's ``train_cluster_classifier.py`` defaults)."""

    iters: int = setting(55_000, "optimisation steps")
    batch: int = setting(40, "total generated samples per step over processes and accumulation passes")
    micro_batch: int = setting(5, "samples per process per forward pass")
    lr: float = setting(1e-3, "Adam learning rate")
    period: float = setting(50_000, "first learning-rate cycle in steps (cosine restarts from step 0)")
    t_mult: int = setting(2, "cycle-length multiplier")
    decay: float = setting(0.9, "peak decay per restart")
    log_every: int = setting(25, "steps between metric lines")
    vis_every: int = setting(5000, "steps between visuals")
    ckpt_every: int = setting(50_000, "steps between numbered checkpoints")
    n_sample: int = setting(64, "generated images in the by-cluster visual")
    seed: int = setting(0, "random seed")

    def validate(self) -> "ClassifierTrainConfig":
        """Raise ValueError on impossible settings; return self."""
        _check_positive(self, ("iters", "batch", "micro_batch", "lr", "period", "t_mult", "log_every", "vis_every",
                               "ckpt_every", "n_sample"))
        return self


def _check_positive(cfg: Any, names: Tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value} (flag --{name.replace('_', '-')})")


# ------------------------------------------------------------------------------------------ presets
def _paper(**kw: Any) -> GANgealingTrainConfig:
    return GANgealingTrainConfig().replace(**kw)


def _tiny(**kw: Any) -> GANgealingTrainConfig:
    # l2: the loss study (docs/train.md) measured pixel L2 well above the MobileNetV2 features on
    # 32 px silhouettes (held-out cat mask transfer 0.676 vs 0.577, dog 0.516 vs 0.401).
    base = dict(loss="l2", flow_size=32, input_size=32, stn_channel_multiplier=0.5, stn_max_channels=64,
                iters=900, batch=40, micro_batch=20, anneal_psi=200, period=100, inject=4, num_directions=1,
                padding_mode="border", tv_weight=1000.0, pca_samples=100_000, kmeans_candidates=2000,
                log_every=10, vis_every=250, ckpt_every=250, n_sample=32, n_mean=1000,
                ema_decay=0.5 ** (1 / 75))  # EMA half-life of 75 steps (the paper's 312 suits 1.5M steps)
    base.update(kw)
    return GANgealingTrainConfig().replace(**base)


PRESETS: Dict[str, Callable[[], GANgealingTrainConfig]] = {
    # scripts/training/lsun_cats.sh (the paper's LSUN Cats, LPIPS, default TV weight)
    "lsun-cats": lambda: _paper(padding_mode="border", loss="lpips-vgg"),
    # lsun_cats_lpips.sh / lsun_cats_ssl.sh
    "lsun-cats-lpips": lambda: _paper(padding_mode="border", tv_weight=2500.0, loss="lpips-vgg"),
    "lsun-cats-ssl": lambda: _paper(padding_mode="border", tv_weight=1000.0, loss="vgg-ssl"),
    "lsun-dogs": lambda: _paper(padding_mode="border", tv_weight=2500.0, loss="lpips-vgg"),
    "lsun-bicycles": lambda: _paper(padding_mode="reflection", tv_weight=2500.0, loss="lpips-vgg"),
    "lsun-tvmonitors": lambda: _paper(padding_mode="reflection", tv_weight=2500.0, loss="lpips-vgg"),
    # Clustering: 4 clusters, flips, 5 directions, inject 6, pixels from the full-resolution output.
    "lsun-cars": lambda: _paper(padding_mode="reflection", tv_weight=2500.0, loss="lpips-vgg", num_heads=4,
                                flips=True, num_directions=5, inject=6, sample_from_full_res=True),
    # CelebA (128 px generator): 512 directions, inject 6.
    "celeba": lambda: _paper(padding_mode="border", tv_weight=2500.0, num_directions=512, inject=6,
                             loss="lpips-vgg", flow_size=128, input_size=256),
    # CPU presets for 28-32 px generators (gangealing train-gan tiny presets).
    "tiny": _tiny,
    # K heads cost K times a unimodal step (2K with flips): fewer, shorter cycles (ends 59, 89, 149, 269).
    "tiny-clusters": lambda: _tiny(num_heads=4, iters=300, anneal_psi=60, period=30, ema_decay=0.5 ** (1 / 30)),
    "tiny-clusters-flips": lambda: _tiny(num_heads=2, flips=True, iters=300, anneal_psi=60, period=30,
                                         ema_decay=0.5 ** (1 / 30)),
    "tiny-similarity": lambda: _tiny(transforms=("similarity",), tv_weight=0.0, identity_weight=0.0),
}

# The original's dataset names, for people coming from its scripts.
_ALIASES = {"cats": "lsun-cats", "cat": "lsun-cats", "dogs": "lsun-dogs", "dog": "lsun-dogs",
            "bicycles": "lsun-bicycles", "bicycle": "lsun-bicycles", "tvs": "lsun-tvmonitors",
            "tvmonitors": "lsun-tvmonitors", "tvmonitor": "lsun-tvmonitors", "cars": "lsun-cars", "car": "lsun-cars"}


def preset_names() -> Tuple[str, ...]:
    return tuple(PRESETS)


def get_preset(name: str, **overrides: Any) -> GANgealingTrainConfig:
    """The preset ``name`` (or an alias such as ``cats``) with ``overrides`` applied, validated."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[key]().replace(**overrides).validate()
