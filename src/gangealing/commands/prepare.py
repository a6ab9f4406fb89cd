"""`gangealing prepare`: SPair-71K, CUB-200-2011, LSUN and image folders -> the project's dataset format."""
from __future__ import annotations

import argparse

from ._common import Formatter, image_side, non_negative_int, positive_int

ORDER = 10

EPILOG = """examples:
  gangealing prepare spair SPair-71k.tar.gz data/spair_cat --category cat
  gangealing prepare cub CUB_200_2011.tgz data/cub_val --acsm-mat val_cub_cleaned.mat
  gangealing prepare lsun cat/ data/lsun_cat --max-images 1000000      # LMDB folder (data.mdb) or its zip
  gangealing prepare images photos/ data/photos --size 128 --pad border

Sources are folders or archives (tar, tar.gz, tgz, zip) as downloaded; they are never modified.
See docs/datasets.md for the layouts read and the files written.
"""


def _common(p: argparse.ArgumentParser, pad: bool) -> None:
    p.add_argument("source", help="the downloaded dataset: a folder or an archive (tar, tar.gz, zip)")
    p.add_argument("out", help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--size", type=image_side, default=256, help="side of the square prepared images")
    if pad:
        p.add_argument("--pad", choices=("center", "border", "zero", "none"), default="center",
                       help="make images square: center crop, border (edge) padding, zero padding, or stretch")
        p.add_argument("--max-images", type=positive_int, default=None, help="keep at most this many images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("prepare", help="turn SPair-71K, CUB, LSUN or an image folder into a prepared dataset",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Read a dataset from the folder or archive you downloaded, preprocess its images "
                                   "as the original does, and write the project's dataset format (images.npy, "
                                   "manifest.json; keypoints.json for SPair and CUB, which `gangealing pck` reads).")
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True,
                             help="what the source is: spair, cub, lsun or images (each has its own --help)")
    s = kinds.add_parser("spair", help="SPair-71K pairs of one category (for PCK)", formatter_class=Formatter,
                         description="The fixed pairs of a category and split; images resized so the long side is "
                                     "--size and border-padded to square.")
    _common(s, pad=False)
    s.add_argument("--category", required=True, help="SPair category (cat, dog, bicycle, tvmonitor, ...)")
    s.add_argument("--split", choices=("trn", "val", "test"), default="test", help="pair split")
    s.add_argument("--permutation", type=non_negative_int, nargs="+", default=None,
                   help="left/right swap of the used key points (default: the original's for bicycle, cat, dog, "
                        "tvmonitor; none for other categories)")
    c = kinds.add_parser("cub", help="CUB-200-2011, ACSM's validation split (for PCK)", formatter_class=Formatter,
                         description="Images cropped as ACSM does (padded, squared bounding box, edge replication) "
                                     "and resized to --size. Reading the .mat file needs scipy.")
    _common(c, pad=False)
    c.add_argument("--acsm-mat", default=None,
                   help="ACSM's val_cub_cleaned.mat (default: looked for inside the source)")
    c.add_argument("--split", choices=("acsm_val", "train", "test", "all"), default="acsm_val",
                   help="acsm_val is the evaluation split; the others use CUB's own split and boxes")
    c.add_argument("--num-pairs", type=positive_int, default=10000, help="random pairs `gangealing pck` evaluates")
    ls = kinds.add_parser("lsun", help="an LSUN LMDB export (folder with data.mdb, or its zip)",
                          formatter_class=Formatter, description="Decode every LMDB value; undecodable ones are "
                                                                 "reported and skipped. Needs the lmdb package.")
    _common(ls, pad=True)
    im = kinds.add_parser("images", help="a folder, glob or archive of image files", formatter_class=Formatter,
                          description="Unreadable files are reported and skipped. A folder holding data.mdb is read "
                                      "as LSUN.")
    _common(im, pad=True)
    return p


def run(args: argparse.Namespace) -> int:
    from ..apps import prepare as P

    if args.kind == "spair":
        res = P.prepare_spair(args.source, args.out, args.category, split=args.split, size=args.size,
                              permutation=args.permutation, overwrite=args.overwrite)
    elif args.kind == "cub":
        res = P.prepare_cub(args.source, args.out, acsm_mat=args.acsm_mat, split=args.split, size=args.size,
                            num_pairs=args.num_pairs, overwrite=args.overwrite)
    elif args.kind == "lsun":
        res = P.prepare_lsun(args.source, args.out, size=args.size, mode=args.pad, max_images=args.max_images,
                             overwrite=args.overwrite)
    else:
        res = P.prepare_images(args.source, args.out, size=args.size, mode=args.pad, max_images=args.max_images,
                               overwrite=args.overwrite)
    extra = f", {res.num_samples} key-point samples, {res.num_pairs} fixed pairs" if res.num_samples else ""
    print(f"wrote {res.path}: {res.num_images} images{extra}")
    for s in res.skipped:
        print(f"skipped {s.path}: {s.reason}")
    return 0
