"""`gangealing pck`: PCK-transfer on a prepared SPair-71K or CUB key-point dataset."""
from __future__ import annotations

import argparse

from ._common import Formatter, non_negative_int, positive_float, positive_int

ORDER = 45

EPILOG = """examples:
  gangealing prepare spair SPair-71k.tar.gz data/spair_cat --category cat
  gangealing pck data/spair_cat --ckpt cat --out results/pck_cat
  gangealing pck data/cub_val --ckpt cub --legacy            # the original's exact protocol
  torchrun --nproc_per_node 4 -m gangealing pck data/cub_val --ckpt cub

The protocol (pairs, direction, threshold) comes with the dataset; see docs/pck.md.
outputs (with --out): pck.json (PCK, std, per-pair counts), transfers.png (sample transfers)
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args

    p = sub.add_parser("pck", help="PCK-transfer on SPair-71K / CUB with the original protocols",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Transfer key points between image pairs through the congealed frame and "
                                   "report the percentage of correct key points at each alpha, with a bootstrap "
                                   "standard deviation. Runs under torchrun (pairs are split across processes).")
    p.add_argument("dataset", help="a key-point dataset folder written by `gangealing prepare spair|cub`")
    add_model_args(p, resolution=False,
                   input_size_default="the dataset's image size, as the original's pck.py (256 for SPair / CUB)")
    p.add_argument("--alphas", type=positive_float, nargs="+", default=[0.1, 0.05, 0.01], help="PCK thresholds")
    p.add_argument("--num-pairs", type=positive_int, default=None,
                   help="pairs to evaluate (default: all fixed pairs, or the dataset's number of random pairs)")
    p.add_argument("--both-ways", action=argparse.BooleanOptionalAction, default=None,
                   help="also transfer B -> A (default: the dataset's protocol: SPair one way, CUB both ways)")
    p.add_argument("--legacy", action="store_true",
                   help="reproduce the original's exact numbers (its key-point mapping, point normalisation "
                        "and mirror handling)")
    p.add_argument("--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples for the standard deviation (0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pairs and of the bootstrap")
    p.add_argument("--out", default=None, help="folder for pck.json and transfers.png")
    p.add_argument("--vis", type=non_negative_int, default=8, help="pairs shown in transfers.png (0: no picture)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.pck import evaluate_pck, save_transfer_picture, write_report
    from ..distributed import is_main
    from ..data.keypoints import load_keypoint_dataset
    from ..fileio import check_output_folder
    from .align import load_congealer

    if args.out:
        check_output_folder(args.out)
    data = load_keypoint_dataset(args.dataset)
    if args.input_size is None:
        args.input_size = data.size  # the original builds the transformer for the evaluation's --real_size
    congealer, dist = load_congealer(args)
    report = evaluate_pck(congealer, data, alphas=args.alphas, num_pairs=args.num_pairs, both_ways=args.both_ways,
                          flip=args.flip if args.flip is not None else True, legacy=args.legacy,
                          batch_size=args.batch_size, bootstrap=args.bootstrap, seed=args.seed, dist=dist,
                          progress=True)
    if is_main(dist):
        print(f"{report.dataset} {report.category or ''} ({report.num_pairs} pairs, "
              f"{'both ways' if report.both_ways else 'one way'}, flip inference "
              f"{'on' if report.flip_inference else 'off'}{', legacy' if report.legacy else ''}, "
              f"input size {report.input_size})")
        print(report.format())
        if args.out:
            from pathlib import Path

            print(f"wrote {write_report(report, Path(args.out) / 'pck.json')}")
            if args.vis > 0:
                print(f"wrote {save_transfer_picture(congealer, data, Path(args.out) / 'transfers.png', num=args.vis, seed=args.seed, legacy=args.legacy)}")
    return 0
