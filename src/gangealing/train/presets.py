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

__all__ = ["GANgealingTrainConfig", "ClassifierTrainConfig", "PRESETS", "get_preset", "preset_names"]


@dataclass(frozen=True)
class GANgealingTrainConfig:
    """Every hyperparameter of a GANgealing run (saved as ``config.json`` and in checkpoints)."""

    # -- objective
    transforms: Tuple[str, ...] = ("similarity", "flow")
    num_heads: int = 1  # K clusters (K targets and K transformer heads); 1 = unimodal
    flips: bool = False  # the mirrored input competes in the min (clustering variant)
    num_directions: int = 1  # PCA directions spanning the target's search space (the original's ndirs)
    inject: int = 5  # W+ rows taken from the target c
    loss: str = "lpips-vgg"  # perceptual loss (gangealing.losses.perceptual); 'mobilenet' works offline
    tv_weight: float = 1000.0
    identity_weight: float = 1.0
    freeze_target: bool = False  # keep c fixed at its initialisation
    sample_from_full_res: bool = False  # sample pixels from the full-resolution generator output
    padding_mode: str = "reflection"
    # Random similarity applied to each generated input (not to its target), as
    # (max_angle_deg, min_scale, max_scale, max_shift): angle uniform in +-max_angle, content scale
    # uniform in [min_scale, max_scale], shifts uniform in +-max_shift of the image side. () = off,
    # the paper's setting. An extension: it teaches the transformer to undo poses that the
    # generator's data never shows (e.g. rotated digits from a GAN of centred MNIST).
    input_jitter: Tuple[float, ...] = ()
    # -- transformer architecture
    flow_size: int = 128
    input_size: int = 256  # resolution of real images fed at test time (the original's real_size)
    stn_channel_multiplier: float = 0.5
    stn_max_channels: int = 512
    # -- optimisation
    iters: int = 1_500_000
    batch: int = 40  # total samples per optimisation step (all processes, all accumulation steps)
    micro_batch: int = 5  # samples per process per forward pass
    stn_lr: float = 1e-3
    target_lr: float = 1e-2
    anneal_psi: int = 150_000  # steps over which psi goes from 1 to 0
    anneal_fn: str = "cosine"
    period: float = 37_500  # first learning-rate cycle after annealing, in steps
    t_mult: int = 2
    decay: float = 0.9
    ema_decay: float = 0.5 ** (32 / (10 * 1000))  # the original's EMA of the transformer
    # -- initialisation
    pca_samples: int = 1_000_000  # W samples for the PCA of W
    kmeans_candidates: int = 50_000  # candidate latents for k-means++ (clustering only)
    # -- logging and visuals
    log_every: int = 25
    vis_every: int = 5000
    ckpt_every: int = 50_000
    n_sample: int = 64  # generated (and real) images per visual
    n_mean: int = 8000  # real images averaged for the congealed-average visual
    seed: int = 0

    def accumulation(self, world_size: int = 1) -> int:
        """Forward passes per process per step: ``batch / (micro_batch * world_size)`` (must divide)."""
        per = self.micro_batch * world_size
        if self.batch % per:
            raise ValueError(f"total batch {self.batch} is not a multiple of micro_batch {self.micro_batch} x "
                             f"{world_size} processes; choose --micro-batch so that it divides")
        return self.batch // per

    def validate(self) -> "GANgealingTrainConfig":
        """Raise ValueError on inconsistent settings; return self."""
        if tuple(self.transforms) not in {("similarity",), ("flow",), ("similarity", "flow")}:
            raise ValueError(f"transforms must be similarity, flow or similarity flow, got {self.transforms}")
        if "flow" not in self.transforms and self.tv_weight:
            raise ValueError("a similarity-only transformer has no flow: set tv_weight 0 (as the original requires)")
        _check_positive(self, ("iters", "batch", "micro_batch", "num_heads", "num_directions", "flow_size",
                               "input_size", "period", "pca_samples", "log_every", "vis_every", "ckpt_every"))
        if self.input_size % self.flow_size:
            raise ValueError(f"input_size {self.input_size} must be a multiple of flow_size {self.flow_size}")
        if self.anneal_fn not in ("cosine", "linear"):
            raise ValueError(f"anneal_fn must be cosine or linear, got {self.anneal_fn!r}")
        if self.input_jitter:
            if len(self.input_jitter) != 4:
                raise ValueError("input_jitter takes 4 numbers: max_angle_deg min_scale max_scale max_shift "
                                 f"(e.g. 45 0.5 0.9 0.15), got {self.input_jitter}")
            _, lo, hi, shift = self.input_jitter
            if not 0 < lo <= hi or shift < 0:
                raise ValueError(f"input_jitter needs 0 < min_scale <= max_scale and max_shift >= 0, got {self.input_jitter}")
        if self.padding_mode not in ("border", "zeros", "reflection"):
            raise ValueError(f"padding_mode must be border, zeros or reflection, got {self.padding_mode!r}")
        return self

    def replace(self, **changes: Any) -> "GANgealingTrainConfig":
        """A copy with ``changes`` (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "GANgealingTrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Cluster-classifier training (the original's ``train_cluster_classifier.py`` defaults)."""

    iters: int = 55_000
    batch: int = 40
    micro_batch: int = 5
    lr: float = 1e-3
    period: float = 50_000  # cosine restarts from step 0 (no annealing phase)
    t_mult: int = 2
    decay: float = 0.9
    log_every: int = 25
    vis_every: int = 5000
    ckpt_every: int = 50_000
    n_sample: int = 64
    seed: int = 0

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
    return GANgealingTrainConfig(**kw)


def _tiny(**kw: Any) -> GANgealingTrainConfig:
    base = dict(loss="mobilenet", flow_size=32, input_size=32, stn_channel_multiplier=0.5, stn_max_channels=64,
                iters=900, batch=40, micro_batch=20, anneal_psi=200, period=100, inject=4, num_directions=1,
                padding_mode="border", tv_weight=1000.0, pca_samples=100_000, kmeans_candidates=2000,
                log_every=10, vis_every=250, ckpt_every=250, n_sample=32, n_mean=1000,
                ema_decay=0.5 ** (1 / 75))  # EMA half-life of 75 steps (the paper's 312 suits 1.5M steps)
    base.update(kw)
    return GANgealingTrainConfig(**base)


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
