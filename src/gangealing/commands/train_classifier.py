"""`gangealing train-classifier`: the cluster classifier of a clustering GANgealing run."""
from __future__ import annotations

import argparse
import dataclasses

from ._common import Formatter

ORDER = 21

def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..config import help_of
    from ..train.presets import ClassifierTrainConfig
    from .train import add_field_flag

    p = sub.add_parser("train-classifier", help="train the cluster classifier of a clustering GANgealing model",
                       description="Train the classifier that routes real images to a cluster (and orientation, with "
                       "flips): generated samples labelled by the min-loss rule over clusters and flips, "
                       "cross-entropy, initialised from the similarity transformer.",
                       formatter_class=Formatter,
                       epilog="example:\n  gangealing train-classifier runs/k4 --iters 300\n"
                       "writes runs/k4/classifier/model.pt (the model with its classifier). Rerun to resume, with "
                       "the run's own settings\n(only --iters, --micro-batch and the intervals may change); "
                       "Ctrl-C or SIGTERM stops with a checkpoint.")
    p.add_argument("run", help="a `gangealing train` run folder (or its model.pt)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/classifier)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: this process's GPU, else CPU)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop (with a checkpoint) after this much training wall time; rerun to continue")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("training options (on resume, the run's own unless given)")
    for f in dataclasses.fields(ClassifierTrainConfig):
        # SUPPRESS: a flag that was not given is absent, so that a resumed run keeps its own value.
        add_field_flag(g, f, default=argparse.SUPPRESS, help=f"{help_of(f)} (default: {f.default})")
    return p


def config_from_args(args: argparse.Namespace):
    """The :class:`ClassifierTrainConfig` of parsed arguments: the defaults, or the settings of the
    run in the output folder when there is one, with the flags given."""
    from ..train.classifier import classifier_out, saved_classifier_config
    from ..train.presets import ClassifierTrainConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ClassifierTrainConfig) if hasattr(args, f.name)}
    base = saved_classifier_config(classifier_out(args.run, args.out)) or ClassifierTrainConfig()
    return dataclasses.replace(base, **given).validate()


def run(args: argparse.Namespace) -> int:
    from ..train.classifier import train_classifier
    from .train import interrupted, report_stop

    cfg = config_from_args(args)
    try:
        res = train_classifier(args.run, cfg, args.out, device=args.device, max_steps=args.max_steps,
                               max_seconds=args.max_seconds, tensorboard=not args.no_tensorboard,
                               show_progress=not args.quiet)
    except KeyboardInterrupt:
        return interrupted()
    shown = {k: round(v, 4) for k, v in res.losses.items() if k in ("cross_entropy", "acc1", "acc2")}
    print(f"step {res.step}/{cfg.iters} in {res.wall_time_s:.0f} s; {shown}")
    return report_stop(res)
