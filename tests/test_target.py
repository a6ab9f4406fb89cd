"""Congealing target (original DirectionInterpolator), PCA of W, and k-means++ head initialisation."""

import pytest
import torch

from gangealing.config import TargetConfig
from gangealing.models.pca import IncrementalPCA, fit_full_pca, fit_pca, sample_w
from gangealing.models.target import (
    CongealingTarget,
    kmeans_candidate_wplus,
    kmeans_plusplus,
    kmeans_plusplus_targets,
    lloyd_medoids,
)

# The parity fixture's latent learner: dim_latent 64, 8 W+ rows, 2 directions, inject 3, one head.
FIXTURE_CFG = TargetConfig(style_dim=64, n_latent=8, num_directions=2, inject=3, num_heads=1)
PSIS = (1.0, 0.5, 0.0)


@pytest.fixture(scope="module")
def reference(parity_dir):
    return torch.load(parity_dir / "checkpoint" / "latent_learner_reference.pt")


@pytest.fixture(scope="module")
def original_ckpt(parity_dir):
    # The original checkpoint pickles an argparse.Namespace, which weights_only loading refuses.
    return torch.load(parity_dir / "checkpoint" / "checkpoint.pt", weights_only=False)


@pytest.fixture(scope="module")
def fixture_target(original_ckpt):
    target = CongealingTarget(FIXTURE_CFG)
    target.load_state_dict(original_ckpt["ll"], strict=True)
    return target


def test_state_dict_keys_match_original(original_ckpt):
    target = CongealingTarget(FIXTURE_CFG)
    ours = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in original_ckpt["ll"].items()}
    assert ours == theirs
    assert [n for n, _ in target.named_parameters()] == ["coefficients"]


@pytest.mark.parametrize("psi", PSIS)
def test_forward_matches_original(fixture_target, reference, psi):
    expected = reference["ll_outputs"][f"psi{psi}"]["w_plus"]
    w = reference["w"]
    with torch.no_grad():
        out = fixture_target(w, psi)  # (4, 8, 64)
        out_wplus = fixture_target(w[:, None].expand(-1, 8, -1), psi)
    assert out.shape == expected.shape == (4, 8, 64)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_wplus, out, atol=0, rtol=0)


def test_psi_endpoints_and_rows(fixture_target, reference):
    w = reference["w"]
    c = fixture_target.target_latent()  # (1, 64)
    with torch.no_grad():
        at_target, at_w = fixture_target(w, 0.0), fixture_target(w, 1.0)
        per_sample = fixture_target(w, torch.tensor([0.0, 1.0, 0.5, 0.25]))
    torch.testing.assert_close(at_target[:, :3], c[:, None].expand(4, 3, -1))
    torch.testing.assert_close(at_target[:, 3:], w[:, None].expand(-1, 5, -1))
    torch.testing.assert_close(at_w, w[:, None].expand(-1, 8, -1))
    for i, psi in enumerate([0.0, 1.0, 0.5, 0.25]):
        torch.testing.assert_close(per_sample[i], fixture_target(w[i : i + 1], psi)[0].detach())


def test_gradient_reaches_coefficients_only(fixture_target, reference):
    target = CongealingTarget(FIXTURE_CFG)
    target.load_state_dict(fixture_target.state_dict())
    target(reference["w"], 0.5).square().sum().backward()
    assert target.coefficients.grad is not None and target.coefficients.grad.abs().sum() > 0


def test_pca_matches_original(reference):
    pca = fit_pca(reference["pca_batch_w"], 2)
    assert pca.components.dtype == torch.float64 and pca.components.shape == (2, 64)
    torch.testing.assert_close(pca.mean, reference["pca_mean"], atol=1e-12, rtol=0)
    # scikit-learn fits float32 input's first batch in float32; with the near-equal top eigenvalues
    # (3.59 vs 3.40) that rounding moves its output by ~1.6e-6 (machine-dependent), hence 1e-5.
    torch.testing.assert_close(pca.components, reference["pca_components"], atol=1e-5, rtol=0)
    torch.testing.assert_close(pca.explained_variance, reference["pca_explained_variance"], atol=0, rtol=1e-6)
    torch.testing.assert_close(pca.singular_values, reference["pca_singular_values"], atol=0, rtol=1e-6)
    torch.testing.assert_close(pca.encode(reference["w"]), reference["pca_encode_w"], atol=5e-5, rtol=0)


def test_target_after_pca_init_matches_original(reference):
    target = CongealingTarget(FIXTURE_CFG)
    with torch.no_grad():
        target.coefficients.fill_(3.0)  # init_from_pca must reset them
    target.init_from_pca(fit_pca(reference["pca_batch_w"], 2))
    expected = reference["ll_state_after_pca_init"]
    got = target.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        assert got[k].dtype == expected[k].dtype == torch.float32, k
    assert torch.equal(got["coefficients"], expected["coefficients"])
    assert torch.equal(got["lat_mean"], expected["lat_mean"])
    torch.testing.assert_close(got["directions"], expected["directions"], atol=1e-5, rtol=0)


def _anisotropic(m, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=torch.float64) * torch.linspace(3.0, 0.1, d, dtype=torch.float64) + 2.0


def test_incremental_pca_equals_full_pca_in_one_batch():
    x = _anisotropic(200, 16, 0)
    inc, full = fit_pca(x, 3, batch_size=1000), fit_full_pca(x, 3)
    for a, b in [(inc.components, full.components), (inc.mean, full.mean),
                 (inc.singular_values, full.singular_values), (inc.explained_variance, full.explained_variance)]:
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    torch.testing.assert_close(full.components @ full.components.T, torch.eye(3, dtype=torch.float64))
    # Sign convention: the largest-magnitude entry of each component is positive.
    rows = torch.arange(3)
    assert (full.components[rows, full.components.abs().argmax(1)] > 0).all()


def test_incremental_pca_is_exact_for_low_rank_data():
    # Data of rank 3 around a mean: any batching must recover the exact subspace and variances.
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(12, 3, generator=g, dtype=torch.float64)).Q.T  # (3, 12)
    coeffs = torch.randn(300, 3, generator=g, dtype=torch.float64) * torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)
    x = coeffs @ basis + torch.randn(12, generator=g, dtype=torch.float64)
    inc, full = fit_pca(x, 3, batch_size=40), fit_full_pca(x, 3)
    torch.testing.assert_close(inc.components, full.components, atol=1e-9, rtol=0)
    torch.testing.assert_close(inc.explained_variance, full.explained_variance, atol=1e-9, rtol=0)
    torch.testing.assert_close(inc.mean, x.mean(0), atol=1e-12, rtol=0)
    # encode/decode round-trip within the span.
    torch.testing.assert_close(inc.decode(inc.encode(x)), x, atol=1e-9, rtol=0)


def test_incremental_pca_batches_like_sklearn():
    # 1000 rows, batch 320 -> 320, 320, 320, 40; a tail shorter than n_components merges into the last batch.
    x = _anisotropic(1000, 8, 2)
    manual = IncrementalPCA(2)
    for s, e in [(0, 320), (320, 640), (640, 960), (960, 1000)]:
        manual.partial_fit(x[s:e])
    torch.testing.assert_close(fit_pca(x, 2, batch_size=320).components, manual.result().components, atol=0, rtol=0)
    merged = IncrementalPCA(3).partial_fit(x[:10]).partial_fit(x[10:22])
    torch.testing.assert_close(fit_pca(x[:22], 3, batch_size=10).components, merged.result().components, atol=0, rtol=0)
    with pytest.raises(RuntimeError):
        IncrementalPCA(2).result()


def test_sample_w_is_deterministic_and_batched():
    weight = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    calls = []

    def mapping(z):
        calls.append(z.shape[0])
        return z @ weight

    a = sample_w(mapping, 25, 8, 10, torch.Generator().manual_seed(5))
    b = sample_w(mapping, 25, 8, 10, torch.Generator().manual_seed(5))
    c = sample_w(mapping, 25, 8, 10, torch.Generator().manual_seed(6))
    assert a.shape == (25, 8) and calls == [10, 10, 5] * 3
    assert torch.equal(a, b) and not torch.equal(a, c)


def _three_head_target():
    cfg = TargetConfig(style_dim=4, n_latent=5, num_directions=2, inject=2, num_heads=3)
    target = CongealingTarget(cfg)
    with torch.no_grad():
        target.directions.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        target.lat_mean.copy_(torch.tensor([[0.0, 0, 1.0, 0]]))
        target.coefficients.copy_(torch.tensor([[1.0, 0], [0, 2.0], [-1.0, -1.0]]))
    return target


def test_multi_head_outputs_all_heads_sample_major():
    target = _three_head_target()
    c = target.target_latent()  # (3, 4)
    torch.testing.assert_close(c, torch.tensor([[1.0, 0, 1, 0], [0, 2, 1, 0], [-1, -1, 1, 0]]))
    w = torch.arange(8.0).reshape(2, 4)
    with torch.no_grad():
        out = target(w, 0.25)  # (6, 5, 4)
    assert out.shape == (6, 5, 4)
    for n in range(2):
        for k in range(3):
            row = out[n * 3 + k]
            torch.testing.assert_close(row[:2], (c[k] + 0.25 * (w[n] - c[k]))[None].expand(2, -1))
            torch.testing.assert_close(row[2:], w[n][None].expand(3, -1))
    # Selecting heads gives the matching rows of the full output.
    with torch.no_grad():
        one = target(w, 0.25, head=2)
        per = target(w, 0.25, head=torch.tensor([1, 0]))
        psi_per_sample = target(w, torch.tensor([0.0, 1.0]))
    assert one.shape == per.shape == (2, 5, 4)
    torch.testing.assert_close(one, out.view(2, 3, 5, 4)[:, 2])
    torch.testing.assert_close(per, torch.stack([out[1], out[3]]))
    torch.testing.assert_close(psi_per_sample[:3, 0], c)  # sample 0, psi 0: the targets
    torch.testing.assert_close(psi_per_sample[3:, 0], w[1][None].expand(3, -1))  # sample 1, psi 1: w
    torch.testing.assert_close(target.target_latent(torch.tensor([2, 0])), c[[2, 0]])


def test_forward_rejects_bad_shapes():
    target = _three_head_target()
    with pytest.raises(ValueError):
        target(torch.zeros(2, 3, 4), 0.5)
    with pytest.raises(ValueError):
        CongealingTarget(TargetConfig(style_dim=4, n_latent=5, inject=6))
    with pytest.raises(ValueError):
        target.init_from_pca(fit_full_pca(_anisotropic(20, 5, 0), 2))  # style_dim 5 != 4


def test_init_from_latents_projects_onto_directions():
    x = _anisotropic(100, 6, 3).float()
    pca = fit_full_pca(x, 2)
    target = CongealingTarget(TargetConfig(style_dim=6, n_latent=4, num_directions=2, inject=2, num_heads=3))
    target.init_from_pca(pca)
    in_span = pca.decode(torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]], dtype=torch.float64)).float()
    target.init_from_latents(in_span, pca)
    torch.testing.assert_close(target.coefficients.detach(), torch.tensor([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(target.target_latent().detach(), in_span, atol=1e-5, rtol=0)
    # Without a PCA the module's float32 buffers give the same projection.
    off_span = x[:3]
    target.init_from_latents(off_span)
    torch.testing.assert_close(target.coefficients.detach(), pca.encode(off_span).float(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        target.init_from_latents(x[:2])


def _three_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    labels = torch.arange(60) % 3
    points = centres[labels] + torch.randn(60, 2, generator=g)
    return points, labels


def _euclidean(a, b):
    return (a - b).norm(dim=1)


def test_kmeans_plusplus_one_seed_per_cluster():
    points, labels = _three_clusters()
    for seed in range(10):
        indices = kmeans_plusplus(points, 3, _euclidean, torch.Generator().manual_seed(seed), batch_size=7)
        assert indices.dtype == torch.long and indices.shape == (3,)
        assert sorted(labels[indices].tolist()) == [0, 1, 2], seed


def test_kmeans_plusplus_is_deterministic():
    points, _ = _three_clusters()
    runs = [kmeans_plusplus(points, 5, _euclidean, torch.Generator().manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(runs[0], runs[1])
    assert len(set(runs[0].tolist())) == 5  # a picked point is never picked again
    assert not torch.equal(runs[0], runs[2])
    # The batch size only changes how distances are computed, not the picks.
    chunked = kmeans_plusplus(points, 5, _euclidean, torch.Generator().manual_seed(3), batch_size=4)
    assert torch.equal(chunked, runs[0])
    with pytest.raises(ValueError):
        kmeans_plusplus(torch.zeros(4, 2), 2, _euclidean, torch.Generator().manual_seed(0))


def test_kmeans_plusplus_targets_returns_pca_coefficients():
    points, labels = _three_clusters()
    g = torch.Generator().manual_seed(7)
    latents = torch.cat([points, torch.randn(60, 4, generator=g) * 0.1], dim=1)  # (60, 6)
    pca = fit_full_pca(latents, 2)
    seeds = kmeans_plusplus_targets(latents, points, 3, _euclidean, torch.Generator().manual_seed(1), pca)
    assert sorted(labels[seeds.indices].tolist()) == [0, 1, 2]
    torch.testing.assert_close(seeds.latents, latents[seeds.indices])
    torch.testing.assert_close(seeds.coefficients, (seeds.latents.double() - pca.mean) @ pca.components.T)
    target = CongealingTarget(TargetConfig(style_dim=6, n_latent=4, num_directions=2, inject=2, num_heads=3))
    target.init_from_pca(pca)
    target.init_from_latents(seeds.latents, pca)
    torch.testing.assert_close(target.coefficients.detach(), seeds.coefficients.float())


def test_kmeans_candidate_wplus_mixes_coarse_rows():
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    wp = kmeans_candidate_wplus(w, inject=2, n_latent=6)
    assert wp.shape == (5, 6, 4)
    torch.testing.assert_close(wp[:, :2], w[:, None].expand(-1, 2, -1))
    torch.testing.assert_close(wp[:, 2:], w.mean(0).expand(5, 4, -1))
    fill = torch.ones(1, 4)
    torch.testing.assert_close(kmeans_candidate_wplus(w, 2, 6, fill)[:, 2:], torch.ones(5, 4, 4))


def test_images_from_target_match_original(fixture_target, reference, parity_dir):
    from gangealing.models import stylegan2
    gen_sd = torch.load(parity_dir / "generator" / "gen.pt")["g_ema"]
    generator = stylegan2.Generator(stylegan2.infer_generator_config(gen_sd, num_fp16_res=0))
    generator.load_state_dict(gen_sd, strict=True)
    generator.eval()
    for psi in PSIS:
        expected = reference["ll_outputs"][f"psi{psi}"]
        with torch.no_grad():
            w_plus = fixture_target(reference["w"], psi)
            image = generator.synthesis(w_plus, noise="const")
        torch.testing.assert_close(image, expected["image"], atol=1e-4, rtol=0)


def test_lloyd_medoids_moves_doubled_seeds_to_every_cluster():
    points, labels = _three_clusters()
    doubled = torch.tensor([0, 3, 1])  # two seeds in cluster 0, none in cluster 2
    assert sorted(labels[doubled].tolist()) == [0, 0, 1]
    idx = lloyd_medoids(points, doubled, iters=10)
    assert idx.dtype == torch.long and idx.shape == (3,)
    assert sorted(labels[idx].tolist()) == [0, 1, 2]
    # Each pick is the point nearest its cluster's mean.
    for i in idx.tolist():
        members = points[labels == labels[i]]
        assert i == int(torch.cdist(members.mean(0, keepdim=True), points).argmin())
    # No iterations: the seeds themselves.
    assert torch.equal(lloyd_medoids(points, doubled, iters=0), doubled)


def test_kmeans_plusplus_targets_lloyd_needs_embeddings():
    points, labels = _three_clusters()
    pca = fit_full_pca(points, 2)
    seeds = kmeans_plusplus_targets(points, points, 3, _euclidean, torch.Generator().manual_seed(1), pca,
                                    embeddings=points, lloyd_iters=5)
    assert sorted(labels[seeds.indices].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="embedding"):
        kmeans_plusplus_targets(points, points, 3, _euclidean, torch.Generator().manual_seed(1), pca, lloyd_iters=5)
