"""Which digits does a generator draw? A small MNIST classifier, for evaluation only.

A generator of MNIST can have a low Fréchet distance and still draw mostly a few digits; the
histogram of the digits in its samples, read by a classifier trained on MNIST's labelled training
split, shows that directly (:func:`digit_histogram`). The classifier (:class:`DigitClassifier`,
about 0.1 M parameters) takes images in [-1, 1] of any size and channel count (channels are
averaged, the side resized to 32 px, the size of the project's MNIST generators, whose data is
MNIST's 28 px Lanczos-resized to 32 px). Its weights ship with the package
(``metrics/weights/mnist_digits.pt``, a plain state dict loaded with ``weights_only=True``);
``scripts/train_digit_classifier.py`` retrains them and prints the test accuracy (the committed
weights: see ``models/mnist-digit-classifier/README.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).with_name("weights") / "mnist_digits.pt"
SIZE = 32


class DigitClassifier(nn.Module):
    """Images (N, C, H, W) in [-1, 1] -> digit logits (N, 10)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(1, w), block(w, w), nn.MaxPool2d(2),  # 16 px
                                      block(w, 2 * w), block(2 * w, 2 * w), nn.MaxPool2d(2),  # 8 px
                                      block(2 * w, 4 * w), nn.MaxPool2d(2),  # 4 px
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4 * w, 10))

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = images.float().mean(dim=1, keepdim=True)  # (N, 1, H, W)
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.prepare(images)))


def load_digit_classifier(path: Union[str, Path, None] = None,
                          device: Union[str, torch.device] = "cpu") -> DigitClassifier:
    """The committed classifier (or the state dict at ``path``), in eval mode on ``device``."""
    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no digit-classifier weights; run scripts/train_digit_classifier.py")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitClassifier(width=int(state.pop("width", torch.tensor(32))))
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def predict_digits(model: DigitClassifier, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """(N,) predicted digits of images (N, C, H, W) in [-1, 1]."""
    dev = next(model.parameters()).device
    return torch.cat([model(images[i:i + batch].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch)])


@dataclass(frozen=True)
class DigitHistogram:
    """How many of ``n`` samples the classifier read as each digit, and the smallest / largest share."""

    counts: Tuple[int, ...]
    n: int

    @property
    def shares(self) -> Tuple[float, ...]:
        return tuple(c / self.n for c in self.counts)

    @property
    def min_share(self) -> float:
        return min(self.shares)

    @property
    def max_share(self) -> float:
        return max(self.shares)

    def to_dict(self) -> dict:
        return {"digit_counts": list(self.counts), "digit_n": self.n,
                "digit_min_share": round(self.min_share, 4), "digit_max_share": round(self.max_share, 4)}


def histogram(digits: torch.Tensor) -> DigitHistogram:
    counts = torch.bincount(digits.long().flatten(), minlength=10)[:10]
    return DigitHistogram(tuple(int(c) for c in counts), int(digits.numel()))


@torch.no_grad()
def digit_histogram(generator: nn.Module, n: int = 10_000, classifier: Optional[DigitClassifier] = None,
                    batch: int = 500, seed: int = 0, psi: float = 1.0) -> DigitHistogram:
    """The digits of ``n`` samples of a gangealing generator (random z from ``seed``, random noise)."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    device = next(generator.parameters()).device
    classifier = classifier if classifier is not None else load_digit_classifier(device=device)
    g = torch.Generator().manual_seed(seed)
    w_avg = generator.mean_latent(4096, torch.Generator(device=device).manual_seed(seed)) if psi != 1 else None
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn(b, generator.style_dim, generator=g).to(device)
        noise = [torch.randn(s, generator=g).to(device) for s in generator.noise_shapes(b)]
        out.append(predict_digits(classifier, generator(z=z, psi=psi, w_avg=w_avg, noise=noise).clamp(-1, 1)))
    return histogram(torch.cat(out))


def train_digit_classifier(train_images: np.ndarray, train_labels: np.ndarray, *, epochs: int = 4,
                           batch: int = 128, lr: float = 2e-3, width: int = 32, seed: int = 0,
                           shift: int = 2, device: Union[str, torch.device] = "cpu",
                           log: Optional[Callable[[str], None]] = print) -> DigitClassifier:
    """Train on uint8 images (N, C, S, S) and labels (N,): Adam, one-cycle cosine, random shifts of +-``shift`` px."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DigitClassifier(width).to(device).train()
    x_all = torch.from_numpy(np.ascontiguousarray(train_images))
    y_all = torch.from_numpy(np.asarray(train_labels)).long()
    steps = epochs * (len(x_all) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=g)
        total = 0.0
        for i in range(0, len(perm) - batch + 1, batch):
            idx = perm[i:i + batch]
            x = x_all[idx].float().div(127.5).sub(1.0)
            if shift:
                dx, dy = torch.randint(-shift, shift + 1, (2,), generator=g).tolist()
                x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x.to(device)), y_all[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
            step += 1
        if log:
            log(f"epoch {epoch + 1}/{epochs}: mean loss {total / max(1, len(perm) // batch):.4f}")
    return model.eval().requires_grad_(False)


def save_digit_classifier(model: DigitClassifier, path: Union[str, Path] = WEIGHTS) -> Path:
    from ..fileio import atomic_write

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state["width"] = torch.tensor(model.features[0][0].out_channels)
    return atomic_write(path, lambda f: torch.save(state, f))
