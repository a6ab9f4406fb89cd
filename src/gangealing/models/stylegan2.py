"""StyleGAN2 generator and discriminator in pure PyTorch, with rosinality's state-dict keys.

The generator reproduces the original GANgealing generator (``models/stylegan2/networks.py``,
itself rosinality's ``Generator`` plus the StyleGAN2-ADA normalisation switch ``num_fp16_res``)
to float32 rounding, and loads rosinality ``g_ema`` state dicts strictly. Its API is split into
the pieces GANgealing needs instead of one flag-driven ``forward``:

* ``mapping(z) -> w``            (N, D) -> (N, D)
* ``synthesis(w_plus) -> image`` (N, n_latent, D) -> (N, 3, H, W), unclamped, roughly [-1, 1]
* ``mix(w_a, w_b, inject)``      W+ whose first ``inject`` rows come from ``w_a``, the rest from ``w_b``
* ``truncate(w, psi, w_avg)``    ``w_avg + psi * (w - w_avg)``

How the original's ``forward(styles, ...)`` calls map onto this API (all checked against the
original's outputs in ``tests/test_parity_generator.py``):

* ``styles=[z]``                               -> ``forward(z=z)``
* ``styles=[w], input_is_latent=True``         -> ``forward(w=w)`` (2-D) or ``forward(w_plus=w)`` (3-D)
* ``styles=[z1, z2], inject_index=i``          -> ``synthesis(mix(mapping(z1), mapping(z2), i))``
* ``truncation=psi, truncation_latent=t, inject_index=n_latent``
                                               -> ``forward(z=z, psi=psi, w_avg=t)``
* the same with ``inject_index=i < n_latent``  -> ``synthesis(mix(truncate(w, psi, t), w, i))``
  (the original silently truncates only the first ``i`` rows; its ``inject_index=None`` draws
  ``i`` from Python's global ``random``)
* ``randomize_noise=False``                    -> ``noise='const'``; ``noise=[...]`` -> ``noise=[...]``

Where the layers are normalised (``num_fp16_res``): the original applies StyleGAN2-ADA's fp16
pre-normalisation to the demodulated convs of the ``num_fp16_res`` highest resolutions, while
computing in fp32: styles are divided by their largest absolute value *over the whole batch*
(NVlabs divides per sample; the two differ only through the 1e-8 of the demodulation) and each
output channel's weights are rescaled to a maximum of ``1/sqrt(fan_in)``. Demodulation makes
both rescalings cancel except in that epsilon, so the effect is tiny unless weights are tiny.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DiscriminatorConfig, GeneratorConfig
from .ops import Blur, ConvLayer, EqualLinear, FusedLeakyReLU, ResBlock, Upsample

# rosinality's width table before the channel multiplier: (base, multiplied?) per resolution.
_WIDTH_TABLE = {4: (512, False), 8: (512, False), 16: (512, False), 32: (512, False), 64: (256, True),
                128: (128, True), 256: (64, True), 512: (32, True), 1024: (16, True)}
NoiseSpec = Union[str, Sequence[Optional[Tensor]]]


def channel_widths(size: int, channel_multiplier: float, max_channels: int) -> Dict[int, int]:
    """Feature widths ``{resolution: min(max_channels, table[resolution])}`` for 4..size."""
    if size not in _WIDTH_TABLE or size < 8:
        raise ValueError(f"size must be a power of two in [8, 1024], got {size}")
    out = {}
    for res, (base, mult) in _WIDTH_TABLE.items():
        if res <= size:
            out[res] = min(int(max_channels), int(base * channel_multiplier) if mult else base)
    return out


class PixelNorm(nn.Module):
    """Normalise each latent to unit mean square over the feature axis (eps 1e-8)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)  # (N, D)


class ModulatedConv2d(nn.Module):
    """Style-modulated (and optionally demodulated) conv, optionally upsampling x2.

    Keys as rosinality: ``weight`` (1, O, I, k, k), ``modulation.{weight,bias}``, ``blur.kernel``.
    Two equivalent execution paths: ``fused=True`` is rosinality's per-sample grouped conv (the
    reference); the default scales activations before and demodulates after one shared-weight
    conv, which is markedly faster on CPU.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1), normalize: bool = False):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.demodulate, self.upsample, self.normalize = demodulate, upsample, normalize
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            # Pads that make transposed conv (stride 2) + blur give exactly twice the input size.
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
                f"demodulate={self.demodulate}, normalize={self.normalize}")

    def _weight_and_style(self, w: Tensor) -> Tuple[Tensor, Tensor]:
        style = self.modulation(w)  # (N, I)
        weight = self.scale * self.weight[0]  # (O, I, k, k)
        if self.normalize:
            # StyleGAN2-ADA fp16 pre-normalisation, as the original applies it (global style max).
            style = style / style.abs().max()
            fan_in = torch.tensor(self.in_channel * self.kernel_size**2, dtype=torch.float32, device=weight.device)
            weight = weight * torch.sqrt(1.0 / fan_in) / weight.abs().amax(dim=(1, 2, 3), keepdim=True)
        return weight, style

    def forward(self, x: Tensor, w: Tensor, fused: bool = False) -> Tensor:
        """x (N, I, H, W), w (N, D) -> (N, O, H', W') with H' = 2H when upsampling."""
        weight, style = self._weight_and_style(w)
        if fused:
            return self._forward_fused(x, weight, style)
        n = x.shape[0]
        x = x * style.view(n, -1, 1, 1)  # (N, I, H, W)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)  # (N, O, 2H+1, 2W+1)
        else:
            out = F.conv2d(x, weight, padding=self.padding)  # (N, O, H, W)
        if self.demodulate:
            # sum_{i,k} (w[o,i,k] s[n,i])^2 = (s^2) @ (sum_k w^2)^T, without forming per-sample weights.
            demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # (N, O)
            out = out * demod.view(n, -1, 1, 1)
        if self.upsample:
            out = self.blur(out)  # (N, O, 2H, 2W)
        return out

    def _forward_fused(self, x: Tensor, weight: Tensor, style: Tensor) -> Tensor:
        n, i, h, w = x.shape
        o, k = self.out_channel, self.kernel_size
        weight = weight[None] * style.view(n, 1, i, 1, 1)  # (N, O, I, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(n, o, 1, 1, 1)
        x = x.reshape(1, n * i, h, w)  # (1, N*I, H, W)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * i, o, k, k)  # (N*I, O, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=n)  # (1, N*O, 2H+1, 2W+1)
            return self.blur(out.view(n, o, out.shape[2], out.shape[3]))  # (N, O, 2H, 2W)
        out = F.conv2d(x, weight.reshape(n * o, i, k, k), padding=self.padding, groups=n)  # (1, N*O, H, W)
        return out.view(n, o, h, w)


class NoiseInjection(nn.Module):
    """Add per-pixel noise scaled by one learned strength (``weight``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Optional[Tensor]) -> Tensor:
        return x if noise is None else x + self.weight * noise  # (N, C, H, W)


class ConstantInput(nn.Module):
    """The learned 4x4 input of the synthesis network."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)  # (N, C, 4, 4)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + leaky ReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[int] = (1, 3, 3, 1), normalize: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel, normalize=normalize)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, w: Tensor, noise: Optional[Tensor], fused: bool = False) -> Tensor:
        out = self.conv(x, w, fused=fused)  # (N, O, H', W')
        out = self.noise(out, noise)
        return self.activate(out)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the upsampled RGB skip."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Optional[Tensor] = None, fused: bool = False) -> Tensor:
        out = self.conv(x, w, fused=fused) + self.bias  # (N, 3, H, W)
        if skip is not None:
            out = out + self.upsample(skip)  # (N, 3, H, W)
        return out


class Generator(nn.Module):
    """StyleGAN2 generator (rosinality ``g_ema`` layout): mapping ``style``, synthesis, noise buffers.

    Set ``fused_modconv = True`` to run rosinality's grouped-conv path (same numbers to ~1e-6,
    slower on CPU).
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.size, self.style_dim = cfg.size, cfg.style_dim
        self.log_size = int(math.log2(cfg.size))
        if 2**self.log_size != cfg.size:
            raise ValueError(f"size must be a power of two, got {cfg.size}")
        if not 0 <= cfg.num_fp16_res:
            raise ValueError(f"num_fp16_res must be >= 0, got {cfg.num_fp16_res}")
        self.fused_modconv = False
        widths = channel_widths(cfg.size, cfg.channel_multiplier, cfg.max_channels)
        blur = tuple(cfg.blur_kernel)

        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(cfg.style_dim, cfg.style_dim, lr_mul=cfg.lr_mlp, activation="fused_lrelu")
            for _ in range(cfg.n_mlp)
        ])
        self.input = ConstantInput(widths[4])
        self.conv1 = StyledConv(widths[4], widths[4], 3, cfg.style_dim, blur_kernel=blur)
        self.to_rgb1 = ToRGB(widths[4], cfg.style_dim, upsample=False)

        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_ch = widths[4]
        for i in range(3, self.log_size + 1):
            normalize = i > self.log_size - cfg.num_fp16_res
            out_ch = widths[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, 3, cfg.style_dim, upsample=True, blur_kernel=blur, normalize=normalize))
            self.convs.append(StyledConv(out_ch, out_ch, 3, cfg.style_dim, blur_kernel=blur, normalize=normalize))
            self.to_rgbs.append(ToRGB(out_ch, cfg.style_dim, blur_kernel=blur))
            in_ch = out_ch

    # ----------------------------------------------------------------------------- latents
    @property
    def n_latent(self) -> int:
        """Number of W+ rows (2 * log2(size) - 2)."""
        return self.log_size * 2 - 2

    def _device(self) -> torch.device:
        return self.input.input.device

    def mapping(self, z: Tensor) -> Tensor:
        """z (N, D) standard normal -> w (N, D)."""
        return self.style(z)  # (N, D)

    def sample_z(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """n standard-normal latents (N, D) on the model's device, drawn from ``generator``."""
        return torch.randn(n, self.style_dim, generator=generator, device=self._device())

    def sample_w(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``mapping`` of n fresh z: (N, D) (the original's ``batch_latent``)."""
        return self.mapping(self.sample_z(n, generator))

    def mean_latent(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Mean W over n samples, (1, D); with ``generator=None`` it consumes the global RNG as the original."""
        return self.sample_w(n, generator).mean(dim=0, keepdim=True)

    def broadcast(self, w: Tensor) -> Tensor:
        """(N, D) -> (N, n_latent, D); a (N, n_latent, D) input is returned as it is."""
        if w.ndim == 3:
            if w.shape[1] != self.n_latent:
                raise ValueError(f"W+ must have {self.n_latent} rows, got shape {tuple(w.shape)}")
            return w
        if w.ndim != 2:
            raise ValueError(f"expected W (N, D) or W+ (N, {self.n_latent}, D), got shape {tuple(w.shape)}")
        return w.unsqueeze(1).repeat(1, self.n_latent, 1)  # (N, L, D)

    def mix(self, w_a: Tensor, w_b: Tensor, inject: Union[int, Tensor]) -> Tensor:
        """W+ whose rows ``[:inject]`` come from ``w_a`` and the rest from ``w_b``.

        ``w_a``, ``w_b``: (N, D) or (N, n_latent, D); ``inject``: int in [0, n_latent], or a (N,)
        integer tensor for a per-sample split. Returns (N, n_latent, D).
        """
        a, b = self.broadcast(w_a), self.broadcast(w_b)  # (N, L, D)
        if isinstance(inject, Tensor):
            rows = torch.arange(self.n_latent, device=a.device)
            take_a = rows[None, :] < inject.to(a.device).view(-1, 1)  # (N, L)
            return torch.where(take_a[..., None], a, b)
        if not 0 <= inject <= self.n_latent:
            raise ValueError(f"inject={inject} must lie in [0, n_latent={self.n_latent}]")
        return torch.cat([a[:, :inject], b[:, inject:]], dim=1)  # (N, L, D)

    @staticmethod
    def truncate(w: Tensor, psi: float, w_avg: Tensor) -> Tensor:
        """Truncation trick ``w_avg + psi * (w - w_avg)``; ``w_avg`` (D,) or (1, D) broadcasts over W or W+."""
        return w_avg + psi * (w - w_avg)

    def w_plus(self, z: Optional[Tensor] = None, w: Optional[Tensor] = None, w_plus: Optional[Tensor] = None,
               psi: float = 1.0, w_avg: Optional[Tensor] = None) -> Tensor:
        """The W+ (N, n_latent, D) that ``forward`` synthesises from exactly one of z / w / w_plus."""
        given = [x is not None for x in (z, w, w_plus)]
        if sum(given) != 1:
            raise ValueError("pass exactly one of z (N, D), w (N, D) or w_plus (N, n_latent, D)")
        if z is not None:
            w = self.mapping(z)
        latent = self.broadcast(w if w is not None else w_plus)  # (N, L, D)
        if psi != 1:
            if w_avg is None:
                raise ValueError("truncation (psi != 1) needs w_avg, e.g. G.mean_latent(4096)")
            latent = self.truncate(latent, psi, w_avg)
        return latent

    # ----------------------------------------------------------------------------- noise
    def noise_shapes(self, batch: int = 1) -> List[Tuple[int, int, int, int]]:
        """Shapes of the ``num_layers`` noise inputs, in the order the convs consume them."""
        return [(batch, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.num_layers)]

    def make_noise(self, batch: int = 1, generator: Optional[torch.Generator] = None) -> List[Tensor]:
        """Fresh standard-normal noise inputs drawn from ``generator``."""
        dev = self._device()
        return [torch.randn(s, generator=generator, device=dev) for s in self.noise_shapes(batch)]

    def const_noise(self) -> List[Tensor]:
        """The registered noise buffers ``noises.noise_i`` (1, 1, r, r)."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    def _resolve_noise(self, noise: NoiseSpec, batch: int, generator: Optional[torch.Generator]) -> List[Optional[Tensor]]:
        if isinstance(noise, str):
            if noise == "random":
                return list(self.make_noise(batch, generator))
            if noise == "const":
                return list(self.const_noise())
            if noise == "none":
                return [None] * self.num_layers
            raise ValueError(f"noise must be 'random', 'const', 'none' or a list of tensors, got {noise!r}")
        noise = list(noise)
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise tensors, got {len(noise)}")
        # None entries of an explicit list are drawn at random, as in rosinality.
        dev = self._device()
        return [torch.randn(s, generator=generator, device=dev) if n is None else n
                for n, s in zip(noise, self.noise_shapes(batch))]

    # ----------------------------------------------------------------------------- synthesis
    def synthesis(self, w_plus: Tensor, noise: NoiseSpec = "random", generator: Optional[torch.Generator] = None) -> Tensor:
        """W+ (N, n_latent, D) (or W (N, D), broadcast) -> image (N, 3, size, size), unclamped.

        ``noise``: 'random' (fresh N(0, 1) from ``generator``), 'const' (the registered buffers),
        'none' (no noise), or a list of ``num_layers`` tensors broadcastable to (N, 1, r, r).
        """
        latent = self.broadcast(w_plus)  # (N, L, D)
        n, fused = latent.shape[0], self.fused_modconv
        noises = self._resolve_noise(noise, n, generator)
        x = self.input(n)  # (N, C4, 4, 4)
        x = self.conv1(x, latent[:, 0], noises[0], fused=fused)  # (N, C4, 4, 4)
        skip = self.to_rgb1(x, latent[:, 1], fused=fused)  # (N, 3, 4, 4)
        i = 1
        for k, to_rgb in enumerate(self.to_rgbs):
            # Row i feeds the upsampling conv and is shared with the previous ToRGB.
            x = self.convs[2 * k](x, latent[:, i], noises[2 * k + 1], fused=fused)  # (N, C, 2r, 2r)
            x = self.convs[2 * k + 1](x, latent[:, i + 1], noises[2 * k + 2], fused=fused)  # (N, C, 2r, 2r)
            skip = to_rgb(x, latent[:, i + 2], skip, fused=fused)  # (N, 3, 2r, 2r)
            i += 2
        return skip

    def forward(self, z: Optional[Tensor] = None, w: Optional[Tensor] = None, w_plus: Optional[Tensor] = None, *,
                psi: float = 1.0, w_avg: Optional[Tensor] = None, noise: NoiseSpec = "random",
                generator: Optional[torch.Generator] = None) -> Tensor:
        """Image (N, 3, size, size) from exactly one of z (N, D), w (N, D) or w_plus (N, n_latent, D).

        ``psi``/``w_avg`` truncate every W+ row towards ``w_avg``; see :meth:`synthesis` for ``noise``.
        """
        return self.synthesis(self.w_plus(z, w, w_plus, psi, w_avg), noise=noise, generator=generator)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator (rosinality layout): logits (N, 1) for images (N, C, H, W)."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        widths = channel_widths(cfg.size, cfg.channel_multiplier, cfg.max_channels)
        log_size = int(math.log2(cfg.size))
        blur = tuple(cfg.blur_kernel)
        convs: List[nn.Module] = [ConvLayer(cfg.image_channels, widths[cfg.size], 1)]
        in_ch = widths[cfg.size]
        for i in range(log_size, 2, -1):
            out_ch = widths[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, blur))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = cfg.stddev_group, 1
        self.final_conv = ConvLayer(in_ch + 1, widths[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(widths[4] * 4 * 4, widths[4], activation="fused_lrelu"),
            EqualLinear(widths[4], 1),
        )

    def minibatch_stddev(self, x: Tensor) -> Tensor:
        """Append the mean (over features and pixels) of the per-group std as one extra channel."""
        n, c, h, w = x.shape
        group = min(n, self.stddev_group)
        while n % group:  # rosinality requires divisibility; fall back to the largest divisor
            group -= 1
        f = self.stddev_feat
        y = x.view(group, -1, f, c // f, h, w)  # (G, N/G, F, C/F, H, W); sample n is in group n % (N/G)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)  # (N/G, F, C/F, H, W)
        y = y.mean([2, 3, 4], keepdim=True).squeeze(2)  # (N/G, F, 1, 1)
        y = y.repeat(group, 1, h, w)  # (N, F, H, W)
        return torch.cat([x, y], 1)  # (N, C + F, H, W)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs(x)  # (N, C4, 4, 4)
        out = self.minibatch_stddev(out)  # (N, C4 + 1, 4, 4)
        out = self.final_conv(out)  # (N, C4, 4, 4)
        return self.final_linear(out.view(out.shape[0], -1))  # (N, 1)


# --------------------------------------------------------------------------------- inference
def _fit_widths(widths: Mapping[int, int], what: str) -> Tuple[float, int]:
    """(channel_multiplier, max_channels) that reproduce ``widths`` with :func:`channel_widths`."""
    size = max(widths)
    max_channels = max(widths.values())
    candidates = [widths[r] / _WIDTH_TABLE[r][0] for r in sorted(widths, reverse=True) if _WIDTH_TABLE[r][1]] + [2]
    for cm in candidates:
        cm = int(cm) if float(cm).is_integer() else float(cm)
        if channel_widths(size, cm, max_channels) == dict(widths):
            return cm, max_channels
    raise ValueError(f"{what}: widths {dict(sorted(widths.items()))} are not of rosinality's form "
                     "min(max_channels, table[r] * channel_multiplier)")


def _infer_blur_kernel(kernel: Optional[Tensor]) -> Tuple[float, ...]:
    if kernel is None or kernel.is_meta:  # meta tensors (shape-only inference) carry no values
        return (1, 3, 3, 1)
    k1 = kernel.detach().float().cpu().sum(0)  # separable: row sums give the 1-D kernel up to scale
    k1 = k1 / k1.min()
    rounded = k1.round()
    vals = rounded if torch.allclose(k1, rounded, atol=1e-4) else k1
    return tuple(int(v) if float(v).is_integer() else float(v) for v in vals.tolist())


def infer_generator_config(state_dict: Mapping[str, Tensor], num_fp16_res: int = 0, lr_mlp: float = 0.01) -> GeneratorConfig:
    """The :class:`GeneratorConfig` of a rosinality-layout generator state dict, from tensor shapes.

    ``num_fp16_res`` and ``lr_mlp`` leave no trace in the shapes and are taken as given.
    """
    sd = state_dict
    need = ("input.input", "conv1.conv.weight", "style.1.weight")
    if any(k not in sd for k in need):
        raise ValueError(f"not a rosinality StyleGAN2 generator state dict: it lacks {[k for k in need if k not in sd]}")
    n_rgbs = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    size = 2 ** (n_rgbs + 2)
    n_mlp = len({k.split(".")[1] for k in sd if k.startswith("style.") and k.endswith(".weight")})
    style_dim = int(sd["style.1.weight"].shape[1])
    widths = {4: int(sd["conv1.conv.weight"].shape[1])}
    for k in range(n_rgbs):
        widths[2 ** (k + 3)] = int(sd[f"convs.{2 * k}.conv.weight"].shape[1])
    cm, max_channels = _fit_widths(widths, "generator")
    return GeneratorConfig(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm, max_channels=max_channels,
                           blur_kernel=_infer_blur_kernel(sd.get("convs.0.conv.blur.kernel")), lr_mlp=lr_mlp,
                           num_fp16_res=int(num_fp16_res))


def infer_discriminator_config(state_dict: Mapping[str, Tensor], stddev_group: int = 4) -> DiscriminatorConfig:
    """The :class:`DiscriminatorConfig` of a rosinality-layout discriminator state dict (``stddev_group`` as given)."""
    sd = state_dict
    if "convs.0.0.weight" not in sd or "final_conv.0.weight" not in sd:
        raise ValueError("not a rosinality StyleGAN2 discriminator state dict: it lacks convs.0.0.weight / final_conv.0.weight")
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("convs.") and ".conv1." in k})
    log_size = n_blocks + 2
    size = 2**log_size
    widths = {size: int(sd["convs.0.0.weight"].shape[0])}
    for j in range(1, n_blocks + 1):
        widths[2 ** (log_size - j)] = int(sd[f"convs.{j}.conv2.1.weight"].shape[0])
    cm, max_channels = _fit_widths(widths, "discriminator")
    return DiscriminatorConfig(size=size, channel_multiplier=cm, max_channels=max_channels,
                               blur_kernel=_infer_blur_kernel(sd.get("convs.1.conv2.0.kernel")),
                               stddev_group=stddev_group, image_channels=int(sd["convs.0.0.weight"].shape[1]))
