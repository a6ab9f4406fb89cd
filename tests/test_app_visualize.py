"""`gangealing visualize`: GIF / video of images warping into alignment."""
import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.apps.visualize import animate, ease
from gangealing.build import load_model
from gangealing.cli import main
from gangealing.predictor import Congealer

from helpers import tiny_checkpoint


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (16, 16 + 8 * i, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    (folder / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return folder


def gif_frames(path):
    with Image.open(path) as im:
        return im.n_frames


def test_ease_goes_from_zero_to_one():
    w = ease(5)
    assert w[0] == 0 and w[-1] == 1 and torch.all(w[1:] > w[:-1]) and w[2] == pytest.approx(0.5)


def test_visualize_gif_frame_count_and_skipped_image(tmp_path, photos, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.pt", translate=0.4)
    out = tmp_path / "anim.gif"
    assert main(["visualize", str(photos), "--ckpt", ckpt, "--out", str(out), "--frames", "6", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "zz_corrupt.jpg" in printed and "wrote 6 frame(s) of 3 image(s)" in printed
    assert gif_frames(out) == 6
    assert main(["visualize", str(photos), "--ckpt", ckpt, "--out", str(tmp_path / "b.gif"), "--frames", "6",
                 "--boomerang", "--device", "cpu"]) == 0
    assert gif_frames(tmp_path / "b.gif") == 10


def test_visualize_label_rides_along_into_the_congealed_frame(tmp_path, photos):
    ckpt = tiny_checkpoint(tmp_path / "m.pt", translate=0.25)
    congealer = Congealer(load_model(ckpt, with_generator=False).stn, device="cpu")
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[4:12, 2:8] = 1  # palette colour 1 is (128, 0, 0)
    img = -torch.ones(3, 16, 16)  # black
    anim = animate(congealer, [img], num_frames=4, edit=labels, label_opacity=1.0, padding=0)
    assert anim.frames.shape == (4, 16, 16, 3)
    last = anim.frames[-1].astype(int)
    # In the last frame the label sits where it was drawn on the congealed frame (up to a pixel of resampling).
    assert (last[5:11, 3:7, 0] > 100).all() and (last[:, 10:, 0] < 30).all()
    first = anim.frames[0].astype(int)
    assert not np.array_equal(first, last)  # it moved with the image


def test_visualize_mp4(tmp_path, photos):
    pytest.importorskip("av")
    from gangealing.apps.video import read_video

    ckpt = tiny_checkpoint(tmp_path / "m.pt", translate=0.4)
    edit = np.zeros((16, 16, 4), np.uint8)
    edit[6:10, 6:10] = (0, 255, 0, 255)
    Image.fromarray(edit).save(tmp_path / "edit.png")
    assert main(["visualize", str(photos / "img0.png"), str(photos / "img1.png"), "--ckpt", ckpt, "--edit",
                 str(tmp_path / "edit.png"), "--out", str(tmp_path / "a.mp4"), "--frames", "5", "--nrow", "2",
                 "--output-resolution", "32", "--device", "cpu"]) == 0
    v = read_video(tmp_path / "a.mp4")
    assert v.shape[0] == 5 and v.shape[1:3] == (36, 70)  # 2 tiles of 32 px, 2 px padding between and around
