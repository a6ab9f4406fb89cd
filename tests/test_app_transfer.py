"""`gangealing transfer`: key points A -> B (and back) through the congealed frame, JSON schema, picture."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.apps.transfer import palette, parse_keypoints, read_keypoints
from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import save_checkpoint
from gangealing.cli import main
from gangealing.config import STNConfig


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=8))
    ckpt = save_checkpoint(make_checkpoint("model", {"stn": stn}), tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    pts = {"points": [[3, 5], [10, 0], [15, 15]], "names": ["nose", "ear", "tail"], "visible": [True, False, True]}
    (tmp_path / "a.json").write_text(json.dumps(pts))
    return tmp_path, ckpt


def test_transfer_and_back(setup, capsys):
    d, ckpt = setup
    common = ["--ckpt", str(ckpt), "--device", "cpu"]
    assert main(["transfer", str(d / "a.png"), str(d / "b.png"), "--points", str(d / "a.json"), "--out",
                 str(d / "ab"), *common]) == 0
    assert "transferred 3 point(s)" in capsys.readouterr().out
    out = json.loads((d / "ab" / "b_points.json").read_text())
    # Identity model; B is A's size times 2: x -> (x + 0.5) * 2 - 0.5.
    np.testing.assert_allclose(out["points"], [[6.5, 10.5], [20.5, 0.5], [30.5, 30.5]], atol=1e-3)
    assert out["names"] == ["nose", "ear", "tail"] and out["visible"] == [True, False, True]
    assert out["in_image"] == [True, True, True] and (out["width"], out["height"]) == (32, 32)
    pic = Image.open(d / "ab" / "transfer.png")
    assert pic.size[1] == 384 and pic.size[0] == 384 * 2 + 8
    arr = np.asarray(pic).astype(int)
    colours = palette(3)
    # Point k of A at (x, y) is drawn at ((x + 0.5) * 24 - 0.5, ...) on the left (384 / 16 = 24 px per px),
    # and its transfer at ((x' + 0.5) * 12 - 0.5 + 392, ...) on the right; invisible points are not drawn.
    assert tuple(arr[131, 83]) == colours[0]
    assert tuple(arr[131, 475]) == colours[0]  # B's (6.5, 10.5): ((6.5 + 0.5) * 12 - 0.5 + 392, (10.5 + 0.5) * 12 - 0.5)
    assert tuple(arr[11, 251]) != colours[1]

    assert main(["transfer", str(d / "b.png"), str(d / "a.png"), "--points", str(d / "ab" / "b_points.json"), "--out",
                 str(d / "ba"), *common]) == 0
    back = json.loads((d / "ba" / "a_points.json").read_text())
    np.testing.assert_allclose(back["points"], [[3, 5], [10, 0], [15, 15]], atol=1e-3)


def test_keypoint_json_forms_and_errors(tmp_path):
    kp = parse_keypoints([[1, 2], [3, 4]])
    assert kp.points.tolist() == [[1.0, 2.0], [3.0, 4.0]] and kp.names is None
    kp = parse_keypoints([{"x": 1, "y": 2, "name": "l"}, {"x": 3, "y": 4, "name": "r", "visible": False}])
    assert kp.names == ["l", "r"] and kp.visible == [True, False]
    kp = parse_keypoints({"points": [[1, 2], [3, 4]], "permutation": [1, 0]})
    assert kp.permutation == [1, 0]
    for bad in ({"pts": []}, [], [[1]], {"points": [[1, 2]], "names": ["a", "b"]}, {"points": [[1, 2]], "permutation": [1]}):
        with pytest.raises(ValueError):
            parse_keypoints(bad)
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_keypoints(tmp_path / "x.json")


def test_transfer_reports_bad_points_file(setup, capsys):
    d, ckpt = setup
    (d / "bad.json").write_text(json.dumps({"points": "here"}))
    assert main(["transfer", str(d / "a.png"), str(d / "b.png"), "--points", str(d / "bad.json"), "--out",
                 str(d / "o"), "--ckpt", str(ckpt), "--device", "cpu"]) == 1
    assert "bad.json" in capsys.readouterr().err


def test_legacy_flag_gives_the_predictors_legacy_points(setup):
    from gangealing.data.images import read_image, to_tensor
    from gangealing.predictor import Congealer

    d, ckpt = setup
    for flags, legacy in (([], False), (["--legacy"], True)):
        assert main(["transfer", str(d / "a.png"), str(d / "b.png"), "--points", str(d / "a.json"), "--out",
                     str(d / f"t{legacy}"), "--ckpt", str(ckpt), "--device", "cpu", "--input-size", "32", *flags]) == 0
        got = json.loads((d / f"t{legacy}" / "b_points.json").read_text())["points"]
        a, b = (to_tensor(read_image(d / n, "RGB"))[None] for n in ("a.png", "b.png"))
        pts = torch.tensor([[[3.0, 5.0], [10.0, 0.0], [15.0, 15.0]]])
        c = Congealer.from_checkpoint(ckpt, device="cpu", input_size=32)
        want = c.transfer_points(a, b, pts, legacy=legacy)[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-3)
    legacy_pts = json.loads((d / "tTrue" / "b_points.json").read_text())["points"]
    standard = json.loads((d / "tFalse" / "b_points.json").read_text())["points"]
    assert not np.allclose(legacy_pts, standard, atol=1e-3)  # legacy's normalisation mixes 16 and 32 px frames
