"""GANgealing training on a tiny random generator: learning, identity start, resume, checkpoints, CLI."""
import json

import pytest
import torch

from gangealing.build import build, load_model
from gangealing.cli import main
from gangealing.config import GeneratorConfig
from gangealing.losses.perceptual import PixelDistance
from gangealing.train.gangealing import GANgealingTrainer, load_generator
from gangealing.train.objective import congealing_step
from gangealing.train.presets import PRESETS, get_preset
from gangealing.train.runtime import read_metrics
from helpers import tiny_cfg, tiny_generator


def test_identity_init_gives_the_input_exactly(tmp_path):
    cfg = tiny_cfg(flow_size=32, input_size=32)  # the CPU preset's size; its identity grid is exact in float32
    g = build("generator", GeneratorConfig(size=32, style_dim=32, n_mlp=2, max_channels=16))
    tr = GANgealingTrainer(cfg, g, tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    for stn in (tr.stn, tr.stn_ema):
        res = stn(x)
        assert torch.equal(res.images, x)
        assert res.flow.abs().max() == 0
        assert torch.equal(res.matrix, torch.eye(2, 3).expand(3, 2, 3))
    # Other sizes round the grid's pixel centres by a few float32 ulps: the input up to ~1e-6.
    tr16 = GANgealingTrainer(tiny_cfg(), tiny_generator(), tmp_path / "run16", loss_fn=PixelDistance(2),
                             show_progress=False)
    x16 = torch.rand(3, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(tr16.stn_ema(x16).images, x16, atol=1e-5, rtol=0)


def test_a_few_steps_reduce_the_loss_of_a_fixed_batch(tmp_path):
    cfg = tiny_cfg(anneal_psi=1, iters=10, stn_lr=1e-2, target_lr=1e-2, loss="l2", tv_weight=10.0, micro_batch=8)
    tr = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    z = tr.generator.sample_z(16, generator=torch.Generator().manual_seed(5))

    def fixed_loss():
        with torch.no_grad():
            return congealing_step(tr.generator, tr.stn, tr.target, tr.loss_fn, 0.0, 16, tr.resize, z=z,
                                   tv_weight=0.0, identity_weight=0.0, rng=torch.Generator().manual_seed(6)).perceptual.item()

    before = fixed_loss()
    tr.fit()
    after = fixed_loss()
    assert after < 0.95 * before, (before, after)  # measured: 1.21 -> 1.08
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert rows[0]["psi"] == 0.0 and {"perceptual", "tv", "identity", "lr_stn", "lr_target"} <= set(rows[0])


def test_resume_continues_from_the_saved_step_and_matches_an_uninterrupted_run(tmp_path):
    cfg = tiny_cfg(iters=5)
    full = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "full", loss_fn=PixelDistance(2), show_progress=False)
    full.fit()
    killed = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "resumed", loss_fn=PixelDistance(2), show_progress=False)
    res = killed.fit(max_steps=3)  # as if killed after the checkpoint of step 3
    assert res.step == 3 and res.model_path is None
    assert (tmp_path / "resumed" / "checkpoints" / "0000003.pt").is_file()
    resumed = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "resumed", loss_fn=PixelDistance(2), show_progress=False)
    assert resumed.step == 3
    res = resumed.fit()
    assert res.step == 5 and res.model_path is not None
    for a, b in ((full.stn, resumed.stn), (full.stn_ema, resumed.stn_ema), (full.target, resumed.target)):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(va, vb, atol=1e-6, rtol=0, msg=k)
    steps = [r["step"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5]


def test_max_seconds_stops_with_a_checkpoint_and_the_run_resumes(tmp_path):
    cfg = tiny_cfg(iters=4)
    tr = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    res = tr.fit(max_seconds=0.0)  # out of time after the first step
    assert res.step == 1 and res.model_path is None
    again = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    assert again.step == 1
    assert again.fit().step == 4


def test_final_model_checkpoint_loads_and_carries_test_settings(tmp_path):
    cfg = tiny_cfg(iters=2, padding_mode="reflection")
    tr = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    res = tr.fit()
    model = load_model(res.model_path)
    assert model.step == 2 and model.meta["test"]["padding_mode"] == "reflection"
    for (k, a), b in zip(model.stn.state_dict().items(), tr.stn_ema.state_dict().values()):
        assert torch.equal(a, b), k
    # The resumable checkpoint is a model checkpoint too.
    assert load_model(tmp_path / "run" / "checkpoints" / "last.pt").step == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["iters"] == 2


def test_clustering_with_flips_initialises_distinct_heads(tmp_path):
    cfg = tiny_cfg(num_heads=3, flips=True, iters=2, num_directions=4)
    tr = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    seeds = tr.init_info["kmeans_seeds"]
    assert len(set(seeds)) == 3
    c = tr.target.target_latent()
    assert torch.cdist(c, c).triu(1)[torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)].min() > 0
    tr.fit()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert sum(rows[-1][f"assign_{i}"] for i in range(6)) == pytest.approx(1.0)


def test_kmeans_lloyd_moves_seeds_to_medoids_and_needs_an_embedding(tmp_path):
    plain = GANgealingTrainer(tiny_cfg(num_heads=3, iters=1, num_directions=4), tiny_generator(), tmp_path / "a",
                              loss_fn=PixelDistance(2), show_progress=False).init_info["kmeans_seeds"]
    lloyd = GANgealingTrainer(tiny_cfg(num_heads=3, iters=1, num_directions=4, kmeans_lloyd=20), tiny_generator(),
                              tmp_path / "b", loss_fn=PixelDistance(2), show_progress=False).init_info["kmeans_seeds"]
    assert len(set(lloyd)) == 3 and lloyd != plain  # same candidates and draw, moved by Lloyd's iterations
    with pytest.raises(ValueError, match="Euclidean embedding"):
        GANgealingTrainer(tiny_cfg(num_heads=3, iters=1, kmeans_lloyd=5), tiny_generator(), tmp_path / "c",
                          loss_fn=PixelDistance(1), show_progress=False)


def test_similarity_only_and_flow_only_transformers_train(tmp_path):
    for i, extra in enumerate([dict(transforms=("similarity",), tv_weight=0.0, identity_weight=0.0),
                               dict(transforms=("flow",))]):
        tr = GANgealingTrainer(tiny_cfg(iters=1, **extra), tiny_generator(), tmp_path / f"run{i}",
                               loss_fn=PixelDistance(2), show_progress=False)
        before = [p.clone() for p in tr.stn.parameters()]
        tr.fit()
        assert any(not torch.equal(a, b) for a, b in zip(before, tr.stn.parameters()))


def test_presets_validate_and_accumulate_to_the_paper_batch():
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg.batch == 40
        assert cfg.accumulation(1) * cfg.micro_batch == 40
    cars = get_preset("cars")
    assert (cars.num_heads, cars.flips, cars.num_directions, cars.inject, cars.sample_from_full_res) == (4, True, 5, 6, True)
    assert get_preset("celeba").num_directions == 512
    assert get_preset("lsun-cats").accumulation(8) == 1
    with pytest.raises(ValueError):
        get_preset("tiny", micro_batch=7).accumulation(1)
    with pytest.raises(ValueError):
        get_preset("tiny", transforms=("similarity",))  # TV on a transformer without flow


def test_cli_train_then_classifier(gen_file, tmp_path):
    run = tmp_path / "run"
    common = ["--generator", str(gen_file), "--out", str(run), "--preset", "tiny", "--flow-size", "16",
              "--input-size", "16", "--stn-max-channels", "16", "--batch", "4", "--micro-batch", "2", "--iters", "2",
              "--anneal-psi", "1", "--period", "1", "--pca-samples", "300", "--kmeans-candidates", "20",
              "--num-heads", "2", "--flips", "--inject", "3", "--loss", "l2", "--vis-every", "1", "--quiet",
              "--no-tensorboard", "--real", "mnist:3"]
    assert main(["train", *common]) == 0
    assert (run / "model.pt").is_file() and (run / "metrics.png").is_file()
    vis = {p.name for p in (run / "visuals").iterdir()}
    for name in ("inputs", "targets", "congealed", "target", "real_congealed", "real_average"):
        assert f"0000002_{name}.png" in vis, name
    assert load_generator(run / "model.pt").cfg.size == 16
    assert main(["train-classifier", str(run), "--iters", "3", "--batch", "4", "--micro-batch", "2", "--quiet",
                 "--no-tensorboard", "--vis-every", "3"]) == 0
    model = load_model(run / "classifier" / "model.pt")
    assert model.classifier is not None and model.classifier.cfg.num_outputs == 4
    # The classifier started from the similarity transformer's trunk and then trained.
    trunk = {k: v for k, v in model.stn.stns[0].state_dict().items() if k.startswith("final_conv.")}
    assert any(not torch.equal(v, model.classifier.state_dict()[k]) for k, v in trunk.items())


def test_a_redundant_head_is_reseeded_where_samples_are_served_worst(tmp_path):
    from gangealing.models.stn import copy_head

    cfg = tiny_cfg(num_heads=3, iters=2, num_directions=4, anneal_psi=1, reseed_samples=60, loss="l2")
    tr = GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run", loss_fn=PixelDistance(2), show_progress=False)
    with torch.no_grad():  # head 2 duplicates head 0 (ties go to the lower head, so it wins nothing): one of them goes
        tr.target.coefficients[2] = tr.target.coefficients[0]
        for stn in (tr.stn, tr.stn_ema):
            for p in stn.parameters():
                p.add_(torch.randn_like(p) * 0.01)
            copy_head(stn, 0, 2)
    before = tr.target.coefficients.detach().clone()
    res = tr.reseed()
    assert res.shares[2] == 0.0 and res.heads == [2] and res.sources[0] in (0, 1)
    after = tr.target.coefficients.detach()
    assert torch.equal(after[:2], before[:2]) and not torch.allclose(after[2], before[2])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for stn in (tr.stn, tr.stn_ema):  # its transformer is now the serving head's
        out = stn(x).images.view(2, 3, 3, 16, 16)
        torch.testing.assert_close(out[:, 2], out[:, res.sources[0]])
    again = tr.reseed()
    assert again.shares[2] > 0  # the new target wins samples
    with pytest.raises(ValueError, match="must lie in"):
        copy_head(tr.stn, 0, 3)
    # Off by default; in training it runs every reseed_every steps once psi has annealed, logged,
    # and not at the last step (a re-seeded head would be left untrained).
    cfg = tiny_cfg(num_heads=3, iters=3, num_directions=4, anneal_psi=1, reseed_every=1, reseed_samples=20)
    GANgealingTrainer(cfg, tiny_generator(), tmp_path / "run2", loss_fn=PixelDistance(2), show_progress=False).fit()
    rows = read_metrics(tmp_path / "run2" / "metrics.jsonl")
    assert [("reseeded" in r) for r in rows] == [False, True, False]
    with pytest.raises(ValueError, match="num-heads"):
        tiny_cfg(reseed_every=5).validate()
    with pytest.raises(ValueError, match="reseed_below"):
        tiny_cfg(num_heads=2, reseed_below=0.0).validate()
