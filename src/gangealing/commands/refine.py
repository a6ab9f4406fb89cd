"""`gangealing refine`: fit a transformer to your own images, from a GANgealing model or from nothing."""
from __future__ import annotations

import argparse

from ._common import Formatter, device, new_model_file, non_negative_int, positive_float, positive_int, unit_float

ORDER = 22

EPILOG = """examples:
  gangealing refine photos/ --out refined.pt                                  # from nothing (no GAN)
  gangealing refine photos/ --ckpt models/gangealing-tiny-cat/model.pt --out cat-refined.pt
  gangealing refine animals:cat --out cat.pt --minutes 5                      # an embedded dataset
  gangealing align photos/ --ckpt refined.pt --out aligned/                   # every command takes the result

The output is a normal model file (align, propagate, transfer, video, curate, serve, bench --model-path).
A held-out split of the images decides when to stop; the weights of the best held-out step are kept.
See docs/refine.md.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..train.refine import SCRATCH_CHANNELS, SCRATCH_FLOW_DOWNSAMPLE, SCRATCH_SIZE, RefineConfig

    d = RefineConfig()
    p = sub.add_parser("refine", help="align your own images: adapt a model's transformer to them, or train one from nothing",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Minimise the distance between each congealed image and a template (the running "
                                   "average congealed image, and the model's GAN target when there is one) with the "
                                   "paper's flow penalties, a pinned mean pose and a bounded scale. Without --ckpt an "
                                   "identity-initialised small transformer is trained (GAN-free dense alignment).")
    p.add_argument("data", help="image folder / zip / glob, a prepared dataset folder, or an embedded name (animals:cat, mnist:3)")
    p.add_argument("--out", required=True, help="the refined model file to write (never the --ckpt file)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--ckpt", default=None, help="GANgealing model to adapt (file or released name); default: from nothing")
    p.add_argument("--split", choices=("train", "test", "all"), default="train", help="split of an embedded dataset")
    p.add_argument("--size", type=positive_int, default=None,
                   help=f"from nothing: transformer size, a power of two >= 16 (default {SCRATCH_SIZE}); with --ckpt the model's")
    p.add_argument("--channels", type=positive_int, default=None,
                   help=f"from nothing: widest layer of the transformer (default {SCRATCH_CHANNELS})")
    p.add_argument("--flow-downsample", type=positive_int, default=None,
                   help="from nothing: the flow is regressed at size / this and convex-upsampled (a power of two, 2-16; "
                        f"default {SCRATCH_FLOW_DOWNSAMPLE}: an 8 x 8 grid at 32 px; GANgealing's transformers use 8)")
    p.add_argument("--steps", type=positive_int, default=d.steps, help="most training steps")
    p.add_argument("--minutes", type=positive_float, default=None, help="stop after this many minutes (best held-out weights kept)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch, help="images per step")
    p.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default 3e-3; 1.5e-3 with --stages similarity)")
    p.add_argument("--distill-steps", type=non_negative_int, default=None,
                   help="steps regressing the grids of a set-level per-image fit before the objective (0: none)")
    p.add_argument("--template", choices=("auto", "mean", "gan", "both"), default="auto",
                   help="what congealed images are pulled to: the running average congealed image, the model's GAN "
                        "target, or both (auto: both when the model has a generator, else mean)")
    p.add_argument("--stages", choices=("all", "similarity"), default=None,
                   help="which stages of the transformer are trained: all, or the similarity only (the flow keeps "
                        "the starting model's weights, so it cannot bend one shape onto another; default all)")
    p.add_argument("--tv-weight", type=float, default=None, help="flow total-variation weight (default 100)")
    p.add_argument("--identity-weight", type=float, default=None, help=f"flow identity weight (default {d.identity_weight:g})")
    p.add_argument("--anchor-weight", type=float, default=None,
                   help="weight of the distance to the starting warp (default 1 with --ckpt, 0 from nothing)")
    p.add_argument("--holdout", type=unit_float, default=d.holdout, help="fraction of images held out to decide when to stop (0: none)")
    p.add_argument("--eval-every", type=positive_int, default=d.eval_every, help="steps between held-out evaluations")
    p.add_argument("--patience", type=non_negative_int, default=d.patience,
                   help="stop after this many evaluations without held-out improvement")
    p.add_argument("--patience-after", type=unit_float, default=d.patience_after,
                   help="fraction of --steps before which evaluations do not count toward --patience (the blur is "
                        "still coarse then; an adapted model first gets worse at the fine scale)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the split and the batches")
    p.add_argument("--metrics", default=None, help="also write each step's losses to this JSON-lines file")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 (default: a GPU if there is one)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    from ..predictor import default_device
    from ..models.target import gan_template
    from ..train.refine import (SCRATCH_CHANNELS, SCRATCH_FLOW_DOWNSAMPLE, SCRATCH_SIZE, Refiner, default_config,
                                load_refine_images, save_refined, scratch_stn)
    from ..train.runtime import MetricsLogger

    out = new_model_file(args.out, args.ckpt, args.overwrite, "the --ckpt file")
    dev = args.device or default_device()
    model, template, router = None, None, None
    if args.ckpt is not None:
        from ..build import load_model
        from ..pretrained import resolve_checkpoint

        given = [f for f, v in (("--size", args.size), ("--channels", args.channels),
                                   ("--flow-downsample", args.flow_downsample)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} shape a transformer from nothing; with --ckpt the model's own "
                             "transformer is adapted (leave them out)")
        ckpt = resolve_checkpoint(args.ckpt)
        model = load_model(ckpt, device=dev)
        stn = model.stn
        if stn.num_heads > 1:  # a clustering model: each image is routed to its nearest GAN target
            from ..predictor import target_router

            if model.generator is None or model.target is None:
                raise ValueError(f"{args.ckpt} is a clustering model ({stn.num_heads} heads) without its generator and "
                                 "target: refine routes each image to the nearest GAN target, so it needs them "
                                 "(use the checkpoint `gangealing train` wrote)")
            router = target_router(model, ckpt, None, dev)
        elif model.generator is not None and model.target is not None:
            template = gan_template(model.generator, model.target, stn.cfg.flow_size)
    else:
        stn = scratch_stn(args.size or SCRATCH_SIZE, args.channels or SCRATCH_CHANNELS, seed=args.seed,
                          flow_downsample=args.flow_downsample or SCRATCH_FLOW_DOWNSAMPLE)
    cfg = default_config(model is not None, steps=args.steps, minutes=args.minutes, batch=args.batch_size, lr=args.lr,
                         template=args.template, tv_weight=args.tv_weight, identity_weight=args.identity_weight,
                         anchor_weight=args.anchor_weight, distill_steps=args.distill_steps, holdout=args.holdout, eval_every=args.eval_every,
                         patience=args.patience, patience_after=args.patience_after, seed=args.seed,
                         stages=args.stages)
    test_settings = (model.meta.get("test") or {}) if model is not None else {}
    flip = bool(test_settings.get("flip")) and router is None  # a model trained with --flips
    # Fitted at one similarity pass even when the model is applied with more (meta test iters):
    # fitting at the model's 2 passes measured slightly worse (Refiner's docstring, docs/refine.md).
    refiner = Refiner(stn, cfg, template_image=template, device=dev, flip=flip, router=router)  # checks the template before loading images
    data = load_refine_images(args.data, stn.cfg.input_size, split=args.split, channels=stn.cfg.image_channels,
                              progress_bar=not args.no_progress)
    log = MetricsLogger(args.metrics, tensorboard=False) if args.metrics else None
    try:
        res = refiner.fit(data, progress_bar=not args.no_progress, log=log)
    finally:
        if log is not None:
            log.close()
    test = dict(model.meta.get("test") or {}) if model is not None else None
    if router is not None:  # routed as it was fitted (the classifier, if any, knew the old transformer)
        test["routing"] = "targets"
    save_refined(res, out, cfg=cfg, base=args.ckpt, base_model=model, data=str(args.data), test=test)
    print(f"refined on {res.train_images} images ({res.holdout_images} held out) in {res.steps} steps, "
          f"{res.seconds:.0f} s ({res.images_per_s:.0f} images/s, stopped by {res.stopped}); "
          f"held-out distance {res.initial_holdout_loss:.4f} -> {res.holdout_loss:.4f} (best at step {res.best_step})")
    print(f"wrote {out}")
    return 0
