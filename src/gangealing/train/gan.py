"""Training the StyleGAN2 generator that GANgealing starts from, on the user's own images.

The objective is StyleGAN2's (Karras et al. 2020; rosinality's ``train.py`` layout):

* non-saturating logistic loss: ``D: softplus(D(G(z))) + softplus(-D(x))``, ``G: softplus(-D(G(z)))``;
* lazy R1 on real images every ``d_reg_every`` steps, weight ``r1 / 2 * d_reg_every``;
* optional lazy path-length regularisation every ``g_reg_every`` steps (``path_reg > 0``);
* style mixing with probability ``mixing`` (a per-sample crossover layer);
* an EMA generator with StyleGAN2-ADA's half-life ``ema_kimg`` (and ramp-up): the one saved for
  GANgealing;
* Adam with the lazy-regularisation correction of the learning rate and betas;
* differentiable augmentation (:mod:`gangealing.train.augment`) of everything the discriminator
  sees, on by default (``augment='auto'``) for datasets under ``AUTO_AUGMENT_MAX_IMAGES`` images.

Data parallel across processes (``torchrun``): every process draws its own batch and gradients
are averaged with one all-reduce per optimiser step (:func:`gangealing.train.runtime.all_reduce_grads`,
what DistributedDataParallel does, done explicitly because R1's double backward and the lazy
regularisers do not fit DDP's hooks). ``batch`` is per process. Mixed precision (bf16 autocast) is
used for the main losses on CUDA only; the regularisers run in float32.

Checkpoints are our format (kind ``generator``): ``config``/``state`` hold the EMA generator
(``generator``) and the discriminator; the resolved training config is ``meta['train_config']``;
an extra top-level ``training`` entry holds the non-EMA generator, the optimisers, the random
generators and the regulariser state so that training resumes exactly where it stopped.
``build_from_checkpoint(load_checkpoint(path), 'generator')`` gives the EMA generator.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..build import build, load_state_strict, make_checkpoint
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..config import ConfigBase, DiscriminatorConfig, GeneratorConfig, setting
from .augment import ADA_DEFAULT_POLICY, AdaptiveP, ada_augment, diff_augment, parse_ada_policy, parse_policy
from .runtime import (DistInfo, MetricsLogger, RunDir, StopOnSignal, all_reduce_dict, all_reduce_grads,
                      all_reduce_mean, any_process, broadcast_module, check_resume_settings, ema_update,
                      init_distributed, progress, seed_everything)

AUTO_AUGMENT_MAX_IMAGES = 30_000


@dataclass(frozen=True)
class GANTrainConfig(ConfigBase):
    """Everything a GAN training run depends on; saved as ``config.json`` and in every checkpoint."""

    data: str = setting("", "a folder of images, a zip of images, a glob, or an embedded dataset")
    preset: str = setting("tiny", "the preset the run started from")
    # data
    size: int = setting(32, "training resolution (power of two)")
    pad: str = setting("center", "crop/pad to square: center, border, zero, none")
    mirror: bool = setting(False, "random horizontal flips of real images (not for digits or text)")
    split: str = setting("train", "split of an embedded dataset")
    # generator / discriminator architecture
    style_dim: int = setting(128, "latent width")
    n_mlp: int = setting(4, "mapping-network layers")
    g_channel_multiplier: float = setting(1.0, "generator channel multiplier (above 32 px)")
    g_max_channels: int = setting(64, "generator width cap")
    d_channel_multiplier: float = setting(1.0, "discriminator channel multiplier")
    d_max_channels: int = setting(64, "discriminator width cap")
    # optimisation
    batch: int = setting(16, "images per step per process")
    iters: int = setting(5000, "total training steps")
    lr: float = setting(0.002, "Adam learning rate")
    beta1: float = setting(0.0, "Adam beta1")
    beta2: float = setting(0.99, "Adam beta2")
    r1: float = setting(0.05, "R1 weight gamma")
    d_reg_every: int = setting(16, "R1 every N steps")
    path_reg: float = setting(0.0, "path-length regularisation weight (0 = off)")
    g_reg_every: int = setting(4, "path-length reg every N steps")
    path_batch_shrink: int = setting(2, "batch divisor for the path-length pass")
    mixing: float = setting(0.9, "style-mixing probability")
    ema_kimg: float = setting(10.0, "EMA half-life in thousands of images")
    ema_rampup: float = setting(0.05, "EMA ramp-up (0 = off)")
    augment: str = setting("auto", "auto (diffaug below 30k images), diffaug, ada (adaptive, StyleGAN2-ADA) or none")
    augment_policy: str = setting("color,translation,cutout", "DiffAugment ops: color, translation, cutout")
    augment_p: float = setting(1.0, "probability of each op")
    # adaptive discriminator augmentation (augment='ada'); see gangealing.train.augment.AdaptiveP
    ada_target: float = setting(0.6, "ADA: target of E[sign D(real)] (overfitting heuristic)")
    ada_kimg: float = setting(100.0, "ADA: thousands of images for p to go from 0 to 1")
    ada_interval: int = setting(4, "ADA: adjust p every N steps")
    ada_policy: str = setting("auto", "ADA ops: auto (translation,scale,rotation,brightness,contrast, + xflip with "
                              "--mirror) or a comma list of xflip, translation, scale, rotation, brightness, contrast")
    ada_max_angle: float = setting(180.0, "ADA: largest rotation in degrees")
    # fine-tuning: start from a trained generator (e.g. an exported one) with a fresh discriminator
    init_generator: str = setting("", "start a new run's G and its EMA from this generator (a file or a zoo name; "
                                  "the same architecture) with a fresh D: for a new dataset; it does not resume "
                                  "a run (docs/train-gan.md)")
    d_warmup: int = setting(0, "steps that train D alone (G and its EMA frozen) before G moves: lets a fresh D "
                            "catch up with --init-generator before its gradients reach G")
    seed: int = setting(0, "random seed")
    amp: bool = setting(True, "bf16 mixed precision (GPU only)")
    # bookkeeping
    log_every: int = setting(50, "metrics every N steps")
    sample_every: int = setting(500, "sample grid every N steps")
    ckpt_every: int = setting(500, "checkpoint every N steps")
    keep: int = setting(3, "numbered checkpoints to keep (0 = all)")
    n_sample: int = setting(64, "images in the sample grid")

    def validate(self) -> "GANTrainConfig":
        """Raise ValueError naming the first setting out of range; return self."""
        positive = ("size", "style_dim", "n_mlp", "g_max_channels", "d_max_channels", "batch", "iters", "lr",
                    "log_every", "sample_every", "ckpt_every", "n_sample", "ada_kimg", "ada_interval",
                    "g_channel_multiplier", "d_channel_multiplier", "path_batch_shrink")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.size < 4 or self.size & (self.size - 1):
            raise ValueError(f"--size must be a power of two >= 4, got {self.size}")
        for name in ("r1", "path_reg", "ema_kimg", "ema_rampup", "keep", "d_reg_every", "g_reg_every", "d_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "mixing", "augment_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.augment not in ("auto", "diffaug", "ada", "none"):
            raise ValueError(f"--augment must be auto, diffaug, ada or none, got {self.augment!r}")
        if not 0 < self.ada_target < 1:
            raise ValueError(f"--ada-target must be in (0, 1), got {self.ada_target}")
        parse_policy(self.augment_policy)
        if self.ada_policy != "auto":
            parse_ada_policy(self.ada_policy)
        return self

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                               channel_multiplier=self.g_channel_multiplier, max_channels=self.g_max_channels)

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(size=self.size, channel_multiplier=self.d_channel_multiplier,
                                   max_channels=self.d_max_channels)


# Presets are data: overrides of the dataclass defaults, keyed by name.
PRESETS: Dict[str, Dict[str, Any]] = {
    # 32 px, 64-channel G and D: about 0.3-0.5 s per step at batch 16 on 2 CPU cores. R1 gamma 1 (was
    # 0.05): with the weak penalty the synthesis network learns to ignore w and the samples hop between
    # a few shapes; gamma 1 keeps all ten digits (docs/train-gan.md, "The CPU recipe study").
    "tiny": dict(size=32, style_dim=128, n_mlp=4, g_channel_multiplier=1.0, g_max_channels=64,
                 d_channel_multiplier=1.0, d_max_channels=64, batch=16, iters=5000, r1=1.0,
                 path_reg=0.0, ema_kimg=10.0, ema_rampup=0.05, sample_every=250, ckpt_every=250, log_every=25),
    # The tiny architecture trained on one GPU: batch 64 at lr 0.0025, no autocast (tiny layers gain
    # nothing from bf16). gan-cat / gan-dog / gan-horse: this preset, --mirror, 8 minutes on an H200.
    # Its R1 gamma stays 0.05 until a GPU run measures gamma 1 at batch 64.
    "tiny-gpu": dict(size=32, style_dim=128, n_mlp=4, g_channel_multiplier=1.0, g_max_channels=64,
                     d_channel_multiplier=1.0, d_max_channels=64, batch=64, lr=0.0025, iters=5000, r1=0.05,
                     path_reg=0.0, ema_kimg=10.0, ema_rampup=0.05, amp=False, sample_every=250, ckpt_every=250,
                     log_every=25),
    # 64 px, widths up to 128 (CPU: several s per step; a GPU is the intended place).
    "small": dict(size=64, style_dim=256, n_mlp=4, g_channel_multiplier=0.5, g_max_channels=128,
                  d_channel_multiplier=0.5, d_max_channels=128, batch=16, iters=50_000, r1=0.2,
                  path_reg=0.0, ema_kimg=10.0, ema_rampup=0.05, sample_every=1000, ckpt_every=1000, log_every=100),
    # The paper's generators: 256 px StyleGAN2 config-f (rosinality defaults), batch 32 in total.
    "paper": dict(size=256, style_dim=512, n_mlp=8, g_channel_multiplier=2.0, g_max_channels=512,
                  d_channel_multiplier=2.0, d_max_channels=512, batch=4, iters=800_000, r1=10.0,
                  path_reg=2.0, ema_kimg=10.0, ema_rampup=0.0, sample_every=5000, ckpt_every=10_000, log_every=100),
}
# Options that may change when a run resumes (they do not change what is being learned).
RESUMABLE = ("iters", "log_every", "sample_every", "ckpt_every", "keep", "n_sample", "amp")


def resolve_config(preset: str = "tiny", **overrides: Any) -> GANTrainConfig:
    """The preset's config with ``overrides`` (None values ignored) applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[preset], preset=preset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return GANTrainConfig.from_dict(values)


@dataclass(frozen=True)
class TrainResult:
    """Where a training run ended."""

    step: int
    run_dir: Path
    checkpoint: Optional[Path]
    metrics: Dict[str, float]
    seconds: float
    stopped_by: Optional[str] = None  # 'SIGINT' / 'SIGTERM' when a signal stopped the run (with a checkpoint)


# ------------------------------------------------------------------------------------ pieces
def d_logistic_loss(real_pred: Tensor, fake_pred: Tensor) -> Tensor:
    """Non-saturating discriminator loss ``softplus(-D(x)) + softplus(D(G(z)))`` (mean over the batch)."""
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: Tensor) -> Tensor:
    """Non-saturating generator loss ``softplus(-D(G(z)))``."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: Tensor, real: Tensor) -> Tensor:
    """``E ||grad_x D(x)||^2`` over real images (the graph is kept for the backward pass)."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def path_length_penalty(fake: Tensor, w_plus: Tensor, mean_path: Tensor, decay: float = 0.01,
                        generator: Optional[torch.Generator] = None):
    """StyleGAN2's path-length penalty; returns (penalty, new mean path length, path lengths)."""
    dev = generator.device if generator is not None else fake.device
    noise = torch.randn(fake.shape, generator=generator, device=dev).to(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
    (grad,) = torch.autograd.grad((fake * noise).sum(), w_plus, create_graph=True)  # (N, L, D)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()  # (N,)
    new_mean = mean_path + decay * (lengths.detach().mean() - mean_path)
    return (lengths - new_mean).pow(2).mean(), new_mean, lengths


def sample_w_plus(G: nn.Module, n: int, mixing: float, g: torch.Generator) -> Tensor:
    """W+ (N, n_latent, D) of fresh z, style-mixed with probability ``mixing`` at a random layer per sample."""
    dev = g.device
    z = torch.randn(2, n, G.style_dim, generator=g, device=dev)
    w = G.mapping(z.flatten(0, 1)).view(2, n, -1)  # (2, N, D)
    if mixing <= 0:
        return G.broadcast(w[0])
    mix = torch.rand(n, generator=g, device=dev) < mixing
    cut = torch.randint(1, G.n_latent, (n,), generator=g, device=dev)
    inject = torch.where(mix, cut, torch.full_like(cut, G.n_latent))  # (N,): rows [:inject] from w[0]
    return G.mix(w[0], w[1], inject)  # (N, L, D)


def ema_beta(cfg: GANTrainConfig, images_seen: int, batch_total: int) -> float:
    """StyleGAN2-ADA's EMA decay per step: half-life ``ema_kimg`` thousand images, ramped up early."""
    ema_nimg = cfg.ema_kimg * 1000
    if cfg.ema_rampup > 0:
        ema_nimg = min(ema_nimg, images_seen * cfg.ema_rampup)
    return 0.5 ** (batch_total / max(ema_nimg, 1e-8))


def _lazy_adam(params, lr: float, betas, reg_every: int) -> torch.optim.Adam:
    ratio = reg_every / (reg_every + 1) if reg_every > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio))


def _gen_state(g: torch.Generator) -> Tensor:
    return g.get_state().cpu()


# ------------------------------------------------------------------------------------ the run
class GANTrainer:
    """One StyleGAN2 training run in a run folder (see the module docstring)."""

    def __init__(self, cfg: GANTrainConfig, out: Union[str, Path], dist_info: Optional[DistInfo] = None,
                 device: Union[str, torch.device, None] = None, cache_dir: Optional[Union[str, Path]] = None,
                 show_progress: bool = True, tensorboard: bool = True):
        cfg.validate()  # before anything is written
        self.di = dist_info or init_distributed(device)
        self.device = self.di.device
        self.show_progress = show_progress and self.di.is_primary
        self.tensorboard = tensorboard
        self.run = RunDir(out, keep=cfg.keep, is_primary=self.di.is_primary).acquire()  # one training per folder
        try:
            self._setup(cfg, cache_dir)
        except BaseException:
            self.run.release()
            raise

    def _setup(self, cfg: GANTrainConfig, cache_dir: Optional[Union[str, Path]]) -> None:
        from ..data import prepare_dataset

        resume_path = self.run.latest_checkpoint()
        resume = None
        if resume_path is not None:
            resume = torch.load(resume_path, map_location="cpu", weights_only=True)
            saved = GANTrainConfig.from_dict(dict(resume["meta"]["train_config"]))
            check_resume_settings(saved, cfg, RESUMABLE, where=str(self.run.path))
        self.cfg = cfg.validate()

        # Data: prepared once (primary first, so other processes read the cache).
        if not self.di.is_primary:
            from .runtime import barrier
            barrier()
        self.data = prepare_dataset(cfg.data, cfg.size, cfg.pad, cache_dir, split=cfg.split,
                                    progress=self.show_progress)
        if self.di.is_primary:
            from .runtime import barrier
            barrier()
        if self.data.channels != 3:
            raise ValueError("GAN training needs RGB data (prepare it with image_mode='RGB')")
        # Small sets live on the device as uint8; big ones are read from the memory map per batch.
        nbytes = self.data.images.size
        self.images = self.data.uint8().to(self.device) if nbytes < 2**31 else None
        self.augment = cfg.augment if cfg.augment != "auto" else (
            "diffaug" if len(self.data) < AUTO_AUGMENT_MAX_IMAGES else "none")
        if self.augment not in ("diffaug", "ada", "none"):
            raise ValueError(f"augment must be 'auto', 'diffaug', 'ada' or 'none', got {cfg.augment!r}")
        self.policy = parse_policy(cfg.augment_policy)
        self.ada_policy = ada_policy(cfg)
        self.ada = AdaptiveP(cfg.ada_target, cfg.ada_kimg, cfg.ada_interval)
        if len(self.data) < cfg.batch:
            raise ValueError(f"{cfg.data}: {len(self.data)} images, fewer than one batch of {cfg.batch}; "
                             "add images or lower --batch")
        init_state = (self._read_init_generator(cfg.init_generator)
                      if resume is None and cfg.init_generator else None)
        self.run.save_config(cfg)  # only once the settings and the data have passed their checks

        # Models and optimisers.
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        self.G = build("generator", cfg.generator_config()).to(self.device).train()
        self.D = build("discriminator", cfg.discriminator_config()).to(self.device).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.g_optim = _lazy_adam(self.G.parameters(), cfg.lr, (cfg.beta1, cfg.beta2),
                                  cfg.g_reg_every if cfg.path_reg > 0 else 0)
        self.d_optim = _lazy_adam(self.D.parameters(), cfg.lr, (cfg.beta1, cfg.beta2), cfg.d_reg_every)
        self.mean_path = torch.zeros((), device=self.device)
        self.step = 0
        gen_dev = self.device if self.device.type == "cuda" else "cpu"
        self.g_data = seed_everything(cfg.seed, self.di.rank)  # CPU: index draws
        self.g_noise = torch.Generator(device=gen_dev).manual_seed(cfg.seed * 1000 + self.di.rank + 1)
        self.sample_z = torch.randn(cfg.n_sample, cfg.style_dim, generator=torch.Generator().manual_seed(cfg.seed))
        if resume is not None:
            self._load_state(resume)
        elif init_state is not None:  # fine-tuning: optimisers, D, the step and the EMA ramp-up start fresh
            load_state_strict(self.G, init_state, f"--init-generator {cfg.init_generator}")
            self.G_ema.load_state_dict(self.G.state_dict())
        broadcast_module(self.G)
        broadcast_module(self.D)
        broadcast_module(self.G_ema)
        self.amp = cfg.amp and self.device.type == "cuda"

    # -------------------------------------------------------------------------------- state
    def _read_init_generator(self, source: str) -> Dict[str, Tensor]:
        """The weights of ``--init-generator`` (a generator file in any format ``gangealing.io``
        imports, a zoo or released name), checked against this run's generator architecture."""
        from ..pretrained import resolve_checkpoint as resolve_source

        ckpt = resolve_source(source)
        if "generator" not in ckpt.config:
            raise CheckpointError(f"--init-generator {source}: a {ckpt.kind} checkpoint without a generator")
        theirs = GeneratorConfig.from_dict(dict(ckpt.config["generator"]))
        ours = self.cfg.generator_config()
        if theirs != ours:
            diff = ", ".join(f"{f}: theirs {getattr(theirs, f)}, this run's {getattr(ours, f)}"
                             for f in ours.to_dict() if getattr(theirs, f) != getattr(ours, f))
            raise ValueError(f"--init-generator {source}: another generator architecture ({diff}); pass the "
                             "same --size/--style-dim/--n-mlp/--g-* flags (or the preset) it was trained with")
        return {k: v.to(self.device) for k, v in ckpt.state["generator"].items()}

    def _load_state(self, ckpt: Dict[str, Any]) -> None:
        tr = ckpt["training"]
        self.G.load_state_dict(tr["generator"])
        self.G_ema.load_state_dict(ckpt["state"]["generator"])
        self.D.load_state_dict(ckpt["state"]["discriminator"])
        self.g_optim.load_state_dict(tr["g_optim"])
        self.d_optim.load_state_dict(tr["d_optim"])
        self.mean_path = tr["mean_path"].to(self.device)
        if "ada" in tr:
            self.ada.load_state_dict(tr["ada"])
        self.step = int(ckpt["step"])
        if self.di.rank == 0:
            self.g_data.set_state(tr["rng_data"])
            self.g_noise.set_state(tr["rng_noise"].cpu())  # CPU ByteTensor, also for CUDA generators
        else:  # other processes: fresh streams that depend on the step, so a resume never repeats noise
            self.g_data.manual_seed(self.cfg.seed + self.di.rank + 7919 * self.step)
            self.g_noise.manual_seed(self.cfg.seed * 1000 + self.di.rank + 1 + 7919 * self.step)

    def checkpoint_dict(self) -> Dict[str, Any]:
        """The full checkpoint (our format + the ``training`` entry) as a dict."""
        meta = {"train_config": self.cfg.to_dict(), "images_seen": self.step * self.cfg.batch * self.di.world_size,
                "dataset": {"source": self.data.manifest.get("source"), "count": len(self.data),
                            "size": self.cfg.size, "pad": self.cfg.pad},
                "augment": self.augment, "producer": "gangealing train-gan"}
        ckpt = make_checkpoint("generator", {"generator": self.G_ema, "discriminator": self.D}, self.step, meta)
        d = ckpt.to_dict()
        d["training"] = {
            "generator": {k: v.detach().cpu() for k, v in self.G.state_dict().items()},
            "g_optim": self.g_optim.state_dict(),
            "d_optim": self.d_optim.state_dict(),
            "mean_path": self.mean_path.detach().cpu(),
            "rng_data": _gen_state(self.g_data),
            "rng_noise": _gen_state(self.g_noise),
            "ada": self.ada.state_dict(),
        }
        return d

    def save(self, numbered: bool = True) -> Optional[Path]:
        return self.run.save_checkpoint(self.checkpoint_dict(), self.step, numbered=numbered)

    # -------------------------------------------------------------------------------- steps
    def _real_batch(self) -> Tensor:
        idx = torch.randint(len(self.data), (self.cfg.batch,), generator=self.g_data)
        if self.images is not None:
            x = self.images[idx.to(self.device)]
        else:
            # Sorted indices read the memory map in file order; the batch order does not matter.
            x = torch.from_numpy(self.data.images[idx.sort().values.numpy()]).to(self.device)
        x = x.float().div_(127.5).sub_(1.0)  # (B, C, S, S)
        if self.cfg.mirror:
            flip = torch.rand(x.shape[0], generator=self.g_data).to(self.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return x

    def _aug(self, x: Tensor) -> Tensor:
        if self.augment == "none":
            return x
        if self.augment == "ada":
            return ada_augment(x, self.ada.p, self.ada_policy, self.g_noise, self.cfg.ada_max_angle)
        return diff_augment(x, self.policy, self.cfg.augment_p, self.g_noise)

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _fake(self, n: int, need_w: bool = False):
        w = sample_w_plus(self.G, n, self.cfg.mixing, self.g_noise)
        noise = [torch.randn(s, generator=self.g_noise, device=self.g_noise.device).to(self.device)
                 for s in self.G.noise_shapes(n)]
        img = self.G.synthesis(w, noise=noise)  # (N, 3, S, S)
        return (img, w) if need_w else img

    def train_step(self) -> Dict[str, Tensor]:
        """One iteration: D step (+ lazy R1), G step (+ lazy path length), EMA update."""
        cfg, G, D = self.cfg, self.G, self.D
        out: Dict[str, Tensor] = {}
        real = self._real_batch()

        # Discriminator.
        G.requires_grad_(False)
        D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self._fake(cfg.batch)
        with self._autocast():
            fake_pred = D(self._aug(fake.float()))  # (B, 1)
            real_pred = D(self._aug(real))  # (B, 1)
            d_loss = d_logistic_loss(real_pred.float(), fake_pred.float())
        self.d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        all_reduce_grads(D)
        self.d_optim.step()
        real_sign = real_pred.detach().float().sign().mean()
        out.update(loss_d=d_loss.detach(), real_score=real_pred.detach().float().mean(),
                   fake_score=fake_pred.detach().float().mean(), real_sign=real_sign)
        if self.augment == "ada":  # p follows E[sign D(real)] over all processes
            n_real = cfg.batch * self.di.world_size
            self.ada.update(float(all_reduce_mean(real_sign)) * n_real, n_real)
            out["ada_p"] = torch.tensor(self.ada.p)

        if cfg.r1 > 0 and cfg.d_reg_every > 0 and self.step % cfg.d_reg_every == 0:
            if self.augment == "ada":
                # ADA's resampling has no double backward (grid_sample's backward is not
                # differentiable): penalise the gradient at the augmented reals D actually sees.
                real_r = self._aug(real.detach()).detach().requires_grad_(True)
                pred = D(real_r)
            else:
                real_r = real.detach().requires_grad_(True)
                pred = D(self._aug(real_r))
            r1 = r1_penalty(pred, real_r)
            self.d_optim.zero_grad(set_to_none=True)
            (cfg.r1 / 2 * r1 * cfg.d_reg_every + 0 * pred[0, 0]).backward()
            all_reduce_grads(D)
            self.d_optim.step()
            out["r1"] = r1.detach()

        if self.step < cfg.d_warmup:  # D alone: G and its EMA stay as they are
            self.step += 1
            return out

        # Generator.
        G.requires_grad_(True)
        D.requires_grad_(False)
        with self._autocast():
            fake = self._fake(cfg.batch)
            g_loss = g_nonsaturating_loss(D(self._aug(fake.float())).float())
        self.g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        all_reduce_grads(G)
        self.g_optim.step()
        out["loss_g"] = g_loss.detach()

        if cfg.path_reg > 0 and cfg.g_reg_every > 0 and self.step % cfg.g_reg_every == 0:
            n = max(1, cfg.batch // cfg.path_batch_shrink)
            fake, w = self._fake(n, need_w=True)
            penalty, self.mean_path, lengths = path_length_penalty(fake, w, self.mean_path, generator=self.g_noise)
            self.g_optim.zero_grad(set_to_none=True)
            (cfg.path_reg * cfg.g_reg_every * penalty + 0 * fake[0, 0, 0, 0]).backward()
            all_reduce_grads(G)
            self.g_optim.step()
            out.update(path=penalty.detach(), path_length=lengths.detach().mean())
        D.requires_grad_(True)

        batch_total = cfg.batch * self.di.world_size
        ema_update(self.G_ema, G, ema_beta(cfg, (self.step + 1) * batch_total, batch_total))
        self.step += 1
        return out

    @torch.no_grad()
    def samples(self) -> Tensor:
        """EMA-generator images (n_sample, 3, S, S) of the fixed latents, constant noise."""
        z = self.sample_z.to(self.device)
        return torch.cat([self.G_ema(z=z[i:i + 64], noise="const") for i in range(0, len(z), 64)]).clamp(-1, 1)

    def save_samples(self) -> Optional[Path]:
        if not self.di.is_primary:
            return None
        from ..vis import save_grid

        return save_grid(self.samples().cpu(), self.run.file("samples", f"{self.step:07d}.png"),
                         nrow=int(math.ceil(math.sqrt(self.cfg.n_sample))))

    def fit(self, max_steps: Optional[int] = None, max_seconds: Optional[float] = None) -> TrainResult:
        """Run until ``cfg.iters`` (or ``max_steps`` more steps, or ``max_seconds``, or SIGINT / SIGTERM),
        checkpointing, logging and sampling on the way; an early stop saves a checkpoint first. The run
        folder is released when it returns."""
        with self.run.acquire(), StopOnSignal(announce=self.di.is_primary) as signals:
            return self._fit(signals, max_steps, max_seconds)

    train = fit  # the name before the three trainers shared one

    def _fit(self, signals: StopOnSignal, max_steps: Optional[int], max_seconds: Optional[float]) -> TrainResult:
        cfg = self.cfg
        t0 = time.time()
        stop = cfg.iters if max_steps is None else min(cfg.iters, self.step + max_steps)
        last_ckpt = self.run.latest_checkpoint()
        stopped_by = None
        metrics = MetricsLogger(self.run.path / "metrics.jsonl", enabled=self.di.is_primary,
                                tensorboard=self.di.is_primary and self.tensorboard, resume_step=self.step)
        if self.step == 0 and self.di.is_primary:
            self.save_samples()
        bar = progress(cfg.iters, self.step, desc="train-gan", enabled=self.show_progress)
        acc: Dict[str, float] = {}
        counts: Dict[str, int] = {}  # r1 / path appear only on regularisation steps
        n_acc, t_log = 0, time.time()
        last: Dict[str, float] = {}
        try:
            while self.step < stop:
                out = self.train_step()
                for k, v in out.items():
                    if not torch.isfinite(v):
                        raise ValueError(f"training diverged: {k} became {v.item()} at step {self.step} (the last "
                                         "checkpoint is kept); start a new --out with a lower --lr or a higher --r1")
                    acc[k] = acc.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
                n_acc += 1
                bar.update(1)
                done = self.step >= cfg.iters
                if self.step % cfg.log_every == 0 or done:
                    vals = all_reduce_dict({k: v / counts[k] for k, v in acc.items()}, self.device)
                    dt = (time.time() - t_log) / n_acc
                    vals.update(sec_per_iter=dt, images_per_sec=cfg.batch * self.di.world_size / max(dt, 1e-9),
                                kimg=self.step * cfg.batch * self.di.world_size / 1000)
                    metrics.log(self.step, **vals)
                    bar.set_postfix(d=f"{vals['loss_d']:.3f}", g=f"{vals.get('loss_g', float('nan')):.3f}", refresh=False)
                    last, acc, counts, n_acc, t_log = vals, {}, {}, 0, time.time()
                if self.step % cfg.sample_every == 0 or done:
                    path = self.save_samples()
                    if path is not None:
                        from ..data.images import read_image

                        metrics.log_image(self.step, "samples", read_image(path))
                if self.step % cfg.ckpt_every == 0 or done or self.step == stop:
                    last_ckpt = self.save()
                # Every process must agree to stop (a collective), or the others would wait forever.
                out_of_time = max_seconds is not None and time.time() - t0 > max_seconds
                if not done and any_process(signals.requested or out_of_time):
                    last_ckpt = self.save()
                    stopped_by = signals.signal_name if signals.requested else None
                    break
        finally:
            bar.close()
            metrics.close()
        return TrainResult(self.step, self.run.path, last_ckpt, last, time.time() - t0, stopped_by)


def ada_policy(cfg: GANTrainConfig) -> tuple:
    """The ADA ops of a config: its ``ada_policy``, or for 'auto' the default ops plus x-flip when ``mirror``."""
    if cfg.ada_policy == "auto":
        return (("xflip",) if cfg.mirror else ()) + ADA_DEFAULT_POLICY
    return parse_ada_policy(cfg.ada_policy)


def train_gan(cfg: GANTrainConfig, out: Union[str, Path], device: Union[str, torch.device, None] = None,
              cache_dir: Optional[Union[str, Path]] = None, show_progress: bool = True,
              max_steps: Optional[int] = None, max_seconds: Optional[float] = None) -> TrainResult:
    """Train (or resume, if ``out`` holds a checkpoint) a StyleGAN2 generator; see the module docstring."""
    return GANTrainer(cfg, out, device=device, cache_dir=cache_dir,
                      show_progress=show_progress).fit(max_steps=max_steps, max_seconds=max_seconds)


def saved_train_config(run_or_ckpt: Union[str, Path]) -> Optional[GANTrainConfig]:
    """The training config of a run folder (its latest checkpoint, else config.json) or of a checkpoint."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        run = RunDir(p, is_primary=False)
        ck = run.latest_checkpoint()
        if ck is None:
            saved = run.load_config()
            return GANTrainConfig.from_dict(saved) if saved else None
        p = ck
    meta = load_checkpoint(p).meta
    return GANTrainConfig.from_dict(dict(meta["train_config"])) if "train_config" in meta else None


def resolve_checkpoint(run_or_ckpt: Union[str, Path]) -> Path:
    """A checkpoint file: the path itself, or a run folder's latest checkpoint."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        ck = RunDir(p, is_primary=False).latest_checkpoint()
        if ck is None:
            raise CheckpointError(f"{p}: no checkpoints/last.pt or checkpoints/NNNNNNN.pt in this folder")
        return ck
    return p


def export_generator(run_or_ckpt: Union[str, Path], out: Union[str, Path]) -> Path:
    """Write only the EMA generator of a training checkpoint (a small file GANgealing loads)."""
    ckpt = load_checkpoint(resolve_checkpoint(run_or_ckpt))
    if "generator" not in ckpt.state:
        raise CheckpointError(f"{run_or_ckpt}: holds no generator")
    from ..checkpoint import Checkpoint

    small = Checkpoint(kind="generator", config={"generator": ckpt.config["generator"]},
                       state={"generator": ckpt.state["generator"]}, step=ckpt.step, meta=dict(ckpt.meta))
    return save_checkpoint(small, out)


@dataclass(frozen=True)
class GANEvaluation:
    """What ``eval-gan`` measures: Fréchet distance, precision and recall (k-NN manifolds), optionally
    the digit histogram of MNIST generators and the path of the fixed-seed sample grid."""

    fd: float
    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int
    resolution: int
    digits: Optional[Any] = None  # gangealing.metrics.digits.DigitHistogram
    grid: Optional[Path] = None
    features: str = "mobilenet_v2 features[18], spatial mean, 1280-d"

    def to_dict(self) -> Dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("digits", "grid")}
        d.update(self.digits.to_dict() if self.digits is not None else {})
        if self.grid is not None:
            d["grid"] = str(self.grid)
        return d


def is_mnist_source(source: Optional[str]) -> bool:
    """Whether a data source names the embedded MNIST (``mnist`` or ``mnist:3``), whose digits can be read."""
    from ..data.embedded import is_embedded_name, parse_name

    return bool(source) and is_embedded_name(source) and parse_name(source)[0] == "mnist"


def sample_grid(G: nn.Module, out: Union[str, Path], n: int = 64, seed: int = 0) -> Path:
    """Write the EMA generator's images of ``n`` fixed latents (from ``seed``, constant noise) as a square grid."""
    from ..vis import save_grid

    dev = next(G.parameters()).device
    z = torch.randn(n, G.style_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    with torch.no_grad():
        img = torch.cat([G(z=z[i:i + 64], noise="const") for i in range(0, n, 64)]).clamp(-1, 1)
    return save_grid(img.cpu(), out, nrow=int(math.ceil(math.sqrt(n))))


def evaluate_gan(run_or_ckpt: Union[str, Path], data: Optional[str] = None, n_fake: int = 5000,
                 n_real: Optional[int] = None, resolution: Optional[int] = None, batch: int = 100, seed: int = 0,
                 psi: float = 1.0, device: Union[str, torch.device, None] = None,
                 cache_dir: Optional[Union[str, Path]] = None, split: Optional[str] = None, k: int = 3,
                 digits: Optional[bool] = None, n_digits: int = 10_000,
                 grid: Optional[Union[str, Path]] = None) -> GANEvaluation:
    """Measure a checkpoint's EMA generator against real images (see :class:`GANEvaluation`).

    Real images: ``data`` (default: the run's training data, same size and crop/pad mode as in
    training; ``split`` defaults to the run's), ``n_real`` of them spread over the set (default
    ``n_fake``). Fréchet distance (:mod:`gangealing.metrics.fid`) and precision / recall
    (:mod:`gangealing.metrics.coverage`, ``k``-NN) on the same MobileNetV2 features of the same
    samples. ``digits`` (default: when the data is the embedded MNIST): the digit histogram of
    ``n_digits`` samples (:mod:`gangealing.metrics.digits`). ``grid``: write the 8 x 8 fixed-seed
    sample grid there.
    """
    from ..build import build_from_checkpoint
    from ..data import prepare_dataset
    from ..metrics.coverage import precision_recall
    from ..metrics.fid import (DEFAULT_RESOLUTION, MobileNetFeatures, extract_features, feature_stats,
                               frechet_distance, generator_features, real_batches)
    from .runtime import pick_device

    if n_fake < 2 or (n_real is not None and n_real < 2) or n_digits < 1 or k < 1:
        raise ValueError(f"--n and --n-real must be at least 2 and --k, --n-digits positive "
                         f"(got n={n_fake}, n_real={n_real}, k={k}, n_digits={n_digits})")
    path = resolve_checkpoint(run_or_ckpt)
    ckpt = load_checkpoint(path)
    dev = pick_device(device)
    G = build_from_checkpoint(ckpt, "generator", dev)
    tc = ckpt.meta.get("train_config") or {}
    source = data or tc.get("data")
    if not source:
        raise ValueError(f"{path} does not say what it was trained on: pass the real images with --data")
    prepared = prepare_dataset(source, G.size, tc.get("pad", "center"), cache_dir, split=split or tc.get("split", "train"))
    # Spread the real subset over the whole set (prepared datasets can be sorted by class or folder).
    n_real = min(n_real or n_fake, len(prepared))
    if n_real <= k or n_fake <= k:
        raise ValueError(f"precision/recall with k = {k} need more than {k} real and generated images "
                         f"(got {n_real} real, {n_fake} generated)")
    idx = torch.randperm(len(prepared), generator=torch.Generator().manual_seed(seed))[:n_real].sort().values
    real = prepared.images[idx.numpy()]
    extractor = MobileNetFeatures(resolution=resolution or DEFAULT_RESOLUTION).to(dev)
    real_f = extract_features(extractor, real_batches(real, n_real, batch), dev)
    fake_f = generator_features(G, n_fake, extractor, batch, seed, psi)
    fd = frechet_distance(feature_stats(real_f), feature_stats(fake_f))
    pr = precision_recall(real_f, fake_f, k)
    hist = None
    if digits if digits is not None else is_mnist_source(source):
        from ..metrics.digits import digit_histogram

        hist = digit_histogram(G, n_digits, batch=max(batch, 100), seed=seed, psi=psi)
    grid_path = sample_grid(G, grid) if grid is not None else None
    return GANEvaluation(fd, pr.precision, pr.recall, k, n_real, n_fake, extractor.resolution, hist, grid_path)
