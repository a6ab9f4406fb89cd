"""Write a copy of a GANgealing model whose flow is zero: the same transformer, similarity only.

    python scripts/zero_flow.py MODEL.pt OUT.pt

A test-time ablation (BENCHMARKS.md sections 1 and 2): it shows what the trained flow adds to the trained
similarity of one model (bench both files), where a model trained without a flow (`--transforms
similarity`) shows what the flow adds to training. The last layer of every flow head predicts the
low-resolution flow, which the convex upsampling only mixes, so zeroing its weights and bias zeroes
the flow of every head. The input file is never written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    from gangealing.build import build_from_checkpoint
    from gangealing.checkpoint import load_checkpoint, save_checkpoint
    from gangealing.models.stn import FlowHead

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out")
    args = ap.parse_args()
    if Path(args.out).resolve() == Path(args.model).resolve():
        raise SystemExit("error: OUT must differ from MODEL (the input model is never overwritten)")
    ckpt = load_checkpoint(args.model)
    stn = build_from_checkpoint(ckpt, "stn")
    heads = [m for m in stn.modules() if isinstance(m, FlowHead)]
    if not heads:
        raise SystemExit(f"error: {args.model} has no flow head (a similarity-only model already)")
    with torch.no_grad():
        for m in heads:
            for p in m.flow_out[-1].parameters():  # the layer that outputs the low-resolution flow
                p.zero_()
    ckpt.state["stn"] = stn.state_dict()
    save_checkpoint(ckpt, args.out)
    print(f"zeroed the flow of {len(heads)} flow head(s) -> {args.out}")


if __name__ == "__main__":
    main()
