"""Feature networks for perceptual distances: VGG16 and MobileNetV2 trunks.

Both modules are written with torchvision's parameter names (``features.<i>...``), so torchvision's
ImageNet checkpoints (``vgg16-397923af.pth``, ``mobilenet_v2-b0353104.pth``) load into them with
``load_state_dict(..., strict=True)`` once the classifier keys are dropped (see
:func:`features_state_dict`). Neither module knows about files or downloads; weight resolution lives
in :mod:`gangealing.losses.perceptual`.

Inputs are already normalised with ImageNet statistics (the loss does that); ``forward`` returns the
feature maps at the tap indices, in order, and stops after the deepest tap so no work is wasted.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

# torchvision's VGG16 ``features`` ("D" config): channel count per conv, "M" = 2x2 max-pool.
_VGG16_CFG: Tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices into ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: the LPIPS / GANgealing taps.
VGG16_LPIPS_TAPS: Tuple[int, ...] = (3, 8, 15, 22, 29)
VGG16_TAP_CHANNELS: Tuple[int, ...] = (64, 128, 256, 512, 512)

# torchvision's MobileNetV2 inverted-residual settings: (expand ratio t, out channels c, repeats n, stride s).
_MOBILENET_V2_CFG: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
# Outputs of features[1, 3, 6, 13, 18]: the last block of each resolution (strides 2, 4, 8, 16, 32),
# except that the stride-32 tap is the final 1280-channel ReLU6 layer (the richest, most semantic one).
MOBILENET_V2_TAPS: Tuple[int, ...] = (1, 3, 6, 13, 18)
MOBILENET_V2_TAP_CHANNELS: Tuple[int, ...] = (16, 24, 32, 96, 1280)


class VGG16Features(nn.Module):
    """torchvision-compatible VGG16 ``features`` trunk returning the activations at ``taps``."""

    def __init__(self, taps: Sequence[int] = VGG16_LPIPS_TAPS):
        super().__init__()
        layers: List[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                # In-place ReLU is safe: a conv's backward needs its input, never its output.
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        self.taps = _check_taps(taps, len(self.features))
        for t in self.taps:
            if isinstance(self.features[t], nn.Conv2d):  # a tapped conv output must not be overwritten
                self.features[t + 1].inplace = False

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return _run_taps(self.features, self.taps, x)  # [(N, C_k, H / 2^k, W / 2^k)]


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + optional ReLU6, named like torchvision's Conv2dNormActivation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 act: bool = True):
        layers: List[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = in_ch * expand_ratio
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_ch, hidden, kernel_size=1))
        layers += [
            ConvBNAct(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)  # name "conv" matches torchvision's keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)  # (N, C_out, H / s, W / s)
        return x + out if self.use_res_connect else out


class MobileNetV2Features(nn.Module):
    """torchvision-compatible MobileNetV2 ``features`` trunk (width 1.0) returning ``taps`` activations.

    Keep it in eval mode: BatchNorm uses the ImageNet running statistics.
    """

    def __init__(self, taps: Sequence[int] = MOBILENET_V2_TAPS):
        super().__init__()
        layers: List[nn.Module] = [ConvBNAct(3, 32, stride=2)]
        in_ch = 32
        for t, c, n, s in _MOBILENET_V2_CFG:
            for i in range(n):
                layers.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        layers.append(ConvBNAct(in_ch, 1280, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.taps = _check_taps(taps, len(self.features))

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return _run_taps(self.features, self.taps, x)  # [(N, C_k, H / s_k, W / s_k)]

    @torch.no_grad()
    def fuse_batchnorm(self) -> "MobileNetV2Features":
        """Fold every eval-mode BatchNorm into the conv before it, in place (call after loading weights).

        Same outputs up to float rounding, ~25% faster forward+backward on CPU; afterwards the state
        dict no longer has torchvision's keys (BatchNorms become Identity, convs gain biases).
        """
        for seq in [m for m in self.modules() if isinstance(m, nn.Sequential)]:
            for i in range(len(seq) - 1):
                conv, bn = seq[i], seq[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    seq[i] = _fold_bn(conv, bn)
                    seq[i + 1] = nn.Identity()
        return self


def features_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Keep only the ``features`` part of a torchvision-style state dict, keyed as these modules expect.

    Accepts a whole torchvision model's state dict (``features.*`` and ``classifier.*``; the classifier
    is dropped) or a bare ``features`` Sequential's state dict (``0.weight``, ...), which is how the
    GANgealing SimCLR VGG checkpoint is stored.
    """
    if any(k.startswith("features.") for k in state_dict):
        return {k: v for k, v in state_dict.items() if k.startswith("features.")}
    if any(k.startswith("classifier.") for k in state_dict):
        raise KeyError("state dict has classifier keys but no 'features.*' keys")
    return {f"features.{k}": v for k, v in state_dict.items()}


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(conv.weight)
    fused.weight.copy_(conv.weight * gain.view(-1, 1, 1, 1))
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * gain)
    fused.requires_grad_(conv.weight.requires_grad)
    return fused


def _check_taps(taps: Sequence[int], depth: int) -> Tuple[int, ...]:
    taps = tuple(int(t) for t in taps)
    if not taps or list(taps) != sorted(set(taps)) or taps[0] < 0 or taps[-1] >= depth:
        raise ValueError(f"taps must be strictly increasing indices in [0, {depth}), got {taps}")
    return taps


def _run_taps(features: nn.Sequential, taps: Tuple[int, ...], x: torch.Tensor) -> List[torch.Tensor]:
    outs: List[torch.Tensor] = []
    for i, layer in enumerate(features):
        x = layer(x)
        if i == taps[len(outs)]:
            outs.append(x)
            if len(outs) == len(taps):  # nothing deeper is needed
                break
    return outs
