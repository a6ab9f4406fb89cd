"""`gangealing align` end to end on a tiny identity model: outputs, unreadable files, untouched inputs."""
import csv
import hashlib
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from gangealing.cli import main
import helpers


def tiny_checkpoint(path, heads=1):
    return helpers.tiny_checkpoint(path, heads=heads, max_channels=8)


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    arrays = {}
    for name, (h, w) in {"a.png": (16, 16), "b.jpg": (16, 16), "sub/c.png": (8, 24), "d.png": (32, 32)}.items():
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / name, quality=95)
        arrays[name] = np.asarray(Image.open(d / name).convert("RGB"))
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # truncated PNG
    (d / "notes.txt").write_text("not an image")
    return d, arrays


def test_align_folder(tmp_path, dataset, capsys):
    d, arrays = dataset
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    before = snapshot(d)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the skip is reported once, by the command's line: no warning
        rc = main(["align", str(d), "--ckpt", str(ckpt), "--out", str(out), "--output-resolution", "16",
                   "--device", "cpu", "--batch-size", "3"])
    assert rc == 0
    assert snapshot(d) == before  # inputs untouched, byte for byte, nothing added
    captured = capsys.readouterr()
    printed = captured.out
    assert "skipped" in printed and "corrupt.png" in printed and "notes.txt" in printed
    assert (printed + captured.err).count("corrupt.png") == 1
    assert "aligned 4 image(s)" in printed

    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["input"].replace(str(d) + "/", "") for r in rows] == ["a.png", "b.jpg", "corrupt.png", "d.png", "sub/c.png"]
    bad = rows[2]
    assert bad["error"] and not bad["image"]
    assert (out / "skipped.txt").read_text().startswith(str(d / "corrupt.png"))
    meta = json.loads((out / "results.json").read_text())
    assert meta["grid_units"] == "normalized" and len(meta["images"]) == 5

    congealed = []
    for r in rows:
        if r["error"]:
            continue
        img = np.asarray(Image.open(out / r["image"]))
        grid = np.load(out / r["grid"])
        assert img.shape == (16, 16, 3) and grid.shape == (16, 16, 2) and grid.dtype == np.float32
        assert r["flipped"] == "False" and r["cluster"] == ""
        name = r["input"].replace(str(d) + "/", "")
        if name in ("a.png", "b.jpg"):  # identity model on input-size images: the image itself
            np.testing.assert_array_equal(img[1:-1, 1:-1], arrays[name][1:-1, 1:-1])
            ii, jj = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
            want = np.stack([(2 * jj + 1) / 16 - 1, (2 * ii + 1) / 16 - 1], -1)
            np.testing.assert_allclose(grid[1:-1, 1:-1], want[1:-1, 1:-1], atol=1e-5)
        congealed.append(img.astype(np.float64))
    avg = np.asarray(Image.open(out / "average.png")).astype(np.float64)
    assert np.abs(avg - np.mean(congealed, axis=0)).max() <= 1.0


def test_align_inputs_as_glob_and_files_pixel_grids_and_average_count(tmp_path, dataset):
    d, arrays = dataset
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "out"
    rc = main(["align", str(d / "*.png"), str(d / "b.jpg"), "--ckpt", str(ckpt), "--out", str(out),
               "--device", "cpu", "--grids", "pixels", "--average-count", "1", "--flip"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["input"].split("/")[-1] for r in rows] == ["a.png", "corrupt.png", "d.png", "b.jpg"]
    grid = np.load(out / rows[0]["grid"])  # identity, pixels of a 16 x 16 input
    np.testing.assert_allclose(grid[5, 7], [7.0, 5.0], atol=1e-4)
    grid_d = np.load(out / rows[2]["grid"])  # d.png is 32 x 32: output pixel (5, 7) of 16 comes from (14.5, 10.5)
    np.testing.assert_allclose(grid_d[5, 7], [14.5, 10.5], atol=1e-4)
    avg = np.asarray(Image.open(out / "average.png")).astype(int)
    first = np.asarray(Image.open(out / rows[0]["image"])).astype(int)
    np.testing.assert_array_equal(avg, first)  # average of the first input only


def test_align_refuses_output_inside_input_folder(tmp_path, dataset, capsys):
    d, _ = dataset
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    before = snapshot(d)
    assert main(["align", str(d), "--ckpt", str(ckpt), "--out", str(d / "aligned"), "--device", "cpu"]) == 1
    assert "inside the input folder" in capsys.readouterr().err
    assert snapshot(d) == before


def test_align_clustered_checkpoint_without_classifier(tmp_path, dataset, capsys):
    d, _ = dataset
    ckpt = tiny_checkpoint(tmp_path / "m.pt", heads=2)
    assert main(["align", str(d), "--ckpt", str(ckpt), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "clustering model (2 clusters) has no cluster classifier" in err
    assert not (tmp_path / "out" / "congealed").exists() or not any((tmp_path / "out" / "congealed").iterdir())
    # An explicit cluster works without the classifier.
    assert main(["align", str(d), "--ckpt", str(ckpt), "--out", str(tmp_path / "out2"), "--device", "cpu",
                 "--cluster", "1"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out2" / "results.csv")))
    assert {r["cluster"] for r in rows if not r["error"]} == {"1"}
    assert (tmp_path / "out2" / "average_cluster1.png").is_file()


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["align", "--help"])
    text = capsys.readouterr().out
    for flag in ("--ckpt", "--out", "--output-resolution", "--iters", "--padding-mode", "--flip", "--batch-size",
                 "--device", "--grids", "--average-count"):
        assert flag in text


def test_used_out_is_refused_unless_overwrite_which_leaves_no_stale_file(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    for run, names in enumerate((["a.png", "b.png", "c.png"], ["x.png"])):
        d = tmp_path / f"in{run}"
        d.mkdir()
        for n in names:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / n)
    out = tmp_path / "out"
    common = ["--ckpt", str(ckpt), "--out", str(out), "--device", "cpu"]
    assert main(["align", str(tmp_path / "in0"), *common]) == 0
    (out / "notes.md").write_text("mine")
    capsys.readouterr()
    assert main(["align", str(tmp_path / "in1"), *common]) == 1
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err
    assert len(list((out / "congealed").iterdir())) == 3  # refused before anything was touched
    assert main(["align", str(tmp_path / "in1"), *common, "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "congealed").iterdir()) == ["000000_x.png"]
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["000000_x.npy"]
    assert (out / "notes.md").read_text() == "mine"  # not an align output: kept
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 1


def test_huge_photo_is_decoded_smaller_but_described_at_full_size(tmp_path, monkeypatch):
    import gangealing.data.images as images

    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2400, 3000, 3), dtype=np.uint8)).save(d / "big.jpg")
    decoded, real_read = [], images.read_image

    def spy(*args, **kwargs):
        a = real_read(*args, **kwargs)
        decoded.append(a.shape)
        return a

    monkeypatch.setattr(images, "read_image", spy)
    out = tmp_path / "out"
    assert main(["align", str(d), "--ckpt", str(ckpt), "--out", str(out), "--device", "cpu", "--grids", "pixels"]) == 0
    assert max(decoded[0][:2]) < 2048  # JPEG draft: never decoded at 3000 x 2400 (flow / input size 16 -> 1024)
    row = next(csv.DictReader(open(out / "results.csv")))
    assert (int(row["height"]), int(row["width"])) == (2400, 3000)
    grid = np.load(out / row["grid"])  # identity model: output pixel (0, 0) of 16 is (3000 / 16 - 1) / 2 = 93.25 px
    np.testing.assert_allclose(grid[0, 0, 0], 93.25, atol=1.0)  # from the left of the file (46 at half size)
    assert grid[0, 0, 1] < 0 and grid[-1, -1, 1] > 2399  # the 300 px border padding above and below


def test_padding_mode_flag_and_its_old_spelling():
    from gangealing.cli import build_parser

    for cmd in (["align", "imgs", "--ckpt", "m.pt", "--out", "o"], ["export", "m.pt", "m.onnx"]):
        for flag in ("--padding-mode", "--padding"):
            assert build_parser().parse_args(cmd + [flag, "zeros"]).padding_mode == "zeros"
