"""`gangealing export` and the onnxruntime back-end: the exported transformer's grids equal PyTorch's
(committed models, the parity fixture's transformer), the commands' --backend onnx, temporal smoothing."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gangealing.apps.live import GridSmoother, LiveEditor
from gangealing.cli import main
from gangealing.predictor import Congealer

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("onnx", reason="the onnx extra is not installed")

from gangealing.export import OnnxCongealer, export_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-4


def model(name):
    return REPO / "models" / name / "model.pt"


def images(n=3, h=40, w=52, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def assert_same_alignment(c, o, x, resolution):
    a, b = c.align(x, output_resolution=resolution), o.align(x, output_resolution=resolution)
    torch.testing.assert_close(b.grid, a.grid, atol=ATOL, rtol=0)
    assert torch.equal(b.flipped, a.flipped)
    assert (a.cluster is None and b.cluster is None) or torch.equal(b.cluster, a.cluster)
    if a.matrix is not None:
        torch.testing.assert_close(b.matrix, a.matrix, atol=ATOL, rtol=0)
    torch.testing.assert_close(b.images, a.images, atol=1e-3, rtol=0)
    return a, b


@pytest.mark.parametrize("name, flip, input_size", [
    ("gangealing-tiny-cat", None, None),
    ("gangealing-tiny-cat", True, 64),  # flip inference in the graph, fed at twice the trained size
    ("gangealing-tiny-cat-sim", None, None),  # similarity only
    ("gangealing-tiny-cat-k2flips", None, None),  # two clusters, routed (and mirrored) by the classifier
])
def test_committed_models_export_with_the_same_grids(name, flip, input_size):
    c = Congealer.from_checkpoint(model(name), device="cpu", flip=flip, input_size=input_size)
    o = OnnxCongealer.from_congealer(c)
    x = images(4)
    a, _ = assert_same_alignment(c, o, x, 48)
    if flip:  # the test would not see a wrong flip choice if no image were mirrored
        xs = torch.cat([x, x.flip(3)])
        assert c.align(xs).flipped.any()
        assert_same_alignment(c, o, xs, 32)
    if c.num_clusters > 1:
        assert a.cluster is not None


def test_parity_fixture_transformer_exports_with_the_same_grids(parity_dir):
    """The original's recorded STN (128 px input, flow 64): exported grids equal PyTorch's and the original's."""
    from gangealing.config import STNConfig
    from gangealing.models.stn import SpatialTransformer

    cfg = STNConfig(transforms=("similarity", "flow"), flow_size=64, input_size=128, channel_multiplier=0.125,
                    max_channels=32, num_heads=1)
    stn = SpatialTransformer(cfg).eval()
    stn.load_state_dict(torch.load(parity_dir / "stn" / "stn.pt"), strict=True)
    x = torch.load(parity_dir / "stn" / "inputs.pt")["x"]  # (4, 3, 128, 128)
    ref = torch.load(parity_dir / "stn" / "outputs_forward.pt")
    for flip, key in ((False, "fwd"), (True, "flip")):
        c = Congealer(stn, flip=flip, device="cpu")
        o = OnnxCongealer.from_congealer(c)
        _, b = assert_same_alignment(c, o, x, 128)
        if key == "fwd":  # the original's own grid and flow, recorded at output size 128
            torch.testing.assert_close(b.grid, ref["fwd"]["grid"], atol=ATOL, rtol=0)
            torch.testing.assert_close(b.flow, ref["fwd"]["flow"], atol=ATOL, rtol=0)


def test_export_command_writes_graph_side_file_and_edit(tmp_path, capsys):
    edit = np.zeros((32, 32, 4), np.uint8)
    edit[8:20, 10:24] = (255, 0, 0, 255)
    from PIL import Image

    Image.fromarray(edit, "RGBA").save(tmp_path / "edit.png")
    out = tmp_path / "cat.onnx"
    assert main(["export", str(model("gangealing-tiny-cat")), str(out), "--edit", str(tmp_path / "edit.png")]) == 0
    info = json.loads((tmp_path / "cat.onnx.json").read_text())
    assert info["input_size"] == 32 and info["flow_size"] == 32 and info["outputs"][0] == "grid"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cat.onnx.edit.png")), edit)
    assert "exported the transformer" in capsys.readouterr().out
    # The file runs on its own, with the checkpoint's grids.
    c = Congealer.from_checkpoint(model("gangealing-tiny-cat"), device="cpu")
    assert_same_alignment(c, OnnxCongealer.load(out), images(2), 32)


def test_export_and_backend_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(model("gangealing-tiny-cat")), str(tmp_path / "x.pt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    (tmp_path / "lonely.onnx").write_bytes(b"not a model")
    rc = main(["align", str(tmp_path), "--ckpt", str(tmp_path / "lonely.onnx"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "side file" in err and "Traceback" not in err
    rc = main(["align", str(tmp_path), "--ckpt", str(tmp_path / "lonely.onnx"), "--iters", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0 and "--iters" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"f{i}.png")
    return d


def test_align_backend_onnx_writes_the_same_grids_as_torch(tmp_path, frames_dir):
    ckpt = str(model("gangealing-tiny-cat"))
    for backend in ("torch", "onnx"):
        assert main(["align", str(frames_dir), "--ckpt", ckpt, "--out", str(tmp_path / backend), "--backend", backend,
                     "--output-resolution", "40"]) == 0
    for g in sorted((tmp_path / "torch" / "grids").glob("*.npy")):
        np.testing.assert_allclose(np.load(tmp_path / "onnx" / "grids" / g.name), np.load(g), atol=ATOL, rtol=0)
    rec = [json.loads((tmp_path / b / "results.json").read_text()) for b in ("torch", "onnx")]
    assert len(list((tmp_path / "onnx" / "grids").glob("*.npy"))) == 3
    assert [r["flipped"] for r in rec[0]["images"]] == [r["flipped"] for r in rec[1]["images"]]


def test_propagate_and_video_backend_onnx_match_torch(tmp_path, frames_dir):
    from PIL import Image

    edit = np.zeros((32, 32, 4), np.uint8)
    edit[4:28, 4:28] = (0, 255, 0, 255)
    Image.fromarray(edit, "RGBA").save(tmp_path / "edit.png")
    ckpt = str(model("gangealing-tiny-cat"))
    outs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"p_{backend}"
        assert main(["propagate", str(frames_dir), "--ckpt", ckpt, "--edit", str(tmp_path / "edit.png"),
                     "--out", str(out), "--backend", backend]) == 0
        outs[backend] = [np.asarray(Image.open(p)).astype(int) for p in sorted((out / "propagated").glob("*.png"))]
        v = tmp_path / f"v_{backend}"
        assert main(["video", str(frames_dir), "--ckpt", ckpt, "--dense-points", "8", "--out", str(v),
                     "--backend", backend]) == 0
        outs[backend + "_corr"] = np.load(v / "correspondences.npy")
    assert len(outs["onnx"]) == 3
    changed = [(a != f).any(-1).mean() for a, f in zip(outs["torch"], outs["onnx"])]
    assert max(changed) < 0.01  # grids within 1e-4: at most a rounding step on a few edge pixels
    assert any((a[..., 1] == 255).mean() > 0.05 for a in outs["onnx"])  # the edit is there
    np.testing.assert_allclose(outs["onnx_corr"], outs["torch_corr"], atol=1e-2, rtol=0)


def test_backend_auto_picks_onnxruntime_on_the_cpu():
    import argparse

    from gangealing.commands.align import load_congealer

    args = argparse.Namespace(ckpt=str(model("gangealing-tiny-cat-sim")), device="cpu", iters=None, padding_mode=None,
                              flip=None, input_size=None, output_resolution=None, backend="auto")
    c, _ = load_congealer(args)
    assert isinstance(c, OnnxCongealer)
    args.backend = "torch"
    assert isinstance(load_congealer(args)[0], Congealer)


# ---- temporal smoothing -------------------------------------------------------------------------


def test_smoothing_off_is_exact_and_on_reduces_jitter():
    torch.manual_seed(0)
    base = torch.rand(1, 8, 8, 2) * 2 - 1
    jitter = base + 0.05 * torch.randn(40, 8, 8, 2)  # a still object, aligned with noise
    assert torch.equal(GridSmoother(0.0)(jitter), jitter)
    smoothed = GridSmoother(0.8)(jitter)
    assert torch.equal(smoothed[0], jitter[0])
    raw_step = (jitter[1:] - jitter[:-1]).abs().mean()
    smooth_step = (smoothed[1:] - smoothed[:-1]).abs().mean()
    assert smooth_step < 0.4 * raw_step
    assert (smoothed[10:] - base).abs().mean() < 0.6 * (jitter[10:] - base).abs().mean()


def test_smoothing_restarts_when_the_flip_changes():
    g = torch.stack([torch.full((4, 4, 2), 0.5), torch.full((4, 4, 2), -0.5)])
    out = GridSmoother(0.9)(g, flipped=torch.tensor([False, True]))
    assert torch.equal(out, g)  # a mirrored frame is not averaged with an unmirrored one
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        GridSmoother(1.0)


def test_live_editor_puts_the_edit_where_the_grid_says():
    """Identity transformer: the template's pixel (x, y) is the frame's pixel (x, y)."""
    from gangealing.build import build
    from gangealing.config import STNConfig

    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=16))
    c = Congealer(stn, flip=False, device="cpu")
    edit = torch.full((4, 32, 32), -1.0)
    edit[1], edit[3], edit[3, 8:16, 20:28] = 1.0, 0.0, 1.0  # a green square, the rest transparent
    frame = np.full((32, 32, 3), 100, np.uint8)
    for runner in (c, OnnxCongealer.from_congealer(c)):
        out = LiveEditor(runner, edit).process(frame)
        green = (out.image[..., 1] == 255) & (out.image[..., 0] < 100)
        assert green[9:15, 21:27].all() and not green[:, :18].any() and not green[20:].any()


def test_video_smooth_averages_the_correspondences_over_frames(tmp_path, frames_dir):
    ckpt = str(model("gangealing-tiny-cat"))
    corr = {}
    for smooth in ("0", "0.5"):
        out = tmp_path / f"s{smooth}"
        assert main(["video", str(frames_dir), "--ckpt", ckpt, "--dense-points", "4", "--out", str(out),
                     "--smooth", smooth]) == 0
        corr[smooth] = np.load(out / "correspondences.npy")  # (3, 16, 2)
    raw, smoothed = corr["0"], corr["0.5"]
    np.testing.assert_allclose(smoothed[0], raw[0], atol=1e-5)  # the first frame has no past
    # Frame 1 is halfway between frames 0 and 1 (points are read linearly from the averaged grids).
    np.testing.assert_allclose(smoothed[1], 0.5 * (raw[0] + raw[1]), atol=1e-3)
    assert np.abs(raw[1] - raw[0]).max() > 0.1  # the frames do differ, so the check above means something
