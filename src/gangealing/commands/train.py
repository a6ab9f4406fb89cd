"""`gangealing train`: GANgealing training (target and spatial transformer) against a frozen generator."""
from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from typing import Any, Optional

from ._common import Formatter

ORDER = 20

EPILOG = """\
examples:
  # a CPU run on a tiny 32 px generator (minutes), with visuals of held-out real images
  gangealing train --generator models/gan-tiny-mnist3/generator.pt --out runs/mnist3 --preset tiny --real mnist:3
  # 4 clusters without flips, then the classifier that routes real images to a cluster
  gangealing train --generator G.pt --out runs/k4 --preset tiny-clusters
  gangealing train-classifier runs/k4 --iters 300
  # the paper's LSUN Cats run on 8 GPUs (total batch 40 = 8 x 5); on 1 GPU use --micro-batch 5 (8 passes per step)
  torchrun --nproc_per_node 8 -m gangealing train --generator cat.pt --out runs/cats --preset lsun-cats
  # two CPU processes (gloo)
  torchrun --nproc_per_node 2 -m gangealing train --generator G.pt --out runs/ddp --preset tiny --device cpu

Running the same command again (or just --generator and --out) resumes from OUT/checkpoints/last.pt
with the run's own settings; flags that change what is learned are refused unless --change-settings
is given (--iters and the logging intervals may change). Ctrl-C (SIGINT) or SIGTERM stops after the
current step with a checkpoint. Presets: see docs/train.md.
"""

def add_field_flag(group, f: dataclasses.Field, name: Optional[str] = None, **kwargs: Any) -> None:
    """The flag ``--NAME`` (default: the field's name) of a config field, with the field's help text:
    ``--x / --no-x`` for a boolean, else typed after the field; ``kwargs`` override (``nargs``, ...)."""
    from ..config import help_of

    name = name or f.name
    kwargs = {"dest": name, "default": None, "help": help_of(f), **kwargs}
    if f.type in (bool, "bool"):
        kwargs.setdefault("action", argparse.BooleanOptionalAction)
    else:
        kwargs.setdefault("type", {"int": int, "float": float}.get(getattr(f.type, "__name__", str(f.type)), str))
    group.add_argument("--" + name.replace("_", "-"), **kwargs)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..geometry.warp import PADDING_MODES
    from ..train.presets import GANgealingTrainConfig, preset_names

    p = sub.add_parser("train", help="GANgealing training: learn the congealing target and the spatial transformer",
                       description="Train a spatial transformer (and its congealing target) on samples of a frozen "
                       "generator: perceptual loss to per-sample targets, TV and identity regularisers, psi "
                       "annealing, Adam with decaying cosine restarts, EMA, optional clustering and flips.",
                       formatter_class=Formatter, epilog=EPILOG)
    p.add_argument("--generator", required=True,
                   help="generator: a gangealing generator/model checkpoint or any importable file (rosinality g_ema, ...)")
    p.add_argument("--out", required=True, help="run folder (created; an existing one is resumed)")
    p.add_argument("--preset", default=None, choices=preset_names(),
                   help="hyperparameters of a paper dataset or a CPU preset; flags below override it "
                   "(default: the original's train.py defaults)")
    p.add_argument("--real", default=None,
                   help="real images for the visuals only (folder, zip, glob, or embedded name such as mnist:3)")
    p.add_argument("--real-split", default="test", help="split of an embedded --real dataset (train, test, all)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: this process's GPU, else CPU)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop (with a checkpoint) after this much training wall time; rerun to continue")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--change-settings", action="store_true",
                   help="when resuming, continue with the loss, weight and schedule flags given here instead of "
                   "refusing them; config.json records the change")
    g = p.add_argument_group("overrides of the preset (default: the preset's value; on resume, the run's own)")
    # One flag per setting, by its flat name (the transformer's and the target's included: --flow-size,
    # --stn-channel-multiplier, --num-heads, ...), typed and documented by its config field.
    special = {"transforms": dict(nargs="+", choices=["similarity", "flow"]),
               "input_jitter": dict(nargs=4, type=float, metavar=("MAX_ANGLE", "MIN_SCALE", "MAX_SCALE", "MAX_SHIFT")),
               "padding_mode": dict(choices=PADDING_MODES)}
    for name, f in GANgealingTrainConfig.flat_fields().items():
        add_field_flag(g, f, name, **special.get(name, {}))
    return p


def config_from_args(args: argparse.Namespace):
    """The resolved :class:`GANgealingTrainConfig` of parsed arguments: preset + overrides, or, when
    ``--out`` holds a run and no preset is given, the run's own settings + overrides."""
    from ..train.gangealing import saved_train_config
    from ..train.presets import GANgealingTrainConfig, get_preset

    overrides = {}
    for name in GANgealingTrainConfig.flat_fields():
        v = getattr(args, name, None)
        if v is not None:
            overrides[name] = tuple(v) if isinstance(v, list) else v
    if args.preset:
        return get_preset(args.preset, **overrides)
    saved = saved_train_config(args.out)
    return (saved or GANgealingTrainConfig()).replace(**overrides).validate()


def run(args: argparse.Namespace) -> int:
    from ..train.gangealing import train_gangealing

    cfg = config_from_args(args)
    try:
        res = train_gangealing(cfg, args.generator, args.out, real=args.real, real_split=args.real_split,
                               device=args.device, max_steps=args.max_steps, max_seconds=args.max_seconds,
                               tensorboard=not args.no_tensorboard, show_progress=not args.quiet,
                               change_settings=args.change_settings)
    except KeyboardInterrupt:
        return interrupted()
    shown = {k: round(v, 6) for k, v in res.losses.items() if k in ("perceptual", "tv", "identity", "psi")}
    print(f"step {res.step}/{cfg.iters} in {res.wall_time_s:.0f} s; last losses {shown}")
    return report_stop(res)


def interrupted() -> int:
    """For a Ctrl-C outside the steps (setting up) or a second one: one line, status 130, no traceback."""
    print("interrupted; the run keeps its last checkpoint, if any: rerun the same command to continue",
          file=sys.stderr)
    return 128 + signal.SIGINT


def report_stop(res) -> int:
    """Say where a training run ended; the exit status: 0, or 128 + the signal that stopped it (the shell's
    convention, so that ``train && next`` does not go on with an unfinished run)."""
    if res.model_path:
        print(f"model: {res.model_path}")
        return 0
    why = f"stopped by {res.stopped_by}" if res.stopped_by else "stopped"
    print(f"{why} at step {res.step} with a checkpoint; rerun the same command to continue ({res.run_dir})")
    return 128 + signal.Signals[res.stopped_by] if res.stopped_by else 0
