"""Failure paths of the CLI: one `error:` line and a non-zero status, never a traceback (issue 12)."""
import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.cli import main
from helpers import tiny_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.pt", max_channels=8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / name)
    return d


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# -- flags checked where they are parsed (usage error, status 2) ----------------------------------


@pytest.mark.parametrize("flags, words", [
    (["--output-resolution", "0"], "--output-resolution: 0 is out of range"),
    (["--output-resolution", "-4"], "--output-resolution: -4 is out of range"),
    (["--output-resolution", "100000"], "must be >= 1 and <= 4096"),
    (["--batch-size", "0"], "--batch-size: 0 is out of range"),
    (["--average-count", "-2"], "--average-count: -2 is out of range"),
    (["--cluster", "-1"], "--cluster"),
    (["--iters", "0"], "--iters"),
    (["--input-size", "0"], "--input-size"),
    (["--device", "bogus"], "unknown device 'bogus'"),
])
def test_align_flags_are_range_checked(ckpt, photos, tmp_path, capsys, flags, words):
    with pytest.raises(SystemExit) as e:
        main(["align", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), *flags])
    assert e.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_a_usage_error(ckpt, photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["align", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--device", "cuda"])
    assert e.value.code == 2 and "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["serve", "--port", "70000"], "--port: 70000 is out of range"),
    (["serve", "--port", "-1"], "--port: -1 is out of range"),
    (["serve", "--canvas", "0"], "--canvas"),
    (["serve", "--max-side", "0"], "--max-side"),
    (["curate", "x", "--ckpt", "m.pt", "--out", "o", "--fraction", "2"], "--fraction: 2 is out of range"),
    (["curate", "x", "--ckpt", "m.pt", "--out", "o", "--fraction", "nan"], "not a finite number"),
    (["transfer", "a", "b", "--points", "p", "--ckpt", "m", "--out", "o", "--permutation", "1,x"], "--permutation"),
])
def test_other_flags_are_range_checked(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert words in capsys.readouterr().err


# -- errors at run time (one line, status 1; --debug keeps the traceback) -------------------------


def test_cluster_the_model_does_not_have(ckpt, photos, tmp_path, capsys):
    rc = main(["align", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--cluster", "7"])
    assert rc == 1
    assert "cluster 7 does not exist: this model has 1 cluster (0..0)" in error_line(capsys)


def test_debug_shows_the_traceback(ckpt, photos, tmp_path):
    with pytest.raises(ValueError, match="cluster 7 does not exist"):
        main(["--debug", "align", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--cluster", "7"])
    with pytest.raises(ValueError, match="cluster 7 does not exist"):
        main(["align", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--cluster", "7", "--debug"])


@pytest.mark.parametrize("where", ["file", "dev_null"])
def test_out_that_cannot_be_a_folder(ckpt, photos, tmp_path, capsys, where):
    out = tmp_path / "taken.txt" if where == "file" else "/dev/null/aligned"
    if where == "file":
        out.write_text("keep me")
    assert main(["align", str(photos), "--ckpt", str(ckpt), "--out", str(out)]) == 1
    assert "choose a folder for the outputs" in error_line(capsys)
    if where == "file":
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("command", ["flow-scores", "visualize"])
def test_output_file_under_dev_null(ckpt, photos, capsys, command):
    assert main([command, str(photos), "--ckpt", str(ckpt), "--out", "/dev/null/x.csv"]) == 1
    assert "/dev/null" in error_line(capsys)


@pytest.mark.parametrize("argv", [["prepare", "images", "PHOTOS", "/dev/null/prepared", "--size", "8"],
                                  ["convert", "CKPT", "/dev/null/x.pt"], ["demo", "--out", "/dev/null/report"]])
def test_outputs_under_dev_null_are_refused_in_one_line(ckpt, photos, capsys, argv):
    argv = [str(photos) if a == "PHOTOS" else str(ckpt) if a == "CKPT" else a for a in argv]
    assert main(argv) == 1
    assert "/dev/null, which is not a folder" in error_line(capsys)


@pytest.mark.parametrize("content, words", [
    (b"", "is empty (0 bytes)"),
    ("truncated", "is truncated or corrupt"),
    ("png", "looks like a PNG image"),
])
def test_files_that_are_not_checkpoints(photos, tmp_path, capsys, content, words):
    path = tmp_path / "m.pt"
    if content == "truncated":
        data = Path(tiny_checkpoint(tmp_path / "full.pt", max_channels=8)).read_bytes()
        content = data[: len(data) // 2]
    elif content == "png":
        content = (photos / "a.png").read_bytes()
    path.write_bytes(content)
    assert main(["align", str(photos), "--ckpt", str(path), "--out", str(tmp_path / "o")]) == 1
    err = error_line(capsys)
    assert words in err and "trust-pickle" not in err


def test_disk_full_says_where(ckpt, photos, tmp_path, capsys, monkeypatch):
    import gangealing.data.images as images

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "save_image", full)
    out = tmp_path / "o"
    assert main(["align", str(photos), "--ckpt", str(ckpt), "--out", str(out)]) == 1
    assert f"no space left on {out}" in error_line(capsys)


def test_atomic_write_names_the_file_on_a_full_disk(tmp_path):
    from gangealing.fileio import atomic_write

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    (tmp_path / "x.bin").write_bytes(b"old")
    with pytest.raises(OSError) as e:
        atomic_write(tmp_path / "x.bin", full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "x.bin")
    assert (tmp_path / "x.bin").read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_video_of_a_file_that_is_not_a_video(ckpt, photos, tmp_path, capsys):
    pytest.importorskip("av")
    fake = tmp_path / "clip.mp4"
    fake.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    assert main(["video", str(fake), "--ckpt", str(ckpt), "--congealed", "--out", str(tmp_path / "v1")]) == 1
    assert "not a readable video" in error_line(capsys)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["video", str(notes), "--ckpt", str(ckpt), "--congealed", "--out", str(tmp_path / "v2")]) == 1
    assert "no frame could be read" in error_line(capsys)


@pytest.mark.parametrize("points, perm, words", [
    ([[1.0, 2.0], [3.0, 4.0]], "5,5", "must list each of 0..1 exactly once"),
    ([[1.0, float("nan")], [3.0, 4.0]], None, "key point 0 is [1.0, nan]: coordinates must be finite"),
    ([[1.0, 2.0], [1e309, 4.0]], None, "key point 1 is [inf, 4.0]"),
])
def test_transfer_refuses_bad_key_points(ckpt, photos, tmp_path, capsys, points, perm, words):
    pts = tmp_path / "a.json"
    pts.write_text(json.dumps({"points": points}))  # json writes NaN / Infinity, and reads them back
    argv = ["transfer", str(photos / "a.png"), str(photos / "b.png"), "--points", str(pts), "--ckpt", str(ckpt),
            "--out", str(tmp_path / "t")]
    assert main(argv + (["--permutation", perm] if perm else [])) == 1
    assert words in error_line(capsys)
    assert not (tmp_path / "t").exists()


def test_video_refuses_non_finite_points(ckpt, photos, tmp_path, capsys):
    pts = tmp_path / "p.json"
    pts.write_text('[[1, 2], [NaN, 3]]')
    assert main(["video", str(photos), "--ckpt", str(ckpt), "--points", str(pts), "--out", str(tmp_path / "v")]) == 1
    assert "point 1 is [nan, 3.0]" in error_line(capsys)


def test_serve_unknown_demo_set(ckpt, capsys):
    pytest.importorskip("flask")
    assert main(["serve", "--ckpt", str(ckpt), "--demo", "nosuch", "--port", "0"]) == 1
    assert "unknown embedded dataset 'nosuch'" in error_line(capsys)


def test_key_error_with_a_message_is_shown_as_is():
    from gangealing.cli import error_message

    assert error_message(KeyError("unknown class 'x' of mnist")) == "unknown class 'x' of mnist"
    assert error_message(KeyError("points")).startswith("missing entry 'points'")


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    import gangealing.commands.info as info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    assert main(["info", "x.pt"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
