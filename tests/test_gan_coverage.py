"""Issue 13: adaptive discriminator augmentation, clean budgets and signals, precision/recall, digits."""
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.checkpoint import load_checkpoint
from gangealing.cli import main
from gangealing.metrics.coverage import knn_radii, precision_recall
from gangealing.train.augment import ADA_OPS, AdaptiveP, ada_augment, parse_ada_policy
from gangealing.train.gan import GANTrainer, ada_policy, resolve_config, train_gan
from gangealing.train.runtime import RunInUseError, read_metrics

MICRO = dict(size=8, style_dim=16, n_mlp=1, g_max_channels=16, d_max_channels=16, batch=4, n_sample=4,
             log_every=1, sample_every=100, ckpt_every=100, d_reg_every=1, r1=1.0)


@pytest.fixture
def images(noise_images):
    return noise_images


def ada_cfg(data, **kw):
    # ada_kimg tiny and interval 1: p reaches 1 after one step, so R1 steps see augmented reals.
    return resolve_config("tiny", data=str(data), **{**MICRO, "augment": "ada", "ada_kimg": 0.004,
                                                     "ada_interval": 1, **kw})


KW = dict(device="cpu", show_progress=False)


# ------------------------------------------------------------------------------------ ADA ops
def test_ada_augment_is_identity_at_p0_and_differentiable_at_p1():
    x = torch.randn(5, 3, 16, 16, requires_grad=True)
    assert ada_augment(x, 0.0, ADA_OPS, torch.Generator().manual_seed(0)) is x
    y = ada_augment(x, 1.0, ADA_OPS, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(y, x)
    (g,) = torch.autograd.grad(y.sum(), x)
    assert g.abs().sum() > 0
    same = ada_augment(x, 1.0, ADA_OPS, torch.Generator().manual_seed(0))
    assert torch.equal(same, y)  # all randomness from the generator


def test_ada_translation_moves_whole_pixels_and_flip_mirrors():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(16, 1, 1, 1)
    y = ada_augment(x, 1.0, ("translation",), torch.Generator().manual_seed(3))
    inner = y[:, :, 2:-2, 2:-2]  # away from the reflected border (shifts are at most 1 px at 8 px)
    assert torch.allclose(inner, inner.round(), atol=1e-4)
    assert (y != x).any(dim=(1, 2, 3)).any()  # some were shifted
    f = ada_augment(x, 1.0, ("xflip",), torch.Generator().manual_seed(0))
    assert torch.allclose(f, x.flip(-1), atol=1e-4)


def test_ada_policy_follows_mirror_and_checks_names():
    assert "xflip" not in ada_policy(resolve_config("tiny", data="x"))
    assert ada_policy(resolve_config("tiny", data="x", mirror=True))[0] == "xflip"
    assert ada_policy(resolve_config("tiny", data="x", ada_policy="scale,rotation")) == ("scale", "rotation")
    with pytest.raises(ValueError, match="unknown ADA augmentation"):
        parse_ada_policy("translation,zoom")


def test_adaptive_p_moves_one_unit_per_kimg_and_stays_in_range():
    ada = AdaptiveP(target=0.6, kimg=1.0, interval=2)
    for _ in range(4):  # 4 steps of 100 images, all judged real: two adjustments of +200 images / 1000
        ada.update(100.0, 100)
    assert ada.p == pytest.approx(0.4) and ada.last_rt == 1.0
    for _ in range(40):
        ada.update(100.0, 100)
    assert ada.p == 1.0
    for _ in range(60):  # D unsure (E sign = 0 < 0.6): p falls back to 0, not below
        ada.update(0.0, 100)
    assert ada.p == 0.0
    state = ada.state_dict()
    other = AdaptiveP(target=0.6, kimg=1.0, interval=2)
    other.load_state_dict(state)
    assert other.state_dict() == state
    with pytest.raises(ValueError):
        AdaptiveP(target=1.5)


# ------------------------------------------------------------------------------------ training
def test_ada_training_regularises_augmented_reals_and_logs_p(images, tmp_path):
    # p starts at 1 (and moves by at most 4e-6 a step): every step, R1 steps included, sees augmented
    # reals, the case that needs R1 at the augmented images (grid_sample has no double backward).
    trainer = GANTrainer(ada_cfg(images, iters=4, ada_kimg=1000.0), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    trainer.ada.p = 1.0
    res = trainer.train()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert res.step == 4 and all("r1" in r and math.isfinite(r["r1"]) for r in rows)
    assert all(r["ada_p"] == pytest.approx(1.0, abs=1e-4) for r in rows)
    raw = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert raw["training"]["ada"]["p"] == pytest.approx(rows[-1]["ada_p"])


def test_budget_stop_then_resume_continues_exactly(images, tmp_path):
    """A run stopped by its wall-clock budget and resumed equals one uninterrupted run (ADA state included)."""
    train_gan(ada_cfg(images, iters=5), tmp_path / "straight", cache_dir=tmp_path / "c", **KW)
    first = train_gan(ada_cfg(images, iters=5), tmp_path / "split", cache_dir=tmp_path / "c", max_seconds=0.0, **KW)
    assert first.step == 1 and first.checkpoint is not None
    train_gan(ada_cfg(images, iters=5), tmp_path / "split", cache_dir=tmp_path / "c", **KW)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    for part in ("generator", "discriminator"):
        assert all(torch.equal(a["state"][part][k], b["state"][part][k]) for k in a["state"][part])
    assert a["training"]["ada"] == b["training"]["ada"]
    steps = [r["step"] for r in read_metrics(tmp_path / "split" / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5]


def test_sigint_saves_a_checkpoint_and_stops(images, tmp_path, monkeypatch):
    trainer = GANTrainer(ada_cfg(images, iters=50), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    step = trainer.train_step

    def step_then_interrupt():
        out = step()
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(trainer, "train_step", step_then_interrupt)
    res = trainer.train()
    assert res.stopped_by == "SIGINT" and res.step == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").step == 2


def test_one_training_per_folder(images, tmp_path):
    first = GANTrainer(ada_cfg(images, iters=2), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    with pytest.raises(RunInUseError):
        GANTrainer(ada_cfg(images, iters=2), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    first.train()
    assert GANTrainer(ada_cfg(images, iters=3), tmp_path / "run", cache_dir=tmp_path / "c", **KW).step == 2


@pytest.mark.parametrize("change, message", [(dict(iters=0), "--iters must be positive"),
                                             (dict(augment="adaptive"), "--augment must be"),
                                             (dict(ada_target=1.0), "--ada-target"),
                                             (dict(size=12), "power of two"),
                                             (dict(batch=64), "fewer than one batch")])
def test_bad_settings_are_refused_before_anything_is_written(images, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        train_gan(ada_cfg(images, **change), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    assert not (tmp_path / "run" / "config.json").exists()


def test_cli_minutes_and_iters_zero(images, tmp_path, capsys):
    base = ["train-gan", str(images), "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "c"),
            "--size", "8", "--style-dim", "16", "--n-mlp", "1", "--g-max-channels", "16", "--d-max-channels", "16",
            "--batch", "4", "--n-sample", "4", "--no-progress", "--device", "cpu", "--augment", "ada"]
    assert main(base + ["--iters", "0"]) == 1
    assert "--iters must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--minutes", "-1"])
    assert main(base + ["--iters", "100", "--minutes", "0.00001"]) == 0
    out = capsys.readouterr().out
    assert "rerun the same command to continue" in out and json.loads(out.splitlines()[-2])["step"] < 100


# ------------------------------------------------------------------------------------ coverage
def test_precision_recall_separates_realism_from_coverage():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 8))
    same = rng.normal(size=(400, 8))
    pr = precision_recall(real, same)
    assert pr.precision > 0.8 and pr.recall > 0.8
    collapsed = real[:20] + rng.normal(scale=0.01, size=(20, 8))  # mode collapse: a few real images, repeated
    collapsed = np.repeat(collapsed, 20, axis=0)
    pr = precision_recall(real, collapsed)
    assert pr.precision > 0.95 and pr.recall < 0.2
    far = rng.normal(size=(400, 8)) + 50
    pr = precision_recall(real, far)
    assert pr.precision == 0 and pr.recall == 0
    assert torch.allclose(knn_radii(np.array([[0.0], [1.0], [3.0]]), k=1), torch.tensor([1.0, 1.0, 2.0]).double())
    with pytest.raises(ValueError, match="k = 3"):
        knn_radii(np.zeros((3, 2)), k=3)


def _mnist_test(n):
    from gangealing.data import prepare_dataset
    from gangealing.data.embedded import MissingDatasetError

    try:
        test = prepare_dataset("mnist", 32, "center", split="test")
    except MissingDatasetError as e:
        pytest.fail(f"the embedded MNIST is part of the test set-up (run.sh installs it): {e}")
    return torch.from_numpy(np.array(test.images[:n])).float().div(127.5).sub(1.0), torch.from_numpy(test.labels[:n])


def test_committed_digit_classifier_reads_real_test_digits():
    from gangealing.metrics.digits import histogram, load_digit_classifier, predict_digits

    x, y = _mnist_test(1000)
    pred = predict_digits(load_digit_classifier(), x)
    assert (pred == y).double().mean() >= 0.985
    h = histogram(pred)
    assert sum(h.counts) == 1000 and 0.05 < h.min_share <= h.max_share < 0.15


def test_eval_gan_reports_coverage_digits_and_grid(tmp_path, capsys):
    """A generator of MNIST (an untrained one suffices) gets precision, recall, a digit histogram and a grid."""
    from gangealing.build import build, make_checkpoint
    from gangealing.checkpoint import save_checkpoint
    from gangealing.config import GeneratorConfig

    torch.manual_seed(0)
    G = build("generator", GeneratorConfig(size=32, style_dim=16, n_mlp=1, max_channels=16))
    ck = make_checkpoint("generator", {"generator": G}, 0, {"train_config": {"data": "mnist", "pad": "center"}})
    save_checkpoint(ck, tmp_path / "g.pt")
    assert main(["eval-gan", str(tmp_path / "g.pt"), "--n", "20", "--n-digits", "30", "--resolution", "32",
                 "--grid", str(tmp_path / "grid.png"), "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 <= res["precision"] <= 1 and 0 <= res["recall"] <= 1 and res["k"] == 3
    assert sum(res["digit_counts"]) == 30 and res["digit_n"] == 30
    w, h = Image.open(tmp_path / "grid.png").size
    assert w == h and w >= 8 * 32
    with pytest.raises(SystemExit):  # argparse: --n below 4 is a usage error
        main(["eval-gan", str(tmp_path / "g.pt"), "--n", "0"])


def test_bench_generator_section_rows_and_table(tmp_path):
    from gangealing.zoo import resolve_model_file
    from gangealing.apps import bench as B
    from gangealing.apps.bench_generators import GENERATORS, generator_rows, generators_markdown, real_vs_real_row

    path = resolve_model_file(GENERATORS["gan-cat"].path)
    assert path is not None, "models/gan-cat/generator.pt is committed"
    rows = generator_rows({"gan-cat": path}, n=12)
    rows.append(real_vs_real_row("animals:cat", n=12))
    assert [r["generator"] for r in rows] == ["gan-cat", "real train vs real test"]
    assert all(0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["fd"] > 0 for r in rows)
    md = "\n".join(generators_markdown(rows))
    assert "## Generators" in md and "| animals:cat | gan-cat |" in md and "ceiling" in md
    res = B.BenchResult(config={}, generators=rows)
    assert "## Generators" in B.to_markdown(res)


def test_resume_with_other_settings_is_refused_and_the_run_kept(images, tmp_path):
    train_gan(ada_cfg(images, iters=2), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with pytest.raises(ValueError, match=r"other settings.*r1 1\.0 -> 0\.5.*another --out"):
        train_gan(ada_cfg(images, iters=4, r1=0.5), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    assert last.read_bytes() == before
    # A longer --iters is allowed: it continues the same run.
    assert train_gan(ada_cfg(images, iters=3), tmp_path / "run", cache_dir=tmp_path / "c", **KW).step == 3


def test_a_non_finite_loss_stops_with_one_line_and_keeps_the_last_checkpoint(images, tmp_path, monkeypatch):
    train_gan(ada_cfg(images, iters=2, ckpt_every=1), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    trainer = GANTrainer(ada_cfg(images, iters=6, ckpt_every=1), tmp_path / "run", cache_dir=tmp_path / "c", **KW)
    step = trainer.train_step

    def diverge():
        out = step()
        if trainer.step == 4:
            out = {**out, "loss_d": torch.tensor(float("nan"))}
        return out

    monkeypatch.setattr(trainer, "train_step", diverge)
    with pytest.raises(ValueError, match="training diverged: loss_d became nan at step 4.*lower --lr"):
        trainer.train()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").step == 3
