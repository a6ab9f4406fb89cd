"""`gangealing prepare`: archives, the CLI surface, and safety."""
import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from gangealing.apps.prepare import is_archive, open_source, prepare_images
from gangealing.cli import main
from gangealing.data.dataset import load_prepared


def _png(rng, h=10, w=14):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_help_lists_every_kind(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    for kind in ("spair", "cub", "lsun", "images"):
        assert kind in out


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_images_from_archives_equal_the_folder(tmp_path, kind):
    rng = np.random.default_rng(0)
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png", "c.png"):
        (src / name).write_bytes(_png(rng))
    archive = tmp_path / f"photos.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for p in src.rglob("*.png"):
                zf.write(p, f"photos/{p.relative_to(src)}")
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tf:
            tf.add(src, arcname="photos")
    assert is_archive(archive) and not is_archive(src)
    assert main(["prepare", "images", str(archive), str(tmp_path / "a"), "--size", "8", "--pad", "border"]) == 0
    prepare_images(src, tmp_path / "b", size=8, mode="border")
    a, b = load_prepared(tmp_path / "a"), load_prepared(tmp_path / "b")
    np.testing.assert_array_equal(a.images, b.images)
    assert [f.split("/", 1)[1] for f in a.manifest["files"]] == b.manifest["files"] == ["a.png", "c.png", "sub/b.png"]


def test_archive_members_outside_the_folder_are_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    data = _png(np.random.default_rng(0))
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../escaped.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="outside"):
        with open_source(archive):
            pass
    assert not (tmp_path / "escaped.png").exists()


def test_output_is_all_or_nothing(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "x.png").write_bytes(b"not an image")
    with pytest.raises(FileNotFoundError, match="no readable images"):
        prepare_images(src, tmp_path / "out", size=8)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]  # no temporary folder left behind


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_image_members_are_bounded_before_unpacking(tmp_path, monkeypatch, kind, capsys):
    import gangealing.apps.prepare as prepare

    monkeypatch.setattr(prepare, "MAX_IMAGE_FILE_BYTES", 100_000)
    rng = np.random.default_rng(0)
    archive = tmp_path / f"photos.{kind}"
    members = {"photos/a.png": _png(rng), "photos/bomb.png": b"\0" * 5_000_000}
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    assert main(["prepare", "images", str(archive), str(tmp_path / "out"), "--size", "8"]) == 0
    printed = capsys.readouterr()
    assert "skipped" in printed.out and "bomb.png: expands to 5,000,000 bytes" in printed.out
    assert printed.out.count("bomb.png") == 1 and "bomb.png" not in printed.err  # reported once
    assert load_prepared(tmp_path / "out").manifest["files"] == ["photos/a.png"]


def test_archive_larger_than_the_free_space_is_refused_before_unpacking(tmp_path, monkeypatch):
    import collections

    import gangealing.apps.prepare as prepare

    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.png", _png(np.random.default_rng(0)))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(prepare.shutil, "disk_usage", lambda p: usage(1000, 990, 10))
    with pytest.raises(ValueError, match="more than the 0.0 GiB free"):
        with open_source(archive):
            pass
