"""`gangealing propagate` end to end on a tiny identity-initialised model."""
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from gangealing.cli import main
from helpers import tiny_checkpoint


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture()
def photos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    imgs = {}
    for i in range(3):
        a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
        imgs[f"img{i}"] = a
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (folder / "notes.txt").write_text("not an image")
    return folder, imgs


def test_propagate_edit_changes_only_pixels_under_alpha(tmp_path, photos, capsys):
    folder, imgs = photos
    before = _digest(folder)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    edit = np.zeros((16, 16, 4), np.uint8)
    edit[..., :3] = (250, 20, 130)
    edit[4:10, 3:12, 3] = 255
    edit[12, 12, 3] = 128
    Image.fromarray(edit).save(tmp_path / "edit.png")
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "average.png")
    out = tmp_path / "out"
    rc = main(["propagate", str(folder), "--ckpt", ckpt, "--edit", str(tmp_path / "edit.png"), "--out", str(out),
               "--device", "cpu", "--average", str(tmp_path / "average.png")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "broken.png" in printed and "propagated to 3 image(s)" in printed
    full, none = edit[..., 3] == 255, edit[..., 3] == 0
    files = sorted((out / "propagated").iterdir())
    assert [f.name for f in files] == ["000001_img0.png", "000002_img1.png", "000003_img2.png"]
    for f in files:
        res = np.asarray(Image.open(f))
        src = imgs[f.stem.split("_", 1)[1]]
        assert np.array_equal(res[none], src[none])
        assert (res[full] == (250, 20, 130)).all()
        half = res[12, 12].astype(int)
        assert np.abs(half - (src[12, 12].astype(int) * 127 + np.array([250, 20, 130]) * 128) / 255).max() <= 1
    avg = np.asarray(Image.open(out / "average_edited.png"))
    assert (avg[full] == (250, 20, 130)).all() and (avg[none] == 90).all()
    results = json.loads((out / "results.json").read_text())
    assert len(results["records"]) == 4 and results["skipped"][0]["path"].endswith("broken.png")
    assert (out / "skipped.txt").exists()
    assert _digest(folder) == before  # inputs untouched


def test_propagate_label_map_writes_raw_and_colour_labels(tmp_path, photos):
    folder, _ = photos
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    labels = np.zeros((16, 16), np.uint8)
    labels[2:7, 2:9] = 4
    labels[9:15, 5:13] = 17
    Image.fromarray(labels).save(tmp_path / "labels.png")
    out = tmp_path / "out"
    assert main(["propagate", str(folder / "img1.png"), str(folder / "img2.png"), "--ckpt", ckpt,
                 "--labels", str(tmp_path / "labels.png"), "--out", str(out), "--device", "cpu",
                 "--kernel", "gaussian", "--sigma", "0.5"]) == 0
    raw = sorted((out / "labels").iterdir())
    assert len(raw) == 2
    for f in raw:
        assert np.array_equal(np.asarray(Image.open(f)), labels)
    colour = np.asarray(Image.open(sorted((out / "labels_color").iterdir())[0]))
    assert colour.shape == (16, 16, 3) and (colour[labels == 0] == 0).all()
    assert len({tuple(c) for c in colour.reshape(-1, 3)}) == 3


def test_propagate_needs_an_edit_and_refuses_output_inside_inputs(tmp_path, photos, capsys):
    folder, _ = photos
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    assert main(["propagate", str(folder), "--ckpt", ckpt, "--out", str(tmp_path / "o")]) == 2
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(tmp_path / "edit.png")
    assert main(["propagate", str(folder), "--ckpt", ckpt, "--edit", str(tmp_path / "edit.png"),
                 "--out", str(folder / "out"), "--device", "cpu"]) == 1
    assert "inside the input folder" in capsys.readouterr().err
