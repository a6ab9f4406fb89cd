"""Key-point congeal / uncongeal / transfer: parity with the original on stored intermediates,
and geometric properties."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gangealing.geometry.coords import apply_affine, hflip_points, identity_grid, norm_to_pixel, pixel_to_norm
from gangealing.geometry.points import (
    compose_similarity_flow,
    congeal,
    hflip_points_where,
    nearest_grid_index,
    permute_keypoints,
    transfer,
    uncongeal,
    uncongeal_norm,
    uncongeal_similarity,
)
from helpers import parity_stn

PX_TOL = dict(rtol=0, atol=1e-3)  # key points: 1e-3 px


@pytest.fixture(scope="module")
def stn_data(parity_dir):
    stn = parity_dir / "stn"
    inputs = torch.load(stn / "inputs.pt")
    fwd = torch.load(stn / "outputs_forward.pt")
    points = torch.load(stn / "outputs_aa_points_losses.pt")["points"]
    return inputs, fwd, points


# ---------------------------------------------------------------- parity on stored intermediates


def test_stored_grid_is_similarity_composed_with_flow(stn_data):
    # Justifies rebuilding the 64x64 grid of x from the stored matrix and flow below.
    inputs, fwd, _ = stn_data
    f = fwd["fwd"]
    assert torch.equal(identity_grid(64), inputs["identity_flow"])
    grid64 = compose_similarity_flow(f["sim_matrix"], f["flow"])  # (4, 64, 64, 2)
    grid128 = F.interpolate(grid64.permute(0, 3, 1, 2), scale_factor=2, mode="bilinear").permute(0, 2, 3, 1)
    torch.testing.assert_close(grid128, f["grid"], rtol=0, atol=1e-6)
    torch.testing.assert_close(
        compose_similarity_flow(f["sim_matrix"], torch.zeros_like(f["flow"])), f["sim_grid"], rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("legacy", [True, False])
def test_congeal_parity(stn_data, legacy):
    inputs, fwd, points = stn_data
    f = fwd["fwd"]
    out = congeal(inputs["pointsA"], 128, f["sim_matrix"], f["flow"], legacy=legacy)
    assert out.dtype == torch.float32 and out.shape == (4, 8, 2)
    assert torch.equal(out.long(), points["congeal"])
    assert torch.equal(out, out.round())


def test_congeal_iters3_parity(stn_data):
    inputs, fwd, points = stn_data
    it = fwd["iters3"]
    out = congeal(inputs["pointsA"], 128, it["sim_matrices_per_iter"][-1], it["flow"], legacy=True)
    assert torch.equal(out.long(), points["congeal_iters3"])


def test_transfer_self_parity(stn_data):
    # transfer x -> x: congeal, then uncongeal through x's own 64x64 grid with the mixed factor.
    inputs, fwd, points = stn_data
    f = fwd["fwd"]
    grid64 = compose_similarity_flow(f["sim_matrix"], f["flow"])
    via_uncongeal = uncongeal(points["congeal"], grid64, 128, legacy=True)
    torch.testing.assert_close(via_uncongeal, points["transfer_self"], **PX_TOL)
    via_transfer = transfer(
        inputs["pointsA"], 128, matrix_a=f["sim_matrix"], flow_a=f["flow"], grid_b=grid64, legacy=True
    )
    torch.testing.assert_close(via_transfer, points["transfer_self"], **PX_TOL)


def test_transfer_self_pixel_centre_shift_is_bounded(stn_data):
    # legacy=False reads congealed pixels without the (S-1)/S mixing: documented shift of at most
    # (S - F) / (2 S) = 0.25 congealed px, times the grid's local scale (<= ~2 input px per px).
    _, fwd, points = stn_data
    f = fwd["fwd"]
    grid64 = compose_similarity_flow(f["sim_matrix"], f["flow"])
    new = uncongeal(points["congeal"], grid64, 128, legacy=False)
    diff = (new - points["transfer_self"]).norm(dim=-1)
    assert 0.01 < diff.max() < 0.25 * 2 * 1.5
    # The exact relation: legacy == pixel-centre at points pushed out from the centre by 127/126.
    c = 31.5
    moved = c + 127 / 126 * (points["congeal"].float() - c)
    torch.testing.assert_close(uncongeal(moved, grid64, 128, legacy=False), points["transfer_self"], **PX_TOL)


@pytest.mark.parametrize("legacy", [True, False])
def test_sim_only_congeal_parity(stn_data, legacy):
    inputs, fwd, points = stn_data
    out = congeal(inputs["pointsA"], 128, fwd["fwd"]["sim_matrix"], legacy=legacy)
    torch.testing.assert_close(out, points["sim_only_congeal"], **PX_TOL)


def test_sim_only_uncongeal_of_x_round_trips(stn_data):
    # Only x's matrix is stored; uncongealing x's own congealed points must give pointsA back.
    inputs, fwd, points = stn_data
    m = fwd["fwd"]["sim_matrix"]
    back = uncongeal_similarity(points["sim_only_congeal"], m, 128, legacy=True)
    torch.testing.assert_close(back, inputs["pointsA"], **PX_TOL)
    grid128 = F.affine_grid(m, [4, 1, 128, 128], align_corners=False)
    inside = ((points["sim_only_congeal"] >= 0) & (points["sim_only_congeal"] <= 127)).all(-1)
    via_grid = uncongeal(points["sim_only_congeal"], grid128, 128)
    torch.testing.assert_close(via_grid[inside], inputs["pointsA"][inside], **PX_TOL)


# ------------------------------------- parity on xB (needs the transformer network for xB's warp)


def fixture_stn(parity_dir):
    return parity_stn(parity_dir)


def _stn_warps(parity_dir, images, output_resolution=None, iters=1):
    """(sim matrix (N,2,3), residual flow (N,64,64,2), full grid) of the fixture STN on images."""
    with torch.no_grad():
        res = fixture_stn(parity_dir)(images, output_resolution=output_resolution, iters=iters)
    return res.matrix, res.flow, res.grid


def test_uncongeal_parity_on_xb(parity_dir, stn_data):
    inputs, _, points = stn_data
    xb = inputs["xB"]
    _, _, grid64 = _stn_warps(parity_dir, xb)
    _, _, grid128 = _stn_warps(parity_dir, xb, output_resolution=128)
    torch.testing.assert_close(uncongeal(inputs["congealed_pts_px"], grid64, 128, legacy=True), points["uncongeal_px"], **PX_TOL)
    torch.testing.assert_close(uncongeal(points["congeal"], grid64, 128, legacy=True), points["uncongeal_of_congeal"], **PX_TOL)
    torch.testing.assert_close(points["transfer"], points["uncongeal_of_congeal"], rtol=0, atol=0)
    torch.testing.assert_close(uncongeal_norm(inputs["congealed_pts_norm"], grid64, 128, legacy=True), points["uncongeal_norm"], **PX_TOL)
    torch.testing.assert_close(
        uncongeal_norm(inputs["congealed_pts_norm"], grid128, 128, legacy=True), points["uncongeal_norm_outres128"], **PX_TOL
    )
    torch.testing.assert_close(
        uncongeal(points["congeal"], grid128, 128, congealed_size=64, legacy=True), points["transfer_outres128"], **PX_TOL
    )
    fwd3 = stn_data[1]["iters3"]
    _, _, grid64_iters3 = _stn_warps(parity_dir, xb, iters=3)
    torch.testing.assert_close(
        transfer(inputs["pointsA"], 128, matrix_a=fwd3["sim_matrices_per_iter"][-1], flow_a=fwd3["flow"],
                 grid_b=grid64_iters3, legacy=True),
        points["transfer_iters3"],
        **PX_TOL,
    )
    matrix_b, _, _ = _stn_warps(parity_dir, xb)
    torch.testing.assert_close(
        uncongeal_similarity(points["sim_only_congeal"], matrix_b, 128, legacy=True), points["sim_only_uncongeal"], **PX_TOL
    )
    torch.testing.assert_close(
        transfer(inputs["pointsA"], 128, matrix_a=stn_data[1]["fwd"]["sim_matrix"], matrix_b=matrix_b, legacy=True),
        points["sim_only_transfer"],
        **PX_TOL,
    )


# ---------------------------------------------------------------- properties


def _similarity(angle, scale, tx, ty, dtype=torch.float64):
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return torch.tensor([[[c, -s, tx], [s, c, ty]]], dtype=dtype)


similarities = st.tuples(
    st.floats(-math.pi, math.pi), st.floats(0.5, 1.5), st.floats(-0.3, 0.3), st.floats(-0.3, 0.3)
)


@settings(max_examples=40, deadline=None)
@given(params=similarities, size=st.integers(16, 128), seed=st.integers(0, 2**16))
def test_congeal_uncongeal_round_trip_pure_similarity(params, size, seed):
    m = _similarity(*params)
    g = torch.Generator().manual_seed(seed)
    # Congealed points inside the frame (so the grid needs no border clamping); their sources:
    q = torch.rand(1, 6, 2, generator=g, dtype=torch.float64) * (size - 1)
    p = norm_to_pixel(apply_affine(pixel_to_norm(q, size), m), size)
    congealed = congeal(p, size, m)
    torch.testing.assert_close(congealed, q, rtol=0, atol=1e-4)
    grid = F.affine_grid(m, [1, 1, size, size], align_corners=False)
    torch.testing.assert_close(uncongeal(congealed, grid, size), p, rtol=0, atol=1e-4)
    torch.testing.assert_close(uncongeal_similarity(congealed, m, size), p, rtol=0, atol=1e-4)
    torch.testing.assert_close(transfer(p, size, matrix_a=m, grid_b=grid), p, rtol=0, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(params=similarities, seed=st.integers(0, 2**16))
def test_legacy_round_trip_is_off_by_the_documented_factor(params, seed):
    # Congealed frame F=32 inside an image of S=64: legacy uncongeal scales offsets by k.
    s, f = 64, 32
    m = _similarity(*params)
    g = torch.Generator().manual_seed(seed)
    q = 4 + torch.rand(1, 5, 2, generator=g, dtype=torch.float64) * (f - 9)
    grid = F.affine_grid(m, [1, 1, f, f], align_corners=False)
    k, c = f * (s - 1) / ((f - 1) * s), (f - 1) / 2
    torch.testing.assert_close(uncongeal(q, grid, s, legacy=True), uncongeal(c + k * (q - c), grid, s), rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(params=similarities, seed=st.integers(0, 2**16))
def test_point_moves_like_a_warped_one_hot_image(params, seed):
    # Put a one-hot at a source pixel, warp it with the similarity's grid, and locate where it
    # lands: the centroid of its bilinear footprint. The warp is rendered 8x finer than the
    # congealed frame so that the footprint spans many output samples and its centroid is exact
    # to ~1e-3 px (linear precision of the sampled tent).
    size, fine = 32, 256
    m = _similarity(*params, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(1, 1, 2, generator=g) * (size - 12) + 6
    src = norm_to_pixel(apply_affine(pixel_to_norm(q, size), m), size).round()
    if (src < 1).any() or (src > size - 2).any():
        return
    img = torch.zeros(1, 1, size, size)
    img[0, 0, int(src[0, 0, 1]), int(src[0, 0, 0])] = 1
    out = F.grid_sample(img, F.affine_grid(m, [1, 1, fine, fine], align_corners=False), padding_mode="zeros",
                        align_corners=False)[0, 0]  # (fine, fine)
    centroid_norm = (out.unsqueeze(-1) * identity_grid(fine)[0]).sum(dim=(0, 1)) / out.sum()  # (2,)
    centroid = norm_to_pixel(centroid_norm.view(1, 1, 2), size)[0, 0]  # in the congealed frame's pixels
    torch.testing.assert_close(congeal(src, size, m)[0, 0], centroid, rtol=0, atol=0.01)
    # The flow-only path (nearest sample of the congealed-frame grid) picks a pixel next to it.
    grid = F.affine_grid(m, [1, 1, size, size], align_corners=False)
    flow_only = congeal(src, size, None, grid - identity_grid(size))[0, 0]
    assert (flow_only - centroid).abs().max() <= 1.0


def test_nearest_grid_index_first_minimum_and_xy_order():
    grid = identity_grid((3, 4))  # (1, 3, 4, 2)
    pts = pixel_to_norm(torch.tensor([[[2.0, 1.0], [3.0, 0.0], [0.5, 0.0]]]), (3, 4))
    idx = nearest_grid_index(pts, grid)
    assert idx.dtype == torch.int64
    assert idx.tolist() == [[[2, 1], [3, 0], [0, 0]]]  # (x, y); exact tie at x=0.5 -> first (x=0)


def test_congeal_identity_flow_returns_rounded_points():
    pts = torch.tensor([[[3.2, 7.9], [0.0, 15.0], [-5.0, 40.0]]])
    out = congeal(pts, 16, None, torch.zeros(1, 16, 16, 2))
    assert out.tolist() == [[[3.0, 8.0], [0.0, 15.0], [0.0, 15.0]]]  # outside -> clamped to the border


def test_congeal_without_warp_is_identity():
    pts = torch.rand(2, 3, 2)
    torch.testing.assert_close(congeal(pts, 10), pts)


def test_flow_congeal_then_uncongeal_is_within_half_a_congealed_pixel():
    g = torch.Generator().manual_seed(1)
    m = _similarity(0.3, 0.9, 0.05, -0.02, dtype=torch.float32).expand(2, 2, 3)
    flow = 0.01 * torch.randn(2, 2, 4, 4, generator=g)
    flow = F.interpolate(flow, size=(32, 32), mode="bilinear").permute(0, 2, 3, 1)  # smooth (2, 32, 32, 2)
    grid32 = compose_similarity_flow(m, flow)
    grid64 = F.interpolate(grid32.permute(0, 3, 1, 2), size=(64, 64), mode="bilinear").permute(0, 2, 3, 1)
    pts = 16 + torch.rand(2, 5, 2, generator=g) * 32  # in a 64-pixel image
    back = transfer(pts, 64, matrix_a=m, flow_a=flow, grid_b=grid64)
    # One congealed pixel spans 2 * 0.9 input pixels; the quantisation error is at most half a diagonal.
    assert (back - pts).norm(dim=-1).max() <= 0.5 * math.sqrt(2) * 2 * 0.9 * 1.1


# ---------------------------------------------------------------- mirroring helpers


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), width=st.integers(2, 300))
def test_flip_and_permutation_twice_is_identity(seed, width):
    g = torch.Generator().manual_seed(seed)
    pts = torch.rand(3, 6, 3, generator=g, dtype=torch.float64) * width
    mask = torch.rand(3, generator=g) > 0.5
    perm = [1, 0, 3, 2, 4, 5]  # left/right swaps: an involution
    once = permute_keypoints(hflip_points_where(pts, width, mask), perm, mask)
    twice = permute_keypoints(hflip_points_where(once, width, mask), perm, mask)
    torch.testing.assert_close(twice, pts)
    torch.testing.assert_close(hflip_points(hflip_points(pts, width), width), pts)


def test_masked_helpers_touch_only_masked_images_and_x():
    pts = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(2, 3, 3)
    mask = torch.tensor([False, True])
    flipped = hflip_points_where(pts, 10, mask)
    assert torch.equal(flipped[0], pts[0])
    assert torch.equal(flipped[1, :, 0], 9 - pts[1, :, 0]) and torch.equal(flipped[1, :, 1:], pts[1, :, 1:])
    permuted = permute_keypoints(pts, torch.tensor([2, 0, 1]), mask)
    assert torch.equal(permuted[0], pts[0]) and torch.equal(permuted[1], pts[1, [2, 0, 1]])
    assert torch.equal(permute_keypoints(pts, [2, 0, 1]), pts[:, [2, 0, 1]])
