"""Which digits the K = 10 k-means++ seeds of `gangealing train --preset tiny-clusters` show, for an
MNIST generator (BENCHMARKS.md section 3).

    python scripts/seed_study.py models/gan-mnist/generator.pt [--candidates 2000] [--trials 6] [--local 1 4]

Renders the candidates as training's initialisation does (first ``inject`` W+ rows from the
candidate, the rest from the mean W), reads their digits with the project's digit classifier, and
counts the distinct digits among the 10 seeds that k-means++ picks under the MobileNetV2 distance,
for several seeds of the draw. ``--local L`` tries L D^2-drawn candidates per step and keeps the
one that lowers the k-means potential most (greedy k-means++, as scikit-learn); L = 1 is the
original's plain k-means++; L = 0 is farthest-point traversal (deterministic after the first seed).
"""
from __future__ import annotations

import argparse

import torch


def greedy_kmeans_plusplus(features, k, dist, g, local, batch=200):
    """(k,) indices: D^2 sampling with ``local`` candidates per step, the best by potential kept."""
    def to_all(i):
        a = features[i][None]
        return torch.cat([dist(a.expand_as(c), c).double() for c in features.split(batch)])  # (M,)

    idx = [int(torch.randint(0, features.shape[0], (1,), generator=g))]
    closest = to_all(idx[0])
    for _ in range(k - 1):
        if local == 0:  # farthest-point traversal: the candidate farthest from every seed so far
            idx.append(int(closest.argmax()))
            closest = torch.minimum(closest, to_all(idx[-1]))
            continue
        w = closest ** 2
        best = None
        for cand in torch.multinomial(w / w.sum(), local, generator=g).tolist():
            new = torch.minimum(closest, to_all(cand))
            if best is None or float((new ** 2).sum()) < best[0]:
                best = (float((new ** 2).sum()), cand, new)
        idx.append(best[1])
        closest = best[2]
    return torch.tensor(idx)


def perceptual_embedding(loss, imgs, batch=200):
    """(M, E) vectors whose squared Euclidean distances are ``loss``'s distances between the images.

    The LPIPS-style distance without heads is scale * sum_k mean_hw |f_k(a) - f_k(b)|^2 over unit
    channel vectors, so each image's features, scaled by sqrt(scale / (h_k w_k)), embed it: one
    backbone pass per image instead of one per pair.
    """
    out = []
    for x in imgs.split(batch):
        x = ((x - loss.in_shift) / loss.in_scale).contiguous(memory_format=loss.memory_format)
        parts = []
        for f in loss.backbone(x):  # (B, C_k, h_k, w_k)
            f = f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + 1e-10)
            parts.append(f.flatten(1) * (loss.distance_scale / (f.shape[2] * f.shape[3])) ** 0.5)
        out.append(torch.cat(parts, 1))
    return torch.cat(out)


def main() -> None:
    from gangealing.build import build_from_checkpoint
    from gangealing.checkpoint import load_checkpoint
    from gangealing.losses.perceptual import build_perceptual_loss
    from gangealing.metrics.digits import load_digit_classifier, predict_digits
    from gangealing.models.pca import sample_w
    from gangealing.models.target import kmeans_candidate_wplus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generator")
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--local", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--inject", type=int, default=4)
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    G = build_from_checkpoint(load_checkpoint(args.generator), "generator").eval()
    rng = torch.Generator().manual_seed(0)
    mean_w = sample_w(G.mapping, 100_000, G.style_dim, batch=10_000, generator=rng).mean(0, keepdim=True)  # (1, D)
    lat = sample_w(G.mapping, args.candidates, G.style_dim, batch=10_000, generator=rng)  # (M, D)
    imgs = torch.cat([G.synthesis(kmeans_candidate_wplus(c, args.inject, G.n_latent, mean_w), noise="const")
                      for c in lat.split(200)])  # (M, 1, S, S)
    clf = load_digit_classifier()
    print("candidates per digit", torch.bincount(predict_digits(clf, imgs), minlength=10).tolist())
    loss = build_perceptual_loss("mobilenet")
    emb = perceptual_embedding(loss, imgs)  # (M, E)
    check = loss(imgs[:8], imgs[8:16])
    assert torch.allclose((emb[:8] - emb[8:16]).square().sum(1), check, rtol=1e-3, atol=1e-6), "embedding != distance"

    def dist(a, b):
        return (a - b).square().sum(1)  # (B,): the MobileNetV2 distance, from the embeddings

    for local in args.local:
        distinct = []
        for t in range(args.trials):
            idx = greedy_kmeans_plusplus(emb, 10, dist, torch.Generator().manual_seed(t), local)
            digits = sorted(predict_digits(clf, imgs[idx]).tolist())
            distinct.append(len(set(digits)))
            print(f"local {local} draw {t}: seed digits {digits}")
        print(f"local {local}: distinct digits among 10 seeds per draw {distinct}")


if __name__ == "__main__":
    main()
