"""Pieces of the GANgealing objective: per-sample targets, the loss, min-assignment with flips, labels."""
import pytest
import torch

from gangealing.build import build
from gangealing.config import GeneratorConfig, STNConfig, TargetConfig
from gangealing.losses.flow import flow_identity_loss, total_variation_loss
from gangealing.losses.perceptual import PixelDistance
from gangealing.models.stn import AlignResult
from gangealing.train.objective import (align_pairs, assign_clusters, classifier_accuracy, classifier_batch,
                                        congealing_step, gangealing_loss, make_resize, sample_pairs,
                                        select_assigned)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    g = build("generator", GeneratorConfig(size=16, style_dim=32, n_mlp=2, max_channels=16)).eval()
    for p in g.parameters():
        p.requires_grad_(False)
    target = build("target", TargetConfig(style_dim=32, n_latent=g.n_latent, num_directions=2, inject=3, num_heads=3))
    with torch.no_grad():
        target.directions.copy_(torch.linalg.qr(torch.randn(32, 2))[0].T)
        target.coefficients.normal_()
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.5, max_channels=16, num_heads=3))
    return g, target, stn


def test_assignment_order_and_flips():
    # rows (f N + n) K + k with N=2, K=3, F=2; make (n=0: f=1,k=2) and (n=1: f=0,k=1) the minima.
    d = torch.full((2, 2, 3), 5.0)
    d[1, 0, 2] = 1.0
    d[0, 1, 1] = 2.0
    a = assign_clusters(d.reshape(-1), batch=2, num_heads=3, flips=True)
    assert a.index.tolist() == [1 * 3 + 2, 1]
    assert a.cluster.tolist() == [2, 1] and a.flipped.tolist() == [True, False]
    assert a.distance.tolist() == [1.0, 2.0]
    assert a.distances.shape == (2, 6)
    rows = torch.arange(12.0)  # each row's own index
    assert select_assigned(rows, a).tolist() == [(1 * 2 + 0) * 3 + 2, (0 * 2 + 1) * 3 + 1]
    # Ties go to the unmirrored input and the lower head.
    tie = assign_clusters(torch.ones(12), batch=2, num_heads=3, flips=True)
    assert tie.index.tolist() == [0, 0]


def _fake_result(images, flow):
    return AlignResult(images=images, grid=torch.zeros(*flow.shape), flow=flow)


def test_unimodal_loss_is_mean_distance_plus_weighted_regularisers():
    torch.manual_seed(1)
    x, y, flow = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), 0.1 * torch.randn(4, 8, 8, 2)
    terms = gangealing_loss(_fake_result(x, flow), y, PixelDistance(2), batch=4, tv_weight=10.0, identity_weight=2.0)
    expected_p = (x - y).square().mean()
    torch.testing.assert_close(terms.perceptual, expected_p)
    torch.testing.assert_close(terms.tv, total_variation_loss(flow))
    torch.testing.assert_close(terms.identity, flow_identity_loss(flow))
    torch.testing.assert_close(terms.total, expected_p + 10.0 * terms.tv + 2.0 * terms.identity)


def test_regularisers_act_on_the_assigned_head_only():
    torch.manual_seed(2)
    n, k = 3, 2
    targets = torch.randn(n * k, 3, 8, 8)
    images = targets + 3.0  # far from every target ...
    images[1] = targets[1]  # ... except sample 0 head 1
    images[4] = targets[4]  # and sample 2 head 0
    images[3] = targets[3] + 0.1  # sample 1 head 1 is the closest for sample 1
    flow = torch.randn(n * k, 8, 8, 2) * 5.0  # rough everywhere ...
    smooth = torch.zeros(8, 8, 2)
    for r in (1, 3, 4):
        flow[r] = smooth  # ... but on the assigned rows
    terms = gangealing_loss(_fake_result(images, flow), targets, PixelDistance(2), batch=n, num_heads=k)
    assert terms.assignment.index.tolist() == [1, 1, 0]
    assert terms.tv.item() == 0.0 and terms.identity.item() == 0.0
    torch.testing.assert_close(terms.perceptual, torch.tensor(0.01 / 3))


def test_flips_compare_mirrored_inputs_with_the_same_targets(models):
    g, target, stn = models
    torch.manual_seed(3)
    pairs = sample_pairs(g, target, 0.0, 2, make_resize(16, 16))
    res = align_pairs(stn, pairs, flips=True)
    assert res.images.shape == (2 * 2 * 3, 3, 16, 16)
    # Identity transformer: the mirrored half is the mirror of the first half, head by head.
    torch.testing.assert_close(res.images[6:], res.images[:6].flip(3))


def test_sample_pairs_targets_and_replay(models):
    g, target, _ = models
    torch.manual_seed(4)
    pairs = sample_pairs(g, target, 0.3, 2, make_resize(16, 16))
    assert pairs.inputs.shape == (2, 3, 16, 16) and pairs.targets.shape == (6, 3, 16, 16)
    assert pairs.targets.requires_grad  # gradients reach the target coefficients
    # The original's draw order on the global RNG: z, the input's noise, the target's noise.
    torch.manual_seed(4)
    z = torch.randn(2, 32)
    w = g.mapping(z)
    x = g.synthesis(w, noise="random")
    y = g.synthesis(target(w, 0.3), noise="random")
    torch.testing.assert_close(pairs.inputs, x)
    torch.testing.assert_close(pairs.targets, y)
    # The same draws from a torch.Generator give the same samples on any device.
    r1, r2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    a, b = sample_pairs(g, target, 0.0, 2, make_resize(16, 16), rng=r1), sample_pairs(g, target, 0.0, 2, make_resize(16, 16), rng=r2)
    torch.testing.assert_close(a.targets, b.targets)


def test_resize_kinds():
    x = torch.randn(1, 3, 32, 32)
    assert make_resize(32, 32)(x) is x
    assert make_resize(64, 32)(torch.randn(1, 3, 64, 64)).shape == (1, 3, 32, 32)  # tent downsampling
    assert make_resize(32, 64)(x).shape == (1, 3, 64, 64)  # bilinear upsampling (parity fixture)


def test_congealing_step_backpropagates_to_transformer_and_target(models):
    g, target, stn = models
    terms = congealing_step(g, stn, target, PixelDistance(2), 0.5, 2, make_resize(16, 16), flips=True,
                            rng=torch.Generator().manual_seed(0))
    terms.total.backward()
    assert target.coefficients.grad is not None and target.coefficients.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stn.parameters())
    stn.zero_grad()
    target.zero_grad()


def test_classifier_labels_follow_the_min_loss_rule(models):
    g, target, stn = models
    batch = classifier_batch(g, stn, target, PixelDistance(2), 4, make_resize(16, 16), flips=True,
                             rng=torch.Generator().manual_seed(1))
    assert batch.images.shape == (4, 3, 16, 16) and batch.distances.shape == (4, 6)
    assert torch.equal(batch.labels, batch.distances.argmin(1))
    perfect = -batch.distances
    assert classifier_accuracy(perfect, batch.distances).item() == 1.0
    second = batch.distances.clone()
    second[torch.arange(4), batch.labels] = 1e9  # logits pointing at the second best
    assert classifier_accuracy(-second, batch.distances, 1).item() == 0.0
    assert classifier_accuracy(-second, batch.distances, 2).item() == 1.0


def test_input_jitter_warps_inputs_only_and_is_undone_by_its_inverse(models):
    from gangealing.geometry import similarity as sim
    from gangealing.train.objective import jitter_inputs, jitter_matrices

    g, target, _ = models
    resize = make_resize(16, 16)
    plain = sample_pairs(g, target, 0.5, 3, resize, rng=torch.Generator().manual_seed(1))
    jit = sample_pairs(g, target, 0.5, 3, resize, rng=torch.Generator().manual_seed(1),
                       input_jitter=(30.0, 0.6, 0.9, 0.1))
    assert torch.equal(jit.targets, plain.targets) and torch.equal(jit.w, plain.w)  # targets stay put
    assert not torch.allclose(jit.inputs, plain.inputs, atol=1e-3)
    # the matrices are rotations by at most 30 degrees with content scales in [0.6, 0.9]
    m = jitter_matrices(500, (30.0, 0.6, 0.9, 0.1), rng=torch.Generator().manual_seed(0))
    fwd = sim.invert(m)
    scale = fwd[:, :, :2].det().sqrt()
    angle = torch.atan2(fwd[:, 1, 0], fwd[:, 0, 0]).rad2deg()
    assert scale.min() >= 0.6 - 1e-5 and scale.max() <= 0.9 + 1e-5 and scale.max() - scale.min() > 0.2
    assert angle.abs().max() <= 30 + 1e-3 and angle.abs().max() > 25
    assert fwd[:, :, 2].abs().max() <= 0.2 + 1e-6
    # a smooth image jittered, then warped back by the forward map, is the image again (inside)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    img = torch.exp(-4 * (xx ** 2 + yy ** 2)).expand(2, 1, 32, 32).contiguous()
    rng = torch.Generator().manual_seed(3)
    out = jitter_inputs(img, (20.0, 0.9, 1.0, 0.0), rng=rng)
    back = sim.invert(jitter_matrices(2, (20.0, 0.9, 1.0, 0.0), rng=torch.Generator().manual_seed(3)))
    restored = torch.nn.functional.grid_sample(out, sim.affine_grid(back, 32), align_corners=False)
    assert (restored - img)[..., 8:24, 8:24].abs().max() < 0.05


def test_input_jitter_config_is_checked():
    from gangealing.train.presets import get_preset

    assert get_preset("tiny", input_jitter=(45, 0.5, 0.9, 0.15)).input_jitter == (45, 0.5, 0.9, 0.15)
    with pytest.raises(ValueError, match="4 numbers"):
        get_preset("tiny", input_jitter=(45, 0.5))
    with pytest.raises(ValueError, match="min_scale"):
        get_preset("tiny", input_jitter=(45, 0.9, 0.5, 0.1))
