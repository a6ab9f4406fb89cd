"""Refinement (gangealing.train.refine, `gangealing refine`) and the gradient-congealing baseline (issue 16)."""
import hashlib
import math

import numpy as np
import pytest
import torch

from gangealing.baselines.congealing import params_to_matrix
from gangealing.baselines.rigid import RigidCongealingConfig, rigid_congeal
from gangealing.geometry.similarity import affine_grid
from gangealing.geometry.warp import warp
from gangealing.train.refine import (RefineConfig, Refiner, default_config, pose_of, refine, save_refined,
                                     scratch_stn)


def _copies(n=24, size=16, seed=0, max_angle=20.0, max_shift=0.2):
    """One asymmetric shape (an 'L' on a blurred blob) under known random rotations and shifts, no scaling."""
    base = -torch.ones(1, 3, size, size)
    s = size // 16
    base[..., 4 * s:12 * s, 5 * s:8 * s] = 1
    base[..., 9 * s:12 * s, 5 * s:12 * s] = 1
    g = torch.Generator().manual_seed(seed)
    p = torch.stack([(torch.rand(n, generator=g) * 2 - 1) * math.radians(max_angle), torch.zeros(n),
                     (torch.rand(n, generator=g) * 2 - 1) * max_shift, (torch.rand(n, generator=g) * 2 - 1) * max_shift], 1)
    imgs = warp(base.expand(n, -1, -1, -1), affine_grid(params_to_matrix(p), size), padding_mode="border")
    return imgs, p


def _spread(images):
    """Mean per-pixel standard deviation over a set (lower = tighter alignment)."""
    return float(images.std(0).mean())


# ------------------------------------------------------------------------------------- rigid


@pytest.mark.parametrize("flow_cells", [0, 4])
def test_gradient_congealing_undoes_known_rotations_and_shifts(flow_cells):
    imgs, _ = _copies(n=30, size=24)
    copy = imgs.clone()
    res = rigid_congeal(imgs, RigidCongealingConfig(steps_per_blur=40, flow_cells=flow_cells))
    assert torch.equal(imgs, copy)  # the input is not modified
    assert _spread(res.images) < 0.5 * _spread(imgs), (_spread(imgs), _spread(res.images))
    assert res.params.mean(0).abs().max() < 1e-5  # the mean pose stays the identity
    # Undone by rotating and shifting, not by zooming: scales stay near 1 (bound 0.47). One image may
    # trade a little scale for flow (0.14-0.16 on different CPUs), so the max has headroom.
    log_scale = res.params[:, 1].abs()
    assert log_scale.mean() < 0.05 and log_scale.max() < 0.25, log_scale
    assert res.grids.shape == (30, 24, 24, 2) and (res.flow is None) == (flow_cells == 0)
    assert res.objective[-1] < 0.5 * res.objective[0]


def test_gradient_congealing_needs_two_images():
    with pytest.raises(ValueError, match="at least two"):
        rigid_congeal(torch.zeros(1, 1, 8, 8))


# ------------------------------------------------------------------------------------ refine


def _tiny_cfg(**kw):
    base = dict(steps=150, batch=16, lr=3e-3, eval_every=25, patience=100, holdout=0.0, blur=(1.5, 0.5),
                tv_weight=200.0)
    base.update(kw)
    return RefineConfig(**base)


# (flow grid, flow warm-up, bound on the angle correlation). The default grid (size / 4) lets the flow
# take a share of the rotation (measured -0.78); coarser (size / 8) the similarity takes all of it
# (-0.96), and so it does on the default grid when the flow is frozen for the first 30% (-0.935).
@pytest.mark.parametrize("flow_downsample,flow_warmup,angle_corr", [(None, 0.0, -0.7), (8, 0.0, -0.9), (None, 0.3, -0.9)])
def test_refine_from_nothing_undoes_rotations_and_shifts_without_zooming(flow_downsample, flow_warmup, angle_corr):
    torch.manual_seed(0)
    imgs, known = _copies(n=24, size=16)
    stn = scratch_stn(16, channels=16, **({} if flow_downsample is None else {"flow_downsample": flow_downsample}))
    res = refine(stn, imgs, _tiny_cfg(flow_warmup=flow_warmup))
    with torch.no_grad():
        out = res.stn(imgs)
    before, after = _spread(imgs), _spread(out.images)
    assert after < 0.6 * before, (before, after)
    pose = pose_of(out.matrix)
    # Not zoomed: every image keeps its scale (within 20%) and the set's mean scale stays 1.
    assert pose[:, 1].abs().max() < math.log(1.2), pose[:, 1]
    assert pose[:, 1].mean().abs() < 0.05
    # The similarity did the work: its angles and shifts follow the known ones (inverse warps, so the
    # correlation is negative; shifts -0.98 in all three cases, angles as the parameters say).
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a, b]))[0, 1])  # noqa: E731
    assert corr(pose[:, 0], known[:, 0]) < angle_corr, pose[:, 0]
    assert corr(pose[:, 2], known[:, 2]) < -0.9 and corr(pose[:, 3], known[:, 3]) < -0.9


def test_scale_guard_stops_a_zoom():
    # Without the pose and scale terms a constant template is matched best by zooming onto a flat
    # patch; with them the set keeps its scale.
    torch.manual_seed(0)
    imgs, _ = _copies(n=16, size=16)
    flat = torch.full((1, 3, 16, 16), -1.0)  # a "GAN target" that is all background
    guarded = refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=40, template="gan"), template_image=flat)
    free = refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=40, template="gan", pose_weight=0.0, scale_weight=0.0),
                  template_image=flat)
    with torch.no_grad():
        g = pose_of(guarded.stn(imgs).matrix)[:, 1]
        f = pose_of(free.stn(imgs).matrix)[:, 1]
    assert g.abs().max() < math.log(1.6) and f.mean() > 1.0, (g, f)  # guarded: bounded; free: zoomed away


def test_holdout_early_stopping_and_result():
    imgs, _ = _copies(n=12, size=16)
    res = refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=20, holdout=0.25, eval_every=5, patience=1))
    assert res.holdout_images == 3 and res.train_images == 9
    assert res.best_step in {0, 5, 10, 15, 20} and res.holdout_loss <= res.initial_holdout_loss
    assert res.stopped in {"steps", "patience"} and res.steps <= 20 and res.images_per_s > 0


def test_large_collections_cap_the_held_out_split_and_the_first_template():
    imgs, _ = _copies(n=12, size=16)
    fit = lambda **kw: refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=1, holdout=0.5, **kw))  # noqa: E731
    full = fit()
    assert full.holdout_images == 6 and fit(max_holdout=2).holdout_images == 2
    # The first template is the mean of at most init_images training images (a seeded subset).
    assert fit(init_images=6).initial_holdout_loss == full.initial_holdout_loss  # all 6 training images
    one, one_again = fit(init_images=1), fit(init_images=1)
    assert one.initial_holdout_loss != full.initial_holdout_loss
    assert one.initial_holdout_loss == one_again.initial_holdout_loss


def test_scratch_stn_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(1)
    a = scratch_stn(16, 16)
    state = torch.random.get_rng_state()
    torch.rand(5)  # whatever ran before must not change the transformer
    b = scratch_stn(16, 16)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), scratch_stn(16, 16, seed=3).state_dict().values()))
    torch.manual_seed(1)
    scratch_stn(16, 16)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_patience_counts_only_after_patience_after():
    # lr 0 and a frozen template: the held-out distance never improves, so every evaluation is "bad".
    imgs, _ = _copies(n=12, size=16)
    cfg = dict(steps=20, holdout=0.25, eval_every=5, patience=1, lr=0.0, template_decay=1.0)
    early = refine(scratch_stn(16, 16), imgs, _tiny_cfg(patience_after=0.0, **cfg))
    late = refine(scratch_stn(16, 16), imgs, _tiny_cfg(patience_after=0.5, **cfg))
    assert (early.stopped, early.steps) == ("patience", 5)
    assert (late.stopped, late.steps) == ("patience", 10)  # evaluations at 5 did not count; 10 = half the steps
    assert late.best_step == 0 and late.holdout_loss == late.initial_holdout_loss  # the start kept


def test_flip_model_is_refined_on_the_images_as_it_faces_them():
    # A model trained with --flips mirrors some inputs at test time; refine must fit those images
    # mirrored (as the model meets them), not teach the transformer both facings.
    torch.manual_seed(0)
    imgs, _ = _copies(n=16, size=16)
    imgs = torch.cat([imgs[:8], imgs[8:].flip(3)])
    stn = scratch_stn(16, 16)
    with torch.no_grad():  # a non-identity flow, so that flip inference has something to compare
        for n, p in stn.named_parameters():
            if "flow_out" in n:
                p.normal_(0, 0.3)
    refiner = Refiner(stn, _tiny_cfg(steps=2, holdout=0.0), flip=True)
    flipped = stn(imgs, flip="auto", antialias=False).flipped
    assert flipped.any() and not flipped.all()
    faced = refiner._prepare(imgs)[0]
    assert torch.equal(faced[flipped], imgs[flipped].flip(3)) and torch.equal(faced[~flipped], imgs[~flipped])
    assert torch.equal(Refiner(stn, _tiny_cfg(steps=2, holdout=0.0))._prepare(imgs)[0], imgs)  # no flips: as given
    res = refiner.fit(imgs, progress_bar=False)
    assert res.steps == 2
    # The training steps read the starting model's view of each image from a cache computed once:
    # the same facing and the same warp as computing it on the step, for repeated indices too.
    from gangealing.train.refine import _StartCache

    cache = _StartCache(refiner, len(imgs))
    assert cache.enabled and not _StartCache(refiner, len(imgs), max_bytes=1000).enabled
    for idx in (torch.tensor([3, 12, 3, 0]), torch.tensor([12, 15, 0, 8])):
        x, heads, (grid, matrix, flow) = cache.batch(idx, imgs[idx])
        assert heads is None and torch.equal(x, refiner._prepare(imgs[idx])[0])
        with torch.no_grad():
            ref = refiner._forward(refiner.start, x)
        for got, want in ((grid, ref.grid), (matrix, ref.matrix), (flow, ref.flow)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert sorted(cache.rows) == [0, 3, 8, 12, 15]
    assert not _StartCache(Refiner(scratch_stn(16, 16), _tiny_cfg()), 16).enabled  # from nothing: no start to keep


def test_stages_similarity_keeps_the_flow_and_trains_the_rest():
    imgs, _ = _copies(n=12, size=16)
    stn = scratch_stn(16, 16)
    with torch.no_grad():  # a non-identity start, so that the flow's weights would move if trained
        for n, p in stn.named_parameters():
            if "flow_out" in n or "warp_head" in n:
                p.normal_(0, 0.05)
    res = refine(stn, imgs, _tiny_cfg(steps=5, stages="similarity"))
    before, after = dict(stn.named_parameters()), dict(res.stn.named_parameters())
    flow = [n for n in before if n.startswith("stns.") and stn.transforms[int(n.split(".")[1])] == "flow"]
    rigid = [n for n in before if n not in flow]
    assert flow and rigid
    assert all(torch.equal(before[n], after[n]) for n in flow)
    assert any(not torch.equal(before[n], after[n]) for n in rigid)
    assert all(p.requires_grad for p in res.stn.parameters())  # the written model is trainable as usual
    with pytest.raises(ValueError, match="stages"):
        Refiner(stn, _tiny_cfg(stages="flow"))


def test_refine_fits_the_similarity_passes_the_model_is_applied_with():
    imgs, _ = _copies(n=8, size=16)
    stn = scratch_stn(16, 16)
    with torch.no_grad():  # a non-identity similarity, so that a second pass moves the result
        for n, p in stn.named_parameters():
            if "warp_head" in n and n.startswith("stns.0"):
                p.normal_(0, 0.05)
    two = Refiner(stn, _tiny_cfg(steps=1), iters=2)
    with torch.no_grad():
        got = two._forward(two.stn, imgs).images
        assert torch.allclose(got, stn(imgs, antialias=False, iters=2).images)
        assert not torch.allclose(got, stn(imgs, antialias=False).images, atol=1e-4)
    assert two.fit(imgs, progress_bar=False).steps == 1
    with pytest.raises(ValueError, match="iters"):
        Refiner(stn, _tiny_cfg(), iters=0)


def test_bad_input_is_one_line_errors():
    imgs, _ = _copies(n=3, size=16)
    with pytest.raises(ValueError, match="too few to hold out a split"):
        refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=1, holdout=0.1))
    refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=1, holdout=0.0))  # fine without a held-out split
    with pytest.raises(ValueError, match="load_refine_images"):
        refine(scratch_stn(16, 16), torch.zeros(6, 3, 24, 24), _tiny_cfg(steps=1))
    with pytest.raises(ValueError, match="power of two"):
        scratch_stn(24)
    with pytest.raises(ValueError, match="GAN target"):
        Refiner(scratch_stn(16, 16), RefineConfig(template="gan"))


def test_parse_overrides_reads_json_values_and_refuses_unknown_keys():
    from gangealing.train.refine import parse_overrides

    over = parse_overrides(["tv_weight=50", 'stages="similarity"', "blur=[0.5,0.5]"])
    assert over == {"tv_weight": 50, "stages": "similarity", "blur": (0.5, 0.5)}
    assert default_config(False, **over).lr == default_config(True, stages="similarity").lr  # the stage's own rate
    for bad in (["tv=1"], ["tv_weight"]):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_overrides(bad)


def test_default_configs_differ_by_start():
    assert default_config(True).anchor_weight > 0 and default_config(False).anchor_weight == 0
    assert default_config(False, steps=7, lr=None).steps == 7 and default_config(True, lr=None).lr == 3e-3
    assert default_config(True, tv_weight=50.0).tv_weight == 50.0 and default_config(True).patience_after == 0.5
    # The similarity stage alone takes a smaller rate unless one is given.
    assert default_config(True, stages="similarity").lr < default_config(True).lr
    assert default_config(True, stages="similarity", lr=3e-3).lr == 3e-3


def test_distillation_starts_from_the_set_level_fit():
    imgs, _ = _copies(n=16, size=16)
    res = refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=1, distill_steps=60, teacher_flow_cells=0))
    with torch.no_grad():
        after = _spread(res.stn(imgs).images)
    assert after < 0.8 * _spread(imgs)


# ------------------------------------------------------------------------- clustering models


def _two_shapes(n=12, size=16):
    """Copies of two different shapes under random rotations and shifts: ``(2n, 3, S, S)``, the
    shapes ``(2, 3, S, S)`` and each copy's shape ``(2n,)``."""
    a, _ = _copies(n=n, size=size, seed=0)
    bar = -torch.ones(1, 3, size, size)
    s = size // 16
    bar[..., 3 * s:6 * s, 3 * s:13 * s] = 1  # a bar on top and a block below it
    bar[..., 8 * s:13 * s, 9 * s:12 * s] = 1
    g = torch.Generator().manual_seed(1)
    p = torch.stack([(torch.rand(n, generator=g) * 2 - 1) * math.radians(20), torch.zeros(n),
                     (torch.rand(n, generator=g) * 2 - 1) * 0.2, (torch.rand(n, generator=g) * 2 - 1) * 0.2], 1)
    b = warp(bar.expand(n, -1, -1, -1), affine_grid(params_to_matrix(p), size), padding_mode="border")
    base_a = _copies(n=1, size=size, max_angle=0.0, max_shift=0.0)[0]
    return torch.cat([a, b]), torch.cat([base_a, bar]), torch.arange(2).repeat_interleave(n)


def _two_head_stn(size=16):
    from gangealing.build import build
    from gangealing.config import STNConfig

    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=size, input_size=size, channel_multiplier=0.125, max_channels=16, num_heads=2))
    with torch.no_grad():  # a trained model's heads are not at the identity (and refine refuses one that is)
        stn.stns[0].warp_head.linear.weight.normal_(0, 1e-3)
    return stn


def test_clustering_model_every_head_is_refined_on_its_own_cluster():
    from gangealing.losses.perceptual import build_perceptual_loss
    from gangealing.routing import TargetRouter

    imgs, shapes, which = _two_shapes()
    stn = _two_head_stn()
    router = TargetRouter(templates=shapes, distance=build_perceptual_loss("l2"), loss="l2")
    refiner = Refiner(stn, _tiny_cfg(steps=70, template="mean"), router=router)
    x, heads = refiner._prepare(imgs)
    assert torch.equal(heads, which) and torch.equal(x, imgs)  # routed to their shapes' heads, none mirrored
    template = refiner._mean_congealed([(x, heads)])
    assert template.shape == (2, 3, 16, 16)
    torch.testing.assert_close(template[1], refiner._forward(refiner.stn, x[which == 1], heads[which == 1]).images.mean(0))
    res = refiner.fit(imgs, progress_bar=False)
    assert res.stn.num_heads == 2
    with torch.no_grad():
        out = res.stn(imgs, heads=which).images
        start = stn(imgs, heads=which).images
        routed, flipped = router.route(res.stn, imgs)
    assert torch.equal(routed, which) and not flipped.any()
    for k in range(2):  # each head tightened its own cluster
        assert _spread(out[which == k]) < 0.6 * _spread(start[which == k]), (k, _spread(start[which == k]), _spread(out[which == k]))


def test_clustering_model_refine_errors():
    from gangealing.losses.perceptual import build_perceptual_loss
    from gangealing.routing import TargetRouter

    _, shapes, _ = _two_shapes(n=2)
    with pytest.raises(ValueError, match="clustering model"):
        Refiner(_two_head_stn(), _tiny_cfg())
    three = TargetRouter(templates=torch.cat([shapes, shapes[:1]]), distance=build_perceptual_loss("l2"))
    with pytest.raises(ValueError, match="3 targets but the transformer has 2"):
        Refiner(_two_head_stn(), _tiny_cfg(), router=three)
    router = TargetRouter(templates=shapes, distance=build_perceptual_loss("l2"))
    from gangealing.build import build
    from gangealing.config import STNConfig

    identity = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=16, num_heads=2))
    with pytest.raises(ValueError, match="no clusters to adapt"):
        Refiner(identity, _tiny_cfg(), router=router)
    for template in ("gan", "both", "mean"):  # the router's templates are the GAN targets
        assert Refiner(_two_head_stn(), _tiny_cfg(template=template), router=router).kind == template
    with pytest.raises(ValueError, match="distill_steps"):
        refine(_two_head_stn(), _two_shapes(n=4)[0], _tiny_cfg(steps=1, distill_steps=2), router=router)


# --------------------------------------------------------------------------- files and CLI


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_saved_model_loads_in_the_predictor(tmp_path):
    from gangealing.checkpoint import load_checkpoint
    from gangealing.predictor import Congealer

    imgs, _ = _copies(n=8, size=16)
    cfg = _tiny_cfg(steps=2)
    res = refine(scratch_stn(16, 16), imgs, cfg)
    path = save_refined(res, tmp_path / "m.pt", cfg=cfg, data="test")
    ck = load_checkpoint(path)  # weights_only loading
    assert ck.kind == "model" and ck.meta["source"] == "gangealing refine" and ck.meta["test"]["flip"] is False
    c = Congealer.from_checkpoint(path, device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(c.align(imgs).images, res.stn(imgs).images, atol=1e-4, rtol=0)


def test_a_finer_flow_grid_is_kept_by_the_saved_model(tmp_path):
    from gangealing.predictor import Congealer

    imgs, _ = _copies(n=8, size=16)
    stn = scratch_stn(16, 16, flow_downsample=4)  # the flow regressed at 4 x 4 (the original's 8: 2 x 2)
    assert stn.stns[1].warp_head.factor == 4
    with torch.no_grad():  # a flow that is not the identity, so the upsampling shows in the output
        stn.stns[1].warp_head.flow_out[-1].weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    cfg = _tiny_cfg(steps=2)
    res = refine(stn, imgs, cfg)
    c = Congealer.from_checkpoint(save_refined(res, tmp_path / "m.pt", cfg=cfg, data="test"), device="cpu")
    assert c.stn.cfg.flow_downsample == 4
    with torch.no_grad():
        out = res.stn(imgs)
        assert out.flow.abs().max() > 1e-3
        torch.testing.assert_close(c.align(imgs).images, out.images, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="flow_downsample must be a power of two from 2 to"):
        scratch_stn(16, 16, flow_downsample=3)


def _write_pngs(folder, n=6, size=20):
    from PIL import Image

    folder.mkdir()
    imgs, _ = _copies(n=n, size=size)
    for i, im in enumerate(imgs):
        a = ((im.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{i}.png")


def test_refine_command_from_nothing_and_align(tmp_path, monkeypatch):
    from gangealing.cli import main

    monkeypatch.setenv("GANGEALING_CACHE", str(tmp_path / "cache"))
    _write_pngs(tmp_path / "imgs")
    out = tmp_path / "r.pt"
    rc = main(["refine", str(tmp_path / "imgs"), "--out", str(out), "--size", "16", "--channels", "16", "--steps", "2", "--distill-steps", "3",
               "--holdout", "0.34", "--eval-every", "1", "--no-progress", "--device", "cpu",
               "--metrics", str(tmp_path / "m.jsonl")])
    assert rc == 0 and out.is_file() and (tmp_path / "m.jsonl").is_file()
    assert main(["align", str(tmp_path / "imgs"), "--ckpt", str(out), "--out", str(tmp_path / "al"), "--device", "cpu"]) == 0
    assert len(list((tmp_path / "al" / "congealed").iterdir())) == 6
    # An existing --out is refused without --overwrite.
    assert main(["refine", str(tmp_path / "imgs"), "--out", str(out), "--steps", "1", "--no-progress"]) == 1


def _zoo_model_and_pngs(name, tmp_path, monkeypatch):
    """The path of zoo model ``name`` (skips when this checkout lacks it), with six 32 px PNGs in tmp_path/imgs."""
    from gangealing.zoo import resolve_model

    src = resolve_model(name)
    if src is None:
        pytest.skip(f"models/{name} is not in this checkout")
    monkeypatch.setenv("GANGEALING_CACHE", str(tmp_path / "cache"))
    _write_pngs(tmp_path / "imgs", size=32)
    return src


def test_refine_command_never_overwrites_the_input_model(tmp_path, monkeypatch, capsys):
    from gangealing.cli import main

    src = _zoo_model_and_pngs("gangealing-tiny-cat", tmp_path, monkeypatch)
    model = tmp_path / "model.pt"
    model.write_bytes(src.read_bytes())
    before = _sha(model)
    assert main(["refine", str(tmp_path / "imgs"), "--ckpt", str(model), "--out", str(model), "--overwrite",
                 "--steps", "1", "--no-progress"]) == 1
    assert "never overwritten" in capsys.readouterr().err and _sha(model) == before
    out = tmp_path / "refined.pt"
    # Options that shape a transformer from nothing are refused with --ckpt, not silently ignored.
    assert main(["refine", str(tmp_path / "imgs"), "--ckpt", str(model), "--out", str(out), "--channels", "32",
                 "--flow-downsample", "4", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "--channels, --flow-downsample shape a transformer from nothing" in err and not out.exists()
    assert main(["refine", str(tmp_path / "imgs"), "--ckpt", str(model), "--out", str(out), "--steps", "2",
                 "--holdout", "0.34", "--eval-every", "1", "--no-progress", "--device", "cpu"]) == 0
    assert _sha(model) == before
    from gangealing.build import load_model

    m = load_model(out)
    assert m.generator is not None and m.target is not None and m.meta["base"] == str(model)


def test_refine_command_adapts_a_clustering_model(tmp_path, monkeypatch):
    from gangealing.build import load_model
    from gangealing.cli import main
    from gangealing.predictor import Congealer

    src = _zoo_model_and_pngs("gangealing-tiny-cat-k2flips", tmp_path, monkeypatch)
    out = tmp_path / "refined.pt"
    assert main(["refine", str(tmp_path / "imgs"), "--ckpt", str(src), "--out", str(out), "--steps", "2",
                 "--holdout", "0.34", "--eval-every", "1", "--no-progress", "--device", "cpu"]) == 0
    m = load_model(out)
    assert m.stn.num_heads == 2 and m.meta["test"]["routing"] == "targets"
    start = load_model(src).stn.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in m.stn.state_dict().items())  # the heads moved
    c = Congealer.from_checkpoint(out, device="cpu")
    assert c.router is not None  # routed as it was fitted: by the GAN targets, not the classifier
    imgs, _ = _copies(n=3, size=32)
    assert c.align(imgs).cluster.shape == (3,)


def test_refine_command_needs_a_clustering_models_generator(tmp_path, monkeypatch, capsys):
    from gangealing.cli import main
    from helpers import tiny_checkpoint

    monkeypatch.setenv("GANGEALING_CACHE", str(tmp_path / "cache"))
    _write_pngs(tmp_path / "imgs", size=16)
    model = tiny_checkpoint(tmp_path / "k2.pt", heads=2)
    assert main(["refine", str(tmp_path / "imgs"), "--ckpt", model, "--out", str(tmp_path / "r.pt"), "--steps", "1",
                 "--no-progress", "--device", "cpu"]) == 1
    assert "clustering model (2 heads) without its generator" in capsys.readouterr().err
    assert not (tmp_path / "r.pt").exists()


def test_cosine_schedule_anneals_every_rate_and_starts_the_flow_after_its_warmup(monkeypatch):
    seen = []
    step = torch.optim.Adam.step

    def recording(self, *a, **kw):
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    imgs, _ = _copies(n=8, size=16)
    refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=8, lr=1e-3, lr_schedule="cosine", flow_warmup=0.5, holdout=0.0))
    rest, flow = zip(*seen)
    assert len(seen) == 8 and rest[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(rest, rest[1:]))
    assert rest[-1] < 0.05e-3  # near 0 at the last step
    assert flow[:4] == (0.0,) * 4 and flow[4] == pytest.approx(1e-3) and flow[-1] < flow[5] < flow[4]
    seen.clear()
    refine(scratch_stn(16, 16), imgs, _tiny_cfg(steps=3, lr=1e-3, holdout=0.0))  # the default: constant
    assert all(r == pytest.approx(1e-3) for rates in seen for r in rates)
    with pytest.raises(ValueError, match="lr_schedule"):
        Refiner(scratch_stn(16, 16), _tiny_cfg(lr_schedule="step"))
