"""Route MNIST test digits to the clusters' *data* centroids instead of their GAN targets
(BENCHMARKS.md section 3): k-means with the transformer fixed.

    python scripts/route_centroids_study.py [--model gangealing-mnist-k10] [--train 3000] [--test 2000]

Every digit is congealed by every head; the clusters start from the nearest-GAN-target routing
(the model's distance); then Lloyd iterations move each cluster's centroid to the mean of its
digits' congealed images as that cluster's head congeals them, in the MobileNetV2 embedding and
in pixels. ``--train N``: centroids from N random train digits (seed 0; inductive), routing the
test digits; ``--train 0``: on the test digits themselves (transductive).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from gangealing.data.embedded import digits_as_images, load_embedded
    from gangealing.losses.perceptual import build_perceptual_loss
    from gangealing.metrics.alignment import hungarian_accuracy
    from gangealing.predictor import Congealer
    from gangealing.zoo import resolve_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gangealing-mnist-k10")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    c = Congealer.from_checkpoint(str(resolve_model(args.model)), routing="targets")
    k = c.num_clusters
    embed = build_perceptual_loss("mobilenet").eval().embed

    def congeal(split, idx):
        d = load_embedded("mnist", split)
        imgs = digits_as_images(torch.from_numpy(d.images[idx, ..., 0].copy()))
        out, gan = [], []
        for s in range(0, len(idx), 50):
            x = c.prepare(imgs[s:s + 50])[0]
            res = c.stn(x, output_resolution=c.stn.cfg.flow_size, iters=c.iters, padding_mode=c.padding_mode)
            out.append(res.images.unflatten(0, (x.size(0), k)))  # (B, K, C, S, S)
            gan.append(c.router.distances(c.stn, x, iters=c.iters, padding_mode=c.padding_mode)[:, :k])
        return torch.cat(out), torch.cat(gan), torch.from_numpy(d.labels[idx])

    test = congeal("test", np.arange(args.test))
    train = test if args.train == 0 else congeal(
        "train", np.random.default_rng(0).choice(60000, args.train, replace=False))
    acc = lambda a, labels: hungarian_accuracy(a.numpy(), labels.numpy())  # noqa: E731
    print(f"nearest GAN target ({c.router.loss}): test {acc(test[1].argmin(1), test[2]):.4f}")
    feats = {"mobilenet": lambda imgs: torch.cat([embed(x) for x in imgs.flatten(0, 1).split(500)]).view(*imgs.shape[:2], -1),
             "pixels": lambda imgs: imgs.flatten(2)}
    for space, f in feats.items():
        ftr, fte = f(train[0]), f(test[0])
        a = train[1].argmin(1)
        for it in range(args.iters):
            cent = torch.stack([ftr[a == j, j].mean(0) if (a == j).any() else ftr[:, j].mean(0) for j in range(k)])
            a = (ftr - cent.unsqueeze(0)).square().sum(2).argmin(1)
            if it in (0, 1, 3, 9, args.iters - 1):
                at = (fte - cent.unsqueeze(0)).square().sum(2).argmin(1)
                print(f"{space}, iteration {it + 1}: centroids' digits {acc(a, train[2]):.4f}, test {acc(at, test[2]):.4f}")


if __name__ == "__main__":
    main()
