"""The benchmark's "Generators" section: how well each committed generator covers its data.

For every committed generator: Fréchet distance, precision and recall (k = 3) against its
training images, on the offline MobileNetV2 features (``gangealing eval-gan``), and for MNIST
generators the digit histogram of 10,000 samples (smallest and largest share). Beside them, the
ceiling: the dataset's own training split measured against its test split the same way.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..zoo import GENERATORS, GeneratorEntry

__all__ = ["GeneratorEntry", "GENERATORS", "generator_rows", "real_vs_real_row", "generators_markdown"]


# The registry lives in gangealing.zoo (one home for models and generators); re-exported here.


def _row(name: str, data: str, ev: Any, note: str = "") -> Dict[str, Any]:
    row = {"generator": name, "data": data, "note": note, "fd": ev.fd, "precision": ev.precision,
           "recall": ev.recall, "n_real": ev.n_real, "n_fake": ev.n_fake}
    if getattr(ev, "digits", None) is not None:
        row.update(ev.digits.to_dict())
    return row


def generator_rows(paths: Dict[str, Union[str, Path]], n: int = 2000, seed: int = 0, device: str = "cpu",
                   tick: Optional[Callable[[], Any]] = None) -> List[Dict[str, Any]]:
    """One row per generator ``{name: file}`` of :data:`GENERATORS` (``eval-gan`` with ``n`` samples)."""
    from ..train.gan import evaluate_gan

    rows = []
    for name, path in paths.items():
        entry = GENERATORS[name]
        rows.append(_row(name, entry.data, evaluate_gan(path, data=entry.data, n_fake=n, seed=seed, device=device),
                         entry.note))
        if tick:
            tick()
    return rows


def real_vs_real_row(data: str, n: int = 2000, seed: int = 0, size: int = 32, k: int = 3,
                     device: str = "cpu") -> Dict[str, Any]:
    """The ceiling: ``n`` training images (at most the split) against ``n`` test images, same features and measures."""
    from ..data import prepare_dataset
    from ..metrics.coverage import precision_recall
    from ..metrics.fid import MobileNetFeatures, extract_features, feature_stats, frechet_distance, real_batches

    extractor = MobileNetFeatures().to(device)
    feats = []
    for split in ("train", "test"):
        ds = prepare_dataset(data, size, "center", split=split)
        m = min(n, len(ds))
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:m].sort().values.numpy()
        feats.append(extract_features(extractor, real_batches(ds.images[idx], m), device))
        if split == "test" and data.split(":")[0] == "mnist":
            from ..metrics.digits import histogram

            digits = histogram(torch.from_numpy(np.asarray(ds.labels[idx])))
    pr = precision_recall(feats[0], feats[1], k)
    row = {"generator": "real train vs real test", "data": data, "note": "ceiling",
           "fd": frechet_distance(feature_stats(feats[0]), feature_stats(feats[1])),
           "precision": pr.precision, "recall": pr.recall, "n_real": len(feats[0]), "n_fake": len(feats[1])}
    if data.split(":")[0] == "mnist":
        row.update(digits.to_dict())  # the test split's true labels
    return row


def generators_markdown(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The section's table (Markdown lines)."""
    if not rows:
        return []
    out = ["## Generators: coverage of their data", "",
           "Fréchet distance (lower is better; MobileNetV2 features, not an Inception FID), precision and recall "
           "(k = 3, Kynkäänniemi et al. 2019) of each generator's samples against its training images; for MNIST, "
           "the smallest and largest digit share of 10,000 samples read by the project's digit classifier "
           "(99.48% test accuracy). The ceiling rows measure the training split against the test split.", "",
           "| data | generator | trained | n real / n generated | FD | precision | recall | digit shares (min-max) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        shares = f"{r['digit_min_share']:.3f}-{r['digit_max_share']:.3f}" if "digit_min_share" in r else ""
        out.append(f"| {r['data']} | {r['generator']} | {r['note']} | {r['n_real']} / {r['n_fake']} | {r['fd']:.1f} | "
                   f"{r['precision']:.3f} | {r['recall']:.3f} | {shares} |")
    return out + [""]
