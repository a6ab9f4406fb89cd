"""Nearest-target routing (gangealing.routing): real images go to the head whose congealed image is
nearest that head's GAN target, with no classifier."""
import pytest
import torch
from torch import nn

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import CheckpointError, save_checkpoint
from gangealing.config import GeneratorConfig, STNConfig, TargetConfig
from gangealing.losses.perceptual import build_perceptual_loss
from gangealing.predictor import Congealer
from gangealing.routing import TargetRouter
from gangealing.models.target import gan_template

S = 16


def identity_stn(heads=2):
    torch.manual_seed(0)  # a fresh transformer is the identity warp for every head
    return build("stn", STNConfig(flow_size=S, input_size=S, channel_multiplier=0.125, max_channels=16, num_heads=heads))


def shapes():
    """Two templates (2, 3, S, S) that are not mirror-symmetric: a bar on the left, a bar at the top."""
    t = -torch.ones(2, 3, S, S)
    t[0, :, 2:14, 2:6] = 1.0
    t[1, :, 2:6, 3:11] = 1.0
    return t


class PairsOnly(nn.Module):
    """The L2 distance without an ``embed`` method: the router must compare pairs."""

    def __init__(self):
        super().__init__()
        self.inner = build_perceptual_loss("l2")

    def forward(self, x, y):
        return self.inner(x, y)


def test_images_go_to_the_head_whose_target_they_match():
    t = shapes()
    router = TargetRouter(templates=t, distance=build_perceptual_loss("l2"))
    x = torch.cat([t[1:], t[:1], t[1:]]) + 0.05 * torch.randn(3, 3, S, S)
    cluster, flipped = router.route(identity_stn(), x)
    assert cluster.tolist() == [1, 0, 1] and not flipped.any()


def test_flips_router_finds_the_mirror_and_a_forced_cluster_only_picks_the_orientation():
    t = shapes()
    router = TargetRouter(templates=t, distance=build_perceptual_loss("l2"), flips=True)
    x = torch.stack([t[0].flip(2), t[1]])  # the first is a mirrored target 0
    cluster, flipped = router.route(identity_stn(), x)
    assert cluster.tolist() == [0, 1] and flipped.tolist() == [True, False]
    cluster, flipped = router.route(identity_stn(), x, torch.tensor([1, 1]))
    assert cluster.tolist() == [1, 1]
    plain = TargetRouter(templates=t, distance=build_perceptual_loss("l2"))
    assert plain.distances(identity_stn(), x).shape == (2, 2)
    assert router.distances(identity_stn(), x).shape == (2, 4)  # head k of the input, then of its mirror


def test_embedded_distances_equal_the_pairwise_ones_and_chunks_change_nothing():
    t = shapes()
    stn = identity_stn()
    with torch.no_grad():  # warps that are not the identity, different per head
        for p in stn.parameters():
            p.add_(0.02 * torch.randn_like(p))
    x = torch.rand(7, 3, S, S) * 2 - 1
    embedded = TargetRouter(templates=t, distance=build_perceptual_loss("l2"), chunk=4)
    pairs = TargetRouter(templates=t, distance=PairsOnly())
    assert embedded._embedded is not None and pairs._embedded is None
    torch.testing.assert_close(embedded.distances(stn, x), pairs.distances(stn, x))
    with pytest.raises(ValueError, match="3 heads"):
        embedded.distances(identity_stn(heads=3), x)


def model_file(tmp_path, meta=None, generator=True):
    torch.manual_seed(1)
    modules = {
        "stn": identity_stn(),
        "target": build("target", TargetConfig(style_dim=16, n_latent=6, num_directions=3, inject=6, num_heads=2)),
    }
    if generator:
        modules["generator"] = build("generator", GeneratorConfig(size=S, style_dim=16, n_mlp=2, max_channels=16)).eval()
    with torch.no_grad():  # two heads whose targets differ: random PCA directions and coefficients
        modules["target"].directions.normal_()
        modules["target"].coefficients.normal_(0, 3.0)
    return save_checkpoint(make_checkpoint("model", modules, meta=meta or {"train": {"loss": "l2"}}), tmp_path / "m.pt")


def test_a_clustering_model_without_classifier_routes_by_its_targets(tmp_path):
    path = model_file(tmp_path)
    plain = Congealer.from_checkpoint(path, device="cpu", routing="classifier")
    with pytest.raises(CheckpointError, match="--route targets"):
        plain.align(torch.zeros(1, 3, S, S))
    c = Congealer.from_checkpoint(path, device="cpu")  # no classifier, a generator: routes by targets
    assert c.router.loss == "l2" and not c.router.flips
    from gangealing.build import load_model

    m = load_model(path)
    with torch.no_grad():
        t = torch.cat([gan_template(m.generator, m.target, S, head=h) for h in range(2)])
    torch.testing.assert_close(c.router.templates, t)
    assert not torch.allclose(t[0], t[1])
    res = c.align(torch.stack([t[1], t[0], t[1]]))  # each head's own target comes back to it
    assert res.cluster.tolist() == [1, 0, 1]
    assert c.with_settings(iters=2).router is c.router  # derived predictors keep the routing
    assert Congealer.from_checkpoint(path, device="cpu", routing="targets", route_loss="l1").router.loss == "l1"


def test_routing_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="routing must be one of"):
        Congealer.from_checkpoint(model_file(tmp_path), device="cpu", routing="nearest")
    no_gen = model_file(tmp_path, generator=False)
    with pytest.raises(CheckpointError, match="needs the generator"):
        Congealer.from_checkpoint(no_gen, device="cpu", routing="targets")


def test_align_routes_by_targets_from_the_command_line(tmp_path):
    import json

    from PIL import Image

    from gangealing.build import load_model
    from gangealing.cli import main

    path = model_file(tmp_path)
    m = load_model(path)
    with torch.no_grad():
        t = torch.cat([gan_template(m.generator, m.target, S, head=h) for h in range(2)])
    d = tmp_path / "imgs"
    d.mkdir()
    for i, h in enumerate((1, 0)):
        arr = ((t[h].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(arr).save(d / f"{i}.png")
    out = tmp_path / "out"
    assert main(["align", str(d), "--ckpt", str(path), "--out", str(out), "--device", "cpu",
                 "--route", "classifier"]) == 1  # there is none
    assert main(["align", str(d), "--ckpt", str(path), "--out", str(out), "--device", "cpu"]) == 0
    rows = json.loads((out / "results.json").read_text())["images"]
    assert [r["cluster"] for r in rows] == [1, 0]
    assert main(["align", str(d), "--ckpt", str(path), "--out", str(tmp_path / "o2"), "--device", "cpu",
                 "--route", "targets", "--backend", "onnx"]) == 1
    pytest.importorskip("onnxruntime", reason="the onnx backend needs the 'onnx' extra")
    assert main(["align", str(d), "--ckpt", str(path), "--out", str(tmp_path / "o3"), "--device", "cpu",
                 "--backend", "onnx"]) == 1  # routes by targets by default: PyTorch only, said so
    assert main(["align", str(d), "--ckpt", str(path), "--out", str(tmp_path / "o4"), "--device", "cpu",
                 "--backend", "auto"]) == 0  # falls back to PyTorch
    assert [r["cluster"] for r in json.loads((tmp_path / "o4" / "results.json").read_text())["images"]] == [1, 0]


def test_bench_measures_a_clustering_model_without_classifier_by_its_targets(tmp_path):
    import json

    from gangealing.cli import main

    path = model_file(tmp_path)
    out = tmp_path / "bench"
    assert main(["bench", "--out", str(out), "--model", f"{path}=mnist=tiny two-head model", "--no-classic", "--no-refine",
                 "--no-train-speed", "--no-generators", "--pairs", "5", "--digits", "4", "--route-images", "30",
                 "--throughput-images", "4", "--no-progress"]) == 0
    rows = json.loads((out / "results.json").read_text())["clustering"]
    assert len(rows) == 1 and rows[0]["routing"] == "nearest GAN target (l2)" and rows[0]["images"] == 30
    assert 0.1 <= rows[0]["accuracy"] <= 1
    assert "| nearest GAN target (l2) | 2 | 30 |" in (out / "results.md").read_text()
