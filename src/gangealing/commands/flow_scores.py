"""`gangealing flow-scores`: score every image by the smoothness of the flow the model predicts for it."""
from __future__ import annotations

import argparse

from ._common import Formatter

ORDER = 36

EPILOG = """The score is minus the total variation of the residual flow (the original's flow_scores.py):
near 0 for images the model aligns smoothly, very negative for images it cannot make sense of.
Use the CSV with `gangealing curate --scores` to keep the best fraction of a dataset.

examples:
  gangealing flow-scores photos/ --ckpt cat --out scores.csv
  torchrun --nproc_per_node 4 -m gangealing flow-scores photos/ --ckpt cat --out scores.csv
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .align import add_model_args

    p = sub.add_parser("flow-scores", help="score images by the smoothness of their flow (CSV)",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Write one flow score per input image (index, input, score, flipped, cluster) "
                                   "as CSV, in input order. Unreadable files are reported and get no score. "
                                   "Runs under torchrun.")
    p.add_argument("inputs", nargs="+", help="image folders (recursive), glob patterns or image files")
    p.add_argument("--out", required=True, help="CSV file to write")
    add_model_args(p, resolution=False)
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps.curate import compute_flow_scores, write_scores
    from ..distributed import finish, is_main
    from ..fileio import check_output_file
    from .align import load_congealer

    check_output_file(args.out)
    congealer, dist = load_congealer(args)
    records = compute_flow_scores(congealer, args.inputs, batch_size=args.batch_size, dist=dist)
    if is_main(dist):
        write_scores(records, args.out)
        bad = [r for r in records if r.error]
        for r in bad:
            print(f"skipped {r.path}: {r.error}")
        scored = [r.score for r in records if r.score is not None]
        if scored:
            print(f"scored {len(scored)} image(s) into {args.out}: min {min(scored):.4g}, max {max(scored):.4g}")
    finish(dist)
    return 0
