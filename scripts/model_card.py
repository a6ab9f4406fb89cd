"""The pictures and simple measures of a model card, for a model trained on an embedded animal class.

    python scripts/model_card.py MODEL.pt animals:cat OUT_DIR [--display 64]

Writes into OUT_DIR (created; existing files of these names are replaced atomically):
  test_real.png, test_congealed.png        the class's 100 held-out test silhouettes, before / after
  test_average_unaligned.png, test_average_congealed.png
  alignment.json                           per-pixel std over the set and the mean IoU of each
                                           silhouette with the set's majority mask, before / after

The benchmark's measure (mask-transfer IoU between pairs) is `gangealing bench --model MODEL.pt=animals:cat`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F


def majority_iou(masks: torch.Tensor) -> float:
    """Mean IoU of each mask ``(N, H, W)`` bool with the majority mask of the set."""
    from gangealing.metrics.alignment import mask_iou

    major = masks.float().mean(0, keepdim=True) > 0.5
    return float(mask_iou(masks, major.expand_as(masks)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("data", help="an embedded animals:CLASS name")
    ap.add_argument("out")
    ap.add_argument("--display", type=int, default=64, help="side of the pictures (px)")
    args = ap.parse_args()

    from gangealing.data.embedded import animal_test_set
    from gangealing.fileio import atomic_write
    from gangealing.predictor import Congealer
    from gangealing.vis import save_grid

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, masks, _ = animal_test_set(args.data)
    c = Congealer.from_checkpoint(args.model, device="cpu")
    with torch.no_grad():
        res = c.align(images)  # at the model's flow size
        big = c.align(images, output_resolution=args.display)  # sampled from the originals (anti-aliased)
    up = F.interpolate(images, size=args.display, mode="bilinear", align_corners=False)
    save_grid(up.clamp(-1, 1), out / "test_real.png", nrow=10)
    save_grid(big.images.clamp(-1, 1), out / "test_congealed.png", nrow=10)
    save_grid(up.mean(0, keepdim=True).clamp(-1, 1), out / "test_average_unaligned.png")
    save_grid(big.images.mean(0, keepdim=True).clamp(-1, 1), out / "test_average_congealed.png")
    congealed_masks = res.images[:, 0] > 0  # silhouettes are white (>= 128) on black
    stats = {
        "images": len(images),
        "unaligned": {"pixel_std": round(float(images.std(0).mean()), 4), "iou_with_majority_mask": round(majority_iou(masks), 4)},
        "congealed": {"pixel_std": round(float(res.images.std(0).mean()), 4),
                      "iou_with_majority_mask": round(majority_iou(congealed_masks), 4)},
    }
    atomic_write(out / "alignment.json", lambda f: f.write(json.dumps(stats, indent=1)), binary=False)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
