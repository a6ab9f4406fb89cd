"""gangealing.distributed (one home for processes, devices and work splitting), and the folder and
video commands under 2 gloo processes giving what one process gives."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing import distributed
from gangealing.apps import sharding
from gangealing.train import runtime


def test_one_home_for_the_distributed_helpers():
    for name in ("barrier", "finish", "gather", "init_distributed", "is_main", "shard", "shard_indices"):
        assert getattr(sharding, name) is getattr(distributed, name)
    for name in ("DistInfo", "pick_device", "init_distributed", "cleanup_distributed", "barrier", "all_reduce_mean",
                 "any_process", "all_reduce_dict", "all_reduce_grads", "broadcast_module"):
        assert getattr(runtime, name) is getattr(distributed, name)


def test_single_process_is_a_no_op(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = distributed.init_distributed("cpu")
    assert info == distributed.DistInfo(0, 1, 0, torch.device("cpu"), True)
    distributed.barrier()
    distributed.barrier(info)
    distributed.finish(info)
    assert distributed.gather([3, 4], info) == [3, 4] and distributed.is_main(info) and distributed.is_main(None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DRIVER = """
import sys
from pathlib import Path

from gangealing.apps.curate import curate_dataset
from gangealing.apps.propagate import propagate_files
from gangealing.apps.video import dense_points, process_video
from gangealing.data.edits import read_edit
from gangealing.distributed import finish, init_distributed
from gangealing.predictor import Congealer

root, out = Path(sys.argv[1]), Path(sys.argv[2])
dist = init_distributed("cpu")
congealer = Congealer.from_checkpoint(str(root / "m.pt"), device="cpu")
edit = read_edit(root / "edit.png")
process_video(congealer, root / "in", out / "video", edit=edit, points=dense_points(3), points_size=3, congealed=True,
              batch_size=2, video_format="gif", dist=dist, progress=False)
propagate_files(congealer, [root / "in"], out / "prop", edit, batch_size=2, dist=dist)
curate_dataset(congealer, [root / "in"], out / "cur", output_resolution=12, min_effective_resolution=4,
               oob_threshold=0.9, batch_size=2, dist=dist, progress=False)
finish(dist)
"""


def test_propagate_video_curate_under_torchrun_match_one_process(tmp_path):
    from gangealing.apps.video import read_video
    from helpers import tiny_checkpoint

    tiny_checkpoint(tmp_path / "m.pt", translate=0.1)
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i}.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG broken")
    edit = np.zeros((16, 16, 4), np.uint8)
    edit[..., :3] = (250, 20, 130)
    edit[4:10, 3:12, 3] = 255
    Image.fromarray(edit).save(tmp_path / "edit.png")
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path), str(one)], env=env, check=True,
                   timeout=180)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(tmp_path / "driver.py"), str(tmp_path), str(two)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun did not finish within 180 s on this machine")
    if proc.returncode != 0 and ("gloo" in proc.stderr.lower() and "connect" in proc.stderr.lower()):
        pytest.skip(f"torchrun cannot start gloo processes here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    for kind in ("propagated", "congealed"):
        np.testing.assert_array_equal(read_video(one / "video" / f"{kind}.gif"), read_video(two / "video" / f"{kind}.gif"))
    np.testing.assert_allclose(np.load(one / "video" / "correspondences.npy"),
                               np.load(two / "video" / "correspondences.npy"), atol=1e-5)
    info_one, info_two = (json.loads((d / "video" / "video.json").read_text()) for d in (one, two))
    assert info_one == info_two and info_one["frames"] == 5 and not (two / "video" / ".parts").exists()
    records = json.loads((one / "prop" / "results.json").read_text())
    assert json.loads((two / "prop" / "results.json").read_text()) == records
    for r in records["records"]:
        if "image" in r:
            np.testing.assert_array_equal(np.asarray(Image.open(one / "prop" / r["image"])),
                                          np.asarray(Image.open(two / "prop" / r["image"])))
    assert (two / "prop" / "skipped.txt").read_text() == (one / "prop" / "skipped.txt").read_text()
    assert (two / "cur" / "curation.csv").read_text() == (one / "cur" / "curation.csv").read_text()
    assert sorted(p.name for p in (two / "cur" / "images").iterdir()) == sorted(p.name for p in (one / "cur" / "images").iterdir())
