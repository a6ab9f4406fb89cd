"""SPair-71K reader and `gangealing prepare spair` on a fake SPair-71k built in the release's layout."""
import tarfile

import numpy as np
import pytest

from gangealing.apps.prepare import prepare_spair
from gangealing.cli import main
from gangealing.data.dataset import load_prepared
from gangealing.data.keypoints import load_keypoint_dataset
from gangealing.data.spair import SPAIR_PERMUTATIONS, find_spair_root, read_spair_pairs
from helpers import SPAIR_BASE, SPAIR_K, make_fake_spair

def test_reader_follows_the_layout(tmp_path):
    root = make_fake_spair(tmp_path)
    assert find_spair_root(tmp_path) == root
    s = read_spair_pairs(tmp_path, "cat", "test")
    assert [p.name.split("-")[0] for p in s.pairs] == ["000001", "000002", "000003"]  # file-name order, cat only
    assert s.permutation == SPAIR_PERMUTATIONS["cat"] and s.keypoint_ids == tuple(range(SPAIR_K))
    p3 = s.pairs[2]
    assert p3.source.keypoints[:, 2].nonzero()[0].tolist() == [0, 3, 7, 14]
    np.testing.assert_array_equal(p3.target.keypoints[3, :2], SPAIR_BASE[3, ::-1])
    assert p3.target.bbox_size == 32.0  # max(35 - 3, 20 - 2)
    assert (p3.target.width, p3.target.height) == (30, 40)
    trn = read_spair_pairs(tmp_path, "cat", "trn", permutation=[1, 0])
    assert len(trn.pairs) == 1 and trn.keypoint_ids == (0, 1) and trn.permutation == (1, 0)
    with pytest.warns(UserWarning, match="permutation"):  # published for 15 points, 2 used
        assert read_spair_pairs(tmp_path, "cat", "trn").permutation is None
    with pytest.raises(ValueError, match="permutation"):
        read_spair_pairs(tmp_path, "cat", "trn", permutation=[0, 1, 2])
    with pytest.raises(FileNotFoundError, match="no test pairs for category 'horse'"):
        read_spair_pairs(tmp_path, "horse")
    with pytest.raises(FileNotFoundError, match="not an SPair-71k folder"):
        find_spair_root(tmp_path / "SPair-71k" / "Layout")


def test_prepare_spair_folder(tmp_path):
    make_fake_spair(tmp_path / "src")
    before = sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "src").rglob("*"))
    res = prepare_spair(tmp_path / "src", tmp_path / "out", "cat", size=32)
    assert sorted((p, p.stat().st_mtime_ns) for p in (tmp_path / "src").rglob("*")) == before  # untouched
    assert (res.num_images, res.num_samples, res.num_pairs) == (3, 6, 3)
    ds = load_keypoint_dataset(tmp_path / "out")
    assert len(ds.images) == 3 and ds.images.images.shape == (3, 3, 32, 32)
    assert ds.pairs.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert ds.protocol == {"pairs": "fixed", "num_pairs": None, "both_ways": False, "threshold": "bbox"}
    assert ds.permutation == SPAIR_PERMUTATIONS["cat"]
    assert ds.sample_image.tolist() == [0, 0, 0, 1, 1, 2]  # images stored once, sorted by name
    # 40x30 -> 32x24 border-padded by 4 rows on top: scale 0.8 per axis, pixel-centre mapping.
    expect = (SPAIR_BASE + 0.5) * 0.8 - 0.5 + np.array([0.0, 4.0])
    np.testing.assert_allclose(ds.keypoints[0, :, :2].numpy(), expect, atol=1e-5)
    # The original's mapping: x * 32 / 40 + offset.
    np.testing.assert_allclose(ds.keypoints_legacy[0, :, :2].numpy(), SPAIR_BASE * 0.8 + np.array([0.0, 4.0]), atol=1e-5)
    assert ds.keypoints[4, :, 2].nonzero().view(-1).tolist() == [0, 3, 7, 14]
    assert ds.keypoints[4, 1].tolist() == [0.0, 0.0, 0.0]  # invisible rows are zero
    # 30x40 (portrait) -> 24x32 padded by 4 columns.
    np.testing.assert_allclose(ds.keypoints_legacy[5, 3, :2].numpy(), SPAIR_BASE[3, ::-1] * 0.8 + np.array([4.0, 0.0]), atol=1e-5)
    assert ds.bbox_size.tolist() == [39.0] * 5 + [32.0]
    np.testing.assert_allclose(ds.scale.numpy(), [0.8] * 6)
    # Border padding repeats edge rows.
    img = ds.images.images[0]
    assert (img[:, 0] == img[:, 4]).all() and (img[:, 31] == img[:, 27]).all()


def test_prepare_spair_from_targz_equals_folder(tmp_path):
    make_fake_spair(tmp_path / "src")
    archive = tmp_path / "SPair-71k.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "SPair-71k", arcname="SPair-71k")
    assert main(["prepare", "spair", str(archive), str(tmp_path / "out_tar"), "--category", "cat", "--size", "32"]) == 0
    prepare_spair(tmp_path / "src", tmp_path / "out_dir", "cat", size=32)
    a, b = load_keypoint_dataset(tmp_path / "out_tar"), load_keypoint_dataset(tmp_path / "out_dir")
    assert np.array_equal(a.images.images, b.images.images)
    assert a.keypoints.equal(b.keypoints) and a.pairs.equal(b.pairs) and a.bbox_size.equal(b.bbox_size)
    assert load_prepared(tmp_path / "out_tar").manifest["files"][0] == "JPEGImages/cat/2010_000000_a.jpg"
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_spair(archive, tmp_path / "out_tar", "cat", size=32)


def test_prepare_spair_skips_a_corrupt_image(tmp_path):
    root = make_fake_spair(tmp_path / "src")
    (root / "JPEGImages" / "cat" / "2010_000002_c.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(UserWarning):
        res = prepare_spair(tmp_path / "src", tmp_path / "out", "cat", size=32)
    assert (res.num_images, res.num_pairs) == (2, 2)  # the pair with image c is dropped
    assert len(res.skipped) == 1 and res.skipped[0].path.endswith("2010_000002_c.jpg")
    assert load_prepared(tmp_path / "out").manifest["skipped"][0]["path"].endswith("2010_000002_c.jpg")
