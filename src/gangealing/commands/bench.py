"""`gangealing bench`: alignment quality with real ground truth on held-out real images, and speed."""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ._common import Formatter, int_range

ORDER = 95

EPILOG = """examples:
  gangealing bench --out bench/                       # every committed model that exists
  gangealing bench --out bench/ --models gangealing-tiny-cat --pairs 200 --no-classic
  gangealing bench --out bench-giraffe/ --model runs/giraffe/model.pt=animals:giraffe   # any model you trained
  gangealing bench --out bench-3/ --model runs/mnist3/model.pt=mnist:3 --no-generators --no-train-speed

outputs: OUT/results.json and OUT/results.md; see docs/benchmarks.md and BENCHMARKS.md

A full run takes hours on a CPU. After each part (an animal class, an MNIST digit, a model's
clustering or speed, the generators) OUT/partial.json is written; run the same command again to
resume a stopped run from it (--fresh starts over). It is removed when the results are written.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..apps.bench import BenchConfig
    from ..zoo import MODELS

    d = BenchConfig()
    p = sub.add_parser("bench", help="benchmark: mask-transfer IoU, MNIST PCK under known perturbations, "
                                     "clustering accuracy, throughput",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Measure the committed models (and the no-alignment and classic-congealing "
                                   "baselines) on held-out real images with real ground truth. Models whose files "
                                   "are missing are skipped and listed.")
    p.add_argument("--out", default="bench", help="folder for results.json and results.md")
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None, help="registry models (default: all)")
    p.add_argument("--model", nargs="+", action="extend", default=[], metavar="FILE=DATA[=LABEL]",
                   help="bench any model file on the embedded data it aligns: DATA is animals:CLASS (mask transfer "
                        "on that class), mnist:DIGIT (PCK under perturbations) or mnist (10-cluster accuracy). "
                        "Without --models, only these are measured (beside the baselines)")
    p.add_argument("--model-path", nargs="+", action="extend", default=[], metavar="NAME=FILE",
                   help="use FILE for registry model NAME (e.g. a run's model.pt before it is copied under models/)")
    p.add_argument("--pairs", type=int, default=d.pairs, help="random same-class mask-transfer pairs per class")
    p.add_argument("--classes", nargs="+", default=list(d.animal_classes), help="animal classes for mask transfer")
    p.add_argument("--digits", type=int, default=d.mnist_digits, help="MNIST test digits for PCK")
    p.add_argument("--canvas", type=int, default=d.canvas, help="side of the MNIST perturbation canvas (px)")
    p.add_argument("--cluster-images", type=int, default=d.cluster_images, help="MNIST test images routed for clustering accuracy")
    p.add_argument("--route-images", type=int, default=d.route_images,
                   help="first MNIST test images also routed by each clustering model's nearest GAN target (K "
                        "transformer passes per image; models whose file holds the generator; 0 to skip)")
    p.add_argument("--throughput-images", type=int, default=d.throughput_images, help="images timed per model")
    p.add_argument("--no-classic", action="store_true", help="skip the congealing baselines (classic and gradient)")
    p.add_argument("--no-refine", action="store_true",
                   help="skip the refine rows (a transformer fitted per class and per model: minutes on 2 cores)")
    p.add_argument("--inductive-classes", nargs="*", default=list(d.inductive_classes),
                   help="classes whose refine rows are also fitted on the train split (inductive: never on the test "
                        "images); none to skip")
    p.add_argument("--refine-steps", type=int, default=d.refine_steps, help="objective steps of each refine row")
    p.add_argument("--refine-train-digits", type=int_range(2), default=d.refine_train_digits,
                   help="MNIST train digits (two perturbed copies each) the inductive MNIST refine rows are fitted on")
    p.add_argument("--no-train-speed", action="store_true",
                   help="skip the training-throughput measures (a few timed steps per preset, about a minute on 2 cores)")
    p.add_argument("--no-generators", action="store_true",
                   help="skip the Generators section (FD, precision, recall, digit shares of each committed generator)")
    p.add_argument("--generator-samples", type=int_range(4), default=d.generator_samples,
                   help="generated (and real) images per generator in the Generators section")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of pairs, perturbations and points")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--fresh", action="store_true", help="ignore OUT/partial.json of a stopped run and start over")
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.bench import BenchConfig, run_bench, to_markdown, write_partial, write_results

    cfg = BenchConfig(pairs=args.pairs, animal_classes=tuple(args.classes), mnist_digits=args.digits, canvas=args.canvas,
                      cluster_images=args.cluster_images, route_images=args.route_images, throughput_images=args.throughput_images,
                      classic=not args.no_classic, seed=args.seed, refine=not args.no_refine,
                      refine_steps=args.refine_steps, refine_train_digits=args.refine_train_digits, inductive_classes=tuple(args.inductive_classes), generators=not args.no_generators,
                      generator_samples=args.generator_samples,
                      **(dict(gan_presets=(), gangealing_presets=()) if args.no_train_speed else {}))
    from ..zoo import parse_model_spec

    paths = {}
    for item in args.model_path:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise ValueError(f"--model-path {item!r}: expected NAME=FILE (a zoo name and a model file)")
        paths[name] = file
    extra = dict(parse_model_spec(spec) for spec in args.model)
    if len(extra) < len(args.model):
        raise ValueError("--model: two files get the same name (their folder's name); give each a distinct folder")
    models = args.models if args.models is not None or not extra else []
    partial = Path(args.out) / "partial.json"
    resume = None
    if partial.is_file() and not args.fresh:
        try:
            resume = json.loads(partial.read_text())
        except ValueError as e:
            raise ValueError(f"{partial} is not readable JSON ({e}); remove it or pass --fresh to start over") from e
        print(f"resuming from {partial}: {', '.join(resume.get('done') or []) or 'nothing'} done", file=sys.stderr)

    res = run_bench(cfg, models, device=args.device, progress=not args.no_progress, paths=paths, extra=extra,
                    resume=resume, on_part=lambda r, done: write_partial(r, done, partial))
    # The command line as typed when run from a shell; in-process calls (tests) record the output folder only.
    if len(sys.argv) > 1 and sys.argv[1] == "bench":
        command = "gangealing bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    else:
        command = f"gangealing bench --out {shlex.quote(str(args.out))}"
    js, md = write_results(res, args.out, command)
    partial.unlink(missing_ok=True)
    print(to_markdown(res))
    print(f"results: {js} {md}")
    return 0
