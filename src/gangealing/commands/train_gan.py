"""`gangealing train-gan`: train the StyleGAN2 generator GANgealing starts from."""
from __future__ import annotations

import argparse
import dataclasses

from ._common import Formatter, positive_float, positive_int

ORDER = 10

EPILOG = """\
examples:
  gangealing train-gan animals:cat --out runs/gan-cat --mirror          # embedded cat silhouettes, tiny preset
  gangealing train-gan mnist:3 --out runs/gan-3 --iters 3000
  gangealing train-gan photos/ --out runs/gan-photos --preset small --pad border
  torchrun --nproc_per_node 8 -m gangealing train-gan faces.zip --out runs/faces --preset paper

Run the same command again to resume a stopped run (settings come from its checkpoint; flags you
pass that change what is learned are refused). `--export FILE` writes the EMA generator alone.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..train.gan import PRESETS, GANTrainConfig
    from .train import add_field_flag

    p = sub.add_parser("train-gan", help="train a StyleGAN2 generator on a folder, zip or embedded dataset",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Train a StyleGAN2 generator (non-saturating loss, lazy R1, optional path-length "
                                   "regularisation, style mixing, EMA, differentiable augmentation) on your images. "
                                   "Presets: tiny (32 px, 2-core CPU), small (64 px), paper (256 px config-f); every "
                                   "value can be overridden. Resumes automatically from RUN_DIR.")
    p.add_argument("data", help="a folder of images, a zip of images, a glob, or an embedded dataset "
                                "(animals[:class], mnist[:digit], fashion-mnist[:class])")
    p.add_argument("--out", required=True, help="run folder (created; resumed when it holds a checkpoint)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="starting config (default: tiny; on resume the run's own)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: this process's GPU if any, else CPU)")
    p.add_argument("--cache-dir", default=None, help="where prepared datasets are cached (default $GANGEALING_CACHE or ~/.cache/gangealing)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=positive_float, default=None,
                        help="stop cleanly (with a checkpoint) after this many minutes of wall clock; rerun to continue")
    budget.add_argument("--max-seconds", type=positive_float, default=None, help="the same budget in seconds")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop (with a checkpoint) after this many more steps; rerun to continue")
    p.add_argument("--export", default=None, metavar="FILE", help="after training, write the EMA generator alone to FILE")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("training options (default: the preset's value)")
    for f in dataclasses.fields(GANTrainConfig):
        if f.name not in ("data", "preset"):
            add_field_flag(g, f)
    return p


def run(args: argparse.Namespace) -> int:
    import json
    import signal

    from ..train.gan import GANTrainConfig, export_generator, resolve_config, saved_train_config, train_gan

    names = [f.name for f in dataclasses.fields(GANTrainConfig) if f.name not in ("data", "preset")]
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    saved = saved_train_config(args.out) if __import__("os").path.isdir(args.out) else None
    if saved is not None:  # resume: the run's settings, plus whatever was passed explicitly
        if args.preset is not None and args.preset != saved.preset:
            given["preset"] = args.preset
        cfg = GANTrainConfig.from_dict({**saved.to_dict(), **given, "data": args.data})
        print(f"resuming {args.out} (preset {saved.preset})")
    else:
        cfg = resolve_config(args.preset or "tiny", data=args.data, **given)
    result = train_gan(cfg, args.out, device=args.device, cache_dir=args.cache_dir,
                       show_progress=not args.no_progress, max_steps=args.max_steps,
                       max_seconds=args.minutes * 60 if args.minutes is not None else args.max_seconds)
    if args.export:
        export_generator(args.out, args.export)
    print(json.dumps({"step": result.step, "checkpoint": str(result.checkpoint), "seconds": round(result.seconds, 1),
                      **({"stopped_by": result.stopped_by} if result.stopped_by else {}),
                      **{k: round(v, 4) for k, v in result.metrics.items()}}))
    if result.step < cfg.iters:
        print(f"stopped{' by ' + result.stopped_by if result.stopped_by else ''} at step {result.step} with a "
              f"checkpoint; rerun the same command to continue ({args.out})")
    # The shell's convention for a signal (128 + its number), so `train-gan && next` stops too.
    return 128 + signal.Signals[result.stopped_by] if result.stopped_by else 0
