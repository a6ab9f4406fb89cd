"""Work splitting across torchrun processes: shard / gather, and `align` under 2 gloo processes."""
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from gangealing.apps.sharding import gather, is_main, shard, shard_indices


@dataclass(frozen=True)
class FakeDist:
    rank: int
    world_size: int


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_partition_in_order(n, world):
    items = [f"item{i}" for i in range(n)]
    parts = [shard(items, FakeDist(r, world)) for r in range(world)]
    assert sorted(sum(parts, [])) == sorted(items)
    for r, part in enumerate(parts):
        assert part == items[r::world]
        assert list(shard_indices(n, FakeDist(r, world))) == list(range(r, n, world))


def test_gather_single_process_is_identity():
    assert gather([3, 1, 2], None) == [3, 1, 2]
    assert gather([3, 1, 2], FakeDist(0, 1)) == [3, 1, 2]
    assert is_main(None) and not is_main(FakeDist(1, 2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(path: Path) -> None:
    from gangealing.build import build, make_checkpoint
    from gangealing.checkpoint import save_checkpoint
    from gangealing.config import STNConfig

    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=8))
    with torch.no_grad():  # a non-identity flow so images differ in score and flip
        stn.flow_net.warp_head.flow_out[-1].weight.normal_(0, 0.5)
    save_checkpoint(make_checkpoint("model", {"stn": stn}), path)


def test_align_under_torchrun_matches_one_process(tmp_path):
    from gangealing.cli import main

    _tiny_model(tmp_path / "m.pt")
    rng = np.random.default_rng(0)
    from PIL import Image

    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i}.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG broken")
    args = ["align", str(tmp_path / "in"), "--ckpt", str(tmp_path / "m.pt"), "--device", "cpu", "--batch-size", "2"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "gangealing", *args, "--out", str(tmp_path / "two")]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun did not finish within 120 s on this machine")
    if proc.returncode != 0 and ("gloo" in proc.stderr.lower() and "connect" in proc.stderr.lower()):
        pytest.skip(f"torchrun cannot start gloo processes here: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[:3000]

    one = json.loads((tmp_path / "one" / "results.json").read_text())["images"]
    two = json.loads((tmp_path / "two" / "results.json").read_text())["images"]
    assert two == one  # same records, same (input) order, the broken file included once
    assert [r["index"] for r in two] == list(range(6))
    for r in one:
        if "error" in r:
            continue
        a = np.asarray(Image.open(tmp_path / "one" / r["image"]))
        b = np.asarray(Image.open(tmp_path / "two" / r["image"]))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(np.load(tmp_path / "one" / r["grid"]), np.load(tmp_path / "two" / r["grid"]), atol=1e-6)
    a = np.asarray(Image.open(tmp_path / "one" / "average.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "two" / "average.png"), dtype=int)
    assert np.abs(a - b).max() <= 1  # float sums in another order
