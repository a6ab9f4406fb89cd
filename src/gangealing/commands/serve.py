"""`gangealing serve`: a local web page to paint on the average congealed image and watch the edit land on every image."""
from __future__ import annotations

import argparse
import sys

from ._common import Formatter, device, image_side, non_negative_int, port, positive_int

ORDER = 90

EPILOG = """examples:
  gangealing serve                                  # the committed demo model, http://127.0.0.1:7860
  gangealing serve --ckpt cat --port 8000
  gangealing serve --ckpt model.pt --demo none      # no demo images: upload your own

the page: paint on the average congealed image (brush, colour, opacity, eraser) or upload an RGBA edit;
upload PNG / JPEG images (or use the demo images); the results update after each stroke; switch to
"pick points" and click any image to see the corresponding point on all the others; download the
results and the edit as PNG. Listens on 127.0.0.1 only unless --host says otherwise. See docs/web.md.
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="web page: paint on the average image, see it on every image",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Start a local web page (Flask, the 'web' extra) to paint an edit on the average "
                                   "congealed image and watch it propagate to uploaded or demo images, and to "
                                   "transfer points between images.")
    p.add_argument("--ckpt", default=None,
                   help="model checkpoint: our file, an original GANgealing .pt, or a released name "
                        "(default: the committed demo model models/gangealing-tiny-cat/model.pt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the page (and the model) to your network")
    p.add_argument("--port", type=port, default=7860, help="port to listen on (0: any free port)")
    p.add_argument("--demo", default="animals:cat",
                   help="embedded dataset whose held-out test images give the average and the demo images "
                        "(e.g. animals:cat, mnist:3), or 'none'")
    p.add_argument("--demo-count", type=positive_int, default=8, help="demo images shown on the page")
    p.add_argument("--canvas", type=image_side, default=256, help="side in pixels of the average image painted on")
    p.add_argument("--max-images", type=positive_int, default=16, help="images per upload")
    p.add_argument("--max-upload-mb", type=positive_int, default=32, help="largest request in MiB")
    p.add_argument("--max-side", type=image_side, default=512, help="uploaded images are downscaled to this long side")
    p.add_argument("--cluster", type=non_negative_int, default=0, help="clustering models: the cluster whose average is edited")
    p.add_argument("--live-backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="what aligns live video frames: onnxruntime (the 'onnx' extra; auto uses it on the CPU when "
                        "installed, measured faster, docs/web.md) or PyTorch")
    p.add_argument("--device", type=device, default=None, help="cpu, cuda, cuda:1 (default: a GPU if there is one, else cpu)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..predictor import Congealer
    from ..web import Limits, create_app, make_server
    from ..web.demo import demo_workspace, resolve_checkpoint_arg

    try:
        ckpt = resolve_checkpoint_arg(args.ckpt)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        import flask  # noqa: F401
    except ImportError:
        print("error: the web page needs Flask: pip install 'gangealing[web]'", file=sys.stderr)
        return 2
    congealer = Congealer.from_checkpoint(ckpt, device=args.device)
    limits = Limits(max_images=args.max_images, max_side=args.max_side)
    demo = None if str(args.demo).lower() == "none" else args.demo
    ws = demo_workspace(congealer, demo=demo, demo_count=args.demo_count, canvas=args.canvas, limits=limits,
                        cluster=args.cluster)
    ws.live_backend = args.live_backend
    app = create_app(ws, max_upload_bytes=args.max_upload_mb * 1024 * 1024)
    server = make_server(app, args.host, args.port)
    print(f"gangealing: serving {ckpt} on http://{args.host}:{server.port}/  (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
