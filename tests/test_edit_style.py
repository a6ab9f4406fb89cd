"""EditStyle: the rendering options once, and the drivers that take them (propagate, videos)."""
import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.build import build
from gangealing.config import STNConfig
from gangealing.edit import EditStyle, alpha_composite, labels_to_edit, propagate
from gangealing.predictor import Congealer


@pytest.fixture()
def congealer():
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=16))
    with torch.no_grad():
        stn.stns[0].warp_head.linear.bias[2] = 0.1  # a translation, so splatting moves pixels
    return Congealer(stn, device="cpu")


def _edit() -> torch.Tensor:
    e = torch.zeros(4, 16, 16)
    e[:3] = torch.tensor([0.9, -0.8, 0.2]).view(3, 1, 1)
    e[3, 4:10, 3:12] = 1.0
    return e


def test_of_takes_a_style_or_its_fields_not_both():
    assert EditStyle.of(None, blend="laplacian", sigma=2.0) == EditStyle(blend="laplacian", sigma=2.0)
    style = EditStyle(kernel="gaussian")
    assert EditStyle.of(style) is style and EditStyle.of() == EditStyle()
    with pytest.raises(TypeError, match="not both"):
        EditStyle.of(style, blend="alpha")


def test_side_defaults_to_the_larger_of_edit_and_image():
    assert EditStyle().side(torch.zeros(4, 16, 16), (20, 12)) == 20
    assert EditStyle().side([torch.zeros(4, 24, 24)], (20, 12)) == 24
    assert EditStyle(resolution=32).side(torch.zeros(4, 16, 16), (20, 12)) == 32


@pytest.mark.parametrize("style", [EditStyle(), EditStyle(blend="laplacian-light", kernel="gaussian", sigma=1.3,
                                                          opacity=0.7, resolution=24)])
def test_render_is_what_propagate_composites(congealer, style):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = propagate(congealer, images, _edit(), resolution=style.resolution, blend=style.blend, kernel=style.kernel,
                    sigma=style.sigma, opacity=style.opacity)
    assert torch.equal(style.propagate(congealer, images, _edit()).images, out.images)
    assert torch.equal(style.render(images, _edit(), out.grid), out.images)


def test_render_draws_label_maps_as_their_colour_overlay(congealer):
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[3:9, 2:12] = 2
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    style = EditStyle(label_opacity=0.7, fill=0)
    out = style.propagate(congealer, images, labels)
    over = labels_to_edit(out.labels, opacity=0.7)
    assert torch.equal(style.render(images, labels, out.grid), alpha_composite(images, over[:, :3], over[:, 3:]))


def test_process_video_takes_a_style_or_the_older_keywords(tmp_path, congealer):
    from gangealing.apps.video import process_video, read_video

    rng = np.random.default_rng(0)
    (tmp_path / "frames").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "frames" / f"{i}.png")
    kw = dict(edit=_edit(), video_format="gif", progress=False)
    a = process_video(congealer, tmp_path / "frames", tmp_path / "a", style=EditStyle(blend="laplacian", opacity=0.5), **kw)
    b = process_video(congealer, tmp_path / "frames", tmp_path / "b", blend="laplacian", opacity=0.5, **kw)
    c = process_video(congealer, tmp_path / "frames", tmp_path / "c", **kw)
    assert a.num_frames == b.num_frames == 3
    frames = [read_video(s.outputs["propagated"]) for s in (a, b, c)]
    np.testing.assert_array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])
    with pytest.raises(TypeError, match="not both"):
        process_video(congealer, tmp_path / "frames", tmp_path / "d", style=EditStyle(), blend="alpha", **kw)
