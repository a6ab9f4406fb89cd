"""One row of the refine study (docs/refine.md): refine a model (or a transformer from nothing) on an
embedded animal class and measure held-out mask transfer exactly as `gangealing bench` does.

    python scripts/refine_study.py cat --model gangealing-cat --split train --set tv_weight=10 lr=3e-3
    python scripts/refine_study.py cat --split test                      # from nothing, set-level
    python scripts/refine_study.py cat --model gangealing-cat --no-gan   # the mean template only

Images are prepared as the bench prepares them (the predictor's input frame); ``--split test`` fits
on the 100 test images that are measured (set-level), ``--split train`` on the 900 train images
(inductive). ``--set KEY=VALUE`` overrides a RefineConfig field (values read as JSON, e.g.
``blur=[0.5,0.5]``). Prints the IoU before and after, the stop reason, the held-out curve.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from gangealing.build import load_model
    from gangealing.data.embedded import animal_test_set
    from gangealing.metrics.alignment import mask_iou, random_pairs
    from gangealing.metrics.mask_transfer import congealer_mask_transfer
    from gangealing.predictor import Congealer
    from gangealing.pretrained import resolve_checkpoint
    from gangealing.models.target import gan_template
    from gangealing.train.refine import (SCRATCH_CHANNELS, SCRATCH_FLOW_DOWNSAMPLE, Refiner, default_config,
                                         parse_overrides, scratch_stn)

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cls", help="animal class (cat, dog, horse, ...)")
    p.add_argument("--model", default=None, help="model file or zoo name to adapt (default: from nothing)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="images refine is fitted on")
    p.add_argument("--steps", type=int, default=400, help="refine steps (the bench's --refine-steps)")
    p.add_argument("--no-gan", action="store_true", help="mean template only, even when the model has a generator")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="RefineConfig overrides")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--channels", type=int, default=SCRATCH_CHANNELS, help="width of the transformer made from nothing")
    p.add_argument("--flow-downsample", type=int, default=SCRATCH_FLOW_DOWNSAMPLE,
                   help="the transformer made from nothing regresses its flow at 32 / this")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    overrides = parse_overrides(args.set)
    images, masks, _ = animal_test_set(f"animals:{args.cls}")
    fit_images = images if args.split == "test" else animal_test_set(f"animals:{args.cls}", "train")[0]
    pairs = random_pairs(np.zeros(len(images), dtype=np.int64), 1000, 0)  # the bench's pairs (seed 0)

    def iou(c) -> float:
        out = congealer_mask_transfer(c, images, masks, pairs, resolution=64)
        return float(mask_iou(out, masks[pairs[:, 1]]).mean())

    base, template, flip = None, None, False
    if args.model is not None:
        ckpt = resolve_checkpoint(args.model)
        base = Congealer.from_checkpoint(ckpt)
        flip = base.flip
        m = load_model(ckpt)
        if not args.no_gan and m.generator is not None and m.target is not None:
            template = gan_template(m.generator, m.target, base.stn.cfg.flow_size)
        print(f"before: {iou(base):.4f}")
    stn = base.stn if base is not None else scratch_stn(32, channels=args.channels, flow_downsample=args.flow_downsample)
    cfg = default_config(base is not None, **{"steps": args.steps, "seed": 0, **overrides})  # --set seed=N wins
    frame = Congealer(stn, flip=False)
    x = torch.cat([frame.prepare(fit_images[s:s + 500])[0].cpu() for s in range(0, len(fit_images), 500)])
    iters = 1 if base is None else base.iters  # applied with the model's passes; fitted at one (as the bench)
    res = Refiner(stn, cfg, template_image=template, flip=flip).fit(x, progress_bar=False)
    curve = [(h["step"], round(h["holdout"], 4)) for h in res.history if "holdout" in h]
    print(f"stopped by {res.stopped} at step {res.steps} (best {res.best_step}), {res.seconds:.0f} s; "
          f"held-out distance {res.initial_holdout_loss:.4f} -> {res.holdout_loss:.4f}; curve {curve}")
    refined = Congealer(res.stn, flip=flip, padding_mode="border", iters=iters)
    print(f"after: {iou(refined):.4f}  ({args.cls}, {args.model or 'from nothing'}, split {args.split}, "
          f"template {'mean+gan' if template is not None else 'mean'}, overrides {overrides})")


if __name__ == "__main__":
    main()
