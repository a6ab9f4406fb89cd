"""LSUN LMDB reader and `gangealing prepare lsun|images` on a tiny LMDB written by the test."""
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

lmdb = pytest.importorskip("lmdb", reason="the lmdb package is not installed (pip install 'gangealing[lmdb]')")

from gangealing.apps.prepare import prepare_images, prepare_lsun  # noqa: E402
from gangealing.cli import main  # noqa: E402
from gangealing.data.dataset import load_prepared  # noqa: E402
from gangealing.data.lsun import find_lmdb, iter_lmdb_images, lmdb_keys  # noqa: E402


def _encoded(arr, fmt):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def make_lmdb(path):
    """An LSUN-style database: hex-id keys -> WebP / JPEG bytes, one corrupt value."""
    rng = np.random.default_rng(0)
    images = {f"{i:040x}".encode(): rng.integers(0, 255, (12 + i, 16, 3), dtype=np.uint8) for i in range(3)}
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (k, a) in enumerate(images.items()):
            txn.put(k, _encoded(a, "WEBP" if i != 1 else "PNG"))
        txn.put(b"f" * 40, b"\x00not an image")  # sorts last
    env.close()
    return images


def test_lmdb_reader(tmp_path):
    images = make_lmdb(tmp_path / "cat")
    assert find_lmdb(tmp_path) == tmp_path / "cat"
    assert lmdb_keys(tmp_path / "cat") == sorted(images) + [b"f" * 40]
    assert len(lmdb_keys(tmp_path / "cat", max_images=2)) == 2
    skipped = []
    got = list(iter_lmdb_images(tmp_path / "cat", skipped=skipped))  # collected: no warning
    with pytest.warns(UserWarning, match="skipping"):  # not collected: a warning
        assert len(list(iter_lmdb_images(tmp_path / "cat"))) == len(got)
    assert [k for k, _ in got] == [k.decode() for k in sorted(images)]
    for (_, a), k in zip(got, sorted(images)):
        np.testing.assert_array_equal(a, images[k])  # lossless WebP and PNG decode exactly
    assert len(skipped) == 1 and "f" * 40 in skipped[0].path
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data.mdb"):
        find_lmdb(tmp_path / "empty")


def test_prepare_lsun_folder_and_zip(tmp_path):
    make_lmdb(tmp_path / "cat")
    res = prepare_lsun(tmp_path / "cat", tmp_path / "out", size=8)  # skips are returned, not warned
    assert res.num_images == 3 and len(res.skipped) == 1
    ds = load_prepared(tmp_path / "out")
    assert ds.images.shape == (3, 3, 8, 8) and ds.manifest["mode"] == "center"
    archive = tmp_path / "cat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in ("data.mdb", "lock.mdb"):
            if (tmp_path / "cat" / f).exists():
                zf.write(tmp_path / "cat" / f, f"cat/{f}")
    # max_images counts keys: the corrupt value (the last key) is not reached.
    assert main(["prepare", "lsun", str(archive), str(tmp_path / "out_zip"), "--size", "8", "--max-images", "2"]) == 0
    z = load_prepared(tmp_path / "out_zip")
    np.testing.assert_array_equal(z.images, ds.images[:2])


def test_prepare_images_folder_reports_corrupt_files(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(src / f"{i}.png")
    (src / "broken.jpg").write_bytes(b"garbage")
    res = prepare_images(src, tmp_path / "out", size=8, mode="border")
    assert res.num_images == 3 and res.skipped[0].path.endswith("broken.jpg")
    assert load_prepared(tmp_path / "out").manifest["files"] == ["0.png", "1.png", "2.png"]
    assert (src / "broken.jpg").read_bytes() == b"garbage"
