"""The web page in a real headless browser (Debian's Chromium driven by Playwright).

Upload an image, paint a stroke with the mouse, wait for the propagated image, and check that it
changed exactly where the stroke maps (an identity-initialised model saved as a checkpoint: the
stroke's canvas pixels are the image's pixels) and nowhere else.
"""
import base64
import io
import threading

import numpy as np
import pytest
import torch

from helpers import launch_browser

pytest.importorskip("flask", reason="the web extra (Flask) is not installed")

CANVAS = 64  # canvas side = image side: with an identity model, canvas pixel (x, y) is image pixel (x, y)
BRUSH = 12


@pytest.fixture(scope="module")
def browser():
    yield from launch_browser()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`gangealing serve`'s pieces on a free loopback port, with an identity model loaded from a checkpoint."""
    from gangealing.build import build, make_checkpoint
    from gangealing.checkpoint import save_checkpoint
    from gangealing.config import STNConfig
    from gangealing.predictor import Congealer
    from gangealing.web import Workspace, create_app, make_server

    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=16))
    path = save_checkpoint(make_checkpoint("model", {"stn": stn}), tmp_path_factory.mktemp("web") / "identity.pt")
    congealer = Congealer.from_checkpoint(path, device="cpu", flip=False)
    avg = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    srv = make_server(create_app(Workspace(congealer, avg, None, canvas=CANVAS)), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.port}"
    srv.shutdown()
    thread.join(timeout=10)


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def segment_distance(h, w, a, b):
    """Distance of each pixel centre (x + 0.5, y + 0.5 in canvas units) to the segment a-b."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-12), 0, 1)
    return np.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1]))


def test_paint_a_stroke_and_see_it_on_the_uploaded_image(browser, server):
    from PIL import Image

    rng = np.random.default_rng(0)
    image = rng.integers(90, 166, (CANVAS, CANVAS, 3), dtype=np.uint8)  # far from the paint colour everywhere
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")

    page = browser.new_page(viewport={"width": 1200, "height": 800})
    messages = []
    page.on("console", lambda m: messages.append(m.text) if m.type == "error" else None)
    page.goto(server)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=20_000)
    page.set_input_files("#images-file", files=[{"name": "grey.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    page.wait_for_function("Number(document.getElementById('results').dataset.version) >= 1", timeout=20_000)
    before = page.eval_on_selector("img.result", "im => im.src")
    assert np.array_equal(decode_png(base64.b64decode(before.split(",", 1)[1]))[..., :3], image)  # empty edit

    page.eval_on_selector("#size", f"el => {{ el.value = '{BRUSH}'; el.dispatchEvent(new Event('input')); }}")
    page.eval_on_selector("#color", "el => { el.value = '#ff3030'; }")
    box = page.locator("#stroke").bounding_box()
    scale = box["width"] / CANVAS
    start, end = (12.0, 20.0), (44.0, 36.0)  # canvas pixels
    to_screen = lambda p: (box["x"] + p[0] * scale, box["y"] + p[1] * scale)  # noqa: E731
    page.mouse.move(*to_screen(start))
    page.mouse.down()
    page.mouse.move(*to_screen(end), steps=12)
    page.mouse.up()
    page.wait_for_function("Number(document.getElementById('results').dataset.version) >= 2", timeout=20_000)

    src = page.eval_on_selector("img.result", "im => im.src")
    result = decode_png(base64.b64decode(src.split(",", 1)[1]))[..., :3]
    edit_url = page.eval_on_selector("#edit", "c => c.toDataURL('image/png')")
    alpha = decode_png(base64.b64decode(edit_url.split(",", 1)[1]))[..., 3]
    changed = np.any(result != image, axis=-1)

    # Where the stroke maps: every pixel well inside the brush changed, nothing outside it did.
    dist = segment_distance(CANVAS, CANVAS, start, end)
    assert changed[dist <= BRUSH / 2 - 1].all()
    assert not changed[dist > BRUSH / 2 + 1].any()
    # And exactly the painted pixels of the page's own edit layer (anti-aliased rim: alpha >= 8/255 must show).
    assert not changed[alpha == 0].any()
    assert changed[alpha >= 8].all()
    assert np.all(result[dist <= BRUSH / 2 - 1] == (255, 48, 48))
    assert not messages, messages

    page.close()


def test_a_non_image_upload_shows_a_message(browser, server):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=20_000)
    page.set_input_files("#images-file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.wait_for_function("document.getElementById('status').classList.contains('error')", timeout=20_000)
    text = page.inner_text("#status")
    assert "notes.txt: not an image" in text and "Traceback" not in text
    page.close()
