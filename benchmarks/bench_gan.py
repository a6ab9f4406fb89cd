"""GAN training speed per preset, and the Fréchet distance against iterations.

Not a test: it prints numbers for this machine.

    python benchmarks/bench_gan.py                                   # s/iter and images/s for tiny, small
    python benchmarks/bench_gan.py --presets tiny small paper --steps 5
    python benchmarks/bench_gan.py --fd-run runs/gan-tiny-3          # FD of every numbered checkpoint of a run
    python benchmarks/bench_gan.py --fd-data mnist:3 --fd-iters 1000 --fd-every 250   # train, then FD vs iters

Speed: ``--steps`` timed training steps after ``--warmup`` untimed ones, each preset at its own
resolution, batch and widths, on the cat silhouettes (resized to the preset's size), median
seconds per step. R1 runs every 16th step and is timed with the rest (as in training).
FD: ``gangealing eval-gan`` on each checkpoint (``--fd-n`` generated and real images).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def bench_speed(preset: str, steps: int, warmup: int, data: str, device: str | None) -> dict:
    import torch

    from gangealing.train.timing import step_times
    from gangealing.train.gan import GANTrainer, resolve_config

    cfg = resolve_config(preset, data=data, iters=10**9, log_every=10**9, sample_every=10**9, ckpt_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        t = GANTrainer(cfg, tmp, device=device, show_progress=False, tensorboard=False)
        times = step_times(t.train_step, steps, warmup=warmup, device=t.device)
    s = statistics.median(times)
    n_g = sum(p.numel() for p in t.G.parameters())
    n_d = sum(p.numel() for p in t.D.parameters())
    return {"preset": preset, "size": cfg.size, "batch": cfg.batch, "device": str(t.device),
            "threads": torch.get_num_threads(), "G_params": n_g, "D_params": n_d,
            "sec_per_iter": round(s, 4), "images_per_sec": round(cfg.batch / s, 2), "steps": steps}


def fd_curve(run: Path, n: int, resolution: int) -> list:
    """FD of every numbered checkpoint of ``run`` (real statistics computed once)."""
    import torch

    from gangealing.build import build_from_checkpoint
    from gangealing.checkpoint import load_checkpoint
    from gangealing.data import prepare_dataset
    from gangealing.metrics.fid import MobileNetFeatures, extract_features, feature_stats, generator_fd, real_batches
    from gangealing.train.runtime import RunDir

    ckpts = RunDir(run, is_primary=False).numbered_checkpoints()
    if not ckpts:
        raise SystemExit(f"{run}: no numbered checkpoints (train with --keep 0 to keep them all)")
    tc = load_checkpoint(ckpts[0]).meta["train_config"]
    data = prepare_dataset(tc["data"], tc["size"], tc["pad"], split=tc.get("split", "train"))
    # The same real subset as `gangealing eval-gan --n N --seed 0`.
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:min(n, len(data))].sort().values
    extractor = MobileNetFeatures(resolution=resolution)
    real = feature_stats(extract_features(extractor, real_batches(data.images[idx.numpy()], len(idx))))
    rows = []
    for ck in ckpts:
        t0 = time.time()
        G = build_from_checkpoint(load_checkpoint(ck), "generator")
        res = generator_fd(G, None, n_fake=n, extractor=extractor, real_stats=real)
        rows.append({"checkpoint": ck.name, "step": int(ck.stem), "fd": round(res.fd, 3), "n_fake": n,
                     "n_real": res.n_real, "resolution": resolution, "seconds": round(time.time() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="*", default=["tiny", "small"], help="presets to time (paper: slow on CPU)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per preset")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--data", default="animals:cat", help="training data for the speed runs")
    p.add_argument("--device", default=None, help="cpu / cuda (default: GPU if any)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--fd-run", default=None, help="evaluate every numbered checkpoint of this run folder")
    p.add_argument("--fd-data", default=None, help="train a tiny run on this embedded dataset, then evaluate it")
    p.add_argument("--fd-iters", type=int, default=1000, help="iterations of that run")
    p.add_argument("--fd-every", type=int, default=250, help="checkpoint (and FD) every N iterations")
    p.add_argument("--fd-n", type=int, default=2000, help="generated (and real) images per FD")
    p.add_argument("--fd-resolution", type=int, default=128, help="feature-network input size")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    for preset in args.presets:
        print(json.dumps(bench_speed(preset, args.steps, args.warmup, args.data, args.device)), flush=True)
    run = Path(args.fd_run) if args.fd_run else None
    if args.fd_data:
        from gangealing.train.gan import resolve_config, train_gan

        run = Path(tempfile.mkdtemp(prefix="bench-gan-"))
        cfg = resolve_config("tiny", data=args.fd_data, iters=args.fd_iters, ckpt_every=args.fd_every, keep=0,
                             sample_every=args.fd_every)
        train_gan(cfg, run, device=args.device, show_progress=False)
    if run is not None:
        fd_curve(run, args.fd_n, args.fd_resolution)
    return 0


if __name__ == "__main__":
    sys.exit(main())
