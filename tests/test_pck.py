"""PCK-transfer: parity with the official pck_transfer (parity/pck) and properties."""

import pytest
import torch

from gangealing.geometry.points import transfer
from gangealing.losses.flow import total_variation_loss
from gangealing.metrics import (
    PCKAccumulator,
    apply_match,
    bootstrap_std,
    evaluate_pck_transfer,
    match_flows_pick,
    pck_correct,
    pck_thresholds,
)

EXACT = dict(rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def pck_data(parity_dir):
    inputs = torch.load(parity_dir / "pck" / "inputs.pt")
    outputs = torch.load(parity_dir / "pck" / "outputs.pt")
    return inputs, outputs


# ---------------------------------------------------------------- Part A: synthetic arithmetic


def _synthetic_batches(s, with_vis=True, spair=False, batch_size=4):
    h, w = s["image_hw"].tolist()
    n = s["kpsA"].size(0)
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        m = s["kpsA"][sl].size(0)
        batch = {
            "imgsA": torch.zeros(m, 3, h, w),
            "imgsB": torch.zeros(m, 3, h, w),
            "kpsA": s["kpsA"][sl] if with_vis else s["kpsA"][sl, :, :2],
            "kpsB": s["kpsB"][sl] if with_vis else s["kpsB"][sl, :, :2],
        }
        if spair:
            batch.update({k: s[k][sl] for k in ("threshA", "threshB", "scaleA", "scaleB")})
        yield batch


def _stand_in(s, both_ways, batch_size=4):
    """Hands back the stored estimates in call order, cut to the (possibly truncated) batch."""
    answers = []
    for start in range(0, s["kpsA"].size(0), batch_size):
        answers.append(s["estB"][start : start + batch_size])
        if both_ways:
            answers.append(s["estA"][start : start + batch_size])
    it = iter(answers)

    def transfer_fn(src_imgs, dst_imgs, src_points):
        return next(it)[: src_points.size(0)]

    return transfer_fn


CASES = {
    "A_oneway": dict(both_ways=False, num_pairs=6),
    "A_bothways": dict(both_ways=True, num_pairs=6),
    "A_novis_bothways": dict(both_ways=True, num_pairs=6, with_vis=False),
    "A_spair_bothways": dict(both_ways=True, num_pairs=6, spair=True),
    "A_oneway_numpairs5": dict(both_ways=False, num_pairs=5),
}


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_part_a_parity(pck_data, case, legacy):
    inputs, outputs = pck_data
    s = inputs["synthetic"]
    cfg = dict(CASES[case])
    with_vis, spair = cfg.pop("with_vis", True), cfg.pop("spair", False)
    result = evaluate_pck_transfer(
        _synthetic_batches(s, with_vis, spair),
        _stand_in(s, cfg["both_ways"]),
        s["alphas"].tolist(),
        num_pairs=cfg["num_pairs"],
        both_ways=cfg["both_ways"],
        legacy=legacy,
    )
    assert result.pck.dtype == torch.float32
    torch.testing.assert_close(result.pck, outputs["pck"][case], **EXACT)
    assert result.num_pairs == cfg["num_pairs"]


def test_part_a_boundary_is_inclusive(pck_data):
    # Pair 5 point 3 has an error of exactly 8.0 = 0.125 * 64: counted at alpha 0.125 only.
    inputs, outputs = pck_data
    s = inputs["synthetic"]
    err = outputs["helper_not_official"]["errB_norm"]
    assert err[5, 3] == 8.0
    thr = pck_thresholds(s["alphas"], (48, 64))
    c = pck_correct(s["estB"][5:6, 3:4], s["kpsB"][5:6, 3:4, :2], None, thr)
    assert c.tolist() == [[0.0, 0.0, 0.0, 1.0]]


def test_thresholds_match_official_arithmetic(pck_data):
    s = pck_data[0]["synthetic"]
    alpha = s["alphas"].view(1, -1)
    assert torch.equal(pck_thresholds(s["alphas"].tolist(), (48, 64)), alpha * torch.tensor(64))
    spair = pck_thresholds(s["alphas"].tolist(), bbox_scale=s["scaleB"], bbox_thresh=s["threshB"])
    assert torch.equal(spair, alpha * (s["scaleB"] * s["threshB"]).view(-1, 1))


def test_accumulator_sums_batches_and_truncates():
    acc = PCKAccumulator([0.1, 0.2], num_pairs=3)
    acc.update(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([2.0, 2.0]))
    assert acc.remaining == 1 and not acc.done
    acc.update(torch.tensor([[2.0, 2.0], [5.0, 5.0]]), torch.tensor([2.0, 9.0]))  # second pair dropped
    assert acc.done
    res = acc.compute()
    torch.testing.assert_close(res.pck, torch.tensor([3 / 6, 5 / 6]))
    assert res.num_pairs == 3


def test_bootstrap_std():
    g = torch.Generator().manual_seed(0)
    correct = torch.tensor([[3.0], [3.0], [3.0]])
    visible = torch.tensor([3.0, 3.0, 3.0])
    assert bootstrap_std(correct, visible, n=50, generator=g).tolist() == [0.0]  # all pairs alike
    correct = torch.cat([torch.full((50, 1), 10.0), torch.zeros(50, 1)])
    visible = torch.full((100,), 10.0)
    std = bootstrap_std(correct, visible, n=2000, generator=torch.Generator().manual_seed(1))
    # Binomial pair outcomes with p = 0.5: std of the mean of 100 is 0.05.
    assert abs(std.item() - 0.05) < 0.006
    again = bootstrap_std(correct, visible, n=2000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(std, again)


# ---------------------------------------------------------------- match_flows


def test_match_flows_pick_order_and_ties():
    tv_a = torch.tensor([1.0, 5.0, 1.0, 5.0, 2.0])
    tv_b = torch.tensor([1.0, 1.0, 5.0, 5.0, 2.0])
    tv_af = torch.tensor([2.0, 1.0, 2.0, 1.0, 2.0])
    tv_bf = torch.tensor([2.0, 2.0, 1.0, 1.0, 2.0])
    pick = match_flows_pick(tv_a, tv_b, tv_af, tv_bf)
    assert pick.dtype == torch.int64
    assert pick.tolist() == [0, 1, 2, 3, 0]  # last: four-way tie -> no mirroring


def test_pick_from_fixture_preferences(pck_data):
    # A pair's pick follows each image's own mirror preference (TV sums are separable).
    inputs, outputs = pck_data
    c = inputs["stn_case"]
    prefers = c["prefers_mirror"].float()
    ia, ib = c["pair_indices_into_cat_x_xB"]
    # Stand-in TVs: 1 for the preferred orientation, 2 for the other.
    tv = 1 + prefers
    tv_mirror = 2 - prefers
    pick = match_flows_pick(tv[ia], tv[ib], tv_mirror[ia], tv_mirror[ib])
    assert pick.tolist() == outputs["match_flows"]["pick"].view(-1).tolist()


def _stn_case(pck_data):
    inputs, outputs = pck_data
    c, mf = inputs["stn_case"], outputs["match_flows"]
    return c, mf, mf["pick"].view(-1)


def test_apply_match_legacy_parity(pck_data):
    c, mf, pick = _stn_case(pck_data)
    perm = c["permutation"].tolist()
    a, b = c["kpsA"][..., :2], c["kpsB"][..., :2]
    m = apply_match(a, b, pick, 128, perm, legacy=True)
    assert torch.equal(m.points_a, mf["pointsA_out"]) and torch.equal(m.points_b, mf["pointsB_out"])
    assert m.flip_a.tolist() == [False, True, False, True] and m.flip_b.tolist() == [False, False, True, True]
    m = apply_match(a, None, pick, 128, perm, legacy=True)
    assert torch.equal(m.points_a, mf["pointsA_out_without_pointsB"]) and m.points_b is None
    m = apply_match(a, b, pick, 128, None, legacy=True)
    assert torch.equal(m.points_a, mf["pointsA_out_no_permutation"])
    assert torch.equal(m.points_b, mf["pointsB_out_no_permutation"])


def test_apply_match_corrected_permutes_each_mirrored_side(pck_data):
    c, mf, pick = _stn_case(pck_data)
    perm = c["permutation"].tolist()
    m = apply_match(c["kpsA"], c["kpsB"], pick, 128, perm, legacy=False)  # with visibility columns
    # A: as the legacy call without B (permuted where A is mirrored only).
    assert torch.equal(m.points_a[..., :2], mf["pointsA_out_without_pointsB"])
    # B: mirrored where B is mirrored and then permuted.
    for i, flip_b in enumerate(m.flip_b.tolist()):
        expected = mf["pointsB_out_no_permutation"][i]
        expected_vis = c["kpsB"][i, :, 2]
        if flip_b:
            expected, expected_vis = expected[perm], expected_vis[perm]
        assert torch.equal(m.points_b[i, :, :2], expected)
        assert torch.equal(m.points_b[i, :, 2], expected_vis)  # visibility travels with its point


def test_part_b_oneway_pck_from_stored_estimates(pck_data):
    # B_match_perm_oneway needs only the A->B transfer after matching, which is stored.
    inputs, outputs = pck_data
    c, mf, pick = _stn_case(pck_data)
    visible = c["kpsA"][..., 2] * c["kpsB"][..., 2]  # official: before matching, not permuted
    m = apply_match(c["kpsA"][..., :2], c["kpsB"][..., :2], pick, 128, c["permutation"].tolist(), legacy=True)
    acc = PCKAccumulator([0.1, 0.05, 0.01])
    thr = pck_thresholds([0.1, 0.05, 0.01], (128, 128))
    acc.update(pck_correct(mf["est_kpsB_after_match"], m.points_b, visible, thr), visible.sum(1))
    torch.testing.assert_close(acc.compute().pck, outputs["pck"]["B_match_perm_oneway"], **EXACT)


# ---------------------------------------------------------------- Part B end to end (needs the STN)


def _fixture_stn_fns(parity_dir):
    """(transfer_fn, pick_fn) from the fixture STN's warps and the pure geometry of this package."""
    from helpers import parity_stn

    model = parity_stn(parity_dir)

    def transfer_fn(src, dst, points):
        a, b = model(src), model(dst)  # output resolution = flow size, as the official default
        return transfer(points, src.size(-1), matrix_a=a.matrix, flow_a=a.flow, grid_b=b.grid, legacy=True)

    def pick_fn(imgs_a, imgs_b):
        flows = model(torch.cat([imgs_a, imgs_b, imgs_a.flip(3), imgs_b.flip(3)])).flow
        tv_a, tv_b, tv_af, tv_bf = total_variation_loss(flows, reduce_batch=False).chunk(4)
        return match_flows_pick(tv_a, tv_b, tv_af, tv_bf)

    return transfer_fn, pick_fn


@pytest.mark.parametrize(
    "case,match,perm,both",
    [
        ("B_match_perm_bothways", True, True, True),
        ("B_match_perm_oneway", True, True, False),
        ("B_match_noperm_bothways", True, False, True),
        ("B_nomatch_bothways", False, False, True),
    ],
)
def test_part_b_parity(parity_dir, pck_data, case, match, perm, both):
    transfer_fn, pick_fn = _fixture_stn_fns(parity_dir)
    inputs, outputs = pck_data
    c = inputs["stn_case"]
    stn_inputs = torch.load(parity_dir / "stn" / "inputs.pt")
    images = torch.cat([stn_inputs["x"], stn_inputs["xB"]])
    ia, ib = c["pair_indices_into_cat_x_xB"]
    batch = {"imgsA": images[ia], "imgsB": images[ib], "kpsA": c["kpsA"], "kpsB": c["kpsB"]}
    result = evaluate_pck_transfer(
        [batch], transfer_fn, [0.1, 0.05, 0.01], num_pairs=4, both_ways=both,
        pick_fn=pick_fn if match else None, permutation=c["permutation"].tolist() if perm else None, legacy=True,
    )
    torch.testing.assert_close(result.pck, outputs["pck"][case], **EXACT)
