"""Which digits the K = 10 k-means++ seeds of `gangealing train --preset tiny-clusters` show, for an
MNIST generator (BENCHMARKS.md section 3).

    python scripts/seed_study.py models/gan-mnist/generator.pt [--trials 6] [--local 1 4] [--normalise]

Renders the candidates as training's initialisation does (first ``inject`` W+ rows from the
candidate, the rest from the mean W), reads their digits with the project's digit classifier, and
counts the distinct digits among the 10 seeds that k-means++ picks under the MobileNetV2 distance,
for several seeds of the draw. ``--local L`` tries L D^2-drawn candidates per step and keeps the
one that lowers the k-means potential most (greedy k-means++, as scikit-learn); L = 1 is the
original's plain k-means++; L = 0 is farthest-point traversal (deterministic after the first seed);
L = -1 runs 50 Lloyd iterations from the plain k-means++ seeds and takes the candidate nearest each
final centroid (``gangealing train --kmeans-lloyd 50``). ``--normalise`` measures the distances
between moment-normalised copies (centred, deskewed, scaled).
"""
from __future__ import annotations

import argparse

import torch


def greedy_kmeans_plusplus(features, k, dist, g, local, batch=200):
    """(k,) indices: D^2 sampling with ``local`` > 1 candidates per step, the best by potential kept;
    ``local`` = 0: farthest-point traversal. (L = 1 is ``gangealing.models.target.kmeans_plusplus``.)"""
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


def moment_normalise(imgs, spread=0.35):
    """Copies of (M, 1, S, S) images in [-1, 1] with their ink centred, deskewed and scaled.

    The classic MNIST normalisation by image moments: the ink's centroid goes to the centre, the
    shear that makes its x-y covariance zero is undone, and the ink's spread along y is scaled to
    ``spread`` (in the [-1, 1] frame) - a cheap transformation-invariant view of each candidate.
    Coordinates: x right, y down, both in [-1, 1] at pixel centres (align_corners=False).
    """
    m, _, s, _ = imgs.shape
    w = (imgs[:, 0] + 1) / 2  # (M, S, S) ink weight in [0, 1]
    w = w / w.sum((1, 2), keepdim=True).clamp_min(1e-8)
    t = (torch.arange(s, dtype=imgs.dtype) + 0.5) / s * 2 - 1  # (S,)
    ys, xs = t.view(1, s, 1), t.view(1, 1, s)
    cx, cy = (w * xs).sum((1, 2)), (w * ys).sum((1, 2))  # (M,)
    vy = (w * (ys - cy.view(-1, 1, 1)) ** 2).sum((1, 2))
    cxy = (w * (xs - cx.view(-1, 1, 1)) * (ys - cy.view(-1, 1, 1))).sum((1, 2))
    skew = cxy / vy.clamp_min(1e-8)  # (M,) x-shear per unit y
    scale = vy.sqrt() / spread  # output -> input scale
    # Output point (u, v) samples input (cx + scale * (u + skew * v), cy + scale * v).
    theta = torch.zeros(m, 2, 3, dtype=imgs.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = scale, scale * skew, cx
    theta[:, 1, 1], theta[:, 1, 2] = scale, cy
    grid = torch.nn.functional.affine_grid(theta, list(imgs.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(imgs + 1, grid, align_corners=False, padding_mode="zeros") - 1
    return out


def main() -> None:
    from gangealing.build import build_from_checkpoint
    from gangealing.checkpoint import load_checkpoint
    from gangealing.losses.perceptual import build_perceptual_loss
    from gangealing.metrics.digits import load_digit_classifier, predict_digits
    from gangealing.models.pca import sample_w
    from gangealing.models.target import kmeans_candidate_wplus, kmeans_plusplus, lloyd_medoids

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("generator")
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--local", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--inject", type=int, default=4)
    ap.add_argument("--grid", help="write the first 32 candidates and the views measured (PNG)")
    ap.add_argument("--normalise", action="store_true",
                    help="measure distances between moment-normalised copies (centred, deskewed, scaled)")
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
    views = moment_normalise(imgs) if args.normalise else imgs
    if args.grid:
        from gangealing.vis import save_grid
        save_grid(torch.cat([imgs[:32], views[:32]]), args.grid, nrow=16)
    emb = torch.cat([loss.embed(c) for c in views.split(200)])  # (M, E)
    check = loss(views[:8], views[8:16])
    assert torch.allclose((emb[:8] - emb[8:16]).square().sum(1), check, rtol=1e-3, atol=1e-6), "embedding != distance"

    def dist(a, b):
        return (a - b).square().sum(1)  # (B,): the MobileNetV2 distance, from the embeddings

    for local in args.local:
        distinct, potentials = [], []
        for t in range(args.trials):
            g = torch.Generator().manual_seed(t)
            if local in (1, -1):  # training's own k-means++ (the original's), then (-1) Lloyd to medoids
                idx = kmeans_plusplus(emb, 10, dist, g)
                idx = lloyd_medoids(emb, idx, 50) if local < 0 else idx
            else:  # the study's variants: greedy D^2 sampling (L > 1), farthest-point traversal (L = 0)
                idx = greedy_kmeans_plusplus(emb, 10, dist, g, local)
            digits = sorted(predict_digits(clf, imgs[idx]).tolist())
            distinct.append(len(set(digits)))
            # The k-means objective of the draw (what an unsupervised restart rule could minimise):
            # mean squared distance of every candidate to its nearest seed.
            potential = float(torch.cdist(emb.float(), emb[idx].float()).min(1).values.square().mean())
            potentials.append(potential)
            print(f"local {local} draw {t}: objective {potential:.4f} seed digits {digits}")
        print(f"local {local}: distinct digits among 10 seeds per draw {distinct}")
        best = min(range(len(potentials)), key=potentials.__getitem__)
        print(f"local {local}: the draw of lowest objective ({best}) shows {distinct[best]} digits; "
              f"mean over draws {sum(distinct) / len(distinct):.2f}")


if __name__ == "__main__":
    main()
