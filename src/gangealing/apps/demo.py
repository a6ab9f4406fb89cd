"""`gangealing demo`: what GANgealing does, on the committed models and held-out real images, as one HTML report.

For every committed cat model (:data:`gangealing.zoo.MODELS`) the report shows, on the
``animals`` test split (never seen in training): the inputs, the congealed images, the average
before and after alignment, an edit drawn once on the average congealed image and carried to every
image (:meth:`gangealing.predictor.Congealer.propagate`), dense correspondences drawn as colours
(a colour-coded congealed frame carried to every image) and, for a clustering model, the images
grouped by the cluster the classifier routes them to. It ends with the benchmark numbers
(BENCHMARKS.md when present, else a quick mask-transfer subset measured on the spot).

:func:`run_from_scratch` runs the whole pipeline (``train-gan``, then ``train``) on an embedded
dataset within a time budget and reports the quality reached.
"""
from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..data.embedded import animal_test_set, digits_as_images, mnist_test_set
from ..metrics.alignment import mask_iou, random_pairs
from ..metrics.mask_transfer import congealer_mask_transfer
from ..zoo import MODELS, available_models

__all__ = ["DemoResult", "make_hat_edit", "correspondence_colours", "run_demo", "FromScratchResult", "run_from_scratch"]


@dataclass(frozen=True)
class DemoResult:
    """Where the report went, which models it used and which were missing."""

    index: Path
    images: Tuple[Path, ...]
    models: Tuple[str, ...]
    missing: Tuple[str, ...]
    seconds: float
    numbers: Dict[str, Any] = field(default_factory=dict)


def make_hat_edit(average: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """An RGBA "hat" ``(4, R, R)`` (RGB in [-1, 1], alpha in [0, 1]) sitting on top of the silhouette in ``average``.

    ``average`` ``(C, R, R)`` in [-1, 1]: the average congealed image; its foreground is where the
    mean exceeds ``threshold``. The hat is a red triangle whose base rests on the topmost
    foreground row, centred on the foreground's horizontal centre, with a yellow band at its base.
    """
    r = average.size(-1)
    fg = average.mean(0) > threshold  # (R, R)
    if not fg.any():
        fg = average.mean(0) >= average.mean()
    ys, xs = torch.nonzero(fg, as_tuple=True)
    top, cx = int(ys.min()), float(xs.float().mean())
    height, half = max(3.0, 0.22 * r), max(2.0, 0.14 * r)
    base = top + 0.06 * r  # slightly into the head, so the hat sits on it
    yy, xx = torch.meshgrid(torch.arange(r, dtype=torch.float32), torch.arange(r, dtype=torch.float32), indexing="ij")
    t = (base - yy) / height  # 0 at the base, 1 at the tip
    inside = (t >= 0) & (t <= 1) & ((xx - cx).abs() <= half * (1 - t))
    band = inside & (t <= 0.18)
    rgba = torch.zeros(4, r, r)
    rgba[0], rgba[1], rgba[2] = 0.9, -0.8, -0.7  # red
    rgba[1][band], rgba[2][band] = 0.9, -0.9  # yellow band
    rgba[3] = inside.float()
    return rgba


def correspondence_colours(size: int) -> torch.Tensor:
    """A colour code of the congealed frame ``(3, R, R)`` in [-1, 1]: red along x, green along y, blue the rest."""
    ramp = torch.linspace(0, 1, size)
    x, y = ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size)
    rgb = torch.stack([x, y, 1 - 0.5 * (x + y)])  # (3, R, R) in [0, 1]
    return rgb * 2 - 1


def _save(images: torch.Tensor, path: Path, nrow: Optional[int] = None) -> Path:
    from ..vis import save_grid

    return save_grid(images.clamp(-1, 1).cpu(), path, nrow=nrow)


def _upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


def _inline(text: str) -> str:
    """Escape ``text`` and render Markdown's inline code and bold."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def markdown_to_html(text: str) -> str:
    """The small Markdown subset BENCHMARKS.md uses: headings, pipe tables, fenced code, bullets and
    paragraphs (anything else stays readable as a paragraph)."""
    blocks: List[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append("<pre>" + html.escape("\n".join(lines[i + 1:j])) + "</pre>")
            i = j + 1
        elif line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 2)  # '#' -> h3: under the page's h2
            blocks.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):  # skip the separator row
                    tag = "th" if not rows else "td"
                    rows.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
                i += 1
            blocks.append("<table>" + "".join(rows) + "</table>")
        elif line.startswith("* "):
            items = []
            while i < len(lines) and (lines[i].startswith("* ") or lines[i].startswith("  ")):
                if lines[i].startswith("* "):
                    items.append(lines[i][2:])
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            blocks.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        elif line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|", "```", "* ")):
                para.append(lines[i].strip())
                i += 1
            blocks.append(f"<p>{_inline(' '.join(para))}</p>")
        else:
            i += 1
    return "\n".join(blocks)


def _benchmark_section(root_candidates: Sequence[Path], congealers: Dict[str, Any], images, masks, seed: int) -> Tuple[str, Dict[str, Any]]:
    """BENCHMARKS.md rendered as HTML when it exists; else a quick mask-transfer subset."""
    for r in root_candidates:
        p = r / "BENCHMARKS.md"
        if p.is_file():
            return (f"<p>From <code>{html.escape(str(p))}</code> (measured by <code>gangealing bench</code>):</p>"
                    f"<div class='bench'>{markdown_to_html(p.read_text())}</div>"), {"source": str(p)}
    pairs = random_pairs([0] * len(images), 200, seed)
    a, b = pairs[:, 0], pairs[:, 1]
    numbers = {"pairs": 200, "no alignment": float(mask_iou(masks[a], masks[b]).mean())}
    for name, c in congealers.items():
        numbers[MODELS[name].label] = float(mask_iou(congealer_mask_transfer(c, images, masks, pairs), masks[b]).mean())
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>" for k, v in numbers.items() if k != "pairs")
    return ("<p>Quick subset measured now (BENCHMARKS.md not found): mask-transfer IoU on 200 random pairs of "
            "held-out cat silhouettes (see <code>gangealing bench</code> for the full benchmark).</p>"
            f"<table><tr><th>method</th><th>mean IoU</th></tr>{rows}</table>"), numbers


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}img{image-rendering:pixelated;"
        "max-width:100%;border:1px solid #ccc}figure{display:inline-block;margin:.5em;vertical-align:top}"
        "figcaption{font-size:90%;color:#444}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:85%}")


def _digit_section(name: str, c, fig: Callable[..., str], num_images: int, display: int, seed: int) -> str:
    """The HTML of one MNIST model: the clusters of a clustering model (test digits routed by its
    classifier or its GAN targets), or, for a one-digit model, held-out digits under random similarities (rotation up
    to 45 degrees, scale 0.7-1.3, shifts up to 15%, the benchmark's) before and after alignment."""
    from ..data.perturb import perturb_digits

    label = MODELS[name].label
    parts: List[str] = []
    if c.num_clusters > 1:
        digits, labels = mnist_test_set()
        n = 1000 if c.router is None else 200  # routing by targets costs K transformer passes per digit
        digits, labels = digits[:n], labels[:n]
        images = digits_as_images(digits)
        res = c.align(images, output_resolution=display)
        cl = res.cluster.cpu()
        for k in range(c.num_clusters):
            sel = torch.nonzero(cl == k).flatten()
            if sel.numel() == 0:
                parts.append(f"<p>cluster {k}: none of the {n:,} test digits routed here</p>")
                continue
            top = torch.bincount(torch.as_tensor(labels)[sel].long(), minlength=10)
            caption = (f"cluster {k}: {sel.numel()} digits, {int(top.max())} of them {int(top.argmax())}s; "
                       "inputs, congealed, average congealed")
            shown = sel[:8]
            row = torch.cat([_upscale(images[shown], display), res.images[shown], res.images[sel].mean(0, keepdim=True)])
            parts.append(fig(row, f"{name}_cluster{k}.png", caption, row.size(0)))
        how = "the cluster classifier" if c.router is None else "the nearest GAN target (no classifier)"
        intro = (f"<p>The first {n:,} MNIST test digits routed by {how} to {c.num_clusters} "
                 "clusters, each congealed by its own head.</p>")
    else:
        digit = MODELS[name].classes[0]
        digits, _ = mnist_test_set([digit])
        pert = perturb_digits(digits[:num_images], 40, torch.Generator().manual_seed(seed))
        big = _upscale(pert.images, display)
        res = c.align(big, output_resolution=display)
        parts += [fig(big, f"{name}_perturbed.png", f"{num_images} held-out {digit}s under random similarities", 8),
                  fig(res.images, f"{name}_congealed.png", "congealed", 8),
                  fig(torch.cat([big.mean(0, keepdim=True), res.images.mean(0, keepdim=True)]),
                      f"{name}_averages.png", "average before and after alignment", 2)]
        intro = ("<p>Held-out MNIST digits placed on a 40 px canvas under random similarities "
                 "(the benchmark's perturbations), then congealed.</p>")
    return (f"<h2>{html.escape(label)} <small>(<code>{html.escape(name)}</code>)</small></h2>" + intro
            + "".join(parts))


def run_demo(out: Union[str, Path] = "gangealing-demo", *, num_images: int = 24, display: int = 112,
             models: Optional[Sequence[str]] = None, root: Optional[Union[str, Path]] = None,
             device: str = "cpu", seed: int = 0, progress: bool = True) -> DemoResult:
    """Write the demo report into ``out`` (index.html + PNGs); see the module docstring.

    ``num_images`` held-out cat silhouettes are shown (upscaled to ``display`` px for the
    pictures; the models see the originals' pixels through their input frame).
    """
    from tqdm import tqdm

    from ..predictor import Congealer

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # The report shows cats: the cat models (not the ablation); other classes' models are benched, not shown.
    names = [n for n in (models or MODELS) if MODELS[n].dataset == "animals" and "cat" in MODELS[n].classes
             and not MODELS[n].ablation]
    found, missing = available_models(names, root)
    found_digits, missing_digits = available_models([n for n in (models or MODELS) if MODELS[n].dataset == "mnist"], root)
    missing = missing + missing_digits
    if not found:
        raise FileNotFoundError(f"none of the demo models is here ({', '.join(MODELS[n].path for n in names)}); "
                                "run the demo from the repository root, or use --from-scratch")
    all_images, all_masks, _ = animal_test_set("animals:cat")  # (100, 3, 28, 28), (100, 28, 28)
    images = all_images[:num_images]
    big = _upscale(images, display)  # (N, 3, D, D): the same images, for sharp pictures
    written: List[Path] = []
    sections: List[str] = []
    congealers: Dict[str, Congealer] = {}
    bar = tqdm(total=len(found) * 5 + len(found_digits) + 1, desc="demo", disable=not progress)

    def fig(img: torch.Tensor, fname: str, caption: str, nrow: Optional[int] = None) -> str:
        p = _save(img, out / fname, nrow)
        written.append(p)
        return f'<figure><img src="{html.escape(fname)}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'

    try:
        parts = [fig(big, "inputs.png", f"{num_images} held-out cat silhouettes (animals test split)", 8),
                 fig(big.mean(0, keepdim=True), "average_unaligned.png", "their average, unaligned")]
        sections.append("<h2>Inputs</h2>" + "".join(parts))
        for name, path in found.items():
            c = Congealer.from_checkpoint(path, device=device)
            congealers[name] = c
            label = MODELS[name].label
            res = c.align(big, output_resolution=display)
            bar.update(1)
            avg = c.average(all_images, output_resolution=display)  # (C, D, D) or (K, C, D, D)
            avg_all = res.images.mean(0, keepdim=True)
            parts = [fig(res.images, f"{name}_congealed.png", "congealed images", 8),
                     fig(avg_all, f"{name}_average_congealed.png", "average after alignment")]
            bar.update(1)
            # An edit drawn once on the average congealed image, carried to every image.
            avg_img = avg_all[0]
            hat = make_hat_edit(avg_img)
            prop = c.propagate(big, hat)
            shown = torch.where(hat[3:].bool(), hat[:3], avg_img)
            parts.append(fig(shown.unsqueeze(0), f"{name}_edit_template.png", "edit drawn once on the average"))
            parts.append(fig(prop.images, f"{name}_edit_propagated.png", "the edit carried to every image", 8))
            bar.update(1)
            # Dense correspondences: colour-code the congealed frame and carry it to every image.
            colours = correspondence_colours(display)
            code = torch.cat([colours, torch.ones(1, display, display)])  # opaque RGBA
            carried = c.propagate(big, code)
            fg = ((big.mean(1, keepdim=True) + 1) / 2).clamp(0, 1)  # foreground weight (N, 1, D, D)
            coloured = fg * carried.images + (1 - fg) * big
            frame_fg = ((avg_img.mean(0, keepdim=True) + 1) / 2).clamp(0, 1)
            tmpl = (frame_fg * colours + (1 - frame_fg) * avg_img).unsqueeze(0)
            parts.append(fig(tmpl, f"{name}_correspondence_template.png", "colour code of the congealed frame"))
            parts.append(fig(coloured, f"{name}_correspondences.png",
                             "dense correspondences: the same colour marks the same congealed position", 8))
            if len(congealers) == 1:  # the first model also gives the one-picture summary (README picture)
                k = min(7, num_images)
                summary = torch.cat([big[:1] * 0 + avg_all, big[:k], shown.unsqueeze(0), prop.images[:k],
                                     tmpl, coloured[:k]])
                parts.insert(0, fig(summary, "summary.png", "summary: average; inputs / the edit drawn once, "
                                                            "carried to every image / dense correspondences", k + 1))
            bar.update(1)
            if c.num_clusters > 1:
                cl = res.cluster.cpu()
                for k in range(c.num_clusters):
                    sel = torch.nonzero(cl == k).flatten()
                    if sel.numel() == 0:
                        parts.append(f"<p>cluster {k}: no image routed here</p>")
                        continue
                    parts.append(fig(big[sel], f"{name}_cluster{k}_inputs.png", f"cluster {k}: {sel.numel()} inputs", 8))
                    parts.append(fig(res.images[sel], f"{name}_cluster{k}_congealed.png", f"cluster {k}: congealed", 8))
                    parts.append(fig(avg[k:k + 1], f"{name}_cluster{k}_average.png",
                                     f"cluster {k}: average of all test images routed here"))
            bar.update(1)
            flips = int(res.flipped.sum())
            sections.append(f"<h2>{html.escape(label)} <small>(<code>{html.escape(str(path))}</code>)</small></h2>"
                            f"<p>{c.num_clusters} cluster(s); {flips} of {num_images} images aligned through their mirror.</p>"
                            + "".join(parts))
        for name, path in found_digits.items():
            sections.append(_digit_section(name, Congealer.from_checkpoint(path, device=device), fig, num_images,
                                           display, seed))
            bar.update(1)
        roots = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parents[3]]
        bench_html, numbers = _benchmark_section(roots, congealers, all_images, all_masks, seed)
        sections.append("<h2>Benchmark</h2>" + bench_html)
        bar.update(1)
    finally:
        bar.close()
    if missing:
        sections.append("<p>Models not found (skipped): " + ", ".join(html.escape(MODELS[n].path) for n in missing) + "</p>")
    seconds = time.time() - t0
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>gangealing demo</title><style>{_CSS}</style></head>"
            "<body><h1>GANgealing demo</h1><p>Joint alignment of held-out real images with models trained only on "
            "GAN samples (GAN-Supervised Dense Visual Alignment, Peebles et al., CVPR 2022).</p>"
            + "".join(sections) + f"<p><small>Made by <code>gangealing demo</code> in {seconds:.0f} s.</small></p></body></html>")
    index = out / "index.html"
    index.write_text(page)
    return DemoResult(index, tuple(written), tuple(found) + tuple(found_digits), tuple(missing), seconds, numbers)


# ------------------------------------------------------------------------------------------------
# The whole pipeline from scratch
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FromScratchResult:
    """What a from-scratch run reached: GAN steps and Fréchet distance, GANgealing steps, alignment IoU."""

    out: Path
    gan_steps: int
    gan_seconds: float
    fd: float
    gangealing_steps: int
    gangealing_seconds: float
    iou_unaligned: float
    iou_congealed: float
    model: Optional[Path]
    report: Path


def run_from_scratch(out: Union[str, Path], *, minutes: float = 10.0, data: str = "animals:cat", device: str = "cpu",
                     fd_samples: int = 500, pairs: int = 500, seed: int = 0, progress: bool = True) -> FromScratchResult:
    """Train a tiny GAN, then tiny GANgealing, on ``data`` within about ``minutes``, then measure them.

    Half the budget trains the GAN (``train-gan --max-seconds``); its Fréchet distance
    (:mod:`gangealing.metrics.fid`, ``fd_samples`` samples against the training images) follows;
    GANgealing gets what is left up to a small reserve (steps planned from a probe trainer's timed
    set-up and one timed step after a warm-up, stopped by the clock if the plan was optimistic), and the reserve measures the mask-transfer IoU
    of ``pairs`` random same-class test pairs (animal data) before and after alignment.
    """
    from ..predictor import Congealer
    from ..train.gan import evaluate_gan, export_generator, resolve_config, train_gan
    from ..checkpoint import save_checkpoint
    from ..train.gangealing import GANgealingTrainer, load_generator
    from ..train.runtime import DistInfo
    from ..train.presets import get_preset

    out = Path(out)
    budget = max(1.0, minutes * 60.0)
    t0 = time.time()
    deadline = t0 + budget
    # What comes after GANgealing training: congealing the 100 test images and the IoU (seconds).
    reserve = 5.0 + 0.03 * budget
    gan_cfg = resolve_config("tiny", data=data, iters=1_000_000, sample_every=10 ** 9, ckpt_every=10 ** 9,
                             log_every=10, seed=seed)
    gan = train_gan(gan_cfg, out / "gan", device=device, show_progress=progress, max_seconds=0.5 * budget)
    gen_path = export_generator(out / "gan", out / "generator.pt")
    gan_s = time.time() - t0
    fd = evaluate_gan(out / "gan", n_fake=fd_samples, n_real=fd_samples, device=device).fd

    # GANgealing: time the set-up and one step (after a warm-up step) on a probe to plan the
    # schedule; the wall-clock stop holds the budget even when the plan was optimistic.
    small = dict(pca_samples=5000, kmeans_candidates=200, n_mean=100, n_sample=16, vis_every=10 ** 9, ckpt_every=10 ** 9,
                 log_every=1, seed=seed)
    probe = get_preset("tiny", iters=3, anneal_psi=1, period=1, **small)
    generator = load_generator(gen_path, torch.device(device))
    t1 = time.time()
    probe_trainer = GANgealingTrainer(probe, generator, out / "probe", dist=DistInfo(device=torch.device(device)),
                                      tensorboard=False, show_progress=False)
    setup_s = time.time() - t1
    probe_trainer.train_step()  # warm-up
    t1 = time.time()
    probe_trainer.train_step()
    step_s = max(0.05, time.time() - t1) * 1.1  # 10% for the visuals and checkpoints at cycle ends
    del probe_trainer
    steps = max(2, int((deadline - time.time() - reserve - setup_s) / step_s))
    cfg = get_preset("tiny", iters=steps, anneal_psi=max(1, steps // 4), period=max(1, steps // 4), **small)
    t2 = time.time()
    trainer = GANgealingTrainer(cfg, generator, out / "gangealing", dist=DistInfo(device=torch.device(device)),
                                tensorboard=False, show_progress=progress)
    gg = trainer.fit(max_seconds=max(2 * step_s, deadline - time.time() - reserve))
    model_path = gg.model_path
    if model_path is None:  # stopped by the clock before the planned last step: use what it learned
        model_path = save_checkpoint(trainer.model_checkpoint(), out / "gangealing" / "model_partial.pt")
    gg_s = time.time() - t2

    iou_u = iou_c = float("nan")
    if data.startswith("animals"):
        images, masks, labels = animal_test_set(data)
        pr = random_pairs(labels, pairs, seed)
        c = Congealer.from_checkpoint(model_path, device=device)
        iou_u = float(mask_iou(masks[pr[:, 0]], masks[pr[:, 1]]).mean())
        iou_c = float(mask_iou(congealer_mask_transfer(c, images, masks, pr), masks[pr[:, 1]]).mean())
    res = FromScratchResult(out=out, gan_steps=int(gan.step), gan_seconds=round(gan_s, 1), fd=float(fd),
                            gangealing_steps=int(gg.step), gangealing_seconds=round(gg_s, 1),
                            iou_unaligned=iou_u, iou_congealed=iou_c, model=model_path,
                            report=out / "from_scratch.json")
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in res.__dict__.items()}
    summary.update(data=data, minutes=minutes, wall_seconds=round(time.time() - t0, 1))
    res.report.write_text(json.dumps(summary, indent=1) + "\n")
    return res
