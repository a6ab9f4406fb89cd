"""Prepared (cached) datasets (gangealing.data.dataset)."""
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.data import ImageDataset, load_prepared, prepare_dataset
from gangealing.data.embedded import package_file


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(d / "sub" / "b.jpg")
    Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)).save(d / "c.webp")
    (d / "broken.png").write_bytes(b"\x89PNG garbage")
    return d


def test_prepare_folder_reports_skips_and_caches(folder, tmp_path):
    with pytest.warns(UserWarning, match="broken.png"):
        ds = prepare_dataset(folder, 16, "border", tmp_path / "cache")
    assert ds.images.shape == (3, 3, 16, 16) and ds.images.dtype == np.uint8 and not ds.cached
    assert [s.path for s in ds.skipped] == [str(folder / "broken.png")]
    manifest = json.loads((ds.path / "manifest.json").read_text())
    assert manifest["count"] == 3 and manifest["mode"] == "border" and len(manifest["files"]) == 3
    again = prepare_dataset(folder, 16, "border", tmp_path / "cache")
    assert again.cached and again.path == ds.path and np.array_equal(np.asarray(again.images), np.asarray(ds.images))
    assert prepare_dataset(folder, 16, "center", tmp_path / "cache").path != ds.path  # params change the key
    assert load_prepared(ds.path).manifest["count"] == 3
    assert prepare_dataset(ds.path, 16).path == ds.path  # a prepared folder is a source
    x = ImageDataset(ds, flip=True)[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1


def test_cache_notices_changed_files(folder, tmp_path):
    with pytest.warns(UserWarning):
        first = prepare_dataset(folder, 8, cache_dir=tmp_path / "c")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder / "d.png")
    with pytest.warns(UserWarning):
        second = prepare_dataset(folder, 8, cache_dir=tmp_path / "c")
    assert second.path != first.path and len(second) == 4


def test_prepare_zip(folder, tmp_path):
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    with pytest.warns(UserWarning, match="broken.png"):
        ds = prepare_dataset(z, 8, cache_dir=tmp_path / "c")
    assert len(ds) == 3 and len(ds.skipped) == 1 and ds.manifest["files"][0].endswith("a.png")


def test_zip_member_that_expands_too_far_is_skipped_not_read(folder, tmp_path, monkeypatch):
    import gangealing.data.images as images

    monkeypatch.setattr(images, "MAX_IMAGE_FILE_BYTES", 100_000)
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(folder / "a.png", "a.png")
        zf.writestr("bomb.png", b"\0" * 5_000_000)  # 5 MB of zeros, a few KB compressed
    opened, real_open = [], zipfile.ZipFile.open

    def tracked_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", tracked_open)
    with pytest.warns(UserWarning, match="bomb.png: expands to 5,000,000 bytes, over the 100,000-byte limit"):
        ds = prepare_dataset(z, 8, cache_dir=tmp_path / "c")
    assert len(ds) == 1 and "bomb.png" not in opened  # refused from its header, never decompressed


@pytest.mark.skipif(package_file("animal_mnist", "data/Animal_MNIST/animal_data_version_3.gz") is None,
                    reason="animal-mnist not installed")
def test_prepare_embedded(tmp_path):
    ds = prepare_dataset("animals:cat", 32, cache_dir=tmp_path)
    assert ds.images.shape == (900, 3, 32, 32) and ds.labels is not None and set(ds.labels) == {2}
    assert np.array_equal(ds.images[:, 0], ds.images[:, 2])  # grayscale replicated
    assert ds.tensor([0, 1]).shape == (2, 3, 32, 32)
    gray = prepare_dataset("animals:cat", 32, cache_dir=tmp_path, image_mode="L", split="test")
    assert gray.images.shape == (100, 1, 32, 32)


def test_nothing_readable(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="no readable images"):
        prepare_dataset(tmp_path / "x.png", 8, cache_dir=tmp_path / "c")
