"""The Congealer predictor on tiny models whose outputs are known exactly (identity-initialised STNs)."""
import sys
import types

import pytest
import torch

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import CheckpointError
from gangealing.config import STNConfig
from gangealing.geometry.similarity import affine_grid
from gangealing.geometry.warp import warp
from gangealing.models.classifier import classifier_config_for
from gangealing.predictor import Congealer, InputFrame


def tiny_stn(flow_size=16, input_size=16, heads=1, seed=0, flow_noise=0.0):
    torch.manual_seed(seed)
    stn = build("stn", STNConfig(flow_size=flow_size, input_size=input_size, channel_multiplier=0.125,
                                 max_channels=8, num_heads=heads))
    if flow_noise:
        with torch.no_grad():
            stn.flow_net.warp_head.flow_out[-1].weight.normal_(0, flow_noise)
    return stn


def images(n, h, w, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


# -- input frame ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(16, 16), (40, 60), (50, 30), (7, 16), (64, 64)])
def test_input_frame_round_trips(hw):
    fr = InputFrame.for_image(*hw, 16)
    pts = torch.tensor([[0.0, 0.0], [hw[1] - 1.0, hw[0] - 1.0], [3.3, 2.7]])
    torch.testing.assert_close(fr.to_original(fr.to_input(pts)), pts, atol=1e-5, rtol=0)
    grid = torch.rand(2, 5, 5, 2) * 2 - 1
    torch.testing.assert_close(fr.grid_to_input(fr.grid_to_original(grid)), grid, atol=1e-5, rtol=0)
    m = torch.tensor([[[0.8, -0.2, 0.1], [0.2, 0.8, -0.3]]])
    torch.testing.assert_close(affine_grid(fr.matrix_to_original(m), 6), fr.grid_to_original(affine_grid(m, 6)),
                               atol=1e-5, rtol=0)


def test_input_frame_pixel_map_matches_normalised_map():
    # A pixel centre of the original maps to the same place through pixels and through normalised coords.
    fr = InputFrame.for_image(40, 60, 16)
    px = torch.tensor([[[12.0, 30.0]]])
    via_px = fr.to_input(px)
    norm_orig = (2 * px + 1) / torch.tensor([60.0, 40.0]) - 1
    norm_in = fr.grid_to_input(norm_orig.view(1, 1, 1, 2)).view(1, 1, 2)
    torch.testing.assert_close(((norm_in + 1) * 16 - 1) / 2, via_px, atol=1e-5, rtol=0)


# -- align ---------------------------------------------------------------------------------------


def test_align_square_input_is_the_transformers_output():
    stn = tiny_stn(flow_noise=0.3)
    c = Congealer(stn, device="cpu", flip=False)
    x = images(3, 16, 16)
    res = c.align(x, output_resolution=24)
    ref = stn(x, output_resolution=24)
    torch.testing.assert_close(res.images, ref.images)
    torch.testing.assert_close(res.grid, ref.grid)
    assert res.images.shape == (3, 3, 24, 24) and res.grid.shape == (3, 24, 24, 2)
    assert res.flow.shape == (3, 16, 16, 2) and res.matrix.shape == (3, 2, 3)
    assert res.flipped.dtype == torch.bool and not res.flipped.any() and res.cluster is None


def test_identity_model_grid_maps_into_the_original_non_square_image():
    c = Congealer(tiny_stn(), device="cpu")
    x = images(2, 16, 32)  # wide: letterboxed to 8 x 16 rows 4..11 of the 16 x 16 input
    res = c.align(x, output_resolution=32)  # 32 output px span the 32-px padded square: scale 1
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    want_px = torch.stack([j, i - 8], dim=-1)  # output (row i, col j) <- original pixel (x=j, y=i-8)
    got_px = ((res.grid + 1) * torch.tensor([32.0, 16.0]) - 1) / 2
    inner = (slice(None), slice(1, -1), slice(1, -1))  # an upsampled grid clamps at its outer ring
    torch.testing.assert_close(got_px[inner], want_px.expand(2, 32, 32, 2)[inner], atol=1e-4, rtol=0)
    # The congealed image is the original where the grid lands inside it.
    torch.testing.assert_close(res.images[:, :, 9:23, 1:-1], x[:, :, 1:15, 1:-1], atol=1e-4, rtol=0)


def test_flip_inference_grid_addresses_the_unmirrored_input():
    stn = tiny_stn(flow_noise=0.5)
    c = Congealer(stn, device="cpu", flip=True)
    x = images(6, 16, 16, seed=3)
    res = c.align(x, output_resolution=16)
    no_flip = Congealer(stn, device="cpu", flip=False)
    assert res.flipped.any() and not res.flipped.all(), "test model should flip some images"
    torch.testing.assert_close(warp(x, res.grid, antialias=True), res.images, atol=1e-5, rtol=0)
    s_flip, s_plain = c.flow_scores(x), no_flip.flow_scores(x)
    assert (s_flip >= s_plain - 1e-7).all()
    torch.testing.assert_close(s_flip[~res.flipped], s_plain[~res.flipped])
    mirrored = no_flip.flow_scores(x.flip(3))
    torch.testing.assert_close(s_flip[res.flipped], mirrored[res.flipped])


def test_flow_scores_are_minus_total_variation():
    from gangealing.losses.flow import total_variation_loss

    stn = tiny_stn(flow_noise=0.5)
    c = Congealer(stn, device="cpu", flip=False)
    x = images(4, 16, 16)
    torch.testing.assert_close(c.flow_scores(x), -total_variation_loss(stn(x).flow, reduce_batch=False))
    assert c.flow_scores(x).shape == (4,)


def test_average_over_batches():
    c = Congealer(tiny_stn(flow_noise=0.2), device="cpu", flip=False)
    x = images(5, 16, 16)
    avg = c.average(x, output_resolution=8)
    assert avg.shape == (3, 8, 8)
    torch.testing.assert_close(avg, c.align(x, output_resolution=8).images.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(c.average([x[:2], x[2:]], output_resolution=8), avg, atol=1e-6, rtol=0)


# -- clustering models ---------------------------------------------------------------------------


def clustered(classifier_target=None):
    stn = tiny_stn(heads=2, flow_noise=0.3)
    clf = None
    if classifier_target is not None:
        clf = build("classifier", classifier_config_for(stn.cfg, flips=True))
        with torch.no_grad():  # constant logits: always the target class (k + K = cluster k, mirrored)
            clf.to_logits.weight.zero_()
            clf.to_logits.bias.zero_()
            clf.to_logits.bias[classifier_target] = 5.0
    return stn, clf


def test_clustered_model_routes_through_its_classifier():
    stn, clf = clustered(classifier_target=3)  # K = 2: class 3 = cluster 1, mirrored
    c = Congealer(stn, clf, device="cpu")
    x = images(3, 16, 16)
    res = c.align(x, output_resolution=16)
    assert res.cluster.tolist() == [1, 1, 1] and res.flipped.all()
    ref = stn(x.flip(3), heads=torch.ones(3, dtype=torch.long), output_resolution=16)
    torch.testing.assert_close(res.images, ref.images)
    torch.testing.assert_close(warp(x, res.grid, antialias=True), res.images, atol=1e-5, rtol=0)
    assert c.average(x, output_resolution=16).shape == (2, 3, 16, 16)
    torch.testing.assert_close(c.average(x, output_resolution=16, cluster=1), res.images.mean(0), atol=1e-6, rtol=0)


def test_clustered_checkpoint_without_classifier_fails_clearly():
    stn, _ = clustered()
    c = Congealer.from_checkpoint(make_checkpoint("model", {"stn": stn}), device="cpu")
    with pytest.raises(CheckpointError, match="no cluster classifier"):
        c.align(images(1, 16, 16))
    with pytest.raises(CheckpointError, match="classifier"):
        c.flow_scores(images(1, 16, 16))
    res = c.align(images(2, 16, 16), cluster=0)  # an explicit cluster needs no classifier
    assert res.cluster.tolist() == [0, 0]


def test_cluster_out_of_range_is_refused():
    stn, clf = clustered()
    c = Congealer(stn, clf, device="cpu")
    for bad in (2, -1, torch.tensor([0, 5])):
        with pytest.raises(ValueError, match="this model has 2 clusters"):
            c.align(images(2, 16, 16), cluster=bad)


def test_with_input_size_rebuilds_transformer_and_classifier_with_the_same_weights():
    stn, clf = clustered(classifier_target=3)
    c = Congealer(stn, clf, device="cpu")
    big = c.with_input_size(32)
    assert big.input_size == 32 and big.classifier.cfg.input_size == 32 and c.input_size == 16
    for a, b in ((c.stn, big.stn), (c.classifier, big.classifier)):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    x = images(2, 32, 32)  # fed directly: the downsampler goes 32 -> 16 in one tent filter
    res = big.align(x, output_resolution=16)
    assert res.cluster.tolist() == [1, 1] and res.frame.is_identity
    ref = stn(x.flip(3), heads=torch.ones(2, dtype=torch.long), output_resolution=16)
    torch.testing.assert_close(res.images, ref.images)
    assert c.with_input_size(16) is c


def test_with_settings_shares_the_modules_and_leaves_the_predictor_as_it_was():
    torch.manual_seed(0)
    stn = tiny_stn(flow_noise=0.5)
    with torch.no_grad():  # a similarity that is not the identity, so a second pass changes the result
        for p in stn.similarity.parameters():
            p.add_(0.05 * torch.randn_like(p))
    c = Congealer(stn, device="cpu", iters=1, padding_mode="border")
    two = c.with_settings(iters=2, padding_mode="zeros")
    assert two.stn is c.stn and (two.iters, two.padding_mode, two.flip) == (2, "zeros", c.flip)
    assert (c.iters, c.padding_mode) == (1, "border")
    x = images(2, 16, 16)
    assert not torch.allclose(two.align(x).images, c.align(x).images)
    torch.testing.assert_close(c.with_settings().align(x).images, c.align(x).images)


# -- key points ----------------------------------------------------------------------------------


def test_transfer_points_between_sizes_and_back():
    c = Congealer(tiny_stn(), device="cpu")  # identity, flow_size == input_size: exact on pixel centres
    a, b = images(1, 16, 16), images(1, 32, 32, seed=2)
    pts = torch.tensor([[[3.0, 5.0], [10.0, 0.0], [15.0, 15.0]]])
    to_b = c.transfer_points(a, b, pts)
    torch.testing.assert_close(to_b, (pts + 0.5) * 2 - 0.5, atol=1e-4, rtol=0)
    torch.testing.assert_close(c.transfer_points(b, a, to_b), pts, atol=1e-4, rtol=0)
    cong = c.congeal_points(a, pts)
    torch.testing.assert_close(c.uncongeal_points(a, cong), pts, atol=1e-4, rtol=0)


def test_transfer_points_relabels_where_exactly_one_image_is_mirrored():
    c = Congealer(tiny_stn(flow_noise=0.5), device="cpu", flip=True)
    x = images(6, 16, 16, seed=3)
    flipped = c.align(x).flipped
    a = x[flipped][:1]  # aligned through its mirror
    b = a.flip(3)  # its mirror is aligned as it is, onto the same congealed image
    assert c.align(b).flipped.tolist() == [False]
    pts = torch.tensor([[[4.0, 6.0], [11.0, 6.0], [7.0, 12.0]]])
    plain = c.transfer_points(a, b, pts)
    mirrored = torch.stack([15 - pts[..., 0], pts[..., 1]], dim=-1)
    assert (plain - mirrored).abs().max() < 1.0  # the mirror position (up to congealed-grid rounding)
    relabelled = c.transfer_points(a, b, pts, permutation=[1, 0, 2])
    torch.testing.assert_close(relabelled, plain[:, [1, 0, 2]])
    # Both mirrored (A to itself): no relabelling.
    torch.testing.assert_close(c.transfer_points(a, a, pts, permutation=[1, 0, 2]), c.transfer_points(a, a, pts))


def test_clustered_transfer_through_mirrors_round_trips():
    stn, clf = clustered(classifier_target=2)  # cluster 0, mirrored, for every image
    with torch.no_grad():
        stn.flow_net.warp_head.flow_out[-1].weight.zero_()  # identity warps
    c = Congealer(stn, clf, device="cpu")
    a = images(1, 16, 16)
    pts = torch.tensor([[[4.0, 6.0], [11.0, 6.0]]])
    torch.testing.assert_close(c.transfer_points(a, a, pts, permutation=[1, 0]), pts, atol=1e-4, rtol=0)
    cong = c.congeal_points(a, pts)  # in the mirrored congealed frame
    torch.testing.assert_close(cong, torch.stack([15 - pts[..., 0], pts[..., 1]], dim=-1), atol=1e-4, rtol=0)


# -- construction --------------------------------------------------------------------------------


def test_from_checkpoint_applies_test_settings_unless_overridden(tmp_path):
    from gangealing.checkpoint import save_checkpoint

    stn = tiny_stn()
    path = save_checkpoint(make_checkpoint("model", {"stn": stn}, meta={"test": {"iters": 2, "padding_mode": "reflection"}}),
                           tmp_path / "m.pt")
    c = Congealer.from_checkpoint(path, device="cpu")
    assert (c.iters, c.padding_mode, c.flip) == (2, "reflection", True)
    c = Congealer.from_checkpoint(str(path), device="cpu", iters=1, padding_mode="zeros", flip=False, output_resolution=8)
    assert (c.iters, c.padding_mode, c.flip, c.resolution()) == (1, "zeros", False, 8)
    assert c.device == torch.device("cpu") and next(c.stn.parameters()).device.type == "cpu"
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        Congealer.from_checkpoint(tmp_path / "missing.pt")


def test_propagate_delegates_to_edit_module(monkeypatch):
    calls = []
    fake = types.ModuleType("gangealing.edit")
    fake.propagate = lambda congealer, imgs, edit, **kw: calls.append((congealer, imgs, edit, kw)) or "done"
    monkeypatch.setitem(sys.modules, "gangealing.edit", fake)
    c = Congealer(tiny_stn(), device="cpu")
    x = images(1, 16, 16)
    assert c.propagate(x, "EDIT", sigma=0.5) == "done"
    assert calls[0][0] is c and calls[0][2] == "EDIT" and calls[0][3] == {"sigma": 0.5}


def test_docs_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "predictor.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scope = {}
    exec(compile(code, "docs/predictor.md", "exec"), scope)
    assert scope["res"].grid.shape == (4, 64, 64, 2) and scope["avg"].shape == (3, 64, 64)
    torch.testing.assert_close(scope["again"], scope["res"].images, atol=1e-4, rtol=0)
