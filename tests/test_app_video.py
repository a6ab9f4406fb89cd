"""`gangealing video`: edits and correspondences per frame of a video file or a frames folder."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.apps.video import FrameSource, chunk_range, read_video, write_video
from gangealing.cli import main

from helpers import tiny_checkpoint

av = pytest.importorskip("av")


def write_mp4(path, frames, fps=12):
    """A tiny H.264 (else MPEG-4) mp4 written with PyAV directly."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as c:
        s = c.add_stream(codec, rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture()
def clip(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    base = np.stack([xx * 4, yy * 6, np.full_like(xx, 60)], -1)  # smooth: survives compression
    frames = np.stack([base + 10 * i for i in range(8)]).clip(0, 255).astype(np.uint8)  # (8, 32, 48, 3)
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames)
    return path, frames


def test_video_file_edit_points_and_congealed(tmp_path, clip, capsys):
    path, frames = clip
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    edit = np.zeros((16, 16, 4), np.uint8)
    edit[..., :3] = (255, 0, 0)
    edit[5:11, 5:11, 3] = 255
    Image.fromarray(edit).save(tmp_path / "edit.png")
    pts = [[3.0, 4.0], [10.5, 7.0], [15.0, 0.0]]
    (tmp_path / "points.json").write_text(json.dumps({"points": pts}))
    out = tmp_path / "out"
    rc = main(["video", str(path), "--ckpt", ckpt, "--edit", str(tmp_path / "edit.png"), "--points",
               str(tmp_path / "points.json"), "--congealed", "--out", str(out), "--device", "cpu", "--batch-size", "3"])
    assert rc == 0, capsys.readouterr().err
    edited = read_video(out / "propagated.mp4")
    assert edited.shape == (8, 32, 48, 3)
    assert read_video(out / "congealed.mp4").shape == (8, 16, 16, 3)
    corr = np.load(out / "correspondences.npy")
    assert corr.shape == (8, 3, 2) and corr.dtype == np.float32
    # The identity model: the congealed frame is the transformer's input, the frame resized to
    # 16 x 11 and edge-padded to 16 x 16; its pixels map back to the frame through the InputFrame.
    from gangealing.predictor import InputFrame

    expected = InputFrame.for_image(32, 48, 16).to_original(torch.tensor(pts)).numpy()
    assert np.allclose(corr, expected[None], atol=1e-4)
    # The edit is red where it lands: the frame's centre region, nowhere near the corners.
    assert edited[:, 14:18, 22:26, 0].mean() > 200 and edited[:, 14:18, 22:26, 1].mean() < 60
    assert np.abs(edited[:, :4, :4].astype(int) - frames[:, :4, :4]).mean() < 12  # lossy codec
    info = json.loads((out / "video.json").read_text())
    assert info["frames"] == 8 and info["width"] == 48 and info["height"] == 32 and info["fps"] == 12


def test_frames_folder_skips_corrupt_frame_and_dense_points(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        if i == 2:
            (folder / f"f{i:03d}.png").write_bytes(b"garbage")
        else:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"f{i:03d}.png")
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 4:12] = 3
    Image.fromarray(labels).save(tmp_path / "labels.png")
    out = tmp_path / "out"
    rc = main(["video", str(folder), "--ckpt", ckpt, "--labels", str(tmp_path / "labels.png"), "--dense-points", "4",
               "--out", str(out), "--device", "cpu", "--format", "gif", "--fps", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped frame 2" in printed and "f002.png" in printed
    assert read_video(out / "propagated.gif").shape[0] == 4
    corr = np.load(out / "correspondences.npy")
    assert corr.shape == (4, 16, 2)
    # identity model, 16 px frames, 4x4 congealed lattice: pixel centres of 4 px cells
    lattice = (np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(-1, 2) + 0.5) * 4 - 0.5
    assert np.allclose(corr, lattice[None], atol=1e-4)
    info = json.loads((out / "video.json").read_text())
    assert info["frame_sources"] == [0, 1, 3, 4] and info["skipped"][0]["index"] == 2


def test_video_needs_something_to_do(tmp_path, clip):
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    assert main(["video", str(clip[0]), "--ckpt", ckpt, "--out", str(tmp_path / "o")]) == 2


def test_chunk_range_is_contiguous_and_covers_everything():
    class D:
        def __init__(self, r, w):
            self.rank, self.world_size = r, w

    for n, w in ((10, 3), (2, 4), (0, 2), (7, 1)):
        chunks = [chunk_range(n, D(r, w)) for r in range(w)]
        assert [i for c in chunks for i in c] == list(range(n))
        assert max(len(c) for c in chunks) - min(len(c) for c in chunks) <= 1


def test_writer_round_trip_and_odd_sizes(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (3, 9, 13, 3), dtype=np.uint8)
    for suffix in ("mp4", "webm", "gif"):
        write_video(frames, tmp_path / f"v.{suffix}", fps=10)
        back = read_video(tmp_path / f"v.{suffix}")
        assert back.shape[0] == 3 and back.shape[1:3] == ((9, 13) if suffix == "gif" else (10, 14))
    assert len(FrameSource(tmp_path / "v.mp4")) == 3
    with pytest.raises(ValueError, match="unknown video suffix"):
        write_video(frames, tmp_path / "v.xyz")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_video_under_torchrun_assembles_chunks_in_order(tmp_path):
    import os
    import subprocess
    import sys

    frames = np.stack([np.full((16, 16, 3), 30 * i, np.uint8) for i in range(7)])
    write_video(frames, tmp_path / "clip.mp4", fps=10)
    ckpt = tiny_checkpoint(tmp_path / "m.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gangealing", "video",
           str(tmp_path / "clip.mp4"), "--ckpt", ckpt, "--dense-points", "4", "--congealed", "--out",
           str(tmp_path / "out"), "--device", "cpu", "--batch-size", "2"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    back = read_video(tmp_path / "out" / "congealed.mp4")
    assert back.shape == (7, 16, 16, 3)
    assert np.abs(back.mean(axis=(1, 2, 3)) - frames.mean(axis=(1, 2, 3))).max() < 4  # frame order kept
    assert np.load(tmp_path / "out" / "correspondences.npy").shape == (7, 16, 2)
    assert not (tmp_path / "out" / ".parts").exists()
