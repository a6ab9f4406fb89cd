"""`gangealing pck` end to end on fake SPair-71K and CUB datasets, with exactly known answers.

An untrained transformer is the identity (its output layers start at zero), so a key point keeps
its pixel position from A to B: identical annotations give 100%, and known offsets between A's
and B's annotations give a known fraction.
"""
import json

import numpy as np
import pytest
import torch

import gangealing.apps.pck as pck_app
from gangealing.apps.pck import evaluate_pck
from gangealing.apps.prepare import prepare_cub, prepare_spair
from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import save_checkpoint
from gangealing.cli import main
from gangealing.config import STNConfig
from gangealing.data.keypoints import load_keypoint_dataset
from gangealing.predictor import Congealer
from helpers import make_fake_cub, make_fake_spair

TINY = dict(flow_size=32, input_size=32, channel_multiplier=0.125, max_channels=32)


def identity(transforms=("similarity",)):
    torch.manual_seed(0)
    return Congealer(build("stn", STNConfig(transforms=transforms, **TINY)), device="cpu")


@pytest.fixture(scope="module")
def spair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("spair")
    make_fake_spair(tmp / "src")
    prepare_spair(tmp / "src", tmp / "cat", "cat", size=32)
    return load_keypoint_dataset(tmp / "cat")


@pytest.fixture(scope="module")
def cub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cub")
    make_fake_cub(tmp)
    prepare_cub(tmp / "CUB_200_2011", tmp / "val", acsm_mat=tmp / "val_cub_cleaned.mat", size=32)
    return load_keypoint_dataset(tmp / "val")


@pytest.mark.parametrize("legacy", [False, True])
def test_identical_pair_is_100_percent(spair, legacy):
    r = evaluate_pck(identity(), spair, num_pairs=1, legacy=legacy, bootstrap=0)
    assert r.pck == (1.0, 1.0, 1.0) and r.num_pairs == 1 and not r.both_ways and r.std is None


@pytest.mark.parametrize("legacy", [False, True])
def test_known_partial_correctness(spair, legacy):
    # Pair 2: B = A + (0 x5, 1 x4, 3 x3, 5 x3) px in x, i.e. 0.8x that in the 32-px frame; threshold
    # alpha * 0.8 * 39 (B's box) = 3.12, 1.56, 0.312 px -> 12, 9 and 5 of 15 correct; pair 1 all 15.
    r = evaluate_pck(identity(), spair, num_pairs=2, legacy=legacy, bootstrap=200)
    np.testing.assert_allclose(r.pck, [27 / 30, 24 / 30, 20 / 30], rtol=1e-6)
    assert r.result.per_pair_correct.tolist() == [[15, 15, 15], [12, 9, 5]]
    assert r.result.per_pair_visible.tolist() == [15, 15]
    assert all(s > 0 for s in r.std)
    both = evaluate_pck(identity(), spair, num_pairs=2, both_ways=True, bootstrap=0)
    np.testing.assert_allclose(both.pck, [54 / 60, 48 / 60, 40 / 60], rtol=1e-6)  # the same errors back


def test_all_fixed_pairs_by_default(spair):
    r = evaluate_pck(identity(), spair, bootstrap=0)
    assert r.num_pairs == 3 and r.result.per_pair_visible.tolist() == [15, 15, 4]  # only shared key points count


def test_flow_model_with_flip_inference(spair):
    # The identity flow quantises points to the 32-px congealed grid (at most 0.71 px): still within
    # 0.05 * 0.8 * 39 = 1.56 px. All flows are zero, so flip inference mirrors nothing.
    r = evaluate_pck(identity(("similarity", "flow")), spair, num_pairs=1, bootstrap=0)
    assert r.flip_inference and r.pck[:2] == (1.0, 1.0)


@pytest.mark.parametrize("legacy", [False, True])
def test_mirroring_follows_the_pick(spair, monkeypatch, legacy):
    # Both images of an identical pair mirrored: points stay consistent. Only A mirrored: they do not.
    monkeypatch.setattr(pck_app, "match_flows_pick", lambda *tv: torch.full_like(tv[0], 3, dtype=torch.long))
    r = evaluate_pck(identity(("similarity", "flow")), spair, num_pairs=1, legacy=legacy, bootstrap=0)
    assert r.pck[:2] == (1.0, 1.0)
    monkeypatch.setattr(pck_app, "match_flows_pick", lambda *tv: torch.full_like(tv[0], 1, dtype=torch.long))
    r = evaluate_pck(identity(("similarity", "flow")), spair, num_pairs=1, legacy=legacy, bootstrap=0)
    assert r.pck[0] < 0.5


def test_cub_random_pairs_both_ways(cub):
    assert cub.eval_pairs().shape == (10000, 2)  # the protocol's number of pairs
    r = evaluate_pck(identity(), cub, num_pairs=40, bootstrap=100)
    assert r.both_ways and r.num_pairs == 40 and r.pck == (1.0, 1.0, 1.0) and r.std == (0.0, 0.0, 0.0)
    # Image 4 hides 2 of 15 parts: its pairs count 13 shared points, twice (both ways).
    pairs = cub.eval_pairs(40)
    expect = [2 * (13 if 2 in p else 15) for p in pairs.tolist()]
    assert r.result.per_pair_visible.tolist() == expect


def test_shards_merge_to_the_single_process_result(spair, monkeypatch):
    class Rank:
        def __init__(self, rank):
            self.rank, self.world_size = rank, 2

    single = evaluate_pck(identity(), spair, bootstrap=0)
    parts = {}
    for rank in (0, 1):  # each rank's share, captured before the (collective) gather
        monkeypatch.setattr(pck_app, "gather", lambda mine, dist: parts.setdefault(dist.rank, list(mine)))
        evaluate_pck(identity(), spair, bootstrap=0, dist=Rank(rank))
    assert [len(parts[0]), len(parts[1])] == [2, 1]
    merged = [parts[0][0], parts[1][0], parts[0][1]]  # pairs 0, 2 on rank 0; pair 1 on rank 1
    assert [c for c, _ in merged] == single.result.per_pair_correct.tolist()


def test_command(spair, tmp_path, capsys):
    ckpt = save_checkpoint(make_checkpoint("model", {"stn": identity().stn}), tmp_path / "id.pt")
    out = tmp_path / "res"
    rc = main(["pck", str(spair.path), "--ckpt", str(ckpt), "--num-pairs", "2", "--bootstrap", "50",
               "--out", str(out), "--vis", "2", "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PCK-Transfer@0.1: 90.00%" in printed and "PCK-Transfer@0.01: 66.67%" in printed
    doc = json.loads((out / "pck.json").read_text())
    assert doc["alphas"] == [0.1, 0.05, 0.01] and doc["num_pairs"] == 2 and len(doc["std"]) == 3
    assert doc["per_pair_correct"] == [[15, 15, 15], [12, 9, 5]]
    from PIL import Image

    assert Image.open(out / "transfers.png").size == (64, 64)  # 2 pairs x 32 px, source row over target row


@pytest.mark.parametrize("flag, expected", [([], 32), (["--input-size", "16"], 16)])
def test_command_feeds_the_transformer_at_the_dataset_size(spair, tmp_path, capsys, flag, expected):
    # The original's pck.py builds the transformer for the evaluation's --real_size (the dataset's
    # 32 px here), whatever size the model was trained at (16 px here).
    torch.manual_seed(0)
    stn = build("stn", STNConfig(transforms=("similarity",), flow_size=16, input_size=16, channel_multiplier=0.125,
                                 max_channels=32))
    ckpt = save_checkpoint(make_checkpoint("model", {"stn": stn}), tmp_path / "at16.pt")
    out = tmp_path / "res"
    assert main(["pck", str(spair.path), "--ckpt", str(ckpt), "--bootstrap", "0", "--vis", "0", "--out", str(out),
                 "--device", "cpu", *flag]) == 0
    assert f"input size {expected}" in capsys.readouterr().out
    assert json.loads((out / "pck.json").read_text())["input_size"] == expected
