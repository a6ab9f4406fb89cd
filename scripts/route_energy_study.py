"""Route MNIST digits by their GAN targets *and* by how much each head had to bend them
(BENCHMARKS.md section 3): a test-time routing study for the K = 10 model, no retraining.

    python scripts/route_energy_study.py [--model gangealing-mnist-k10] [--train 2000] [--test 2000]

Nearest-target routing compares each head's congealed digit with that head's target; the flow can
bend a 3 into an 8, so the distance alone under-separates digits of one coarse pose. Each digit is
congealed by every head and four per-head quantities are kept: the model's distance of the
congealed image to the head's target (``full``, today's rule), the same distance of the
similarity-only image (``sim``, before the flow), and the flow's Huber total variation (``tv``) and
mean square (``id``, the training penalties). Rules ``full + lam * X`` (X scaled by the ratio of the
medians) are scored by Hungarian accuracy; ``lam`` is chosen on ``--train`` random *train* digits
(seed 0, their labels) and then applied once to the first ``--test`` test digits.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch


def main() -> None:
    from gangealing.data.embedded import digits_as_images, load_embedded
    from gangealing.losses.flow import flow_identity_loss, total_variation_loss
    from gangealing.metrics.alignment import hungarian_accuracy
    from gangealing.predictor import Congealer
    from gangealing.zoo import resolve_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gangealing-mnist-k10")
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=2000)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    c = Congealer.from_checkpoint(str(resolve_model(args.model)), routing="targets")
    k, router = c.num_clusters, c.router
    size = c.stn.cfg.flow_size

    def measure(split, idx):
        d = load_embedded("mnist", split)
        imgs = digits_as_images(torch.from_numpy(d.images[idx, ..., 0].copy()))
        parts = {"full": [], "sim": [], "tv": [], "id": []}
        for s in range(0, len(idx), 50):
            x = c.prepare(imgs[s:s + 50])[0]
            res = c.stn(x, output_resolution=size, iters=c.iters, padding_mode=c.padding_mode)
            n = x.size(0)
            parts["full"].append(router._to_templates(res.images).view(n, k))
            parts["sim"].append(router._to_templates(res.similarity_images).view(n, k))
            parts["tv"].append(total_variation_loss(res.flow, reduce_batch=False).view(n, k))
            parts["id"].append(flow_identity_loss(res.flow, reduce_batch=False).view(n, k))
        return {name: torch.cat(v) for name, v in parts.items()}, d.labels[idx]

    def acc(score, labels) -> float:
        return hungarian_accuracy(score.argmin(1).numpy(), labels)

    train, train_labels = measure("train", np.random.default_rng(0).choice(60000, args.train, replace=False))
    test, test_labels = measure("test", np.arange(args.test))
    print(f"nearest GAN target ({router.loss}): train {acc(train['full'], train_labels):.4f}, "
          f"test {acc(test['full'], test_labels):.4f}")
    print(f"similarity-only image to the target: train {acc(train['sim'], train_labels):.4f}, "
          f"test {acc(test['sim'], test_labels):.4f}")
    lams = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0]
    for extra in ("sim", "tv", "id"):
        scale = float(train["full"].median() / train[extra].median().clamp(min=1e-12))
        scores = [(acc(train["full"] + lam * scale * train[extra], train_labels), lam) for lam in lams]
        best_acc, best_lam = max(scores)
        test_acc = acc(test["full"] + best_lam * scale * test[extra], test_labels)
        curve = ", ".join(f"{lam:g}: {a:.3f}" for a, lam in scores)
        print(f"full + lam * {extra}: train [{curve}]; chosen lam {best_lam:g} (train {best_acc:.4f}) -> "
              f"test {test_acc:.4f}")


if __name__ == "__main__":
    main()
