import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gangealing.geometry.coords import identity_grid
from gangealing.geometry.similarity import affine_grid, compose, similarity_matrix
from gangealing.geometry.warp import (
    MipmapStack,
    compose_affine_grid,
    compose_grids,
    flip_grid,
    mipmap_levels,
    mipmap_warp,
    mipmap_warp_with_levels,
    resize_grid,
    warp,
)


def _sim(angle, scale, tx, ty, n=1):
    t = lambda v: torch.full((n,), float(v))  # noqa: E731
    return similarity_matrix(t(angle), t(scale), t(tx), t(ty))


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("padding_mode", ["border", "reflection", "zeros"])
def test_identity_warp_returns_input(images, antialias, padding_mode):
    out = warp(images, identity_grid(32, 2), padding_mode=padding_mode, antialias=antialias)
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


def test_identity_mipmap_builds_only_level_zero(images):
    stack = MipmapStack(images)
    res = mipmap_warp_with_levels(stack, identity_grid(32, 2))
    assert stack.built_levels == (0,)
    assert torch.equal(res.levels, torch.zeros(2, 32, 32))


def test_mipmap_levels_of_a_downscale():
    # Identity grid at 32 on a 128 source: neighbours are (127/128)*4 source pixels apart
    # under the original's (W - 1)(g + 1)/2 scaling.
    levels = mipmap_levels(identity_grid(32), 128)
    torch.testing.assert_close(levels, torch.full((1, 32, 32), math.log2(127 / 32)))
    res = mipmap_warp_with_levels(torch.zeros(1, 1, 128, 128), identity_grid(32))
    torch.testing.assert_close(res.levels_map, levels / 2.5)
    # Clamped to max_num_levels - 1 and raised to min_level.
    assert mipmap_levels(identity_grid(4), 128).max() == 2.5
    assert mipmap_levels(identity_grid(32), 32, min_level=0.5).min() == 0.5


def test_mipmap_builds_only_the_levels_it_reads():
    x = torch.randn(1, 3, 64, 64)
    stack = MipmapStack(x)
    mipmap_warp(stack, identity_grid(16))  # levels ~ 1.98: reads levels 1 and 2
    assert stack.built_levels == (0, 1, 2)
    stack = MipmapStack(x)
    mipmap_warp(stack, identity_grid(32))  # levels ~ 0.98: reads 0 and 1
    assert stack.built_levels == (0, 1)


def test_stack_levels_keep_the_size_and_blur():
    x = torch.randn(2, 3, 96, 96)  # not a power of two: reflect-padded to 128 internally
    stack = MipmapStack(x)
    for k in range(4):
        lvl = stack.level(k)
        assert lvl.shape == x.shape
    assert stack.level(1).std() < 0.8 * x.std() and stack.level(2).std() < stack.level(1).std()
    # Non-square inputs work (each side padded on its own).
    y = torch.randn(1, 1, 40, 64)
    assert MipmapStack(y).level(2).shape == y.shape
    assert mipmap_warp(y, identity_grid(10, 1)).shape == (1, 1, 10, 10)


def test_constant_image_stays_constant():
    x = torch.full((1, 2, 64, 64), 0.3)
    grid = affine_grid(_sim(0.4, 2.5, 0.1, 0.0), 24)
    torch.testing.assert_close(mipmap_warp(x, grid), torch.full((1, 2, 24, 24), 0.3))


def test_mipmap_antialiases_noise():
    # A 4x downscale of white noise: bilinear aliases (variance ~ 1/4), the mipmap blurs first.
    x = torch.randn(4, 1, 128, 128, generator=torch.Generator().manual_seed(1))
    grid = affine_grid(_sim(0.3, 1.0, 0.0, 0.0, n=4), 32)
    plain = warp(x, grid).var()
    aa = warp(x, grid, antialias=True).var()
    assert aa < 0.3 * plain


def test_level_interpolation_is_continuous():
    # The output moves continuously while the level crosses an integer (lerp between levels),
    # although the two levels themselves differ a lot on a noise image.
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    crossing = 64 / 63  # neighbour spacing (63 scale / 32) * ... = 2 source pixels: level 1
    outs, levels = [], []
    for scale in (crossing * (1 - 1e-4), crossing * (1 + 1e-4)):
        res = mipmap_warp_with_levels(x, affine_grid(_sim(0.0, scale, 0.0, 0.0), 32))
        outs.append(res.images)
        levels.append(res.levels[0, 16, 16].item())
    assert levels[0] < 1 < levels[1]
    assert (outs[0] - outs[1]).abs().max() < 1e-2
    stack = MipmapStack(x)
    assert (stack.level(1) - stack.level(0)).abs().max() > 0.5


def test_flip_grid_twice_is_identity_and_mirrors():
    g = torch.randn(2, 5, 7, 2)
    assert torch.equal(flip_grid(flip_grid(g)), g)
    x = torch.randn(2, 3, 16, 16)
    grid = affine_grid(_sim(0.3, 0.8, 0.1, -0.2, n=2), 16)
    for aa in (False, True):
        torch.testing.assert_close(warp(x.flip(3), grid, antialias=aa), warp(x, flip_grid(grid), antialias=aa), atol=1e-5, rtol=0)


def test_resize_grid():
    ident = identity_grid(64, 2)
    # Same size: returned as is. Integer-factor downsampling keeps the identity exact.
    assert resize_grid(ident, 64) is ident
    torch.testing.assert_close(resize_grid(ident, 32), identity_grid(32, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(resize_grid(ident, 16), identity_grid(16, 2), atol=1e-6, rtol=0)
    # Upsampling: the identity away from the outermost pixels (bilinear clamps at the border).
    up = resize_grid(ident, 128)
    torch.testing.assert_close(up[:, 1:-1, 1:-1], identity_grid(128, 2)[:, 1:-1, 1:-1], atol=1e-6, rtol=0)
    assert torch.equal(up[:, 0, 0], ident[:, 0, 0])
    assert resize_grid(ident, (8, 12)).shape == (2, 8, 12, 2)


@settings(max_examples=25, deadline=None)
@given(
    a=st.tuples(st.floats(-0.4, 0.4), st.floats(0.6, 0.8), st.floats(-0.05, 0.05), st.floats(-0.05, 0.05)),
    b=st.tuples(st.floats(-0.4, 0.4), st.floats(0.5, 0.6), st.floats(-0.05, 0.05), st.floats(-0.05, 0.05)),
)
def test_compose_grids_matches_analytic_composition(a, b):
    ma, mb = _sim(*a).double(), _sim(*b).double()
    size = 24
    ga, gb = affine_grid(ma, size), affine_grid(mb, size)
    exact = affine_grid(compose(ma, mb), size)
    torch.testing.assert_close(compose_affine_grid(ma, gb), exact, atol=1e-12, rtol=0)
    # Bilinear sampling of an affine grid is exact where the samples stay inside the pixel centres.
    torch.testing.assert_close(compose_grids(ga, gb), exact, atol=1e-9, rtol=0)


def test_gradients_reach_images_and_grid():
    x = torch.randn(1, 2, 32, 32, requires_grad=True)
    grid = affine_grid(_sim(0.2, 2.0, 0.1, 0.0), 8).requires_grad_(True)
    mipmap_warp(x, grid).square().sum().backward()
    assert x.grad.abs().sum() > 0 and grid.grad.abs().sum() > 0


def test_bad_padding_mode():
    with pytest.raises(ValueError):
        warp(torch.zeros(1, 1, 4, 4), identity_grid(4), padding_mode="zero")
    with pytest.raises(ValueError):
        mipmap_warp(torch.zeros(1, 1, 4, 4), identity_grid(4), padding_mode="wrap")


def test_channels_last_and_double():
    x = torch.randn(2, 3, 32, 32)
    grid = affine_grid(_sim(0.3, 1.7, 0.0, 0.1, n=2), 16)
    ref = mipmap_warp(x, grid)
    torch.testing.assert_close(mipmap_warp(x.to(memory_format=torch.channels_last), grid), ref)
    torch.testing.assert_close(mipmap_warp(x.double(), grid.double()).float(), ref, atol=1e-5, rtol=0)
