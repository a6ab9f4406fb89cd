"""Coordinate conventions: pixel <-> normalised, identity grid, affine helpers, mirroring."""
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gangealing.geometry.coords import (
    apply_affine,
    hflip_norm_points,
    hflip_points,
    identity_grid,
    invert_affine,
    norm_to_pixel,
    norm_to_pixel_legacy,
    pixel_to_norm,
    pixel_to_norm_legacy,
)

sizes = st.integers(min_value=2, max_value=512)
coords = st.floats(min_value=-50, max_value=600, allow_nan=False, width=32)


@settings(max_examples=50, deadline=None)
@given(h=sizes, w=sizes, x=coords, y=coords)
def test_pixel_norm_round_trip(h, w, x, y):
    p = torch.tensor([[[x, y]]], dtype=torch.float64)
    torch.testing.assert_close(norm_to_pixel(pixel_to_norm(p, (h, w)), (h, w)), p)
    torch.testing.assert_close(pixel_to_norm(norm_to_pixel(p / 600, (h, w)), (h, w)), p / 600)


@settings(max_examples=30, deadline=None)
@given(size=sizes)
def test_pixel_centres_and_edges(size):
    p = torch.tensor([[[0.0, size - 1.0], [-0.5, size - 0.5]]], dtype=torch.float64)
    n = pixel_to_norm(p, size)
    torch.testing.assert_close(n[0, 0], torch.tensor([-1 + 1 / size, 1 - 1 / size], dtype=torch.float64))
    torch.testing.assert_close(n[0, 1], torch.tensor([-1.0, 1.0], dtype=torch.float64))  # outer edges


def test_non_square_axes_are_x_then_y():
    # x is divided by W, y by H.
    n = pixel_to_norm(torch.tensor([[[3.0, 3.0]]]), (8, 4))  # H=8, W=4
    torch.testing.assert_close(n, torch.tensor([[[7 / 4 - 1, 7 / 8 - 1]]]))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), batch=st.integers(1, 3))
def test_identity_grid_equals_affine_grid(h, w, batch):
    eye = torch.eye(2, 3).unsqueeze(0).expand(batch, 2, 3)
    expected = F.affine_grid(eye, [batch, 1, h, w], align_corners=False)
    grid = identity_grid((h, w), batch)
    assert grid.shape == (batch, h, w, 2)
    assert torch.equal(grid, expected)  # bitwise: nearest-neighbour ties depend on it
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    torch.testing.assert_close(grid[0], pixel_to_norm(torch.stack([xs, ys], -1), (h, w)))


def test_identity_grid_dtype_and_square_int():
    grid = identity_grid(5, dtype=torch.float64)
    assert grid.dtype == torch.float64 and grid.shape == (1, 5, 5, 2)


@settings(max_examples=30, deadline=None)
@given(size=sizes, x=coords, y=coords)
def test_legacy_equals_pixel_centre_when_frames_agree(size, x, y):
    p = torch.tensor([[[x, y]]], dtype=torch.float64)
    torch.testing.assert_close(pixel_to_norm_legacy(p, size), pixel_to_norm(p, size))
    n = p / 600
    torch.testing.assert_close(norm_to_pixel_legacy(n, size), norm_to_pixel(n, size))


@settings(max_examples=30, deadline=None)
@given(s=st.integers(8, 512), f=st.integers(8, 512), x=coords)
def test_legacy_mixed_factor_is_a_scaling_about_the_centre(s, f, x):
    # The original reads frame-F pixels as if moved from the centre c by a factor k.
    p = torch.tensor([[[x, x]]], dtype=torch.float64)
    k = f * (s - 1) / ((f - 1) * s)
    c = (f - 1) / 2
    torch.testing.assert_close(pixel_to_norm_legacy(p, s, f), pixel_to_norm(c + k * (p - c), f))
    torch.testing.assert_close(norm_to_pixel_legacy(pixel_to_norm_legacy(p, s, f), s, f), p)


def test_legacy_factor_matches_documented_example():
    # Fixture frames: congealed 64, image 128; pixel 0 of the 64 frame is read 0.25 px further out.
    legacy = pixel_to_norm_legacy(torch.tensor([[[0.0, 63.0]]]), 128, 64)
    torch.testing.assert_close(norm_to_pixel(legacy, 64), torch.tensor([[[-0.25, 63.25]]]))


def test_legacy_integer_input_promotes():
    out = pixel_to_norm_legacy(torch.tensor([[[0, 63]]]), 128, 64)
    assert out.dtype == torch.float32


def _random_affine(n, generator):
    m = torch.randn(n, 2, 3, generator=generator, dtype=torch.float64) * 0.3
    m[:, :, :2] += torch.eye(2, dtype=torch.float64)
    return m


def test_apply_affine_matches_affine_grid_and_inverse():
    g = torch.Generator().manual_seed(0)
    m = _random_affine(3, g)
    base = identity_grid((5, 7), 3, dtype=torch.float64)
    torch.testing.assert_close(apply_affine(base, m), F.affine_grid(m, [3, 1, 5, 7], align_corners=False))
    pts = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(apply_affine(apply_affine(pts, m), invert_affine(m)), pts)
    torch.testing.assert_close(apply_affine(pts, torch.eye(2, 3, dtype=torch.float64).expand(3, 2, 3)), pts)


@settings(max_examples=30, deadline=None)
@given(w=sizes, x=coords, y=coords)
def test_hflip_twice_is_identity_and_matches_norm_flip(w, x, y):
    p = torch.tensor([[[x, y]]], dtype=torch.float64)
    torch.testing.assert_close(hflip_points(hflip_points(p, w), w), p)
    torch.testing.assert_close(pixel_to_norm(hflip_points(p, w), w), hflip_norm_points(pixel_to_norm(p, w)))


def test_hflip_matches_image_flip():
    img = torch.zeros(1, 1, 6, 9)
    img[0, 0, 2, 1] = 1
    flipped = img.flip(-1)
    y, x = (flipped[0, 0] == 1).nonzero()[0].tolist()
    assert hflip_points(torch.tensor([[[1.0, 2.0]]]), 9).tolist() == [[[float(x), float(y)]]]
