"""CUB-200-2011 + ACSM split reader and `gangealing prepare cub` on a fake CUB built in the release's layout."""
import tarfile

import numpy as np
import pytest
from PIL import Image

from gangealing.cli import main
from gangealing.data.cub import (
    CUB_PART_NAMES,
    CUB_PERMUTATION,
    acsm_crop,
    acsm_square_box,
    crop_keypoints,
    read_acsm_split,
    read_cub_keypoints,
    read_cub_split,
)
from gangealing.data.keypoints import load_keypoint_dataset, random_pairs
from helpers import CUB_BOX_1BASED, CUB_NAMES, CUB_PART_XY, make_fake_cub


def test_acsm_box_and_crop_by_hand():
    # Tight box 40 x 20 grown by 5% (2 px, 1 px) -> (8, 19, 51, 40), squared to 44 about the centre.
    assert acsm_square_box((10, 20, 49, 39)) == (8, 8, 51, 51)
    # Python 2 rounding: a half goes away from zero (Python 3 would round 0.5 to 0).
    assert acsm_square_box((0, 0, 42, 43), pad_fraction=0) == (-1, 0, 42, 43)  # width 43 -> 44: round(0.5) = 1
    assert acsm_square_box((0, 0, 38, 43), pad_fraction=0) == (-3, 0, 40, 43)  # round(2.5) = 3
    img = np.arange(4 * 5 * 1, dtype=np.uint8).reshape(4, 5, 1)
    crop = acsm_crop(img, (-1, -2, 3, 2))  # leaves the image left and top: edge replication
    assert crop.shape == (5, 5, 1)
    assert crop[:, :, 0].tolist()[0] == [0, 0, 1, 2, 3] and crop[:, 0, 0].tolist() == [0, 0, 0, 5, 10]
    with pytest.raises(ValueError, match="outside"):
        acsm_crop(img, (10, 10, 12, 12))
    kps = np.array([[30.0, 30.0, 1.0], [5.0, 5.0, 0.0]])
    assert crop_keypoints(kps, (8, 8, 51, 51), 88, legacy=True)[0, :2].tolist() == [44.0, 44.0]  # (30 - 8) * 2
    assert crop_keypoints(kps, (8, 8, 51, 51), 88)[0, :2].tolist() == [44.5, 44.5]  # (22 + 0.5) * 2 - 0.5
    assert crop_keypoints(kps, (8, 8, 51, 51), 88)[1].tolist() == [0.0, 0.0, 0.0]


def test_readers(tmp_path):
    root = make_fake_cub(tmp_path)
    kps = read_cub_keypoints(tmp_path)
    assert sorted(kps) == [1, 2, 3, 4, 5] and kps[1].shape == (15, 3)
    assert kps[1][0].tolist() == [11.0, 21.0, 1.0]  # 1-based file -> 0-based
    assert kps[4][13].tolist() == [0.0, 0.0, 0.0]
    split = read_acsm_split(tmp_path / "val_cub_cleaned.mat")
    assert [(i, r) for i, r, _ in split] == [(i, CUB_NAMES[i - 1]) for i in (2, 3, 4, 5)]
    assert split[0][2] == CUB_BOX_1BASED
    imgs = read_cub_split(root, "acsm_val", tmp_path / "val_cub_cleaned.mat")
    assert [im.image_id for im in imgs] == [2, 3, 4, 5]
    assert imgs[0].box == acsm_square_box(tuple(v - 1 for v in CUB_BOX_1BASED)) == (8, 8, 51, 51)
    assert [im.image_id for im in read_cub_split(root, "train")] == [1, 2]
    assert [im.image_id for im in read_cub_split(root, "test")] == [3, 4, 5]
    with pytest.raises(ValueError, match="val_cub_cleaned.mat"):
        read_cub_split(root, "acsm_val")
    assert CUB_PERMUTATION[6] == 10 and CUB_PART_NAMES[6] == "left eye" and CUB_PART_NAMES[10] == "right eye"


def test_mat_file_reads_with_the_original_access_pattern(tmp_path):
    # The fixture file has the layout the original's load_acsm_data indexes into.
    sio = pytest.importorskip("scipy.io")
    make_fake_cub(tmp_path)
    mat = sio.loadmat(str(tmp_path / "val_cub_cleaned.mat"))
    assert [f[0] for f in mat["images"]["rel_path"][0]] == CUB_NAMES[1:]
    assert [i[0, 0] - 1 for i in mat["images"]["id"][0]] == [1, 2, 3, 4]
    x1, y1, x2, y2 = mat["images"]["bbox"][0][0][0, 0]
    assert (x1[0, 0], y1[0, 0], x2[0, 0], y2[0, 0]) == CUB_BOX_1BASED


@pytest.mark.parametrize("archive", [False, True])
def test_prepare_cub(tmp_path, archive):
    make_fake_cub(tmp_path / "src")
    source = tmp_path / "src" / "CUB_200_2011"
    if archive:
        source = tmp_path / "CUB_200_2011.tgz"
        with tarfile.open(source, "w:gz") as tf:
            tf.add(tmp_path / "src" / "CUB_200_2011", arcname="CUB_200_2011")
    mat = tmp_path / "src" / "val_cub_cleaned.mat"
    assert main(["prepare", "cub", str(source), str(tmp_path / "out"), "--acsm-mat", str(mat), "--size", "44"]) == 0
    ds = load_keypoint_dataset(tmp_path / "out")
    assert ds.images.images.shape == (4, 3, 44, 44) and ds.num_samples == 4
    assert ds.pairs is None and ds.protocol == {"pairs": "random", "num_pairs": 10000, "both_ways": True,
                                                "threshold": "image"}
    assert ds.permutation == CUB_PERMUTATION and ds.meta["image_ids"] == [2, 3, 4, 5]
    # Crop box (8, 8, 51, 51) of side 44 at size 44: key point x (1-based) -> x - 1 - 8.
    expect = np.array([[x - 9.0, y - 9.0] for x, y in CUB_PART_XY])
    np.testing.assert_allclose(ds.keypoints[0, :, :2].numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(ds.keypoints_legacy[0, :, :2].numpy(), expect, atol=1e-6)
    assert ds.keypoints[2, 13].tolist() == [0.0, 0.0, 0.0]  # image 4 hides parts 13, 14
    # The crop (44 x 44 inside the 60 x 50 image, rows 8..51: the last 2 replicated) at size 44 is a copy.
    raw = np.asarray(Image.open(tmp_path / "src" / "CUB_200_2011" / "images" / CUB_NAMES[1]).convert("RGB"))
    np.testing.assert_array_equal(ds.images.images[0].transpose(1, 2, 0)[:42], raw[8:50, 8:52])
    np.testing.assert_array_equal(ds.images.images[0].transpose(1, 2, 0)[43], raw[49, 8:52])


def test_random_pairs_follow_the_original_sequence():
    # PCKDataset.randomize_pairs with the per-epoch seeds of sample_infinite_pck_data(seed=0).
    import torch

    rng = torch.Generator().manual_seed(0)
    expect = []
    for _ in range(3):
        s = torch.randint(0, 9999999999999, (1,), generator=rng).item()
        expect.append(torch.randperm(7, generator=torch.Generator().manual_seed(s))[:6].view(-1, 2))
    expect = torch.cat(expect)
    got = random_pairs(7, 8, seed=0)
    assert got.shape == (8, 2) and got.equal(expect[:8])
    assert (got[:, 0] != got[:, 1]).all()
