import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gangealing.geometry.coords import identity_grid
from gangealing.geometry.similarity import (
    affine_grid,
    apply_to_points,
    compose,
    identity,
    invert,
    similarity_from_params,
    similarity_matrix,
    to_homogeneous,
)

params = st.tuples(
    st.floats(-3.0, 3.0), st.floats(-1.0, 1.0), st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)
)


def _matrix(p, dtype=torch.float64):
    r, s, tx, ty = (torch.tensor([v], dtype=dtype) for v in p)
    return similarity_from_params(r, s, tx, ty)  # (1, 2, 3)


def test_zero_params_give_the_exact_identity():
    z = torch.zeros(5)
    m = similarity_from_params(z, z, z, z)
    assert m.shape == (5, 2, 3)
    assert torch.equal(m, identity(5))


def test_matrix_layout():
    m = similarity_matrix(torch.tensor(math.pi / 2), torch.tensor(2.0), torch.tensor(0.3), torch.tensor(-0.1))
    expected = torch.tensor([[0.0, -2.0, 0.3], [2.0, 0.0, -0.1]])
    torch.testing.assert_close(m, expected, atol=1e-6, rtol=0)
    # Raw parameters: angle = pi tanh(r), scale = exp(s).
    r, s = torch.tensor(0.4), torch.tensor(-0.2)
    torch.testing.assert_close(
        similarity_from_params(r, s, torch.tensor(0.0), torch.tensor(0.0)),
        similarity_matrix(math.pi * torch.tanh(r), torch.exp(s), torch.tensor(0.0), torch.tensor(0.0)),
    )


def test_batched_leading_dims():
    r = torch.randn(3, 4)
    m = similarity_from_params(r, r, r, r)
    assert m.shape == (3, 4, 2, 3)
    assert to_homogeneous(m).shape == (3, 4, 3, 3)
    assert torch.equal(to_homogeneous(m)[..., 2, :], torch.tensor([0.0, 0.0, 1.0]).expand(3, 4, 3))


@settings(max_examples=50, deadline=None)
@given(p=params)
def test_compose_with_inverse_is_identity(p):
    m = _matrix(p)
    eye = identity(1, dtype=torch.float64)
    torch.testing.assert_close(compose(m, invert(m)), eye, atol=1e-10, rtol=0)
    torch.testing.assert_close(compose(invert(m), m), eye, atol=1e-10, rtol=0)


@settings(max_examples=50, deadline=None)
@given(a=params, b=params)
def test_compose_is_function_composition_on_points(a, b):
    ma, mb = _matrix(a), _matrix(b)
    pts = torch.rand(1, 7, 2, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(apply_to_points(compose(ma, mb), pts), apply_to_points(ma, apply_to_points(mb, pts)))


def test_affine_grid_of_identity_is_identity_grid():
    assert torch.equal(affine_grid(identity(2), 8), identity_grid(8, 2))
    assert affine_grid(identity(1), (4, 6)).shape == (1, 4, 6, 2)


def test_warp_by_a_then_b_equals_warp_by_compose():
    # On a linear image bilinear sampling is exact (away from the borders), so two successive
    # warps must equal one warp by compose(a, b) -- this pins down the composition order.
    size = 32
    g = identity_grid(size)  # (1, S, S, 2)
    img = (0.7 * g[..., 0] - 0.4 * g[..., 1]).unsqueeze(1).double()  # (1, 1, S, S)
    a = similarity_matrix(torch.tensor([0.2]), torch.tensor([0.7]), torch.tensor([0.05]), torch.tensor([-0.03])).double()
    b = similarity_matrix(torch.tensor([-0.3]), torch.tensor([0.8]), torch.tensor([-0.04]), torch.tensor([0.02])).double()

    def warp(x, m):
        return F.grid_sample(x, affine_grid(m, size), align_corners=False)

    # Compare where no sample of either route reaches the clamped border: the central half.
    c = slice(size // 4, 3 * size // 4)
    twice = warp(warp(img, a), b)[..., c, c]
    once = warp(img, compose(a, b))[..., c, c]
    torch.testing.assert_close(twice, once, atol=1e-6, rtol=0)
    # ...and the other order is a different warp.
    assert (warp(img, compose(b, a))[..., c, c] - once).abs().max() > 1e-3


def test_inverse_warp_direction():
    # A positive tx samples further right: the content moves left.
    m = similarity_matrix(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.0]))
    out = apply_to_points(m, torch.zeros(1, 1, 2))
    torch.testing.assert_close(out, torch.tensor([[[0.5, 0.0]]]))


def test_gradcheck_params():
    inputs = tuple(torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(4))
    assert torch.autograd.gradcheck(similarity_from_params, inputs)
    m = _matrix((0.3, 0.2, 0.1, -0.1)).requires_grad_(True)
    assert torch.autograd.gradcheck(invert, (m,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_inputs(dtype):
    z = torch.zeros(2, dtype=dtype)
    m = similarity_from_params(z, z, z, z)
    assert m.dtype == dtype and invert(m).dtype == dtype and affine_grid(m, 4).dtype == dtype
