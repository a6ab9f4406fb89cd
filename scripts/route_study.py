"""Route real MNIST test digits to clusters by the smallest distance to each head's GAN target, against
the clustering model's classifier (BENCHMARKS.md section 3).

    python scripts/route_study.py MODEL.pt N_TEST_DIGITS

Each digit is congealed by every head (K aligned copies) and the head whose output is closest to its
own GAN target wins: training's hard min-assignment applied to real images, at K times the cost of
the classifier. Prints the Hungarian accuracy of the classifier and of this routing under pixel L2
and MobileNetV2 distances; a model without a classifier yet (straight from `gangealing train`) gets
only the routing rows.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def main() -> None:
    from gangealing.build import load_model
    from gangealing.data.embedded import digits_as_images, mnist_test_set
    from gangealing.losses.perceptual import build_perceptual_loss
    from gangealing.metrics.alignment import hungarian_accuracy
    from gangealing.predictor import Congealer
    from gangealing.models.target import gan_template

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("n", type=int, help="first N MNIST test digits")
    ap.add_argument("--batch", type=int, default=250)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    c, m = Congealer.from_checkpoint(args.model), load_model(args.model)
    digits, labels = mnist_test_set()
    images, labels = digits_as_images(digits[: args.n]), labels[: args.n]
    k, size = c.num_clusters, c.stn.cfg.flow_size
    templates = torch.cat([gan_template(m.generator, m.target, size, head=h) for h in range(k)])  # (K, C, S, S)
    losses = {"l2": build_perceptual_loss("l2"), "mobilenet": build_perceptual_loss("mobilenet")}

    t0 = time.time()
    by_classifier, dists = [], {name: [] for name in losses}
    for s in range(0, len(images), args.batch):
        chunk = images[s:s + args.batch]
        if c.classifier is not None:  # a model straight from `train` has none yet: min-distance rows only
            by_classifier.append(c.route(c.prepare(chunk)[0])[0])
        per_head = {name: [] for name in losses}
        for h in range(k):
            out = c.align(chunk, cluster=h).images  # (B, C, R, R)
            if out.size(-1) != size:
                out = F.interpolate(out, size=(size, size), mode="bilinear", antialias=True)
            for name, loss in losses.items():
                per_head[name].append(loss(out, templates[h:h + 1].expand_as(out)))  # (B,)
        for name in losses:
            dists[name].append(torch.stack(per_head[name], 1))  # (B, K)
    print(f"{len(images)} digits, {time.time() - t0:.1f} s")
    if by_classifier:
        print("classifier", round(hungarian_accuracy(torch.cat(by_classifier).numpy(), labels), 3))
    for name in losses:
        pred = torch.cat(dists[name]).argmin(1).numpy()
        print(f"min {name} distance to the head's target", round(hungarian_accuracy(pred, labels), 3))


if __name__ == "__main__":
    main()
