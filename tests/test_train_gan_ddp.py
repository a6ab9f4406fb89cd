"""Two CPU processes (torchrun, gloo): gradients are averaged, weights stay identical, rank 0 writes."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from gangealing.checkpoint import load_checkpoint

SCRIPT = textwrap.dedent("""
    import json, os, sys, torch
    torch.set_num_threads(1)
    from gangealing.train.gan import GANTrainer, resolve_config
    data, out, cache = sys.argv[1:4]
    cfg = resolve_config("tiny", data=data, size=8, style_dim=16, n_mlp=1, g_max_channels=16, d_max_channels=16,
                         batch=2, iters=3, n_sample=4, log_every=1, sample_every=3, ckpt_every=3, d_reg_every=2,
                         r1=1.0, path_reg=1.0, g_reg_every=2)
    t = GANTrainer(cfg, out, device="cpu", cache_dir=cache, show_progress=False)
    res = t.train()
    sums = {"rank": t.di.rank, "world": t.di.world_size, "step": res.step,
            "G": float(sum(p.detach().double().sum() for p in t.G.parameters())),
            "D": float(sum(p.detach().double().sum() for p in t.D.parameters()))}
    with open(os.path.join(out, f"rank{t.di.rank}.json"), "w") as f:
        json.dump(sums, f)
""")


def test_two_process_gloo_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(data / f"{i}.png")
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(data), str(out), str(tmp_path / "cache")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 3
    # Different batches on each process, averaged gradients: identical weights everywhere.
    assert r0["G"] == r1["G"] and r0["D"] == r1["D"]
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert ckpt.step == 3 and ckpt.meta["images_seen"] == 3 * 2 * 2
