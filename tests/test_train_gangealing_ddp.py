"""A 2-process CPU (gloo) GANgealing run under torchrun: it finishes and both ranks hold the same weights."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from gangealing.build import build
    from gangealing.config import GeneratorConfig
    from gangealing.losses.perceptual import PixelDistance
    from gangealing.train.gangealing import GANgealingTrainer
    from gangealing.train.presets import get_preset
    from gangealing.train.runtime import cleanup_distributed, init_distributed

    out = sys.argv[1]
    info = init_distributed("cpu")
    torch.manual_seed(0)  # the same frozen generator on both ranks
    g = build("generator", GeneratorConfig(size=16, style_dim=32, n_mlp=2, max_channels=16)).eval()
    cfg = get_preset("tiny", flow_size=16, input_size=16, stn_max_channels=16, batch=8, micro_batch=2, iters=3,
                     anneal_psi=1, period=1, pca_samples=300, inject=3, log_every=1, vis_every=100, ckpt_every=100)
    tr = GANgealingTrainer(cfg, g, out, dist=info, loss_fn=PixelDistance(2), show_progress=False)
    res = tr.fit()
    torch.save({"stn": tr.stn.state_dict(), "ema": tr.stn_ema.state_dict(), "target": tr.target.state_dict(),
                "accumulation": tr.accumulation, "step": res.step,
                "next_z": g.sample_z(2, generator=tr.rng)}, f"{out}/rank{info.rank}.pt")
    cleanup_distributed()
""")


@pytest.mark.slow
def test_two_gloo_processes_agree(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "run" / "rank0.pt")
    r1 = torch.load(tmp_path / "run" / "rank1.pt")
    assert r0["step"] == r1["step"] == 3
    assert r0["accumulation"] == 2  # 8 = 2 per pass x 2 processes x 2 passes
    assert not torch.equal(r0["next_z"], r1["next_z"])  # each rank draws its own samples ...
    for part in ("stn", "ema", "target"):  # ... yet the averaged gradients keep the weights equal
        for k, v in r0[part].items():
            assert torch.equal(v, r1[part][k]), (part, k)
    assert (tmp_path / "run" / "model.pt").is_file()  # written by rank 0 only
