"""The original prepare_data.py crop / pad choices (gangealing.data.preprocess)."""
import numpy as np
import pytest

from gangealing.data.preprocess import preprocess, preprocess_transform


def _wide(h=10, w=20):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 255  # left half white
    return img


def test_center_crop_takes_the_middle():
    img = np.zeros((10, 20, 1), np.uint8)
    img[:, 5:15] = 200  # exactly the centred 10x10 square
    out = preprocess(img, 10, "center")
    assert out.shape == (10, 10, 1) and np.all(out == 200)


@pytest.mark.parametrize("mode", ["border", "zero"])
def test_padding_modes(mode):
    img = np.full((10, 20, 3), 100, np.uint8)
    out = preprocess(img, 20, mode)
    assert out.shape == (20, 20, 3)
    # resized to 20 x 10, placed at rows 5..14
    assert np.all(out[5:15] == 100)
    expect = 100 if mode == "border" else 0
    assert np.all(out[:5] == expect) and np.all(out[15:] == expect)


def test_odd_padding_split_as_original():
    img = np.full((7, 20, 1), 9, np.uint8)  # resized to 20 x 7: 13 rows of padding, 6 before, 7 after
    out = preprocess(img, 20, "zero")
    rows = np.nonzero(out[:, 0, 0])[0]
    assert rows[0] == 6 and rows[-1] == 12


def test_none_stretches_and_lanczos_resizes():
    out = preprocess(_wide(), 8, "none")
    assert out.shape == (8, 8, 3)
    assert out[0, 0, 0] == 255 and out[0, -1, 0] == 0


@pytest.mark.parametrize("mode", ["center", "border", "zero", "none"])
def test_transform_follows_a_pixel(mode):
    h, w, s = 12, 30, 60  # upscaling keeps a one-pixel dot findable
    img = np.zeros((h, w, 1), np.uint8)
    y, x = 5, 14
    img[y, x] = 255
    out = preprocess(img, s, mode).astype(float)[..., 0]
    tf = preprocess_transform(h, w, s, mode)
    px, py = tf.apply(np.array([x, y]))
    yy, xx = np.mgrid[:s, :s]
    wsum = out.clip(0).sum()
    cy, cx = (out.clip(0) * yy).sum() / wsum, (out.clip(0) * xx).sum() / wsum
    assert abs(cx - px) < 0.6 and abs(cy - py) < 0.6


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        preprocess(np.zeros((4, 4, 3), np.uint8), 8, "crop")
    with pytest.raises(TypeError):
        preprocess(np.zeros((4, 4, 3), np.float32), 8)
