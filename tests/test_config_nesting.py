"""The GANgealing training config nests the model configs (issue 14, item 2): presets keep their
values, old flat config.json files and committed checkpoints still load and resume, the flat CLI
flags still set the nested fields, and the three trainers share ``fit(max_steps, max_seconds)``."""
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import torch

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import load_checkpoint, save_checkpoint
from gangealing.cli import build_parser, main
from gangealing.commands.train import config_from_args
from gangealing.config import GeneratorConfig, STNConfig, TargetConfig
from gangealing.losses.perceptual import PixelDistance
from gangealing.train.classifier import ClassifierTrainer
from gangealing.train.gan import GANTrainer
from gangealing.train.gangealing import GANgealingTrainer, saved_train_config
from gangealing.train.presets import MODEL_SETTINGS, PRESETS, GANgealingTrainConfig, get_preset

ROOT = Path(__file__).resolve().parents[1]

# Every preset"s flat settings, captured from the code before the configs were nested (issue 14).
DEFAULTS = {
    "transforms": ("similarity", "flow"), "num_heads": 1, "flips": False, "num_directions": 1, "inject": 5,
    "loss": "lpips-vgg", "tv_weight": 1000.0, "identity_weight": 1.0, "freeze_target": False,
    "sample_from_full_res": False, "padding_mode": "reflection", "input_jitter": (), "flow_size": 128,
    "input_size": 256, "stn_channel_multiplier": 0.5, "stn_max_channels": 512, "iters": 1500000, "batch": 40,
    "micro_batch": 5, "stn_lr": 0.001, "target_lr": 0.01, "anneal_psi": 150000, "anneal_fn": "cosine",
    "period": 37500, "t_mult": 2, "decay": 0.9, "ema_decay": 0.9977843871238888, "pca_samples": 1000000,
    "kmeans_candidates": 50000, "kmeans_lloyd": 0, "log_every": 25, "vis_every": 5000, "ckpt_every": 50000, "n_sample": 64,
    "n_mean": 8000, "seed": 0,
    # Added 2026-12-07 with the original's value (the flow regressed at flow_size / 8).
    "flow_downsample": 8,
    # Added 2026-12-07, off (the original has no re-seeding).
    "reseed_every": 0, "reseed_below": 0.25, "reseed_samples": 1000,
}
PRESET_CHANGES = {
    "lsun-cats": {"padding_mode": "border"},
    "lsun-cats-lpips": {"tv_weight": 2500.0, "padding_mode": "border"},
    "lsun-cats-ssl": {"loss": "vgg-ssl", "padding_mode": "border"},
    "lsun-dogs": {"tv_weight": 2500.0, "padding_mode": "border"},
    "lsun-bicycles": {"tv_weight": 2500.0},
    "lsun-tvmonitors": {"tv_weight": 2500.0},
    "lsun-cars": {"num_heads": 4, "flips": True, "num_directions": 5, "inject": 6, "tv_weight": 2500.0,
        "sample_from_full_res": True},
    "celeba": {"num_directions": 512, "inject": 6, "tv_weight": 2500.0, "padding_mode": "border"},
    "tiny": {"inject": 4, "loss": "l2", "padding_mode": "border", "flow_size": 32, "input_size": 32,
        "stn_max_channels": 64, "iters": 900, "micro_batch": 20, "anneal_psi": 200, "period": 100,
        "ema_decay": 0.9908006132652293, "pca_samples": 100000, "kmeans_candidates": 2000, "log_every": 10,
        "vis_every": 250, "ckpt_every": 250, "n_sample": 32, "n_mean": 1000},
    "tiny-clusters": {"num_heads": 4, "inject": 4, "loss": "l2", "padding_mode": "border", "flow_size": 32,
        "input_size": 32, "stn_max_channels": 64, "iters": 300, "micro_batch": 20, "anneal_psi": 60, "period": 30,
        "ema_decay": 0.9771599684342459, "pca_samples": 100000, "kmeans_candidates": 2000, "log_every": 10,
        "vis_every": 250, "ckpt_every": 250, "n_sample": 32, "n_mean": 1000},
    "tiny-clusters-flips": {"num_heads": 2, "flips": True, "inject": 4, "loss": "l2",
        "padding_mode": "border", "flow_size": 32, "input_size": 32, "stn_max_channels": 64, "iters": 300,
        "micro_batch": 20, "anneal_psi": 60, "period": 30, "ema_decay": 0.9771599684342459, "pca_samples": 100000,
        "kmeans_candidates": 2000, "log_every": 10, "vis_every": 250, "ckpt_every": 250, "n_sample": 32,
        "n_mean": 1000},
    "tiny-similarity": {"transforms": ("similarity",), "inject": 4, "loss": "l2", "tv_weight": 0.0,
        "identity_weight": 0.0, "padding_mode": "border", "flow_size": 32, "input_size": 32, "stn_max_channels": 64,
        "iters": 900, "micro_batch": 20, "anneal_psi": 200, "period": 100, "ema_decay": 0.9908006132652293,
        "pca_samples": 100000, "kmeans_candidates": 2000, "log_every": 10, "vis_every": 250, "ckpt_every": 250,
        "n_sample": 32, "n_mean": 1000},
}

# The "train" entry of a run's config.json before the nesting (runs/gangealing-cat: the tiny preset).
OLD_FLAT = {
    "transforms": ["similarity", "flow"], "num_heads": 1, "flips": False, "num_directions": 1, "inject": 4,
    "loss": "mobilenet", "tv_weight": 1000.0, "identity_weight": 1.0, "freeze_target": False,
    "sample_from_full_res": False, "padding_mode": "border", "input_jitter": [], "flow_size": 32, "input_size": 32,
    "stn_channel_multiplier": 0.5, "stn_max_channels": 64, "iters": 900, "batch": 40, "micro_batch": 20,
    "stn_lr": 0.001, "target_lr": 0.01, "anneal_psi": 200, "anneal_fn": "cosine", "period": 100, "t_mult": 2,
    "decay": 0.9, "ema_decay": 0.9908006132652293, "pca_samples": 100000, "kmeans_candidates": 2000,
    "log_every": 10, "vis_every": 250, "ckpt_every": 250, "n_sample": 32, "n_mean": 1000, "seed": 0,
}


def tiny_generator():
    torch.manual_seed(0)
    return build("generator", GeneratorConfig(size=16, style_dim=32, n_mlp=2, max_channels=16)).eval()


def test_every_preset_keeps_its_values():
    assert GANgealingTrainConfig().flat() == DEFAULTS
    for name, make in PRESETS.items():
        cfg = make()
        assert cfg.flat() == {**DEFAULTS, **PRESET_CHANGES[name]}, name
        # The nested configs are what the flat settings used to build.
        flat = cfg.flat()
        assert cfg.stn == STNConfig(transforms=flat["transforms"], flow_size=flat["flow_size"],
                                    input_size=flat["input_size"], channel_multiplier=flat["stn_channel_multiplier"],
                                    max_channels=flat["stn_max_channels"], num_heads=flat["num_heads"])
        assert (cfg.target.num_directions, cfg.target.inject, cfg.target.num_heads) == (
            flat["num_directions"], flat["inject"], flat["num_heads"])


def test_the_training_defaults_are_the_model_configs_defaults():
    cfg = GANgealingTrainConfig()
    assert cfg.stn == STNConfig() and cfg.target == TargetConfig()


def test_old_flat_layout_loads_as_the_nested_config():
    cfg = GANgealingTrainConfig.from_dict(OLD_FLAT)
    assert cfg == get_preset("tiny", loss="mobilenet")  # the tiny preset's loss when that run was made
    assert cfg.stn.max_channels == 64 and cfg.target.inject == 4 and cfg.flow_size == 32
    older = {k: v for k, v in OLD_FLAT.items() if k != "input_jitter"}  # checkpoints from before input_jitter
    assert GANgealingTrainConfig.from_dict(older) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        GANgealingTrainConfig.from_dict({**OLD_FLAT, "no_such_setting": 1})


def test_nested_layout_round_trips_through_json():
    cfg = get_preset("lsun-cars")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert set(d["stn"]) == {f.name for f in dataclasses.fields(STNConfig)}
    assert GANgealingTrainConfig.from_dict(d) == cfg


def test_flat_names_set_the_nested_fields():
    cfg = get_preset("tiny", num_heads=3, stn_channel_multiplier=0.25, flow_size=16, input_size=16)
    assert (cfg.stn.num_heads, cfg.target.num_heads, cfg.stn.channel_multiplier) == (3, 3, 0.25)
    assert set(MODEL_SETTINGS) <= set(cfg.flat())
    with pytest.raises(ValueError, match="heads"):
        cfg.replace(stn=dataclasses.replace(cfg.stn, num_heads=2)).validate()
    with pytest.raises(TypeError):
        cfg.replace(no_such_setting=1)


@pytest.mark.parametrize("path", sorted(ROOT.glob("models/gangealing-*/model.pt")), ids=lambda p: p.parent.name)
def test_committed_models_settings_load(path):
    ckpt = load_checkpoint(path)
    cfg = GANgealingTrainConfig.from_dict(ckpt.meta["train"]).validate()
    stn = STNConfig.from_dict(ckpt.config["stn"])
    assert dataclasses.replace(cfg.stn, image_channels=stn.image_channels) == stn
    target = TargetConfig.from_dict(ckpt.config["target"])
    assert cfg.for_generator(target).target == target


def test_committed_model_trains_its_classifier(tmp_path):
    model = load_checkpoint(ROOT / "models/gangealing-tiny-cat-k2flips/model.pt")  # flat settings in meta
    from gangealing.train.presets import ClassifierTrainConfig

    cfg = ClassifierTrainConfig(iters=1, batch=2, micro_batch=2, n_sample=4)
    tr = ClassifierTrainer(model, cfg, tmp_path / "cls", loss_fn=PixelDistance(2), show_progress=False,
                           tensorboard=False)
    assert tr.train_cfg.flips and tr.train_cfg.stn.num_heads == 2
    assert tr.fit(max_seconds=60).step == 1


def _flatten_run(run: Path) -> None:
    """Rewrite a run's checkpoints and config.json in the flat layout of older runs."""
    for path in (run / "checkpoints").glob("*.pt"):
        raw = torch.load(path, map_location="cpu", weights_only=True)
        raw["meta"]["train"] = GANgealingTrainConfig.from_dict(raw["meta"]["train"]).flat()
        torch.save(raw, path)
    saved = json.loads((run / "config.json").read_text())
    saved["train"] = GANgealingTrainConfig.from_dict(saved["train"]).flat()
    (run / "config.json").write_text(json.dumps(saved))


def test_a_run_saved_in_the_flat_layout_resumes(tmp_path):
    gen_file = save_checkpoint(make_checkpoint("generator", {"generator": tiny_generator()}), tmp_path / "g.pt")
    run = tmp_path / "run"
    flags = ["--preset", "tiny", "--flow-size", "16", "--input-size", "16", "--stn-max-channels", "16", "--batch", "4",
             "--micro-batch", "2", "--anneal-psi", "1", "--period", "1", "--pca-samples", "300", "--inject", "3",
             "--loss", "l2", "--vis-every", "1000", "--quiet", "--no-tensorboard", "--padding-mode", "zeros"]
    assert main(["train", "--generator", str(gen_file), "--out", str(run), *flags, "--iters", "3",
                 "--max-steps", "1"]) == 0
    _flatten_run(run)
    args = build_parser().parse_args(["train", "--generator", str(gen_file), "--out", str(run)])
    cfg = config_from_args(args)
    assert cfg == saved_train_config(run)
    assert (cfg.stn.flow_size, cfg.target.inject, cfg.padding_mode) == (16, 3, "zeros")
    with pytest.raises(ValueError, match=r"cannot change on resume \(flow_size 16 -> 32"):
        GANgealingTrainer(cfg.replace(flow_size=32, input_size=32), tiny_generator(), run, loss_fn=PixelDistance(2),
                          show_progress=False, tensorboard=False)
    assert main(["train", "--generator", str(gen_file), "--out", str(run), "--quiet", "--no-tensorboard"]) == 0
    model = load_checkpoint(run / "model.pt")
    assert model.step == 3
    saved = model.meta["train"]  # now nested, the target's sizes the generator's
    assert saved["stn"]["flow_size"] == 16 and saved["target"]["style_dim"] == 32


def test_the_three_trainers_share_fit_with_both_budgets():
    for trainer in (GANTrainer, GANgealingTrainer, ClassifierTrainer):
        params = inspect.signature(trainer.fit).parameters
        assert {"max_steps", "max_seconds"} <= set(params), trainer
    assert GANTrainer.train is GANTrainer.fit  # the old name
