"""Real-time edit propagation: frames per second, PyTorch vs onnxruntime, per model and frame size.

Not a test: it prints numbers for this machine (a JSON line per measurement, then a Markdown table).

    python benchmarks/bench_realtime.py                          # committed models + paper width, 64/128/256 px
    python benchmarks/bench_realtime.py --models gangealing-tiny-cat --sizes 128 --frames 100
    python benchmarks/bench_realtime.py --threads 1 --json out.json
    python benchmarks/bench_realtime.py --ort-web node_modules/onnxruntime-web/dist    # + in the browser
    python benchmarks/bench_realtime.py --page --models gangealing-tiny-cat              # + the web page

``--page`` runs the web page's live mode in headless Chromium with a synthetic camera (a Y4M clip of a
moving square, ``--use-file-for-fake-video-capture``) for ``--page-seconds`` per model, frame size
and back-end, and reports the page's frame rate and its median round trip per frame (grab, JPEG,
POST, decode, model, splat, PNG, draw), with the server's share.

``--ort-web DIST`` (``npm install onnxruntime-web``; DIST its ``dist`` folder) also times the exported
transformer alone in headless Chromium with onnxruntime-web's WebAssembly back-end (Playwright, the
system Chromium; the page is served with the cross-origin isolation headers that wasm threads need):
the alternative to running the model on the server in the web page's live mode (docs/web.md).

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


ORT_WEB_PAGE = """<!doctype html><meta charset="utf-8"><script src="/dist/ort.min.js"></script><script>
async function bench(model, side, frames, threads) {
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = "/dist/";
  const s = await ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  const x = new ort.Tensor("float32", new Float32Array(3 * side * side).fill(0.1), [1, 3, side, side]);
  for (let i = 0; i < 3; i++) await s.run({ image: x });
  const times = [];
  for (let i = 0; i < frames; i++) { const t = performance.now(); await s.run({ image: x }); times.push(performance.now() - t); }
  times.sort((a, b) => a - b);
  return { median_ms: times[times.length >> 1], isolated: self.crossOriginIsolated };
}
</script>"""


def bench_ort_web(names, dist: str, frames: int, threads: int):
    """The exported transformer in headless Chromium (onnxruntime-web, wasm): median ms per run."""
    import functools
    import http.server
    import os
    import shutil
    import tempfile
    import threading

    from playwright.sync_api import sync_playwright

    from gangealing.export import export_onnx

    class Handler(http.server.SimpleHTTPRequestHandler):
        def end_headers(self):  # cross-origin isolation: SharedArrayBuffer, so wasm threads
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
            super().end_headers()

        def log_message(self, *args):
            pass

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(dist, os.path.join(tmp, "dist"))
        Path(tmp, "bench.html").write_text(ORT_WEB_PAGE)
        sides = {}
        for name in names:
            c = load(name)
            export_onnx(c, os.path.join(tmp, f"{name}.onnx"))
            sides[name] = c.input_size
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=tmp))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        exe = shutil.which("chromium") or "/usr/bin/chromium"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, args=["--headless", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{srv.server_address[1]}/bench.html")
                for name in names:
                    r = page.evaluate(f"bench('{name}.onnx', {sides[name]}, {frames}, {threads})")
                    row = {"model": name, "backend": "onnxruntime-web (wasm)", "threads": threads,
                           "input_size": sides[name], "model_ms": r["median_ms"], "model_fps": 1000 / r["median_ms"],
                           "isolated": r["isolated"]}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                browser.close()
        finally:
            srv.shutdown()
    return rows


def bench_page(names, sizes, seconds: float, backends):
    """The web page's live mode, camera faked: fps and ms per frame as the page measures them."""
    import shutil
    import tempfile
    import threading

    import numpy as np
    import torch
    from playwright.sync_api import sync_playwright

    from gangealing.apps.live import write_y4m
    from gangealing.web import Workspace, create_app, make_server

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    edit = np.zeros((64, 64, 4), np.uint8)
    edit[20:44, 20:44] = (255, 0, 0, 255)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "edit.png").write_bytes(_png(edit))
        for p in sizes:
            frames = np.zeros((20, p, p, 3), np.uint8)
            for i in range(20):  # a bright square gliding across
                a = p // 4 + (i * p) // 80
                frames[i, p // 4 : p // 2 + p // 4, a : a + p // 2] = 220
            clip = Path(tmp, f"clip{p}.y4m")
            write_y4m(clip, frames, fps=30)
            args = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
                    "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}"]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=exe, args=args)
                for name in names:
                    for backend in backends:
                        ws = Workspace(load(name), torch.zeros(1, 3, 32, 32), None, canvas=64, live_backend=backend)
                        srv = make_server(create_app(ws), "127.0.0.1", 0)
                        threading.Thread(target=srv.serve_forever, daemon=True).start()
                        try:
                            page = browser.new_page()
                            page.goto(f"http://127.0.0.1:{srv.port}/")
                            page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')")
                            page.set_input_files("#edit-file", str(Path(tmp, "edit.png")))
                            page.select_option("#live-size", str(p))
                            page.click("#live-camera")
                            page.wait_for_function("Number(document.getElementById('live-stats').dataset.frames) >= 10",
                                                   timeout=120_000)
                            f0, t0 = page.evaluate("live.frames"), time.perf_counter()
                            page.wait_for_timeout(1000 * seconds)
                            f1, t1 = page.evaluate("live.frames"), time.perf_counter()
                            log = page.evaluate("live.log.map((e) => [e.ms].concat(e.server))")
                            page.close()
                        finally:
                            srv.shutdown()
                        med = lambda k: statistics.median(e[k] for e in log)  # noqa: E731
                        row = {"model": name, "px": p, "backend": backend, "page_fps": (f1 - f0) / (t1 - t0),
                               "page_ms": med(0), "server_model_ms": med(2),
                               "server_io_ms": statistics.median(e[1] + e[3] for e in log)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                browser.close()
    return rows


def _png(array) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def table(rows) -> str:
    lines = ["| model | input px | frame px | PyTorch fps (model alone) | onnxruntime fps (model alone) "
             "| ms per frame, PyTorch / onnxruntime |",
             "| --- | --- | --- | --- | --- | --- |"]
    key = {}
    for r in rows:
        key.setdefault((r["model"], r["px"]), {})[r["backend"]] = r
    for (m, p), b in key.items():
        t, o = b.get("torch"), b.get("onnx")
        n = lambda v: f"{v:.0f}" if v >= 10 else f"{v:.1f}"  # noqa: E731
        f = lambda r: "-" if r is None else f"**{n(r['edit_fps'])}** ({n(r['model_fps'])})"  # noqa: E731
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
    ap.add_argument("--ort-web", default=None, metavar="DIST",
                    help="onnxruntime-web's dist folder: also time the transformer in headless Chromium")
    ap.add_argument("--page", action="store_true", help="also measure the web page's live mode (fake camera)")
    ap.add_argument("--page-seconds", type=float, default=8.0, help="seconds measured per page setting")
    ap.add_argument("--skip-direct", action="store_true", help="skip the in-process measurements")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in [] if args.skip_direct else args.models:
        rows += bench(name, args.sizes, args.frames, args.warmup, args.backends)
    web = bench_ort_web(args.models, args.ort_web, args.frames, args.threads) if args.ort_web else []
    page = bench_page(args.models, args.sizes, args.page_seconds, args.backends) if args.page else []
    if args.json:
        Path(args.json).write_text(json.dumps(rows + web + page, indent=1))
    if rows:
        print(table(rows))
    for r in page:
        print(f"page, {r['model']} at {r['px']} px ({r['backend']}): {r['page_fps']:.1f} fps, {r['page_ms']:.1f} ms per "
              f"frame (server: model {r['server_model_ms']:.1f} ms, decode + encode {r['server_io_ms']:.1f} ms)")
    for r in web:
        print(f"in the browser, {r['model']} ({r['input_size']} px input): {r['model_ms']:.1f} ms per run "
              f"({r['model_fps']:.1f} fps), onnxruntime-web wasm, {r['threads']} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
