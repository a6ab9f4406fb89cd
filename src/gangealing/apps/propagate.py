"""Carry an edit or label map to every image of a folder: ``gangealing propagate`` (see docs/propagate.md).

Output folder (``NNNNNN_<stem>`` names in input order, each at its input's size)::

    DIR/propagated/000000_<stem>.png   the edit composited onto each image (RGBA edits)
    DIR/labels/000000_<stem>.png       raw class ids (label maps); labels_color/ colour-coded ones
    DIR/average_edited.png             the edit drawn on the average congealed image (when given)
    DIR/results.json, skipped.txt      one record per input; unreadable inputs

The maths is :mod:`gangealing.edit`; the edit files are read by :mod:`gangealing.data.edits`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import torch

from ..data.edits import save_label_map
from ..data.images import read_image, save_image, to_tensor
from ..distributed import barrier, is_main
from ..edit import (EditStyle, alpha_composite, colorize_labels, is_label_map, labels_to_edit, resize_edit,
                    resize_labels)
from .align import folder_inputs, output_name, run_sharded, skipped_inputs, stack, write_skipped


@dataclass(frozen=True)
class PropagateSummary:
    """What :func:`propagate_files` wrote (on every rank: the merged records of all ranks)."""

    out_dir: Path
    records: List[dict]  # one per input in input order; unreadable inputs have "error"
    num_written: int
    skipped: List[dict]  # {"path", "reason"}


@torch.no_grad()
def propagate_files(congealer: Any, inputs: Sequence, out_dir: Union[str, os.PathLike], edit: Any, *,
                    style: Optional[EditStyle] = None, batch_size: int = 16,
                    average: Optional[Union[str, os.PathLike]] = None, image_format: str = "png", dist: Any = None,
                    **options: Any) -> PropagateSummary:
    """Carry ``edit`` (RGBA edit or label map, see :func:`gangealing.edit.propagate`) to every image ``inputs`` names.

    Writes the module docstring's folder under ``out_dir``; ``average``: the average congealed
    image, to draw the edit on. Unreadable inputs are reported and skipped. Under ``torchrun`` the
    images are split across ranks. ``style`` (or its fields as keywords, ``options``): how the
    edit is drawn.
    """
    style = EditStyle.of(style, **options)
    label = is_label_map(edit)
    out_dir, paths, protected = folder_inputs(out_dir, inputs)
    for kind in ("labels", "labels_color") if label else ("propagated",):
        (out_dir / kind).mkdir(parents=True, exist_ok=True)

    def propagate_group(group) -> List[dict]:
        out = style.propagate(congealer, stack(group), edit)
        records = []
        for j, (idx, path, _) in enumerate(group):
            name = output_name(idx, path)
            rec = {"index": idx, "input": str(path),
                   "flipped": None if out.flipped is None else bool(out.flipped[j]),
                   "cluster": None if out.cluster is None else int(out.cluster[j])}
            if label:
                lab = out.labels[j].cpu()
                raw = save_label_map(lab, out_dir / "labels" / f"{name}.png", protected=protected)
                col = save_image(colorize_labels(lab), out_dir / "labels_color" / f"{name}.png", protected=protected)
                rec.update(labels=str(raw.relative_to(out_dir)), labels_color=str(col.relative_to(out_dir)))
            else:
                img = save_image(out.images[j].cpu(), out_dir / "propagated" / f"{name}.{image_format}",
                                 protected=protected)
                rec["image"] = str(img.relative_to(out_dir))
            records.append(rec)
        return records

    merged = run_sharded(list(enumerate(paths)), propagate_group, dist, batch_size=batch_size, mode="RGB")
    skipped = skipped_inputs(merged)
    if is_main(dist):
        if average is not None:
            write_average_edited(edit, average, out_dir, protected)
        (out_dir / "results.json").write_text(json.dumps({"records": merged, "skipped": skipped}, indent=1))
        write_skipped(out_dir, skipped)
    barrier(dist)
    return PropagateSummary(out_dir=out_dir, records=merged, num_written=sum("error" not in r for r in merged),
                            skipped=skipped)


def write_average_edited(edit: Any, average: Union[str, os.PathLike], out_dir: Path, protected: Sequence[str]) -> Path:
    """``out_dir/average_edited.png``: the edit (or the colour-coded label map, half opaque) drawn on the
    average congealed image ``average``."""
    avg = to_tensor(read_image(average, "RGB")).unsqueeze(0)  # (1, 3, H, W)
    first = edit[0] if isinstance(edit, (list, tuple)) else edit
    size = tuple(avg.shape[-2:])
    if is_label_map(first):
        e = labels_to_edit(resize_labels(first.reshape(-1, *first.shape[-2:]).long(), size), opacity=0.5)
    else:
        e = resize_edit(first.reshape(-1, *first.shape[-3:]).float(), size)
    out = alpha_composite(avg, e[:, :3], e[:, 3:4])
    return save_image(out[0], out_dir / "average_edited.png", protected=[*protected, str(average)])
