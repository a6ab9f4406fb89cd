"""`gangealing bench`: alignment quality with real ground truth on held-out real images, and speed.

Three measures (issue 5), each beside its baselines (no alignment; classic congealing,
:mod:`gangealing.baselines.congealing`; the similarity-only ablation when its model exists):

1. **Animal silhouettes, mask transfer.** For a pair (A, B) of same-class test silhouettes, A's
   mask is carried into B's frame through the congealed frame and compared with B's mask (IoU).
   The congealing grid of an image maps congealed pixels to image positions and has no closed-form
   inverse, so we use the *nearest-neighbour inverse*: every pixel of B takes the congealed pixel
   whose grid position in B is nearest to it (none when that position is more than ``max_dist`` px
   away: the pixel is outside the congealed frame's reach and gets background), and that congealed
   pixel reads A's mask with nearest sampling (A's mask sampled with A's grid). Both steps are
   nearest, so an identity model on identical images returns the mask exactly. Classic congealing
   composes its similarity matrices (:func:`~gangealing.baselines.congealing.transfer_grid`).
2. **MNIST under known perturbations.** Test digits are placed on a ``canvas`` px square under
   random similarity transforms (rotation up to 45 degrees, scale 0.7-1.3, shifts up to 15% of the
   canvas); the transforms are known, so the true correspondence is. Points sampled on a digit's
   strokes are transferred (a) between two perturbed copies of one digit, (b) between two different
   digits of one class, whose true correspondence is MNIST's own centred frame (the same 28 px
   position). PCK at ``alpha * canvas``.
3. **MNIST clustering.** The accuracy of routing the test set through a K-cluster model's
   classifier, under the best one-to-one matching of clusters to labels (Hungarian); and of
   routing the first ``route_images`` test digits to the nearest GAN target (:mod:`gangealing.routing`).

Speed: alignment throughput (images/s) of :meth:`gangealing.predictor.Congealer.align` here.

Models come from the zoo (:data:`gangealing.zoo.MODELS`; missing files are skipped and listed in the
results) and from ``extra`` entries (``gangealing bench --model FILE=animals:giraffe``: any model file,
measured on the embedded data it names, with the same code as the zoo).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.embedded import animal_test_set, digits_as_images, mnist_test_set
from ..data.perturb import perturb_digits, stroke_points
from ..geometry.coords import apply_affine, norm_to_pixel, pixel_to_norm
from ..metrics.alignment import cluster_composition, hungarian_accuracy, mask_iou, pck_at, random_pairs
from ..metrics.mask_transfer import classic_mask_transfer, congealer_mask_transfer, grid_mask_transfer
from ..train.timing import step_times
from ..zoo import MODELS, ModelEntry, available_models, resolve_model_file

# The measures' pieces live in their own modules (metrics.alignment, metrics.mask_transfer,
# data.perturb, data.embedded, zoo); this module runs them and writes the report.
__all__ = [
    "BenchConfig",
    "BenchResult",
    "train_throughput",
    "run_bench",
    "write_results",
    "to_markdown",
]

DTI_CLUSTERING_MNIST = 0.979  # published accuracy of DTI-clustering on MNIST (Monnier et al., NeurIPS 2020)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """What `gangealing bench` measures, and how much of it."""

    pairs: int = 1000  # mask-transfer pairs per class
    animal_classes: Tuple[str, ...] = ("cat",)  # baselines run on these; models on their own class
    mnist_digits: int = 200  # test digits per MNIST PCK run (each gives one same-digit and one cross pair)
    canvas: int = 40
    points: int = 10  # stroke points per digit
    alphas: Tuple[float, ...] = (0.1, 0.05)
    cluster_images: int = 10_000  # MNIST test images routed for clustering accuracy
    # The first MNIST test images also routed by the nearest GAN target (gangealing.routing: K
    # transformer passes per image, about 10x the classifier's cost); 0 = not measured.
    route_images: int = 2000
    throughput_images: int = 200
    mask_resolution: int = 64  # congealed-frame resolution for mask transfer
    classic: bool = True  # classic congealing, and gradient congealing (rigid, and with a per-image flow)
    # Refinement rows (issue 16): a transformer refined from nothing, and each K=1 model refined, on
    # the test images themselves (set-level, as the congealing baselines); the inductive rows (from
    # nothing, and each K=1 model) fit the train split and are measured on the test split of
    # `inductive_classes` (those of them that are measured).
    refine: bool = True
    refine_steps: int = 400
    refine_distill_steps: int = 0
    # MNIST train digits (two perturbed copies each) the inductive MNIST refine rows are fitted on.
    # The animal inductive rows fit the whole train split (900); a fit's cost follows its steps, not this.
    refine_train_digits: int = 1000
    inductive_classes: Tuple[str, ...] = ("cat", "dog", "horse")
    generators: bool = True  # the Generators section (apps/bench_generators.py)
    generator_samples: int = 2000  # samples (and real images) per generator for FD / precision / recall
    # Training throughput: timed steps per preset after one warm-up step ((preset, steps) pairs;
    # 16 GAN steps span one lazy-R1 period of the tiny preset). Empty = not measured.
    gan_presets: Tuple[Tuple[str, int], ...] = (("tiny", 16),)
    gangealing_presets: Tuple[Tuple[str, int], ...] = (("tiny", 4), ("tiny-clusters", 2), ("tiny-clusters-flips", 2),
                                                       ("tiny-similarity", 4))
    seed: int = 0


@dataclass
class BenchResult:
    """Everything measured, JSON-ready."""

    config: Dict[str, Any]
    mask_transfer: List[Dict[str, Any]] = field(default_factory=list)
    mnist_pck: List[Dict[str, Any]] = field(default_factory=list)
    clustering: List[Dict[str, Any]] = field(default_factory=list)
    throughput: List[Dict[str, Any]] = field(default_factory=list)
    train_throughput: List[Dict[str, Any]] = field(default_factory=list)
    generators: List[Dict[str, Any]] = field(default_factory=list)
    models: Dict[str, str] = field(default_factory=dict)
    model_sha256: Dict[str, str] = field(default_factory=dict)  # of each model file measured
    missing: List[str] = field(default_factory=list)
    environment: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def machine_load() -> Optional[float]:
    """The machine's 1-minute load average (runnable processes, this one included) when a speed is
    measured: the same code runs slower beside other jobs, and a speed figure is read with how busy
    the cores were (about 1 for a 1-thread bench alone). None where the platform has none (Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _classic(images: torch.Tensor):
    from ..baselines.congealing import classic_congeal

    return classic_congeal(images).matrices


def _rigid(images: torch.Tensor, flow_cells: int = 0):
    from ..baselines.rigid import RigidCongealingConfig, rigid_congeal

    return rigid_congeal(images, RigidCongealingConfig(flow_cells=flow_cells))


def _refined(images: torch.Tensor, cfg: BenchConfig, base=None, seed: int = 0, template: Optional[torch.Tensor] = None,
             stages: str = "all"):
    """(Congealer, row fields): a transformer refined on ``images`` (from nothing, or ``base``'s, a
    Congealer; ``template``: its GAN target image, when its file holds the generator and target;
    ``stages``: refine's ``--stages``)."""
    from ..predictor import Congealer
    from ..train.refine import Refiner, default_config, scratch_stn

    stn = scratch_stn(seed=seed) if base is None else base.stn
    rc = default_config(base is not None, steps=cfg.refine_steps, seed=seed, stages=stages,
                        distill_steps=cfg.refine_distill_steps if base is None else 0)  # holdout 10%: when to stop
    frame = Congealer(stn, flip=False)
    x = torch.cat([frame.prepare(images[s:s + 500])[0].cpu() for s in range(0, len(images), 500)])
    res = Refiner(stn, rc, template_image=template, flip=base is not None and base.flip).fit(x, progress_bar=False)
    # As `gangealing refine` writes it: the base model's test-time settings carry over.
    c = Congealer(res.stn, flip=False if base is None else base.flip, padding_mode="border",
                  iters=1 if base is None else base.iters)
    return c, dict(fit_seconds=round(res.seconds, 1), fit_images=res.train_images + res.holdout_images,
                   images_per_s=round(res.images_per_s, 1), steps=res.steps, load=machine_load())


def _gan_templates(paths: Dict[str, str], congealers: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The GAN target image (:func:`~gangealing.models.target.gan_template`) of every one-cluster
    model whose file holds its generator and target: refine pulls towards it as well as the mean."""
    from ..build import load_model
    from ..models.target import gan_template

    out = {}
    for n, c in congealers.items():
        p = paths.get(n)
        if c.num_clusters != 1 or p is None or not Path(p).is_file():
            continue
        m = load_model(p, device=c.device)
        if m.generator is not None and m.target is not None:
            out[n] = gan_template(m.generator, m.target, c.stn.cfg.flow_size)
    return out


def _refine_bases(congealers: Dict[str, Any], entries: Dict[str, ModelEntry], dataset: str, cls: str) -> Dict[str, Any]:
    """The registry models of ``dataset``/``cls`` that refine can adapt (one cluster, not an ablation)."""
    return {n: c for n, c in congealers.items() if entries[n].dataset == dataset and cls in entries[n].classes
            and c.num_clusters == 1 and not entries[n].ablation}


def _mask_rows(cls: str, cfg: BenchConfig, congealers: Dict[str, Any], entries: Dict[str, ModelEntry], tick,
               templates: Optional[Dict[str, torch.Tensor]] = None) -> List[Dict[str, Any]]:
    templates = templates or {}
    images, masks, _ = animal_test_set(f"animals:{cls}")
    pairs = random_pairs(np.zeros(len(images), dtype=np.int64), cfg.pairs, cfg.seed)
    a, b = pairs[:, 0], pairs[:, 1]
    rows = [dict(dataset=f"animals:{cls} (test)", method="no alignment", pairs=len(pairs),
                 iou=float(mask_iou(masks[a], masks[b]).mean()))]
    if cfg.classic:
        t0 = time.time()
        mats = _classic(images)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="classic congealing (similarity)", pairs=len(pairs),
                         iou=float(mask_iou(classic_mask_transfer(mats, masks, pairs), masks[b]).mean()),
                         fit_seconds=round(time.time() - t0, 1)))
        t0 = time.time()
        r = _rigid(images)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="gradient congealing (similarity)", pairs=len(pairs),
                         iou=float(mask_iou(classic_mask_transfer(r.matrices, masks, pairs), masks[b]).mean()),
                         fit_seconds=round(time.time() - t0, 1)))
        t0 = time.time()
        r = _rigid(images, flow_cells=8)
        out = grid_mask_transfer(r.grids, masks, pairs, resolution=cfg.mask_resolution)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="gradient congealing + per-image 8x8 flow (set-level)",
                         pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), fit_seconds=round(time.time() - t0, 1)))
    tick()
    if cfg.refine:
        c, info = _refined(images, cfg, seed=cfg.seed)
        out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
        rows.append(dict(dataset=f"animals:{cls} (test)", method="refine from nothing (set-level: fitted on these images)",
                         pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), **info))
        for name, base in _refine_bases(congealers, entries, "animals", cls).items():
            c, info = _refined(images, cfg, base=base, seed=cfg.seed, template=templates.get(name))
            out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
            rows.append(dict(dataset=f"animals:{cls} (test)", method=f"{entries[name].label} + refine (set-level)",
                             model=name, pairs=len(pairs), iou=float(mask_iou(out, masks[b]).mean()), **info))
        if cls in cfg.inductive_classes:
            # What a user gets from `gangealing refine` on their own collection: fitted on the train
            # split, never on the test images measured here.
            train = animal_test_set(f"animals:{cls}", "train")[0]
            fits = [("refine from nothing (inductive: fitted on the train split)", None, None)]
            fits += [(f"{entries[n].label} + refine (inductive: train split)", n, base)
                     for n, base in _refine_bases(congealers, entries, "animals", cls).items()]
            for method, name, base in fits:
                c, info = _refined(train, cfg, base=base, seed=cfg.seed, template=templates.get(name))
                out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
                rows.append(dict(dataset=f"animals:{cls} (test)", method=method, pairs=len(pairs),
                                 iou=float(mask_iou(out, masks[b]).mean()), **({"model": name} if name else {}), **info))
    for name, c in congealers.items():
        if entries[name].dataset != "animals" or cls not in entries[name].classes:
            continue
        out = congealer_mask_transfer(c, images, masks, pairs, resolution=cfg.mask_resolution)
        rows.append(dict(dataset=f"animals:{cls} (test)", method=entries[name].label, model=name, pairs=len(pairs),
                         iou=float(mask_iou(out, masks[b]).mean())))
        tick()
    return rows


def _perturbed_train_digits(cfg: BenchConfig, digit: str, n: int) -> torch.Tensor:
    """The first ``n`` MNIST *train* digits of class ``digit``, two perturbed copies each (as the test
    digits are perturbed, from another seed): what an inductive refine row is fitted on."""
    from ..data.embedded import load_embedded

    digits = torch.from_numpy(load_embedded("mnist", "train", classes=[digit]).images[:n, ..., 0].copy())
    g = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.cat([perturb_digits(digits, cfg.canvas, g).images, perturb_digits(digits, cfg.canvas, g).images])


def _pck_canvases(cfg: BenchConfig, digit: str):
    """The measured test digits of class ``digit`` (the first ``cfg.mnist_digits``), their two
    perturbed copies and the random generator after drawing them (the stroke points come next):
    the images the keypoint rows and a set-level refine see."""
    g = torch.Generator().manual_seed(cfg.seed)
    digits = mnist_test_set([digit])[0][: cfg.mnist_digits]
    return digits, perturb_digits(digits, cfg.canvas, g), perturb_digits(digits, cfg.canvas, g), g


def _pck_rows(cfg: BenchConfig, digit: str, congealers: Dict[str, Any], entries: Dict[str, ModelEntry], tick,
              templates: Optional[Dict[str, torch.Tensor]] = None) -> List[Dict[str, Any]]:
    templates = templates or {}
    digits, c1, c2, g = _pck_canvases(cfg, digit)
    n = digits.size(0)
    other = torch.roll(torch.arange(n), 1)  # digit i -> digit i-1: a different digit of the class
    pts_d = stroke_points(digits, cfg.points, g)  # (N, P, 2) in digit pixels
    src = apply_affine(pts_d, c1.to_canvas)  # points in copy 1 of digit i
    tasks = {
        "same digit, two perturbations": (c1.images, c2.images, apply_affine(pts_d, c2.to_canvas)),
        "different digits, one class": (c1.images, c2.images[other], apply_affine(pts_d, c2.to_canvas[other])),
    }
    inside = lambda p: ((p >= -0.5) & (p <= cfg.canvas - 0.5)).all(-1)  # noqa: E731
    name_ds = f"mnist:{digit} (test, {cfg.canvas} px canvas)"
    rows = []
    both = torch.cat([c1.images, c2.images])
    fit_s: Dict[str, float] = {}
    rigid: Dict[str, torch.Tensor] = {}
    if cfg.classic:
        for method, fit in (("classic congealing (similarity)", _classic),
                            ("gradient congealing (similarity)", lambda x: _rigid(x).matrices)):
            t0 = time.time()
            rigid[method] = fit(both)
            fit_s[method] = round(time.time() - t0, 1)
    models = {mname: c for mname, c in congealers.items() if entries[mname].dataset == "mnist" and digit in entries[mname].classes}
    labels = {mname: entries[mname].label for mname in models}
    if cfg.refine:
        c, info = _refined(both, cfg, seed=cfg.seed)
        models["refine"], labels["refine"] = c, "refine from nothing (set-level: fitted on these images)"
        fit_s[labels["refine"]] = info["fit_seconds"]
        bases = _refine_bases(congealers, entries, "mnist", digit)
        train = _perturbed_train_digits(cfg, digit, cfg.refine_train_digits) if bases else None
        for mname, base in bases.items():
            # All stages; then the similarity only (`refine --stages similarity`: the flow keeps the
            # model's weights, so pose is corrected and no digit is bent onto another), fitted on
            # these images and, inductively, on perturbed train digits (never the test digits).
            fits = [("+refine", "+ refine (set-level)", both, "all"),
                    ("+refine-sim", "+ refine, similarity only (set-level)", both, "similarity"),
                    ("+refine-sim-train", f"+ refine, similarity only (inductive: {cfg.refine_train_digits} train "
                                          "digits)", train, "similarity")]
            for key, suffix, fit_images, stages in fits:
                c, info = _refined(fit_images, cfg, base=base, seed=cfg.seed, template=templates.get(mname), stages=stages)
                models[mname + key], labels[mname + key] = c, f"{entries[mname].label} {suffix}"
                fit_s[labels[mname + key]] = info["fit_seconds"]
    tick()
    for task, (ia, ib, gt) in tasks.items():
        vis = inside(src) & inside(gt)
        ib_idx = torch.arange(n) if task.startswith("same") else other
        methods = {"no alignment": src}
        for method, mats in rigid.items():
            from ..geometry.similarity import apply_to_points, invert

            m1, m2 = mats[:n], mats[n:]
            na = pixel_to_norm(src, cfg.canvas)
            est = apply_to_points(m2[ib_idx], apply_to_points(invert(m1), na))
            methods[method] = norm_to_pixel(est, cfg.canvas)
        for mname, c in models.items():
            est = torch.cat([c.transfer_points(ia[s:s + 100], ib[s:s + 100], src[s:s + 100]).cpu()
                             for s in range(0, n, 100)])
            methods[labels[mname]] = est
        for method, est in methods.items():
            vals = pck_at(est, gt, vis, cfg.canvas, cfg.alphas)
            row = dict(dataset=name_ds, task=task, method=method, pairs=n, points=int(vis.sum()))
            row.update({f"pck@{a}": v for a, v in zip(cfg.alphas, vals)})
            if method in fit_s:
                row["fit_seconds"] = fit_s[method]
            rows.append(row)
        tick()
    return rows


def _cluster_rows(cfg: BenchConfig, name: str, c, entries: Dict[str, ModelEntry], count: int,
                  batch: int = 500) -> Dict[str, Any]:
    digits, labels = mnist_test_set()
    digits, labels = digits[:count], labels[:count]
    images = digits_as_images(digits)
    preds = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x, _ = c.prepare(images[s:s + batch])
            cl, _ = c.route(x)
            preds.append(cl.cpu())
    pred = torch.cat(preds).numpy()
    routing = "classifier" if c.router is None else f"nearest GAN target ({c.router.loss})"
    return dict(dataset="mnist (test)", model=name, method=entries[name].label, routing=routing, images=int(len(pred)),
                clusters=c.num_clusters, accuracy=hungarian_accuracy(pred, labels),
                reference="DTI-clustering (published)", reference_accuracy=DTI_CLUSTERING_MNIST,
                composition=cluster_composition(pred, labels, c.num_clusters))


def _routed(path: str, device, routing: str):
    """The clustering model at ``path`` with ``routing``; None when it has no file or cannot route so."""
    from ..checkpoint import CheckpointError
    from ..predictor import Congealer

    if not Path(path).is_file():
        return None
    try:
        return Congealer.from_checkpoint(path, device=device, routing=routing)
    except CheckpointError:
        return None


def _throughput(name: str, c, images: torch.Tensor, batch: int = 100) -> Dict[str, Any]:
    c.align(images[:batch])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(images), batch):
        c.align(images[s:s + batch])
    dt = time.perf_counter() - t0
    return dict(model=name, images=int(len(images)), batch=batch, input=f"{images.shape[-1]} px",
                output=f"{c.flow_size} px", device=str(c.device), threads=torch.get_num_threads(),
                images_per_s=len(images) / dt, load=machine_load())


def train_throughput(cfg: BenchConfig, device: str = "cpu", root=None) -> List[Dict[str, Any]]:
    """Training speed per preset, measured on the spot: ``train-gan`` on the embedded cat silhouettes
    and GANgealing ``train`` against the committed ``gan-tiny-cat`` generator (in a temporary run
    folder, nothing kept)."""
    import tempfile

    from ..train.gan import GANTrainer, resolve_config
    from ..train.gangealing import GANgealingTrainer, load_generator
    from ..train.presets import get_preset
    from ..train.runtime import DistInfo

    dev = torch.device(device)
    rows: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, steps in cfg.gan_presets:
            gcfg = resolve_config(preset, data="animals:cat", sample_every=10 ** 9, ckpt_every=10 ** 9, seed=cfg.seed)
            tr = GANTrainer(gcfg, Path(tmp) / f"gan-{preset}", dist_info=DistInfo(device=dev), show_progress=False,
                            tensorboard=False)
            sec = sum(step_times(tr.train_step, steps, device=dev)) / steps
            rows.append(dict(what="train-gan", preset=preset, size=gcfg.size, batch=gcfg.batch, steps=steps,
                             s_per_step=sec, images_per_s=gcfg.batch / sec, device=str(dev),
                             threads=torch.get_num_threads(), load=machine_load()))
        gen_file = resolve_model_file("models/gan-tiny-cat/generator.pt", root) if cfg.gangealing_presets else None
        if gen_file is not None:
            gen = load_generator(gen_file, dev)
            for preset, steps in cfg.gangealing_presets:
                tcfg = get_preset(preset, pca_samples=5000, kmeans_candidates=200, seed=cfg.seed)
                tr = GANgealingTrainer(tcfg, gen, Path(tmp) / f"gg-{preset}", dist=DistInfo(device=dev),
                                       tensorboard=False, show_progress=False)
                sec = sum(step_times(tr.train_step, steps, device=dev)) / steps
                rows.append(dict(what="train", preset=preset, size=gen.size, batch=tcfg.batch, heads=tcfg.stn.num_heads,
                                 flips=tcfg.flips, steps=steps, s_per_step=sec, images_per_s=tcfg.batch / sec,
                                 device=str(dev), threads=torch.get_num_threads(), load=machine_load()))
    return rows


def run_bench(cfg: BenchConfig = BenchConfig(), models: Optional[Sequence[str]] = None, *, root=None,
              device: str = "cpu", progress: bool = True, paths: Optional[Dict[str, str]] = None,
              congealers: Optional[Dict[str, Any]] = None,
              extra: Optional[Dict[str, ModelEntry]] = None,
              resume: Optional[Dict[str, Any]] = None,
              on_part: Optional[Callable[[BenchResult, List[str]], None]] = None) -> BenchResult:
    """Run every measure on the zoo models that exist (``models`` picks some by name) and on ``extra``.

    ``paths`` (``{zoo name: file}``) points zoo entries at other files (a run folder's ``model.pt``
    before it is copied under ``models/``). ``extra`` (``{name: entry}``, e.g. from
    :func:`gangealing.zoo.parse_model_spec`) adds models that are not in the zoo; they are measured
    even when ``models`` names none of the zoo's (``models=[]``). ``congealers`` (``{name:
    Congealer}``) replaces loading from files (tests); their entries come from the zoo or ``extra``.
    Every animal class that has a model is measured, beside ``cfg.animal_classes``.

    A full run takes hours on a CPU, so it is measured in parts (an animal class, an MNIST digit,
    one model's clustering or speed, the training speed, the generators): after each part
    ``on_part(result so far, names of the parts done)`` is called (the command writes
    ``partial.json``), and ``resume`` (such a file's content) skips the parts it holds, reusing
    their rows. It must come from the same configuration and model files (else ``ValueError``).
    """
    from tqdm import tqdm

    from ..predictor import Congealer

    t_start = time.time()
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(MODELS))
    if clash:
        # A --model FILE is named after its folder: models/gangealing-cat/model.pt is the zoo's own entry.
        raise ValueError(f"model name(s) {', '.join(clash)} already in the zoo (a --model FILE is named after "
                         f"its folder); bench the zoo's model with --models {' '.join(clash)}, or give "
                         "another file a folder or file name of its own")
    entries: Dict[str, ModelEntry] = {**MODELS, **extra}
    if congealers is None:
        found, missing = available_models(models, root)
        for n, p in (paths or {}).items():
            if n not in MODELS:
                raise KeyError(f"unknown registry model {n!r}; known: {', '.join(MODELS)}")
            if not Path(p).is_file():
                raise FileNotFoundError(f"--model-path {n}={p}: no such file")
            if models is None or n in models:
                found[n] = Path(p)
                missing = [m for m in missing if m != n]
        found.update({n: Path(e.path) for n, e in extra.items()})
        congealers = {n: Congealer.from_checkpoint(p, device=device) for n, p in found.items()}
        paths = {n: str(p) for n, p in found.items()}
    else:
        unknown = sorted(set(congealers) - set(entries))
        if unknown:
            raise KeyError(f"no entry for model(s) {', '.join(unknown)}: pass them in extra")
        missing, paths = [], {n: "(given)" for n in congealers}
    # A model's own test-time similarity passes (meta["test"], e.g. from `gangealing tune`) show in its label.
    entries.update({n: dataclasses.replace(entries[n], label=f"{entries[n].label}, {c.iters} similarity passes")
                    for n, c in congealers.items() if c.iters != 1})
    from ..fileio import sha256_file

    res = BenchResult(config=dataclasses.asdict(cfg), models=paths, missing=missing,
                      model_sha256={n: sha256_file(p) for n, p in paths.items() if Path(p).is_file()})
    done: List[str] = []
    prior = _check_resume(resume, res) if resume is not None else None
    # Total time over every sitting: a resumed run adds its own time to the stopped runs'.
    elapsed = lambda: round(float((prior or {}).get("seconds") or 0.0) + time.time() - t_start, 1)  # noqa: E731

    def part(name: str, section: str, compute: Callable[[], List[Dict[str, Any]]], key=None) -> None:
        """Rows of one part: from ``resume`` when it holds the part, else computed; then ``on_part``."""
        if prior is not None and name in prior["done"]:
            getattr(res, section).extend(r for r in prior[section] if key is None or key(r))
            tick_n(name)
        else:
            getattr(res, section).extend(compute())
        done.append(name)
        res.seconds = elapsed()
        if on_part is not None:
            on_part(res, list(done))
    classes = list(cfg.animal_classes) + sorted({entries[n].classes[0] for n in congealers
                                                 if entries[n].dataset == "animals"} - set(cfg.animal_classes))
    digits = sorted({cl for n in congealers if entries[n].dataset == "mnist" and len(entries[n].classes) == 1
                     for cl in entries[n].classes}) or ["3"]
    steps = len(classes) + sum(entries[n].dataset == "animals" for n in congealers) \
        + len(digits) * 3 + len(congealers) + 2
    templates = _gan_templates(paths, congealers) if cfg.refine else {}
    bar = tqdm(total=steps, desc="bench", disable=not progress)
    tick = lambda: bar.update(1)  # noqa: E731
    # Progress-bar ticks of a part taken from `resume` (what computing it would have ticked).
    ticks = {f"animals:{cls}": 1 + sum(entries[n].dataset == "animals" and entries[n].classes[0] == cls
                                       for n in congealers) for cls in classes}
    ticks.update({f"mnist:{d}": 3 for d in digits})
    ticks.update({f"throughput:{n}": 1 for n in congealers})
    tick_n = lambda name: bar.update(ticks.get(name, 0))  # noqa: E731

    def clustering(n: str, c) -> List[Dict[str, Any]]:
        # Each routing the model can use: its classifier on all the digits, its targets on the first ones.
        rows = []
        by_classifier = c if c.router is None else _routed(paths[n], device, "classifier")
        if by_classifier is not None and by_classifier.classifier is not None:
            rows.append(_cluster_rows(cfg, n, by_classifier, entries, cfg.cluster_images))
        by_targets = c if c.router is not None else _routed(paths[n], device, "targets")
        if by_targets is not None and cfg.route_images:
            rows.append(_cluster_rows(cfg, n, by_targets, entries, cfg.route_images))
        return rows

    def throughput(n: str, c) -> List[Dict[str, Any]]:
        if entries[n].dataset == "animals":
            imgs = animal_test_set(f"animals:{entries[n].classes[0]}")[0]
        else:
            imgs = digits_as_images(mnist_test_set()[0][: cfg.throughput_images])
        reps = math.ceil(cfg.throughput_images / len(imgs))
        row = _throughput(n, c, torch.cat([imgs] * reps)[: cfg.throughput_images].contiguous())
        tick()
        return [row]

    try:
        for cls in classes:
            part(f"animals:{cls}", "mask_transfer", lambda: _mask_rows(cls, cfg, congealers, entries, tick, templates),
                 key=lambda r, cls=cls: r["dataset"] == f"animals:{cls} (test)")
        for d in digits:
            part(f"mnist:{d}", "mnist_pck", lambda: _pck_rows(cfg, d, congealers, entries, tick, templates),
                 key=lambda r, d=d: r["dataset"].startswith(f"mnist:{d} "))
        for n, c in congealers.items():
            if entries[n].dataset == "mnist" and c.num_clusters > 1:
                part(f"clustering:{n}", "clustering", lambda: clustering(n, c), key=lambda r, n=n: r["model"] == n)
        tick()
        for n, c in congealers.items():
            part(f"throughput:{n}", "throughput", lambda: throughput(n, c), key=lambda r, n=n: r["model"] == n)
        if cfg.gan_presets or cfg.gangealing_presets:
            part("train_throughput", "train_throughput", lambda: train_throughput(cfg, device=device, root=root))
        tick()
        if cfg.generators:
            part("generators", "generators", lambda: _generator_section(cfg, root, device))
    finally:
        bar.close()
    res.environment = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                           processor=platform.processor() or "", cpu_count=os.cpu_count(),
                           threads=torch.get_num_threads(), device=device)
    res.seconds = elapsed()
    return res


def _generator_section(cfg: BenchConfig, root, device: str) -> List[Dict[str, Any]]:
    """Rows of the Generators section: each committed generator that exists, then each dataset's ceiling."""
    from .bench_generators import GENERATORS, generator_rows, real_vs_real_row

    found = {n: p for n, p in ((n, resolve_model_file(e.path, root)) for n, e in GENERATORS.items()) if p is not None}
    rows = generator_rows(found, cfg.generator_samples, cfg.seed, device)
    for data in sorted({GENERATORS[n].data for n in found}):
        rows.append(real_vs_real_row(data, cfg.generator_samples, cfg.seed, device=device))
    return rows


# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------


def _f(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _fit_cell(r: Dict[str, Any]) -> str:
    """How long a row's per-collection fit took (set-level baselines and refine; '–' for a model
    trained beforehand), with refine's images/s: the cost a user pays for that row's alignment."""
    if "fit_seconds" not in r:
        return "–"
    cell = f"{r['fit_seconds']:.1f} s"
    if "images_per_s" in r:
        load = "" if r.get("load") is None else f", load {_load_cell(r)}"
        cell += f" ({r['fit_images']} images, {r['images_per_s']:.0f} images/s{load})"
    return cell


def _load_cell(r: Dict[str, Any]) -> str:
    return "–" if r.get("load") is None else f"{r['load']:.1f}"


_LOAD_NOTE = ("*load*: the machine's 1-minute load average when the speed was measured (runnable processes, the "
              "bench's own included; above the bench's threads, other jobs shared the cores).")


def to_markdown(res: BenchResult, command: str = "") -> str:
    """The results as Markdown tables."""
    out = ["# gangealing bench results", ""]
    if command:
        out += ["Made by:", "", "```bash", command, "```", ""]
    if res.missing:
        out += [f"Models not found (skipped): {', '.join(res.missing)}.", ""]
    if res.mask_transfer:
        out += ["## 1. Animal silhouettes: mask transfer (mean IoU over random same-class test pairs)", "",
                "| dataset | method | pairs | mean IoU | fitted in |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {r['dataset']} | {r['method']} | {r['pairs']} | {_f(r['iou'])} | {_fit_cell(r)} |"
                for r in res.mask_transfer]
        out.append("")
        if any("set-level" in r["method"] for r in res.mask_transfer + res.mnist_pck):
            out += ["Rows marked *set-level* (like the congealing baselines) were fitted on the very test images they are "
                    "measured on; the *inductive* rows were fitted on the train split and never saw them.", ""]
    if res.mnist_pck:
        al = res.config.get("alphas", (0.1, 0.05))
        out += ["## 2. MNIST under known similarity perturbations: PCK of transferred stroke points", "",
                "| dataset | pairs | method | " + " | ".join(f"PCK@{a}" for a in al) + " | points | fitted in |",
                "| --- | --- | --- | " + " | ".join("---" for _ in al) + " | --- | --- |"]
        out += [f"| {r['dataset']} | {r['task']} | {r['method']} | "
                + " | ".join(_f(r[f'pck@{a}']) for a in al) + f" | {r['points']} | {_fit_cell(r)} |" for r in res.mnist_pck]
        out.append("")
    if res.clustering:
        out += ["## 3. MNIST clustering accuracy (Hungarian matching)", "",
                "| model | routing | clusters | test images | accuracy | DTI-clustering (published) |",
                "| --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['model']} | {r.get('routing', 'classifier')} | {r['clusters']} | {r['images']} | "
                f"{_f(r['accuracy'])} | {_f(r['reference_accuracy'])} |" for r in res.clustering]
        out.append("")
        for r in res.clustering:
            if r.get("composition"):  # which digits each cluster holds: where the accuracy is lost
                out += [f"{r['model']} ({r.get('routing', 'classifier')}), test images per cluster (cluster: images, most common label and its share): "
                        + "; ".join(f"{q['cluster']}: {q['images']}" + ("" if q["label"] is None else
                                    f", {q['label']}s {q['share'] * 100:.0f}%") for q in r["composition"]) + ".", ""]
    if res.throughput:
        out += ["## Alignment throughput at inference", "",
                "| model | input | output | batch | device | threads | images/s | load |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['model']} | {r['input']} | {r['output']} | {r['batch']} | {r['device']} | {r['threads']} | "
                f"{r['images_per_s']:.0f} | {_load_cell(r)} |" for r in res.throughput]
        out += [_LOAD_NOTE, ""]
    if res.train_throughput:
        out += ["## Training throughput", "",
                "| command | preset | size | batch (samples per step) | heads | flips | s/step | images/s | device | threads | load |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        out += [f"| {r['what']} | {r['preset']} | {r['size']} px | {r['batch']} | {r.get('heads', '–')} | "
                f"{r.get('flips', '–')} | {r['s_per_step']:.2f} | {r['images_per_s']:.1f} | {r['device']} | "
                f"{r['threads']} | {_load_cell(r)} |" for r in res.train_throughput]
        out += [_LOAD_NOTE, ""]
    if res.generators:
        from .bench_generators import generators_markdown

        out += generators_markdown(res.generators)
    out += [f"Total time: {res.seconds} s; torch {res.environment.get('torch')}, "
            f"{res.environment.get('cpu_count')} CPUs visible, {res.environment.get('threads')} torch threads.", ""]
    return "\n".join(out)


def _check_resume(resume: Dict[str, Any], res: BenchResult) -> Dict[str, Any]:
    """``resume`` (a ``partial.json``) if it was written by a run with ``res``'s configuration and models."""
    same_cfg = json.loads(json.dumps(resume.get("config"), default=str)) == json.loads(json.dumps(res.config, default=str))
    same_models = resume.get("models") == res.models and resume.get("model_sha256") == res.model_sha256
    if not same_cfg or not same_models or not isinstance(resume.get("done"), list):
        raise ValueError("the partial results to resume were written with another configuration or other model "
                         "files; run with the same options, or remove the partial file (or use another --out) to start over")
    return resume


def write_partial(res: BenchResult, done: List[str], path: Union[str, os.PathLike]) -> Path:
    """Write ``res`` so far and the names of the parts ``done`` to ``path`` (atomically): what
    ``run_bench(resume=...)`` continues from."""
    from ..fileio import atomic_write

    data = dict(dataclasses.asdict(res), done=list(done))
    return atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, default=str) + "\n"), binary=False)


def write_results(res: BenchResult, out_dir: Union[str, os.PathLike], command: str = "") -> Tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir`` (each atomically)."""
    from ..fileio import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dataclasses.asdict(res)
    data["command"] = command
    js, md = out / "results.json", out / "results.md"
    atomic_write(js, lambda f: f.write(json.dumps(data, indent=1, default=str) + "\n"), binary=False)
    atomic_write(md, lambda f: f.write(to_markdown(res, command)), binary=False)
    return js, md
