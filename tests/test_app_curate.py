"""`gangealing flow-scores` and `gangealing curate` on tiny models with known similarity warps."""
import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.apps.curate import best_fraction, out_of_image_fraction
from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import save_checkpoint
from gangealing.cli import main
from gangealing.config import STNConfig
from gangealing.data.images import read_image, to_tensor
from gangealing.predictor import Congealer


def model(path, flow_noise=20.0, log_scale=0.0):
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=8))
    with torch.no_grad():
        stn.flow_net.warp_head.flow_out[-1].weight.normal_(0, flow_noise)  # images differ in flow smoothness
        stn.similarity.warp_head.linear.bias[1] = log_scale  # (r, s, tx, ty): s > 0 zooms out
    return save_checkpoint(make_checkpoint("model", {"stn": stn}), path)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (d / "zz_broken.png").write_bytes(b"garbage")
    return d


def read_csv(path):
    return list(csv.DictReader(open(path)))


def test_flow_scores_in_input_order(tmp_path, photos, capsys):
    ckpt = model(tmp_path / "m.pt")
    assert main(["flow-scores", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "s.csv"),
                 "--device", "cpu", "--batch-size", "4"]) == 0
    assert "zz_broken.png" in capsys.readouterr().out
    rows = read_csv(tmp_path / "s.csv")
    assert [r["input"].split("/")[-1] for r in rows] == [f"{i}.png" for i in range(6)] + ["zz_broken.png"]
    assert rows[-1]["score"] == "" and rows[-1]["error"]
    c = Congealer.from_checkpoint(ckpt, device="cpu")
    x = torch.stack([to_tensor(np.array(read_image(photos / f"{i}.png"))) for i in range(6)])
    want = c.flow_scores(x)
    got = torch.tensor([float(r["score"]) for r in rows[:6]])
    torch.testing.assert_close(got, want)
    assert len(set(got.tolist())) == 6 and (got <= 0).all()
    assert [r["flipped"] for r in rows[:6]] == [str(b) for b in c.align(x).flipped.tolist()]


@pytest.mark.filterwarnings("ignore:skipping")
def test_curate_keeps_the_best_fraction_at_full_resolution(tmp_path, photos):
    ckpt = model(tmp_path / "m.pt")
    assert main(["flow-scores", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "s.csv"), "--device", "cpu"]) == 0
    scores = {r["input"]: float(r["score"]) for r in read_csv(tmp_path / "s.csv") if r["score"]}
    best3 = sorted(scores, key=lambda p: -scores[p])[:3]
    for extra in ([], ["--scores", str(tmp_path / "s.csv")]):
        out = tmp_path / f"cur{len(extra)}"
        assert main(["curate", str(photos), "--ckpt", str(ckpt), "--out", str(out), "--device", "cpu",
                     "--fraction", "0.5", "--output-resolution", "32", "--min-effective-resolution", "32",
                     *extra]) == 0
        rows = read_csv(out / "curation.csv")
        assert len(rows) == 7
        kept = [r["input"] for r in rows if r["kept"] == "True"]
        assert sorted(kept) == sorted(best3)
        assert {r["reason"] for r in rows if r["kept"] == "False"} == {"low_score", "unreadable"}
        assert sorted(p.name for p in (out / "images").iterdir()) == sorted(
            f"{int(p.split('/')[-1][0]):06d}_{p.split('/')[-1][:-4]}.png" for p in best3)
        # Identity similarity: the 32 x 32 crop is the raw image itself (mirrored where flip inference says so).
        for r in rows:
            if r["kept"] != "True":
                continue
            crop = np.asarray(Image.open(out / r["output"]))
            raw = np.asarray(Image.open(r["input"]))
            raw = raw[:, ::-1] if r["flipped"] == "True" else raw
            np.testing.assert_array_equal(crop, raw)
            assert float(r["effective_resolution"]) == pytest.approx(32.0)


def test_curate_drops_out_of_image_and_low_resolution(tmp_path, photos):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (16, 40, 3), dtype=np.uint8)).save(photos / "wide.png")
    ckpt = model(tmp_path / "m.pt", flow_noise=0.0)
    out = tmp_path / "cur"
    assert main(["curate", str(photos), "--ckpt", str(ckpt), "--out", str(out), "--device", "cpu",
                 "--output-resolution", "16", "--min-effective-resolution", "20"]) == 0
    rows = {r["input"].split("/")[-1]: r for r in read_csv(out / "curation.csv")}
    # The identity crop of a wide image is its padded square: 60 % of the rows lie outside the image.
    assert rows["wide.png"]["reason"] == "out_of_image" and float(rows["wide.png"]["out_of_image"]) > 0.5
    assert all(rows[f"{i}.png"]["kept"] == "True" for i in range(6))
    assert main(["curate", str(photos), "--ckpt", str(ckpt), "--out", str(tmp_path / "cur2"), "--device", "cpu",
                 "--output-resolution", "16", "--min-effective-resolution", "33"]) == 0
    rows = {r["input"].split("/")[-1]: r for r in read_csv(tmp_path / "cur2" / "curation.csv")}
    assert all(rows[f"{i}.png"]["reason"] == "low_resolution" for i in range(6))

    zoom_out = model(tmp_path / "z.pt", flow_noise=0.0, log_scale=math.log(1.5))
    assert main(["curate", str(photos), "--ckpt", str(zoom_out), "--out", str(tmp_path / "cur3"), "--device", "cpu",
                 "--output-resolution", "16", "--min-effective-resolution", "1"]) == 0
    rows = read_csv(tmp_path / "cur3" / "curation.csv")
    assert {r["reason"] for r in rows} == {"out_of_image", "unreadable"}
    assert not any((tmp_path / "cur3" / "images").iterdir())


def test_best_fraction_and_out_of_image_fraction():
    assert best_fraction([0.0, -1.0, -0.5, None], 1.0) == [True, True, True, False]
    assert best_fraction([0.0, -1.0, -0.5, None], 0.5) == [True, False, True, False]
    assert best_fraction([-1.0, -1.0, -1.0], 0.34) == [True, True, False]  # ties: input order
    with pytest.raises(ValueError):
        best_fraction([1.0], 0.0)
    from gangealing.geometry.coords import identity_grid

    g = identity_grid(16)  # (1, 16, 16, 2)
    assert out_of_image_fraction(g, 16, 16, 16).item() == 0.0
    assert out_of_image_fraction(g * 2, 16, 16, 16).item() == pytest.approx(0.5)
