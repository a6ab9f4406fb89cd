"""Reading, converting and writing images (gangealing.data.images)."""
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.data.images import (SkippedImage, UnreadableImage, iter_images, list_images, read_image, save_image,
                                    to_tensor, to_uint8)


def _png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_list_images_folder_glob_file_list(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    a = _png(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    b = _png(tmp_path / "sub" / "a.JPG", np.zeros((4, 4, 3), np.uint8))
    _png(tmp_path / ".hidden" / "x.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert list_images(tmp_path) == [a, b]  # recursive, sorted, hidden folders and non-images left out
    assert list_images(str(tmp_path / "*.png")) == [a]
    assert list_images(str(tmp_path / "**" / "*.JPG")) == [b]
    assert list_images([b, a, b]) == [b, a]  # explicit order, duplicates once
    with pytest.raises(FileNotFoundError, match="no such file"):
        list_images(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(str(tmp_path / "*.webp"))


def test_read_image_conversions(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert abs(int(out[0, 0, 0]) - 100) <= 1  # composited over black
    assert read_image(tmp_path / "rgba.png", "RGBA").shape == (5, 6, 4)

    g16 = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png", "L")
    assert out.shape == (4, 5, 1) and out.max() == round(19 * 3000 * 255 / 65535)

    Image.fromarray(np.full((3, 3), 77, np.uint8)).save(tmp_path / "gray.jpg", quality=100)
    out = read_image(tmp_path / "gray.jpg")
    assert out.shape == (3, 3, 3) and np.all(np.abs(out.astype(int) - 77) <= 1)

    pal = Image.fromarray(np.full((3, 3, 3), 50, np.uint8)).convert("P")
    pal.save(tmp_path / "pal.gif")
    assert read_image(tmp_path / "pal.gif").shape == (3, 3, 3)

    Image.new("CMYK", (4, 2), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (2, 4, 3)


def test_read_image_applies_exif_orientation(tmp_path):
    img = Image.fromarray(np.zeros((2, 6, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "rot.jpg").shape == (6, 2, 3)


def test_unreadable_and_skipped(tmp_path):
    good = _png(tmp_path / "good.png", np.zeros((4, 4, 3), np.uint8))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not a png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "PNG")
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(buf.getvalue()[:60])
    for p in (bad, trunc):
        with pytest.raises(UnreadableImage) as e:
            read_image(p)
        assert e.value.path == p and e.value.reason
    skipped = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = list(iter_images([bad, good, trunc], skipped=skipped))
    assert [p for p, _ in got] == [good]
    assert [s.path for s in skipped] == [str(bad), str(trunc)] and all(isinstance(s, SkippedImage) for s in skipped)
    assert not w  # collected in `skipped`: the caller reports it, once
    with pytest.warns(UserWarning, match="bad.png"):  # nobody collects: a warning, once
        assert [p for p, _ in iter_images([bad, good])] == [good]


def test_huge_images_are_decoded_smaller_and_report_their_full_size(tmp_path):
    from gangealing.data.images import image_size

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (1100, 700, 3), dtype=np.uint8)
    for name in ("big.jpg", "big.png"):
        Image.fromarray(a).save(tmp_path / name)
        full = read_image(tmp_path / name)
        small = read_image(tmp_path / name, max_side=256)
        assert full.shape == (1100, 700, 3) and image_size(tmp_path / name) == (1100, 700)
        assert 256 <= max(small.shape[:2]) < 512 and min(small.shape[:2]) >= 150
        assert read_image(tmp_path / name, max_side=1024).shape == full.shape  # not twice as large: as it is


def test_tensor_round_trip():
    a = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    t = to_tensor(a)
    assert t.shape == (3, 5, 7) and t.min() >= -1 and t.max() <= 1
    assert np.array_equal(to_uint8(t), a)
    batch = to_tensor(np.stack([a, a]))
    assert batch.shape == (2, 3, 5, 7) and np.array_equal(to_uint8(batch)[1], a)
    assert to_uint8(torch.full((1, 2, 2), 5.0)).max() == 255  # clamped


def test_save_image_atomic_and_protects_inputs(tmp_path):
    src = _png(tmp_path / "in.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileExistsError):
        save_image(np.ones((4, 4, 3), np.uint8), src, protected=[src])
    out = save_image(torch.zeros(3, 4, 4), tmp_path / "out" / "x.png")
    assert read_image(out)[0, 0, 0] == 128
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.png"]  # no temporary left
