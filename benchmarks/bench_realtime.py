"""Real-time edit propagation: frames per second, PyTorch vs onnxruntime, per model and frame size.

Not a test: it prints numbers for this machine (a JSON line per measurement, then a Markdown table).

    python benchmarks/bench_realtime.py                          # committed models + paper width, 64/128/256 px
    python benchmarks/bench_realtime.py --models gangealing-tiny-cat --sizes 128 --frames 100
    python benchmarks/bench_realtime.py --threads 1 --json out.json

Per model, frame size P and back-end: ``--frames`` timed frames after ``--warmup`` untimed ones,
one frame at a time, as live video arrives. "edit" is the whole live step
(:class:`gangealing.apps.live.LiveEditor`: uint8 frame in, transformer, the edit splatted at P x P
points and alpha-composited, uint8 frame out); "model" is the transformer alone on the prepared
input. fps = 1 / median seconds per frame. The transformer runs at its own input size (frames are
resized to it, as the predictor does). ``paper`` is the paper's transformer width (flow size 128,
input 256, channel multiplier 0.5, up to 512 channels) with random weights (speed does not depend
on them).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("gangealing-tiny-cat", "gangealing-tiny-cat-k2flips", "gangealing-tiny-cat-sim", "paper")


def load(name: str):
    import torch

    from gangealing.build import build
    from gangealing.config import STNConfig
    from gangealing.predictor import Congealer

    if name == "paper":
        torch.manual_seed(0)
        cfg = STNConfig(flow_size=128, input_size=256, channel_multiplier=0.5, max_channels=512)
        return Congealer(build("stn", cfg), device="cpu", flip=False)
    path = Path(name)
    if not path.is_file():
        path = REPO / "models" / name / "model.pt"
    return Congealer.from_checkpoint(path, device="cpu")


def timed(fn, frames: int, warmup: int) -> float:
    """Median seconds of ``fn()`` over ``frames`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(name: str, sizes, frames: int, warmup: int, backends):
    import numpy as np
    import torch

    from gangealing.apps.live import LiveEditor
    from gangealing.export import OnnxCongealer

    congealer = load(name)
    runners = {}
    if "torch" in backends:
        runners["torch"] = congealer
    if "onnx" in backends:
        t = time.perf_counter()
        runners["onnx"] = OnnxCongealer.from_congealer(congealer)
        print(f"# {name}: exported in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    rng = np.random.default_rng(0)
    edit = torch.zeros(4, 64, 64)
    edit[0], edit[3, 16:48, 16:48] = 1.0, 1.0  # a red, opaque square in the middle of the template
    rows = []
    for p in sizes:
        frame = rng.integers(0, 256, (p, p, 3), dtype=np.uint8)
        x, _ = congealer.prepare(torch.from_numpy(frame).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0))
        for backend, c in runners.items():
            live = LiveEditor(c, edit)
            model = (lambda c=c: c.run(x)) if backend == "onnx" else (lambda c=c: c._run(x, c.flow_size))
            with torch.no_grad():
                s_edit = timed(lambda: live.process(frame), frames, warmup)
                s_model = timed(model, frames, warmup)
            row = {"model": name, "px": p, "input_size": congealer.input_size, "backend": backend,
                   "threads": torch.get_num_threads(), "edit_ms": 1000 * s_edit, "edit_fps": 1 / s_edit,
                   "model_ms": 1000 * s_model, "model_fps": 1 / s_model}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def table(rows) -> str:
    lines = ["| model | input | frame px | PyTorch fps (model) | onnxruntime fps (model) | edit ms/frame torch / onnx |",
             "| --- | --- | --- | --- | --- | --- |"]
    key = {}
    for r in rows:
        key.setdefault((r["model"], r["px"]), {})[r["backend"]] = r
    for (m, p), b in key.items():
        t, o = b.get("torch"), b.get("onnx")
        f = lambda r: "-" if r is None else f"**{r['edit_fps']:.0f}** ({r['model_fps']:.0f})"  # noqa: E731
        ms = " / ".join("-" if r is None else f"{r['edit_ms']:.1f}" for r in (t, o))
        lines.append(f"| {m} | {(t or o)['input_size']} | {p} | {f(t)} | {f(o)} | {ms} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="committed model names, checkpoint paths, or 'paper'")
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256], help="frame sides in pixels")
    ap.add_argument("--frames", type=int, default=60, help="timed frames per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed frames first")
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    ap.add_argument("--backends", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"])
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        rows += bench(name, args.sizes, args.frames, args.warmup, args.backends)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
