"""Original GANgealing checkpoints imported through `gangealing convert` compute what the original did."""
import pytest
import torch

from gangealing.build import build, load_model, make_checkpoint
from gangealing.checkpoint import load_checkpoint, save_checkpoint
from gangealing.cli import main
from gangealing.config import ClassifierConfig, GeneratorConfig, STNConfig, TargetConfig
from gangealing.io import import_checkpoint
from gangealing.models.classifier import ClusterClassifier, classifier_config_for


@pytest.fixture(scope="module")
def converted(parity_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "model.pt"
    assert main(["convert", str(parity_dir / "checkpoint" / "checkpoint.pt"), str(out)]) == 0
    return out


def test_inferred_architecture(converted):
    ckpt = load_checkpoint(converted)
    assert ckpt.kind == "model"
    assert STNConfig.from_dict(ckpt.config["stn"]) == STNConfig(
        transforms=("similarity", "flow"), flow_size=64, input_size=128, channel_multiplier=0.125, max_channels=32)
    g = GeneratorConfig.from_dict(ckpt.config["generator"])
    assert (g.size, g.style_dim, g.n_mlp, g.num_fp16_res) == (32, 64, 2, 0)
    assert TargetConfig.from_dict(ckpt.config["target"]) == TargetConfig(style_dim=64, n_latent=8, num_directions=2, inject=3)
    assert ckpt.meta["test"]["padding_mode"] == "border"
    assert ckpt.meta["original_args"]["tv_weight"] == 1000


def test_imported_model_matches_original_outputs(converted, parity_dir):
    model = load_model(converted)
    gin = torch.load(parity_dir / "generator" / "inputs.pt")
    gout = torch.load(parity_dir / "generator" / "outputs.pt")
    with torch.no_grad():
        w = model.generator.mapping(gin["z"])
        img = model.generator.synthesis(w, noise="const")
    torch.testing.assert_close(w, gout["mapping_w"], atol=1e-4, rtol=0)
    torch.testing.assert_close(img, gout["a_image"], atol=1e-4, rtol=0)

    sin = torch.load(parity_dir / "stn" / "inputs.pt")
    sout = torch.load(parity_dir / "stn" / "outputs_forward.pt")["fwd"]
    with torch.no_grad():
        res = model.stn(sin["x"], output_resolution=128)
    torch.testing.assert_close(res.images, sout["out"], atol=1e-4, rtol=0)
    torch.testing.assert_close(res.grid, sout["grid"], atol=1e-4, rtol=0)
    torch.testing.assert_close(res.flow, sout["flow"], atol=1e-4, rtol=0)

    ref = torch.load(parity_dir / "checkpoint" / "latent_learner_reference.pt", weights_only=False)
    for psi in (1.0, 0.5, 0.0):
        with torch.no_grad():
            wp = model.target(ref["w"], psi)
            image = model.generator.synthesis(wp, noise="const")
        torch.testing.assert_close(wp, ref["ll_outputs"][f"psi{psi}"]["w_plus"], atol=1e-5, rtol=0)
        torch.testing.assert_close(image, ref["ll_outputs"][f"psi{psi}"]["image"], atol=1e-4, rtol=0)


def test_clustered_original_checkpoint_brings_its_classifier(parity_dir, tmp_path):
    orig = torch.load(parity_dir / "checkpoint" / "checkpoint.pt", weights_only=False)
    stn_cfg = STNConfig(transforms=("similarity", "flow"), flow_size=64, input_size=128, channel_multiplier=0.125,
                        max_channels=32)
    cls = ClusterClassifier(classifier_config_for(stn_cfg, flips=True))
    sd = cls.state_dict()
    # The original saves the constant resampling kernels too; the importer must drop them.
    sd["input_downsample.kernel_horz"] = torch.zeros(3, 1, 1, 4)
    sd["input_downsample.kernel_vert"] = torch.zeros(3, 1, 4, 1)
    orig["classifier"] = sd
    orig["args"].flips = True
    torch.save(orig, tmp_path / "clustered.pt")
    ckpt, what = import_checkpoint(tmp_path / "clustered.pt")
    assert "cluster classifier" in what and "flips" in what
    assert ClassifierConfig.from_dict(ckpt.config["classifier"]).num_outputs == 2
    model = load_model(ckpt)
    x = torch.rand(3, 3, 128, 128) * 2 - 1
    torch.testing.assert_close(model.classifier(x), cls(x))
    routed = model.classifier.route(x)
    assert routed.cluster.tolist() == [0, 0, 0]
    assert routed.flipped.tolist() == (cls(x).argmax(1) == 1).tolist()


def test_rosinality_generator_converts_to_a_generator_checkpoint(parity_dir, tmp_path):
    out = tmp_path / "g.pt"
    assert main(["convert", str(parity_dir / "generator" / "gen.pt"), str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.kind == "generator" and set(ckpt.state) >= {"generator"}
    with pytest.raises(Exception, match="generator checkpoint"):
        load_model(out)


TINY = {
    "generator": GeneratorConfig(size=16, style_dim=16, n_mlp=2, max_channels=16),
    "stn": STNConfig(flow_size=16, input_size=32, channel_multiplier=0.125, max_channels=16, num_heads=2),
    "target": TargetConfig(style_dim=16, n_latent=6, num_directions=3, inject=2, num_heads=2),
    "classifier": ClassifierConfig(size=16, input_size=32, channel_multiplier=0.125, max_channels=16, num_clusters=2),
}


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    modules = {name: build(name, cfg) for name, cfg in TINY.items()}
    for m in modules.values():  # move away from the identity init so the check means something
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(make_checkpoint("model", modules, step=5, meta={"test": {"iters": 2}}), tmp_path / "m.pt")
    model = load_model(path)
    assert model.step == 5 and model.meta["test"]["iters"] == 2
    z = torch.randn(2, 16)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.generator(z=z, noise="const"), modules["generator"](z=z, noise="const"))
        a, b = model.stn(x, iters=2), modules["stn"](x, iters=2)
        assert torch.equal(a.images, b.images) and torch.equal(a.grid, b.grid)
        assert torch.equal(model.target(z, 0.5), modules["target"](z, 0.5))
        assert torch.equal(model.classifier(x), modules["classifier"](x))


def test_weights_that_do_not_fit_the_config_give_one_error(tmp_path):
    modules = {name: build(name, cfg) for name, cfg in TINY.items()}
    ckpt = make_checkpoint("model", modules)
    ckpt.config["stn"]["max_channels"] = 32  # config now disagrees with the stored weights
    save_checkpoint(ckpt, tmp_path / "bad.pt")
    with pytest.raises(Exception) as e:
        load_model(tmp_path / "bad.pt")
    assert "'stn'" in str(e.value) and len(str(e.value).splitlines()) == 1
