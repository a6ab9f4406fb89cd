"""PCK-transfer: the fraction of visible key points transferred from image A to image B (and,
optionally, from B to A) that land within ``alpha * threshold`` pixels of the ground truth.

Reproduces the official GANgealing evaluation (``applications/pck.py: pck_transfer``):

* visibility: with ``(x, y, v)`` key points the mask is ``vA * vB``; with ``(x, y)`` all count;
* threshold per pair: ``alpha * max(H, W)`` of the target image, or ``alpha * scale * thresh``
  (SPair-71K's bounding-box threshold) when the batch carries ``scaleB``/``threshB``;
* a point is correct when its Euclidean error is ``<=`` the threshold (inclusive);
* at most ``num_pairs`` pairs are used (the last batch is cut);
* with ``both_ways`` the B -> A transfers count too, with the same mask;
* PCK = correct / (visible * (2 if both ways else 1)), one float32 per alpha.

Flip inference (``match_flows``): each pair is mirrored in one of four ways, picked by the
smallest total flow TV (:func:`match_flows_pick`), and the key points follow
(:func:`apply_match`). ``legacy=True`` keeps the official code's two quirks (see
:func:`apply_match` and :func:`evaluate_pck_transfer`); ``legacy=False`` fixes them.

Points are ``(N, K, 2)`` pixels, ``(x, y)``, pixel centres at integers
(:mod:`gangealing.geometry.coords`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Union

import torch

from ..geometry.points import hflip_points_where, permute_keypoints

__all__ = [
    "pck_thresholds",
    "pck_correct",
    "PCKAccumulator",
    "PCKResult",
    "bootstrap_std",
    "match_flows_pick",
    "MatchedPoints",
    "apply_match",
    "evaluate_pck_transfer",
]

Permutation = Union[Sequence[int], torch.Tensor]


def pck_thresholds(
    alphas: Union[Sequence[float], torch.Tensor],
    image_size: Optional[Sequence[int]] = None,
    *,
    bbox_scale: Optional[torch.Tensor] = None,
    bbox_thresh: Optional[torch.Tensor] = None,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Pixel thresholds ``(N or 1, A)``: ``alpha * max(H, W)`` for ``image_size = (H, W)``, or
    ``alpha * (bbox_scale * bbox_thresh)`` per pair (``(N,)`` each, SPair style).

    float32 throughout, in the official order of operations, so inclusive comparisons of errors
    that sit exactly on a threshold come out the same.
    """
    if bbox_thresh is not None:
        if bbox_scale is None:
            raise ValueError("bbox_thresh needs bbox_scale")
        device = bbox_thresh.device if device is None else device
        base = (bbox_scale * bbox_thresh).to(device=device, dtype=torch.float32).reshape(-1, 1)  # (N, 1)
    elif image_size is not None:
        base = torch.tensor(float(max(image_size)), dtype=torch.float32, device=device).reshape(1, 1)
    else:
        raise ValueError("give image_size or bbox_scale and bbox_thresh")
    alpha = torch.as_tensor(alphas, dtype=torch.float32, device=base.device).reshape(1, -1)  # (1, A)
    return alpha * base  # (N or 1, A)


def pck_correct(
    est: torch.Tensor, gt: torch.Tensor, visible: Optional[torch.Tensor], thresholds: torch.Tensor
) -> torch.Tensor:
    """Per-pair count of visible points within each threshold: ``(N, A)`` float32.

    Args:
        est, gt: ``(N, K, 2)`` estimated and ground-truth pixels.
        visible: ``(N, K)`` bool/float mask (0/1; other values weight the points, as the
            official product does), or None for all visible.
        thresholds: ``(N or 1, A)`` pixels (:func:`pck_thresholds`); ``err <= t`` counts.
    """
    err = (est - gt).norm(dim=-1)  # (N, K)
    correct = (err.unsqueeze(-1) <= thresholds.unsqueeze(1)).to(torch.float32)  # (N, K, A)
    if visible is not None:
        correct = correct * visible.to(torch.float32).unsqueeze(-1)
    return correct.sum(dim=1)  # (N, A)


@dataclass(frozen=True)
class PCKResult:
    """PCK per alpha plus the per-pair counts behind it (for bootstrapping)."""

    alphas: tuple
    pck: torch.Tensor  # (A,) float32
    per_pair_correct: torch.Tensor  # (P, A): correct visible points (both directions summed)
    per_pair_visible: torch.Tensor  # (P,): visible points counted (x2 when both ways)

    @property
    def num_pairs(self) -> int:
        return int(self.per_pair_visible.numel())


@dataclass
class PCKAccumulator:
    """Sums per-pair PCK counts over batches, up to ``num_pairs`` pairs (None: no limit)."""

    alphas: Sequence[float]
    num_pairs: Optional[int] = None
    _correct: List[torch.Tensor] = field(default_factory=list, repr=False)
    _visible: List[torch.Tensor] = field(default_factory=list, repr=False)
    _seen: int = 0

    @property
    def remaining(self) -> Optional[int]:
        """Pairs still wanted (None when unlimited)."""
        return None if self.num_pairs is None else self.num_pairs - self._seen

    @property
    def done(self) -> bool:
        return self.num_pairs is not None and self._seen >= self.num_pairs

    def update(self, correct: torch.Tensor, visible: torch.Tensor) -> None:
        """Add ``correct (N, A)`` counts and ``visible (N,)`` counts; pairs past ``num_pairs`` are dropped."""
        if self.remaining is not None:
            correct, visible = correct[: self.remaining], visible[: self.remaining]
        self._correct.append(correct.detach().to(torch.float32))
        self._visible.append(visible.detach().to(torch.float32))
        self._seen += correct.size(0)

    def compute(self) -> PCKResult:
        if not self._correct:
            raise ValueError("no pairs accumulated")
        correct = torch.cat(self._correct)  # (P, A)
        visible = torch.cat(self._visible)  # (P,)
        pck = correct.sum(dim=0) / visible.sum()  # (A,)
        return PCKResult(tuple(float(a) for a in self.alphas), pck, correct, visible)


def bootstrap_std(
    per_pair_correct: torch.Tensor,
    per_pair_visible: torch.Tensor,
    n: int = 1000,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Bootstrap standard deviation ``(A,)`` of PCK: resample the evaluated pairs with
    replacement ``n`` times, recompute PCK, take the unbiased std over the resamples.

    (The official script instead re-draws random pairs from the dataset and re-runs the network;
    resampling the pairs already evaluated needs no new transfers.)
    """
    p = per_pair_visible.numel()
    if p == 0:
        raise ValueError("no pairs")
    idx = torch.randint(0, p, (n, p), generator=generator).to(per_pair_correct.device)  # (n, P)
    correct = per_pair_correct[idx].sum(dim=1)  # (n, A)
    visible = per_pair_visible[idx].sum(dim=1, keepdim=True)  # (n, 1)
    return (correct / visible).std(dim=0, unbiased=True)  # (A,)


def match_flows_pick(
    tv_a: torch.Tensor, tv_b: torch.Tensor, tv_a_mirror: torch.Tensor, tv_b_mirror: torch.Tensor
) -> torch.Tensor:
    """Which of (A, B), (A', B), (A, B'), (A', B') has the smoothest flows: ``pick (N,)`` int64 in
    {0, 1, 2, 3} = [A mirrored] + 2 [B mirrored]; the first of equal sums wins.

    Inputs are per-image flow TVs ``(N,)`` (``total_variation_loss(flow, reduce_batch=False)``).
    """
    sums = torch.stack([tv_a + tv_b, tv_a_mirror + tv_b, tv_a + tv_b_mirror, tv_a_mirror + tv_b_mirror])  # (4, N)
    return sums.argmin(dim=0)


@dataclass(frozen=True)
class MatchedPoints:
    """Key points after flip matching, with which images were mirrored."""

    points_a: torch.Tensor  # (N, K, C)
    points_b: Optional[torch.Tensor]  # (N, K, C) or None
    flip_a: torch.Tensor  # (N,) bool
    flip_b: torch.Tensor  # (N,) bool


def apply_match(
    points_a: torch.Tensor,
    points_b: Optional[torch.Tensor],
    pick: torch.Tensor,
    width: int,
    permutation: Optional[Permutation] = None,
    *,
    legacy: bool = False,
) -> MatchedPoints:
    """Mirror key points ``(N, K, C>=2)`` as ``pick`` mirrors the images (``x -> width - 1 - x``)
    and relabel mirrored points with ``permutation`` (``out[:, k] = in[:, permutation[k]]``).

    Extra columns (e.g. visibility) are permuted with their points and never mirrored.

    ``legacy=True`` reproduces the official ``match_flows``: A is permuted where A is mirrored,
    and, when ``points_b`` is given, A is permuted *again* wherever B is mirrored while B's
    points are never permuted. ``legacy=False`` permutes each side where it is mirrored.
    """
    pick = pick.reshape(-1)
    flip_a = pick % 2 == 1
    flip_b = pick >= 2
    a = hflip_points_where(points_a, width, flip_a)
    if permutation is not None:
        a = permute_keypoints(a, permutation, flip_a)
    b = None
    if points_b is not None:
        b = hflip_points_where(points_b, width, flip_b)
        if permutation is not None:
            if legacy:  # the official code permutes A's points here instead of B's
                a = permute_keypoints(a, permutation, flip_b)
            else:
                b = permute_keypoints(b, permutation, flip_b)
    return MatchedPoints(a, b, flip_a, flip_b)


def _mirror_images(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.reshape(-1, 1, 1, 1), images.flip(-1), images)


TransferFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
PickFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_pck_transfer(
    batches: Iterable[Mapping[str, torch.Tensor]],
    transfer_fn: TransferFn,
    alphas: Sequence[float],
    *,
    num_pairs: Optional[int] = None,
    both_ways: bool = True,
    pick_fn: Optional[PickFn] = None,
    permutation: Optional[Permutation] = None,
    legacy: bool = False,
) -> PCKResult:
    """PCK-transfer over batches of pairs, as the official ``pck_transfer``.

    Args:
        batches: dicts with ``imgsA``, ``imgsB`` ``(N, C, H, W)``, ``kpsA``, ``kpsB`` ``(N, K, 2|3)``
            and optionally ``threshA``/``threshB``/``scaleA``/``scaleB`` ``(N,)`` (SPair style).
        transfer_fn: ``(src images, dst images, src points (N, K, 2)) -> dst points (N, K, 2)``.
        num_pairs: stop after this many pairs (None: all batches).
        pick_fn: flip inference, ``(imgsA, imgsB) -> pick (N,)`` (see :func:`match_flows_pick`);
            None disables it.
        legacy: keep the official quirks: the visibility mask is taken before matching and not
            permuted, and :func:`apply_match`'s legacy permutation. With ``legacy=False`` the
            visibility follows the permuted points.
    """
    acc = PCKAccumulator(alphas, num_pairs)
    for batch in batches:
        if acc.done:
            break
        batch = dict(batch)
        if acc.remaining is not None:
            batch = {k: v[: acc.remaining] for k, v in batch.items()}
        imgs_a, imgs_b, kps_a, kps_b = batch["imgsA"], batch["imgsB"], batch["kpsA"], batch["kpsB"]
        has_vis = kps_a.size(-1) == 3
        if not has_vis:  # all visible
            kps_a = torch.cat([kps_a, torch.ones_like(kps_a[..., :1])], -1)
            kps_b = torch.cat([kps_b, torch.ones_like(kps_b[..., :1])], -1)
        visible = kps_a[..., 2] * kps_b[..., 2]  # (N, K)
        if pick_fn is not None:
            pick = pick_fn(imgs_a, imgs_b)
            matched = apply_match(kps_a, kps_b, pick, imgs_a.size(-1), permutation, legacy=legacy)
            imgs_a = _mirror_images(imgs_a, matched.flip_a)
            imgs_b = _mirror_images(imgs_b, matched.flip_b)
            kps_a, kps_b = matched.points_a, matched.points_b
            if not legacy:
                visible = kps_a[..., 2] * kps_b[..., 2]
        gt_a, gt_b = kps_a[..., :2], kps_b[..., :2]

        est_b = transfer_fn(imgs_a, imgs_b, gt_a)  # (N, K, 2)
        thr_b = pck_thresholds(
            alphas, imgs_b.shape[-2:], bbox_scale=batch.get("scaleB"), bbox_thresh=batch.get("threshB"),
            device=est_b.device,
        )
        correct = pck_correct(est_b, gt_b, visible, thr_b)  # (N, A)
        n_visible = visible.to(torch.float32).sum(dim=1)  # (N,)
        if both_ways:
            est_a = transfer_fn(imgs_b, imgs_a, gt_b)
            thr_a = pck_thresholds(
                alphas, imgs_a.shape[-2:], bbox_scale=batch.get("scaleA"), bbox_thresh=batch.get("threshA"),
                device=est_a.device,
            )
            correct = correct + pck_correct(est_a, gt_a, visible, thr_a)
            n_visible = 2 * n_visible
        acc.update(correct, n_visible)
    return acc.compute()
