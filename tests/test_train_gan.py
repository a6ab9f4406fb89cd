"""GAN training: objective pieces, a few-step run, resume, checkpoints, skipped inputs, the commands."""
import json
import math

import numpy as np
import pytest
import torch

from gangealing.build import build, build_from_checkpoint
from gangealing.checkpoint import load_checkpoint
from gangealing.cli import main
from gangealing.train.augment import diff_augment, parse_policy
from gangealing.train.gan import (GANTrainConfig, GANTrainer, d_logistic_loss, ema_beta, export_generator,
                                  g_nonsaturating_loss, path_length_penalty, r1_penalty, resolve_config,
                                  sample_w_plus, train_gan)
from gangealing.train.runtime import read_metrics

MICRO = dict(size=8, style_dim=16, n_mlp=1, g_max_channels=16, d_max_channels=16, batch=4, n_sample=4,
             log_every=1, sample_every=2, ckpt_every=2, d_reg_every=2, r1=1.0, path_reg=1.0, g_reg_every=2)


@pytest.fixture
def images(noise_images):
    (noise_images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return noise_images


def micro(data, **kw):
    return resolve_config("tiny", data=str(data), **{**MICRO, **kw})


def test_losses_and_penalties():
    real, fake = torch.tensor([[3.0], [2.0]]), torch.tensor([[-3.0], [-1.0]])
    assert d_logistic_loss(real, fake) < d_logistic_loss(fake, real)
    assert torch.isclose(g_nonsaturating_loss(torch.zeros(2, 1)), torch.tensor(math.log(2.0)))
    x = torch.randn(3, 2, requires_grad=True)
    pred = (x * torch.tensor([3.0, 4.0])).sum(1, keepdim=True)  # gradient norm 5 everywhere
    assert torch.isclose(r1_penalty(pred, x), torch.tensor(25.0))
    w = torch.randn(2, 3, 4, requires_grad=True)
    img = (w.sum(1) * 2).view(2, 1, 2, 2)
    pen, mean, lengths = path_length_penalty(img, w, torch.zeros(()))
    assert pen.item() >= 0 and lengths.shape == (2,) and 0 < mean.item() < lengths.max().item()


def test_ema_beta_ramps_up():
    cfg = GANTrainConfig(ema_kimg=10, ema_rampup=0.05)
    assert ema_beta(cfg, 160, 16) < ema_beta(cfg, 160_000, 16) < 1
    assert math.isclose(ema_beta(GANTrainConfig(ema_kimg=10, ema_rampup=0), 1, 10_000), 0.5)


def test_style_mixing_rows():
    G = build("generator", micro("x").generator_config())
    g = torch.Generator().manual_seed(0)
    w = sample_w_plus(G, 64, 1.0, g)
    assert w.shape == (64, G.n_latent, 16)
    differs = (w[:, 0] != w[:, -1]).any(1)
    assert differs.all()  # with mixing 1 every sample crosses over before its last row
    plain = sample_w_plus(G, 8, 0.0, g)
    assert torch.equal(plain[:, 0], plain[:, -1])  # no mixing: one w for every row


def test_diff_augment_is_differentiable_and_seeded():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, p=0.0), x)
    with pytest.raises(ValueError):
        parse_policy("color,rotate")


def test_presets_and_overrides():
    assert resolve_config("tiny").size == 32 and resolve_config("small").size == 64
    paper = resolve_config("paper")
    assert paper.size == 256 and paper.g_channel_multiplier == 2 and paper.style_dim == 512 and paper.n_mlp == 8
    assert resolve_config("tiny", lr=0.01, iters=None).lr == 0.01
    with pytest.raises(ValueError):
        resolve_config("huge")


def test_few_steps_checkpoint_resume_and_skipped_image(images, tmp_path):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="corrupt.png"):
        res = train_gan(micro(images, iters=3), out, device="cpu", cache_dir=tmp_path / "cache", show_progress=False)
    assert res.step == 3 and all(math.isfinite(v) for v in res.metrics.values())
    assert {"loss_d", "loss_g", "sec_per_iter"} <= set(res.metrics)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt.kind == "generator" and ckpt.step == 3 and ckpt.meta["train_config"]["iters"] == 3
    G = build_from_checkpoint(ckpt, "generator")
    assert G(z=torch.randn(2, 16)).shape == (2, 3, 8, 8)
    manifest = json.loads((out / "config.json").read_text())
    assert manifest["data"] == str(images)
    assert (out / "samples" / "0000002.png").is_file() and (out / "samples" / "0000003.png").is_file()
    raw = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert {"generator", "g_optim", "d_optim", "rng_data", "rng_noise"} <= set(raw["training"])

    # Resume with no flag: continues from step 3, not from 0; the data cache is reused.
    trainer = GANTrainer(micro(images, iters=5), out, device="cpu", cache_dir=tmp_path / "cache", show_progress=False)
    assert trainer.step == 3 and trainer.data.cached
    assert torch.equal(trainer.G_ema.style[1].weight, G.style[1].weight)
    res2 = trainer.train()
    assert res2.step == 5 and load_checkpoint(out / "checkpoints" / "last.pt").step == 5
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="other settings"):
        GANTrainer(micro(images, iters=5, lr=0.1), out, device="cpu", cache_dir=tmp_path / "cache")


def test_resume_is_exact(images, tmp_path):
    kw = dict(device="cpu", cache_dir=tmp_path / "cache", show_progress=False)
    with pytest.warns(UserWarning):
        train_gan(micro(images, iters=4, ckpt_every=2), tmp_path / "straight", **kw)
        train_gan(micro(images, iters=2, ckpt_every=2), tmp_path / "resumed", **kw)
    train_gan(micro(images, iters=4, ckpt_every=2), tmp_path / "resumed", **kw)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt").state["generator"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt").state["generator"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_train_export_eval(images, tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["train-gan", str(images), "--out", str(out), "--cache-dir", str(cache), "--iters", "2", "--size", "8",
            "--style-dim", "16", "--n-mlp", "1", "--g-max-channels", "16", "--d-max-channels", "16", "--batch", "4",
            "--n-sample", "4", "--no-progress", "--device", "cpu", "--export", str(tmp_path / "g.pt")]
    with pytest.warns(UserWarning):
        assert main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["step"] == 2 and math.isfinite(line["loss_d"])
    small = load_checkpoint(tmp_path / "g.pt")
    assert set(small.state) == {"generator"} and small.step == 2
    # resume through the CLI with a longer schedule and no other flags
    assert main(["train-gan", str(images), "--out", str(out), "--cache-dir", str(cache), "--iters", "3",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert load_checkpoint(out / "checkpoints" / "last.pt").step == 3
    assert export_generator(out, tmp_path / "g2.pt").is_file()


def test_eval_gan_fd(images, tmp_path, capsys):
    with pytest.warns(UserWarning):
        train_gan(micro(images, iters=1), tmp_path / "run", device="cpu", cache_dir=tmp_path / "c", show_progress=False)
    assert main(["eval-gan", str(tmp_path / "run"), "--n", "6", "--resolution", "32", "--cache-dir",
                 str(tmp_path / "c"), "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_real"] == 6 and res["n_fake"] == 6 and math.isfinite(res["fd"]) and res["fd"] > 0


def test_frechet_distance_properties():
    from gangealing.metrics.fid import feature_stats, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    a -= a.mean(0)  # zero mean: scaling changes only the covariance
    sa = feature_stats(a)
    assert abs(frechet_distance(sa, sa)) < 1e-8
    shifted = feature_stats(a + np.array([3.0, 0, 0, 0]))
    assert abs(frechet_distance(sa, shifted) - 9.0) < 1e-6  # same covariance: |mu difference|^2
    scaled = feature_stats(a * 2)
    # tr(S + 4S - 2 * 2S) = tr(S)
    assert abs(frechet_distance(sa, scaled) - np.trace(sa.sigma)) < 1e-6


def test_checkpoint_loads_as_gangealing_generator(images, tmp_path):
    from gangealing.train import gangealing as gg

    with pytest.warns(UserWarning):
        train_gan(micro(images, iters=1), tmp_path / "run", device="cpu", cache_dir=tmp_path / "c", show_progress=False)
    export_generator(tmp_path / "run", tmp_path / "g.pt")
    for p in (tmp_path / "run" / "checkpoints" / "last.pt", tmp_path / "g.pt"):
        G = gg.load_generator(p)
        assert G.size == 8 and not any(q.requires_grad for q in G.parameters())


def test_max_seconds_stops_with_a_checkpoint(images, tmp_path):
    with pytest.warns(UserWarning):
        res = train_gan(micro(images, iters=1000, ckpt_every=1000), tmp_path / "run", device="cpu",
                        cache_dir=tmp_path / "c", show_progress=False, max_seconds=0.0)
    assert res.step == 1 and load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").step == 1


def test_init_generator_fine_tunes_with_a_fresh_discriminator(images, tmp_path):
    """--init-generator starts G and its EMA from an exported generator; during --d-warmup only D
    moves; then G trains; another architecture is refused in one line, before anything is trained."""
    kw = dict(device="cpu", cache_dir=tmp_path / "cache", show_progress=False)
    with pytest.warns(UserWarning):
        train_gan(micro(images, iters=2), tmp_path / "base", **kw)
    exported = export_generator(tmp_path / "base", tmp_path / "g.pt")
    start = load_checkpoint(exported).state["generator"]

    trainer = GANTrainer(micro(images, iters=5, init_generator=str(exported), d_warmup=3), tmp_path / "ft", **kw)
    assert trainer.step == 0
    assert all(torch.equal(trainer.G.state_dict()[k], v) and torch.equal(trainer.G_ema.state_dict()[k], v)
               for k, v in start.items())
    d0 = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    res = trainer.fit(max_steps=3)
    assert res.step == 3
    assert all(torch.equal(trainer.G.state_dict()[k], v) for k, v in start.items())  # frozen in the warm-up
    assert all(torch.equal(trainer.G_ema.state_dict()[k], v) for k, v in start.items())
    assert any(not torch.equal(trainer.D.state_dict()[k], v) for k, v in d0.items())
    assert "loss_g" not in read_metrics(tmp_path / "ft" / "metrics.jsonl")[-1]
    trainer.fit()
    assert trainer.step == 5
    assert any(not torch.equal(trainer.G.state_dict()[k], v) for k, v in start.items())
    assert "loss_g" in read_metrics(tmp_path / "ft" / "metrics.jsonl")[-1]
    trainer.run.release()

    # A resumed fine-tuning run continues from its own checkpoint (the generator file is not read again).
    exported.unlink()
    again = GANTrainer(micro(images, iters=6, init_generator=str(exported), d_warmup=3), tmp_path / "ft", **kw)
    assert again.step == 5
    again.run.release()

    with pytest.raises(ValueError, match="another generator architecture.*style_dim"):
        GANTrainer(micro(images, iters=2, style_dim=8, init_generator=str(tmp_path / "base" / "checkpoints" / "last.pt")),
                   tmp_path / "other", **kw)
    assert not (tmp_path / "other" / "config.json").exists()  # refused before the run folder records anything
