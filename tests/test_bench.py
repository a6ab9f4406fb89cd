"""gangealing.apps.bench: exact answers on tiny inputs, and the command end to end."""
import numpy as np
import pytest
import torch

from gangealing.apps import bench as B
from gangealing.data.perturb import perturb_digits, stroke_points
from gangealing.metrics.alignment import cluster_composition, hungarian_accuracy, mask_iou, pck_at, random_pairs
from gangealing.metrics.mask_transfer import classic_mask_transfer, congealer_mask_transfer, grid_mask_transfer
from gangealing.zoo import MODELS, available_models, resolve_model, resolve_model_file
from gangealing.geometry.coords import identity_grid


class _Res:
    def __init__(self, grid, cluster=None):
        self.grid, self.cluster = grid, cluster


class GridCongealer:
    """A stand-in model whose congealing grid of image i is ``grids[i]`` (upsampled to the requested resolution)."""

    num_clusters = 1

    def __init__(self, grids, images):
        self.grids, self.images = grids, images

    def align(self, images, output_resolution=None, cluster=None):
        idx = [int((self.images == im).flatten(1).all(1).nonzero()[0]) for im in images]
        g = self.grids[idx].permute(0, 3, 1, 2)
        r = output_resolution or g.size(-1)
        g = torch.nn.functional.interpolate(g, size=(r, r), mode="bilinear", align_corners=False)
        return _Res(g.permute(0, 2, 3, 1))


def _blobs(n=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, size, size, generator=g) > 0.6
    images = masks.float().mul(2).sub(1).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return images, masks


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_identity_model_identical_pairs_iou_one(resolution):
    images, masks = _blobs()
    c = GridCongealer(identity_grid(16, 4), images)
    pairs = torch.tensor([[0, 0], [1, 1], [3, 3]])
    out = congealer_mask_transfer(c, images, masks, pairs, resolution=resolution)
    assert torch.equal(out, masks[pairs[:, 1]])
    assert mask_iou(out, masks[pairs[:, 1]]).tolist() == [1.0, 1.0, 1.0]


def test_known_shift_is_undone_exactly():
    # B is A moved 3 px right; B's grid reads B 3 px right of A's, so both congeal to the same picture.
    size, s = 16, 3
    a = torch.zeros(size, size, dtype=torch.bool)
    a[4:10, 2:8] = True
    b = torch.roll(a, s, dims=1)
    masks = torch.stack([a, b])
    images = masks.float().mul(2).sub(1).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    grid = identity_grid(size, 2).clone()
    grid[1, ..., 0] += 2 * s / size  # normalised shift of s px
    out = congealer_mask_transfer(GridCongealer(grid, images), images, masks, torch.tensor([[0, 1]]), resolution=16)
    assert torch.equal(out[0], b)
    assert float(mask_iou(masks[:1], masks[1:])) < 0.6  # without alignment they overlap much less


def test_no_alignment_iou_is_the_direct_computation():
    _, masks = _blobs(6, 12, seed=3)
    pairs = random_pairs([0, 0, 0, 1, 1, 1], 20, seed=1)
    got = mask_iou(masks[pairs[:, 0]], masks[pairs[:, 1]])
    a, b = masks[pairs[:, 0]].numpy(), masks[pairs[:, 1]].numpy()
    direct = (a & b).sum((1, 2)) / (a | b).sum((1, 2))
    np.testing.assert_allclose(got.numpy(), direct, rtol=0, atol=1e-12)
    assert float(mask_iou(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3))) == 1.0


def test_random_pairs_same_class_distinct_and_seeded():
    labels = [0, 0, 1, 1, 1, 2]
    p = random_pairs(labels, 200, seed=5)
    lab = torch.tensor(labels)
    assert (lab[p[:, 0]] == lab[p[:, 1]]).all() and (p[:, 0] != p[:, 1]).all()
    assert not (p == 5).any()  # the only image of class 2 has no partner
    assert torch.equal(p, random_pairs(labels, 200, seed=5))


def test_classic_identity_matrices_copy_the_mask():
    _, masks = _blobs(3, 10)
    eye = torch.eye(2, 3).expand(3, 2, 3)
    pairs = torch.tensor([[0, 1], [2, 0]])
    assert torch.equal(classic_mask_transfer(eye, masks, pairs), masks[pairs[:, 0]])


def test_hungarian_accuracy():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    perm = rng.permutation(10)
    assert hungarian_accuracy(perm[labels], labels) == 1.0
    pred = perm[labels].copy()
    pred[:50] = (pred[:50] + 1) % 10  # 50 wrong (each moved to another cluster)
    assert hungarian_accuracy(pred, labels) == pytest.approx(0.9)
    assert hungarian_accuracy([0, 0, 0, 0], [0, 1, 2, 3]) == 0.25  # one cluster matches one label


def test_cluster_composition_names_each_clusters_main_label():
    comp = cluster_composition([0, 0, 0, 2, 2, 0], [7, 7, 1, 3, 3, 7], clusters=4)
    assert [q["images"] for q in comp] == [4, 0, 2, 0]
    assert comp[0]["label"] == 7 and comp[0]["share"] == pytest.approx(0.75)
    assert comp[1]["label"] is None and comp[1]["share"] == 0.0
    assert comp[2]["label"] == 3 and comp[2]["share"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        cluster_composition([0, 1], [0])


def test_perturbation_ground_truth_and_pck():
    from gangealing.geometry.coords import apply_affine, invert_affine

    g = torch.Generator().manual_seed(0)
    digits = torch.zeros(3, 28, 28, dtype=torch.uint8)
    digits[:, 8:20, 12:16] = 255
    p = perturb_digits(digits, 40, g)
    pts = stroke_points(digits, 6, g)
    assert (digits[0][pts[0, :, 1].long(), pts[0, :, 0].long()] == 255).all()
    canvas_pts = apply_affine(pts, p.to_canvas)  # (3, 6, 2)
    # The canvas is bright where the known transform sends stroke centres.
    grid = ((2 * canvas_pts + 1) / 40 - 1).unsqueeze(1)
    vals = torch.nn.functional.grid_sample(p.images[:, :1], grid, align_corners=False)[:, 0, 0]
    assert (vals > 0.0).float().mean() > 0.9
    back = apply_affine(canvas_pts, invert_affine(p.to_canvas))
    torch.testing.assert_close(back, pts, atol=1e-4, rtol=0)
    vis = torch.ones(3, 6, dtype=torch.bool)
    assert pck_at(canvas_pts, canvas_pts, vis, 40, (0.1, 0.05)) == [1.0, 1.0]
    assert pck_at(canvas_pts + 3.0, canvas_pts, vis, 40, (0.1, 0.05)) == [0.0, 0.0]  # error 4.24 px > 4 px
    ident = perturb_digits(digits, 28, g, identity=True)
    torch.testing.assert_close(ident.images[:, 0], digits.float() / 127.5 - 1, atol=1e-5, rtol=0)


def test_identity_transformer_transfers_points_exactly():
    from gangealing.build import build, make_checkpoint
    from gangealing.config import STNConfig
    from gangealing.predictor import Congealer

    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=32, channel_multiplier=0.125, max_channels=16))
    c = Congealer.from_checkpoint(make_checkpoint("model", {"stn": stn}), device="cpu")
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    pts = torch.tensor([[[5.0, 7.0], [20.0, 11.0], [30.0, 2.0]]]).expand(2, 3, 2)
    est = c.transfer_points(images, images, pts)
    assert pck_at(est, pts, torch.ones(2, 3, dtype=torch.bool), 32, (0.05,)) == [1.0]


def test_registry_and_missing_models(tmp_path):
    found, missing = available_models(root=tmp_path)
    assert found == {} and set(missing) == set(MODELS)


def test_markdown_of_a_result():
    res = B.BenchResult(config={"alphas": (0.1, 0.05)}, missing=["x"],
                        mask_transfer=[dict(dataset="d", method="no alignment", pairs=3, iou=0.5),
                                       dict(dataset="d", method="refine", pairs=3, iou=0.7, fit_seconds=80.04,
                                            fit_images=900, images_per_s=160.4)],
                        clustering=[dict(model="m", clusters=10, images=5, accuracy=0.9, reference_accuracy=0.979,
                                         composition=cluster_composition([0, 0, 1, 1, 0], [4, 4, 9, 2, 4], 3))])
    md = B.to_markdown(res, "gangealing bench")
    assert "| d | no alignment | 3 | 0.500 | – |" in md and "0.979" in md and "not found (skipped): x" in md
    assert "| d | refine | 3 | 0.700 | 80.0 s (900 images, 160 images/s) |" in md  # the cost of a fitted row
    assert "m (classifier), test images per cluster (cluster: images, most common label and its share): 0: 3, 4s 100%; 1: 2, 2s 50%; 2: 0." in md
    assert "| m | classifier | 10 | 5 | 0.900 | 0.979 |" in md


def test_speed_rows_say_how_busy_the_machine_was():
    load = B.machine_load()
    assert load is None or load >= 0  # None only where the platform has no load average
    res = B.BenchResult(config={}, mask_transfer=[dict(dataset="d", method="refine", pairs=3, iou=0.7, fit_seconds=80.0,
                                                       fit_images=900, images_per_s=160.4, load=2.94)],
                        throughput=[dict(model="m", input="28 px", output="32 px", batch=100, device="cpu", threads=1,
                                         images_per_s=250.0, load=1.04),
                                    dict(model="old", input="28 px", output="32 px", batch=100, device="cpu", threads=1,
                                         images_per_s=250.0)])  # a row from a run before the load was recorded
    md = B.to_markdown(res)
    assert "| d | refine | 3 | 0.700 | 80.0 s (900 images, 160 images/s, load 2.9) |" in md
    assert "| m | 28 px | 32 px | 100 | cpu | 1 | 250 | 1.0 |" in md and "| old | 28 px | 32 px | 100 | cpu | 1 | 250 | – |" in md
    assert "1-minute load average" in md


@pytest.mark.slow
def test_bench_command_runs(tmp_path):
    import json

    from gangealing.cli import main

    out = tmp_path / "b"
    rc = main(["bench", "--out", str(out), "--models", "gangealing-tiny-cat", "--pairs", "30", "--digits", "10",
               "--no-classic", "--throughput-images", "10", "--cluster-images", "50", "--no-progress",
               "--no-train-speed", "--no-generators", "--no-refine"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    methods = [r["method"] for r in data["mask_transfer"]]
    assert methods[0] == "no alignment" and len(methods) == (2 if resolve_model("gangealing-tiny-cat") else 1)
    assert all(0 <= r["iou"] <= 1 for r in data["mask_transfer"])
    assert data["mnist_pck"] and (out / "results.md").is_file()
    assert data["train_throughput"] == []
    assert not (out / "partial.json").exists()  # written after each part, removed with the results


@pytest.mark.slow
def test_training_throughput_is_measured_per_preset():
    cfg = B.BenchConfig(gan_presets=(("tiny", 1),), gangealing_presets=(("tiny", 1),))
    rows = B.train_throughput(cfg)
    gan = [r for r in rows if r["what"] == "train-gan"]
    assert len(gan) == 1 and gan[0]["batch"] == 16 and gan[0]["images_per_s"] > 0
    assert abs(gan[0]["images_per_s"] * gan[0]["s_per_step"] - 16) < 1e-6
    gg = [r for r in rows if r["what"] == "train"]
    if resolve_model_file("models/gan-tiny-cat/generator.pt") is not None:
        assert len(gg) == 1 and gg[0]["batch"] == 40 and gg[0]["images_per_s"] > 0
    assert all("load" in r for r in rows)
    md = B.to_markdown(B.BenchResult(config={}, train_throughput=rows))
    assert "## Training throughput" in md and "| train-gan | tiny | 32 px | 16 |" in md


def test_grid_mask_transfer_identity_copies_the_mask():
    images, masks = _blobs()
    grids = identity_grid(16).expand(4, -1, -1, -1)
    pairs = torch.tensor([[0, 0], [1, 1], [2, 3]])
    out = grid_mask_transfer(grids, masks, pairs, resolution=16)
    assert torch.equal(out[:2], masks[:2]) and torch.equal(out[2], masks[2])


@pytest.mark.slow
def test_refine_and_gradient_congealing_rows():
    cfg = B.BenchConfig(pairs=20, refine_steps=2, refine_distill_steps=0, inductive_classes=())
    rows = B._mask_rows("cat", cfg, {}, MODELS, lambda: None)
    by = {r["method"]: r for r in rows}
    assert by["gradient congealing (similarity)"]["iou"] > by["no alignment"]["iou"]
    assert by["gradient congealing + per-image 8x8 flow (set-level)"]["iou"] > by["gradient congealing (similarity)"]["iou"]
    r = by["refine from nothing (set-level: fitted on these images)"]
    assert 0 <= r["iou"] <= 1 and r["steps"] == 2 and r["fit_images"] == 100


@pytest.mark.slow
def test_inductive_rows_refine_each_single_cluster_model_on_the_train_split(tmp_path):
    from gangealing.predictor import Congealer
    from gangealing.zoo import ModelEntry
    from helpers import tiny_checkpoint

    c = Congealer.from_checkpoint(tiny_checkpoint(tmp_path / "m.pt", size=16), device="cpu")
    entries = {"m": ModelEntry(str(tmp_path / "m.pt"), "animals", ("dog",), "M")}
    cfg = B.BenchConfig(pairs=10, refine_steps=1, classic=False, inductive_classes=("dog",))
    rows = B._mask_rows("dog", cfg, {"m": c}, entries, lambda: None)
    by = {r["method"]: r for r in rows}
    assert {"refine from nothing (inductive: fitted on the train split)", "M + refine (inductive: train split)",
            "M + refine (set-level)", "M"} <= set(by)
    assert by["M + refine (inductive: train split)"]["model"] == "m"
    assert by["M + refine (inductive: train split)"]["fit_images"] == 900  # the train split, not the 100 test images
    assert by["M + refine (set-level)"]["fit_images"] == 100


def _quick_cfg(**kw):
    base = dict(pairs=10, animal_classes=("cat", "dog"), mnist_digits=10, classic=False, refine=False,
                generators=False, gan_presets=(), gangealing_presets=(), throughput_images=10)
    base.update(kw)
    return B.BenchConfig(**base)


def test_a_stopped_bench_resumes_from_its_parts(monkeypatch):
    import dataclasses
    import json

    full = B.run_bench(_quick_cfg(), congealers={}, progress=False)
    saved = []

    def on_part(res, done):
        data = json.loads(json.dumps(dataclasses.asdict(res), default=str))  # as partial.json holds it
        data["done"] = done
        saved.append(data)
        if len(done) == 1:
            raise KeyboardInterrupt  # killed after the first part

    with pytest.raises(KeyboardInterrupt):
        B.run_bench(_quick_cfg(), congealers={}, progress=False, on_part=on_part)
    assert saved[-1]["done"] == ["animals:cat"]
    computed = []
    real = B._mask_rows
    monkeypatch.setattr(B, "_mask_rows", lambda cls, *a, **k: computed.append(cls) or real(cls, *a, **k))
    parts = []
    resumed = B.run_bench(_quick_cfg(), congealers={}, progress=False, resume=saved[-1],
                          on_part=lambda res, done: parts.append(done))
    assert computed == ["dog"]  # the cat rows came from the partial results
    assert resumed.mask_transfer == full.mask_transfer and resumed.mnist_pck == full.mnist_pck
    assert parts[-1] == ["animals:cat", "animals:dog", "mnist:3"]
    # The total time counts every sitting: the stopped run's time (kept in the partial file) and this one's.
    assert saved[-1]["seconds"] >= 0 and resumed.seconds >= saved[-1]["seconds"]
    again = B.run_bench(_quick_cfg(), congealers={}, progress=False, resume=dict(saved[-1], seconds=1000.0))
    assert 1000.0 <= again.seconds < 1000.0 + 600
    with pytest.raises(ValueError, match="another configuration"):
        B.run_bench(_quick_cfg(pairs=11), congealers={}, progress=False, resume=saved[-1])


def test_bench_command_says_what_to_do_with_an_unreadable_partial_file(tmp_path, capsys):
    from gangealing.cli import main

    (tmp_path / "partial.json").write_text("{not json")
    rc = main(["bench", "--out", str(tmp_path), "--models", "gangealing-tiny-cat", "--no-progress"])
    assert rc != 0 and "--fresh" in capsys.readouterr().err
    assert (tmp_path / "partial.json").read_text() == "{not json"  # nothing written over


def test_resume_refuses_a_changed_model_file(tmp_path):
    import dataclasses
    import json

    from gangealing.zoo import ModelEntry
    from helpers import tiny_checkpoint

    path = tiny_checkpoint(tmp_path / "m.pt", size=16)
    extra = {"m": ModelEntry(str(path), "animals", ("dog",), "M")}
    cfg = _quick_cfg(animal_classes=("dog",))
    saved = []
    res = B.run_bench(cfg, models=[], extra=extra, progress=False,
                      on_part=lambda r, done: saved.append(dict(json.loads(json.dumps(dataclasses.asdict(r))), done=done)))
    assert len(res.model_sha256["m"]) == 64 and saved[-1]["model_sha256"] == res.model_sha256
    again = B.run_bench(cfg, models=[], extra=extra, progress=False, resume=saved[-1])  # same file: every part reused
    assert again.mask_transfer == res.mask_transfer
    tiny_checkpoint(path, size=16, translate=0.25)  # another model at the same path
    with pytest.raises(ValueError, match="other model files"):
        B.run_bench(cfg, models=[], extra=extra, progress=False, resume=saved[-1])


def test_a_model_file_named_as_a_zoo_model_is_refused_with_the_way_to_bench_it(tmp_path):
    from gangealing.zoo import parse_model_spec
    from helpers import tiny_checkpoint

    (tmp_path / "gangealing-cat").mkdir()
    path = tiny_checkpoint(tmp_path / "gangealing-cat" / "model.pt", size=16)
    extra = dict([parse_model_spec(f"{path}=animals:cat=a label")])  # the label does not rename it
    with pytest.raises(ValueError, match="--models gangealing-cat"):
        B.run_bench(_quick_cfg(animal_classes=("cat",)), models=[], extra=extra, progress=False)


@pytest.mark.slow
def test_mnist_refine_rows_all_stages_similarity_only_and_inductive(tmp_path, monkeypatch):
    from gangealing.predictor import Congealer
    from gangealing.zoo import ModelEntry
    from helpers import tiny_checkpoint

    c = Congealer.from_checkpoint(tiny_checkpoint(tmp_path / "m.pt", size=16), device="cpu")
    entries = {"m": ModelEntry(str(tmp_path / "m.pt"), "mnist", ("3",), "M")}
    cfg = B.BenchConfig(mnist_digits=6, refine_steps=1, classic=False, refine_train_digits=5)
    seen = []
    real = B._refined
    monkeypatch.setattr(B, "_refined", lambda images, cfg, base=None, **kw: seen.append((images, base, kw.get("stages", "all")))
                        or real(images, cfg, base=base, **kw))
    rows = B._pck_rows(cfg, "3", {"m": c}, entries, lambda: None)
    methods = {r["method"] for r in rows}
    assert {"M + refine (set-level)", "M + refine, similarity only (set-level)",
            "M + refine, similarity only (inductive: 5 train digits)"} <= methods
    fits = [(images, stages) for images, base, stages in seen if base is not None]
    assert [s for _, s in fits] == ["all", "similarity", "similarity"]
    assert torch.equal(fits[0][0], fits[1][0])  # set-level: the measured test copies
    train = B._perturbed_train_digits(cfg, "3", 5)  # refine_train_digits, not the measured digits' count
    assert len(train) == 10 and torch.equal(fits[2][0], train) and not torch.equal(train, fits[0][0])  # inductive: train digits
    assert all("fit_seconds" in r for r in rows if "refine" in r["method"])


def test_bench_command_takes_model_repeated_and_listed():
    from gangealing.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["bench", "--model", "a.pt=animals:cat", "--model", "b.pt=mnist", "c.pt=mnist:3",
                  "--model-path", "gangealing-cat=x.pt", "--model-path", "gangealing-dog=y.pt"])
    assert args.model == ["a.pt=animals:cat", "b.pt=mnist", "c.pt=mnist:3"]
    assert args.model_path == ["gangealing-cat=x.pt", "gangealing-dog=y.pt"]
    assert parse(["bench"]).model == [] and parse(["bench"]).model_path == []  # the default is not shared


def test_bench_command_passes_the_inductive_mnist_digits(tmp_path, monkeypatch):
    from gangealing.cli import build_parser
    from gangealing.commands import bench as command

    seen = []

    def fake_run_bench(cfg, models, **kw):
        seen.append(cfg)
        raise SystemExit(0)  # what is measured is not the point here

    monkeypatch.setattr(B, "run_bench", fake_run_bench)
    args = build_parser().parse_args(["bench", "--out", str(tmp_path), "--refine-train-digits", "37"])
    with pytest.raises(SystemExit):
        command.run(args)
    assert seen[0].refine_train_digits == 37 and B.BenchConfig().refine_train_digits == 1000
    with pytest.raises(SystemExit):  # fewer than 2 digits cannot hold out a split: refused by the parser
        build_parser().parse_args(["bench", "--refine-train-digits", "1"])
