"""gangealing demo: the edit and colour code, the report on the committed models, and the from-scratch pipeline."""
import json

import pytest
import torch

from gangealing.zoo import resolve_model
from gangealing.apps.demo import correspondence_colours, make_hat_edit


def test_hat_sits_on_top_of_the_silhouette():
    avg = -torch.ones(3, 32, 32)
    avg[:, 12:30, 10:22] = 1.0  # a block whose top row is 12
    hat = make_hat_edit(avg)
    assert hat.shape == (4, 32, 32)
    alpha = hat[3]
    ys, xs = torch.nonzero(alpha > 0, as_tuple=True)
    assert ys.numel() > 10
    assert int(ys.max()) <= 12 + 2 and int(ys.min()) < 12  # rises above the top, rests on it
    assert abs(float(xs.float().mean()) - 15.5) < 1.0  # centred on the block
    assert hat[:3].min() >= -1 and hat[:3].max() <= 1 and set(alpha.unique().tolist()) <= {0.0, 1.0}


def test_correspondence_colours_are_unique_per_position():
    c = correspondence_colours(16)
    assert c.shape == (3, 16, 16) and c.min() >= -1 and c.max() <= 1
    assert torch.unique(c.flatten(1).T, dim=0).size(0) == 256


def _have_models():
    return resolve_model("gangealing-tiny-cat") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _have_models(), reason="committed models not found")
def test_demo_writes_the_report(tmp_path):
    from gangealing.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "4", "--display", "32", "--no-progress"]) == 0
    html = (out / "index.html").read_text()
    for name in ["inputs.png", "average_unaligned.png", "gangealing-tiny-cat_congealed.png",
                 "gangealing-tiny-cat_average_congealed.png", "gangealing-tiny-cat_edit_propagated.png",
                 "gangealing-tiny-cat_correspondences.png", "summary.png"]:
        assert (out / name).is_file() and name in html
    if resolve_model("gangealing-tiny-cat-k2flips") is not None:
        assert list(out.glob("gangealing-tiny-cat-k2flips_cluster*_average.png"))
    if resolve_model("gangealing-tiny-mnist3") is not None:
        for name in ["gangealing-tiny-mnist3_perturbed.png", "gangealing-tiny-mnist3_congealed.png"]:
            assert (out / name).is_file() and name in html
    if resolve_model("gangealing-mnist-k10") is not None:
        assert len(list(out.glob("gangealing-mnist-k10_cluster*.png"))) >= 2
    assert "Benchmark" in html


@pytest.mark.slow
def test_from_scratch_runs_end_to_end(tmp_path):
    from gangealing.apps.demo import run_from_scratch

    r = run_from_scratch(tmp_path / "fs", minutes=0.05, fd_samples=20, pairs=20, progress=False)
    assert r.gan_steps >= 1 and r.gangealing_steps >= 2
    assert r.fd == r.fd and r.fd >= 0
    assert r.model is not None and r.model.is_file()
    assert 0 <= r.iou_unaligned <= 1 and 0 <= r.iou_congealed <= 1
    assert json.loads(r.report.read_text())["gangealing_steps"] == r.gangealing_steps


def test_markdown_to_html_renders_the_benchmark_subset():
    from gangealing.apps.demo import markdown_to_html

    md = ("# Title <x>\n\nSome `code` and **bold**\ncontinued.\n\n| a | b |\n| --- | --- |\n| 1 | `2` |\n\n"
          "```bash\ngangealing bench --out b\n```\n* one\n  more\n* two\n")
    out = markdown_to_html(md)
    assert "<h3>Title &lt;x&gt;</h3>" in out
    assert "<p>Some <code>code</code> and <b>bold</b> continued.</p>" in out
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td><code>2</code></td></tr></table>" in out
    assert "<pre>gangealing bench --out b</pre>" in out and "---" not in out
    assert "<ul><li>one more</li><li>two</li></ul>" in out
