"""Splatting, blending and propagation of edits / label maps (gangealing.edit)."""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pytest
import torch

from gangealing.build import build
from gangealing.config import STNConfig
from gangealing.edit import (
    alpha_composite,
    carry_labels,
    carry_rgba,
    colorize_labels,
    composite,
    label_palette,
    labels_to_edit,
    laplacian_blend,
    propagate,
    resize_edit,
    splat,
    splat_grid,
)
from gangealing.data.edits import read_edit, read_label_map, save_label_map
from gangealing.geometry.coords import identity_grid, pixel_to_norm
from gangealing.predictor import Congealer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def identity_congealer(size: int = 16) -> Congealer:
    """A freshly built transformer: both heads start at the identity warp."""
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=size, input_size=size, channel_multiplier=0.125, max_channels=16))
    return Congealer(stn, device="cpu")


@dataclass(frozen=True)
class _Res:
    grid: torch.Tensor
    flipped: Optional[torch.Tensor] = None
    cluster: Optional[torch.Tensor] = None


class FixedCongealer:
    """A stand-in congealer returning given grids (resized to the requested resolution by the identity)."""

    def __init__(self, grid: torch.Tensor, cluster: Optional[torch.Tensor] = None):
        self.grid, self.cluster = grid, cluster

    def align(self, images, output_resolution=None):
        assert output_resolution == self.grid.size(1)
        return _Res(grid=self.grid, cluster=self.cluster)


def shift_grid(size: int, dx: int, dy: int, n: int = 1) -> torch.Tensor:
    """Congealed pixel (x, y) comes from image pixel (x + dx, y + dy)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    px = torch.stack([xs + dx, ys + dy], dim=-1).float()  # (S, S, 2)
    return pixel_to_norm(px, size).expand(n, size, size, 2).clone()


# ------------------------------------------------------------------------------------------------
# splat
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_splat_one_hot_lands_where_the_grid_says(device):
    s = 12
    image = torch.zeros(1, 1, s, s, device=device)
    image[0, 0, 4, 3] = 1.0  # congealed pixel (x=3, y=4)
    out = splat_grid(image, shift_grid(s, 5, 2).to(device), s)
    assert out.total.device.type == device
    total = out.total[0, 0].cpu()
    assert total[6, 8] == 1.0 and total.sum() == 1.0  # moved to (x=8, y=6), nothing else
    # Every shifted pixel that stays inside lands on exactly one pixel with weight 1.
    w = out.weight[0, 0].cpu()
    assert torch.equal(w[2:, 5:], torch.ones(s - 2, s - 5)) and w[:2].sum() == 0 and w[:, :5].sum() == 0


def test_splat_bilinear_weights_and_centroid():
    pts = torch.tensor([[[2.25, 3.5], [7.0, 1.0], [-0.5, 4.0], [30.0, 30.0], [float("nan"), 1.0]]])
    vals = torch.ones(1, 5, 1)
    out = splat(pts, vals, (8, 10))
    w = out.weight[0, 0]
    assert w[3, 2] == pytest.approx(0.75 * 0.5) and w[4, 3] == pytest.approx(0.25 * 0.5)
    assert w[1, 7] == 1.0
    assert w[4, 0] == pytest.approx(0.5)  # half of the point at x = -0.5 falls outside
    assert w.sum() == pytest.approx(1 + 1 + 0.5)  # far-away and NaN points are dropped
    # The weighted centroid of a single bilinear splat is the point itself.
    one = splat(torch.tensor([[[4.3, 2.6]]]), torch.ones(1, 1, 1), 8).weight[0, 0]
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    assert (one * xs).sum() == pytest.approx(4.3, abs=1e-5) and (one * ys).sum() == pytest.approx(2.6, abs=1e-5)


def test_splat_gaussian_kernel_matches_the_original_footprint():
    sigma = 1.2
    out = splat(torch.tensor([[[5.0, 5.0]]]), torch.ones(1, 1, 1), 12, kernel="gaussian", sigma=sigma).weight[0, 0]
    assert out[5, 5] == pytest.approx(1.0)
    assert out[5, 6] == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert out[7, 8] == pytest.approx(np.exp(-13 / (2 * sigma**2)), rel=1e-6)
    # window [floor(x - 2 sigma), ceil(x + 2 sigma)] = [2, 8] per axis
    assert out[5, 8] > 0 and out[5, 9] == 0 and out[1, 5] == 0 and out[2, 2] > 0


def test_splat_mean_is_weighted_average():
    pts = torch.tensor([[[1.0, 1.0], [1.0, 1.0], [3.0, 0.0]]])
    vals = torch.tensor([[[2.0], [4.0], [5.0]]])
    out = splat(pts, vals, 4)
    mean = out.mean()
    assert mean[0, 0, 1, 1] == 3.0 and mean[0, 0, 0, 3] == 5.0 and mean[0, 0, 2, 2] == 0.0


# ------------------------------------------------------------------------------------------------
# carrying and blending
# ------------------------------------------------------------------------------------------------


def test_carry_rgba_identity_is_exact_and_soft_normalised():
    g = torch.Generator().manual_seed(0)
    s = 10
    edit = torch.rand(4, s, s, generator=g) * 2 - 1
    edit[3] = (torch.rand(s, s, generator=g) > 0.5).float()
    c = carry_rgba(edit, identity_grid(s), s)
    a = edit[3]
    assert torch.equal(c.alpha[0, 0], a)
    assert torch.equal(c.color[0][:, a > 0], edit[:3][:, a > 0])
    # Four congealed pixels onto one image pixel (minification): averages, alpha stays <= 1.
    small = carry_rgba(edit, identity_grid(s), s // 2)
    assert small.alpha.max() <= 1 and small.alpha.min() >= 0


def test_laplacian_blend_with_constant_mask_equals_alpha_blending():
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 20, 24, generator=g) * 2 - 1, torch.rand(2, 3, 20, 24, generator=g) * 2 - 1
    for m in (0.0, 0.3, 1.0):
        mask = torch.full((2, 1, 20, 24), m)
        expected = alpha_composite(a, b, mask)
        for levels, size, sigma in ((5, 45, 1.0), (3, 11, 0.5)):
            out = laplacian_blend(a, b, mask, levels=levels, kernel_size=size, sigma=sigma)
            torch.testing.assert_close(out, expected, atol=2e-6, rtol=0)
    # A real mask: the seam is softened, far from it the result is the plain composite.
    mask = torch.zeros(2, 1, 20, 24)
    mask[..., :, 12:] = 1
    out = laplacian_blend(a, b, mask, levels=3, kernel_size=11, sigma=0.5)
    assert not torch.allclose(out, alpha_composite(a, b, mask), atol=1e-3)
    assert (out - b)[..., 18:].abs().max() < 0.1


def test_composite_blends_only_where_alpha_lands():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    edit = torch.zeros(4, 32, 32)
    edit[:3] = 0.5
    edit[3, 8:20, 10:22] = 1.0
    carried = carry_rgba(edit, identity_grid(32), 32)
    inside = edit[3] > 0
    out = composite(img, carried, "alpha")
    assert torch.equal(out[0][:, ~inside], img[0][:, ~inside]) and out[0][:, inside].eq(0.5).all()
    light = composite(img, carried, "laplacian-light")[0]
    assert (light[:, 11:17, 13:19] - 0.5).abs().max() < 0.15  # the object's interior
    assert (light[:, 26:, :] - img[0, :, 26:, :]).abs().max() < 1e-3  # far from the seam
    full = composite(img, carried, "laplacian")[0]  # coarse bands mix the object's low frequencies
    err_in = (full[:, inside] - 0.5).abs().mean()
    assert err_in < (img[0][:, inside] - 0.5).abs().mean() / 2
    with pytest.raises(ValueError, match="blend"):
        composite(img, carried, "poisson")


def test_carry_labels_keeps_class_ids():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (12, 12), generator=g) * 7  # ids 0, 7, ..., 28
    out = carry_labels(labels, identity_grid(12), 12)
    assert out.dtype == torch.int64 and torch.equal(out[0], labels)
    shifted = carry_labels(labels, shift_grid(12, 3, 1), 12, fill=255)
    assert torch.equal(shifted[0, 1:, 3:], labels[:11, :9])
    assert (shifted[0, :1] == 255).all() and (shifted[0, :, :3] == 255).all()
    # A smooth non-integer warp mixes weights but never invents an id.
    warped = identity_grid(12) * 0.7 + 0.05
    ids = set(carry_labels(labels, warped, (15, 9)).unique().tolist())
    assert ids <= set(labels.unique().tolist()) | {0}


def test_resize_edit_premultiplied_keeps_colour_of_the_opaque_part():
    edit = torch.zeros(1, 4, 8, 8)
    edit[:, 0] = -1  # transparent part is "black red channel"
    edit[:, :3, :, 4:] = 0.8
    edit[:, 3, :, 4:] = 1
    out = resize_edit(edit, 16)
    covered = out[0, 3] > 0
    torch.testing.assert_close(out[0, :3][:, covered], torch.full_like(out[0, :3][:, covered], 0.8), atol=1e-5, rtol=0)


def test_palette_and_colorize():
    pal = label_palette(4)
    assert pal.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    col = colorize_labels(torch.tensor([[0, 1], [2, 3]]))
    assert col.shape == (3, 2, 2) and col[0, 0, 1] == pytest.approx(128 / 127.5 - 1, abs=1e-6)
    edit = labels_to_edit(torch.tensor([[0, 1]]), opacity=0.4)
    assert edit.shape == (4, 1, 2) and edit[3].tolist() == [[0.0, pytest.approx(0.4)]]


# ------------------------------------------------------------------------------------------------
# propagate through a congealer
# ------------------------------------------------------------------------------------------------


def test_propagate_identity_model_changes_only_pixels_under_alpha():
    congealer = identity_congealer(16)
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    edit = torch.zeros(4, 16, 16)
    edit[:3] = torch.tensor([0.2, -0.6, 0.9]).view(3, 1, 1)
    edit[3, 3:9, 4:12] = 1.0
    edit[3, 10, 10] = 0.5
    out = congealer.propagate(images, edit)
    full, none, half = edit[3] == 1, edit[3] == 0, edit[3] == 0.5
    assert torch.equal(out.images[:, :, none], images[:, :, none])
    assert torch.equal(out.images[:, :, full], edit[:3, full].expand(3, -1, -1))
    torch.testing.assert_close(out.images[:, :, half], 0.5 * edit[:3, half] + 0.5 * images[:, :, half])
    assert out.alpha.shape == (3, 1, 16, 16) and not out.flipped.any()
    # Larger images, same congealed frame: the edit scales with the image (grids are normalised).
    big = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    out = congealer.propagate(big, edit)
    mask = torch.nn.functional.interpolate(edit[None, 3:], size=32, mode="nearest")[0, 0] == 1
    changed = (out.images[0] != big[0]).any(0)
    assert changed[mask].float().mean() > 0.9 and not changed[8:-8, 26:].any()


def test_propagate_label_map_identity_and_mirrored():
    congealer = identity_congealer(16)
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[2:8, 1:5] = 3
    labels[9:14, 6:15] = 11
    images = torch.zeros(2, 3, 16, 16)
    out = propagate(congealer, images, labels)
    assert out.images is None and torch.equal(out.labels, labels.expand(2, 16, 16))
    mirrored = identity_grid(16) * torch.tensor([-1.0, 1.0])  # x -> -x: the image's mirror
    out = propagate(FixedCongealer(mirrored), images[:1], labels)
    assert torch.equal(out.labels[0], labels.flip(1))


def test_propagate_per_cluster_edits():
    labels_a = torch.full((8, 8), 1)
    labels_b = torch.full((8, 8), 2)
    fake = FixedCongealer(identity_grid(8, 3), cluster=torch.tensor([1, 0, 1]))
    out = propagate(fake, torch.zeros(3, 3, 8, 8), [labels_a, labels_b])
    assert out.labels[:, 0, 0].tolist() == [2, 1, 2]
    with pytest.raises(ValueError, match="no clusters"):
        propagate(FixedCongealer(identity_grid(8)), torch.zeros(1, 3, 8, 8), [labels_a, labels_b])


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------


def test_label_map_and_edit_files(tmp_path):
    from PIL import Image

    labels = torch.tensor([[0, 5], [300, 2]])
    save_label_map(labels, tmp_path / "l16.png")
    assert torch.equal(read_label_map(tmp_path / "l16.png"), labels)
    save_label_map(labels.clamp(max=9), tmp_path / "l8.png")
    assert Image.open(tmp_path / "l8.png").mode == "L"
    assert torch.equal(read_label_map(tmp_path / "l8.png"), labels.clamp(max=9))
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="grayscale or palette"):
        read_label_map(tmp_path / "rgb.png")
    with pytest.raises(FileExistsError):
        save_label_map(labels, tmp_path / "l8.png", protected=[tmp_path / "l8.png"])
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[1, 2, 3] = 51
    Image.fromarray(rgba).save(tmp_path / "edit.png")
    e = read_edit(tmp_path / "edit.png")
    assert e.shape == (4, 3, 4) and e[0].eq(1).all() and e[3, 1, 2] == pytest.approx(0.2) and e[3, 0, 0] == 0
