"""The web page's live mode in a real headless browser with a synthetic camera.

Chromium's fake camera plays a Y4M clip of a cat silhouette moving across the frame; the page streams
its frames to the server, which carries the painted edit onto each one. For every frame the page
sent and showed, the edit must cover the pixels that the model's correspondences say (the same frame
aligned here with PyTorch, the edit splatted along its grid) and sit where the edit's centre maps
(uncongeal_points), frame after frame, while the cat moves.
"""
import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import identity_congealer, launch_browser

pytest.importorskip("flask", reason="the web extra (Flask) is not installed")

REPO = Path(__file__).resolve().parents[1]
CANVAS = 64
SIDE = 128  # frame side (the page's default "frame side")
CENTRE, RADIUS = (34.0, 26.0), 7  # the painted disc, canvas pixels


def cat_clip(n=12):
    """A cat silhouette (embedded test image, upscaled to 88 px) gliding across a dark 128 px frame."""
    try:
        from gangealing.web.demo import load_demo_images

        cats, _ = load_demo_images("animals:cat")
    except Exception as e:  # noqa: BLE001 - the embedded datasets are an optional install
        pytest.skip(f"the embedded cat images are not installed ({e})")
    cat = torch.nn.functional.interpolate(cats[3:4], size=(88, 88), mode="bilinear", align_corners=False)
    cat = ((cat[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)  # (88, 88, 3)
    frames = np.full((n, SIDE, SIDE, 3), 0, np.uint8)
    for i in range(n):
        x, y = 6 + 3 * i, 20 + (i % 4) * 2
        frames[i, y : y + 88, x : x + 88] = cat
    return frames


@pytest.fixture(scope="module")
def congealer():
    from gangealing.predictor import Congealer

    return Congealer.from_checkpoint(REPO / "models" / "gangealing-tiny-cat" / "model.pt", device="cpu")


@pytest.fixture(scope="module")
def live_server(congealer):
    from gangealing.web import Workspace, create_app, make_server

    backend = "onnx" if _has_onnx() else "torch"
    avg = torch.zeros(1, 3, 32, 32)
    ws = Workspace(congealer, avg, None, canvas=CANVAS, live_backend=backend)
    srv = make_server(create_app(ws), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.port}", backend
    srv.shutdown()
    thread.join(timeout=10)


def _has_onnx():
    from gangealing.export import onnx_available

    return onnx_available()


@pytest.fixture(scope="module")
def camera_browser(tmp_path_factory):
    clip = tmp_path_factory.mktemp("camera") / "cat.y4m"
    from gangealing.apps.live import write_y4m

    write_y4m(clip, cat_clip(), fps=30)  # a new position about every page frame
    yield from launch_browser(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                               f"--use-file-for-fake-video-capture={clip}", "--autoplay-policy=no-user-gesture-required"])


def edit_png():
    from PIL import Image

    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5
    disc = np.hypot(xs - CENTRE[0] - 0.5, ys - CENTRE[1] - 0.5) <= RADIUS
    rgba = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    rgba[disc] = (255, 0, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue(), rgba


def red(img):
    img = img.astype(int)
    return (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)


def test_live_camera_frames_carry_the_edit_where_the_correspondences_say(camera_browser, live_server, congealer):
    from PIL import Image

    from gangealing.apps.live import LiveEditor
    from gangealing.web.workspace import Limits, decode_image, edit_tensor

    url, backend = live_server
    png, rgba = edit_png()
    page = camera_browser.new_page(viewport={"width": 1300, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=20_000)
    page.set_input_files("#edit-file", files=[{"name": "edit.png", "mimeType": "image/png", "buffer": png}])
    page.click("#live-camera")
    page.wait_for_function("Number(document.getElementById('live-stats').dataset.frames) >= 10", timeout=90_000)
    stats = page.inner_text("#live-stats")
    log = page.evaluate("""async () => {
        const b64 = async (blob) => { const a = new Uint8Array(await blob.arrayBuffer()); let s = '';
            for (const c of a) s += String.fromCharCode(c); return btoa(s); };
        const entries = live.log.slice();
        return Promise.all(entries.map(async (e) => ({ sent: await b64(e.sent), shown: await b64(e.shown), ms: e.ms })));
    }""")
    page.click("#live-stop")
    page.close()
    assert "fps" in stats and backend in stats, stats

    edit = edit_tensor(rgba, CANVAS)
    expected_editor = LiveEditor(congealer, edit)  # PyTorch, no smoothing: each frame on its own
    centre = (torch.tensor([[list(CENTRE)]]) + 0.5) * (congealer.flow_size / CANVAS) - 0.5  # congealed-frame pixels
    checked, centroids = 0, []
    for entry in log:
        frame = decode_image(base64.b64decode(entry["sent"]), "frame", "RGB", Limits())  # what the server decoded
        shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["shown"]))).convert("RGB"))
        assert shown.shape == frame.shape == (SIDE, SIDE, 3)
        got, want = red(shown), red(expected_editor.process(frame).image)
        assert want.sum() > 30, "the edit must land inside the frame for the test to mean something"
        iou = (got & want).sum() / (got | want).sum()
        assert iou > 0.95, iou
        x = torch.from_numpy(frame.copy()).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
        target = congealer.uncongeal_points(x, centre)[0, 0].numpy()  # where the edit's centre maps in this frame
        ys, xs = np.nonzero(got)
        centroid = np.array([xs.mean(), ys.mean()])
        assert np.hypot(*(centroid - target)) < 3.0, (centroid, target)
        centroids.append(centroid)
        checked += 1
    assert checked >= 8
    spread = np.ptp(np.array(centroids)[:, 0])
    assert spread > 4, f"the cat moves across the frame, so the edit must too (x spread {spread:.1f} px)"
    assert not errors, errors


# ---- the live API without a browser ------------------------------------------------------------


@pytest.fixture(scope="module")
def live_client():
    from gangealing.web import Workspace, create_app

    ws = Workspace(identity_congealer(), torch.zeros(1, 3, 16, 16), None, canvas=32, live_backend="torch")
    return create_app(ws).test_client()


def png_of(array):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_live_frame_without_an_edit_comes_back_unchanged_then_with_it(live_client):
    from PIL import Image

    frame = np.random.default_rng(0).integers(90, 166, (32, 32, 3), dtype=np.uint8)  # never red
    r = live_client.post("/api/live/frame?stream=a", data=png_of(frame), content_type="image/png")
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB")), frame)
    assert r.headers["X-Backend"] == "torch" and len(r.headers["X-Server-Ms"].split(",")) == 3
    edit = np.zeros((32, 32, 4), np.uint8)
    edit[4:12, 20:28] = (255, 0, 0, 255)
    r = live_client.post("/api/live/edit", data={"edit": (io.BytesIO(png_of(edit)), "edit.png")})
    assert r.status_code == 200 and r.get_json()["backend"] == "torch"
    r = live_client.post("/api/live/frame?stream=a", data=png_of(frame), content_type="image/png")
    got = red(np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB")))
    # Identity model, canvas side = frame side: the square's pixels exactly.
    want = np.zeros_like(got)
    want[4:12, 20:28] = True
    assert np.array_equal(got, want)


@pytest.mark.parametrize("query, body, message", [
    ("?smooth=1.5", b"x", "smooth must be a number in [0, 0.99]"),
    ("?smooth=nan", b"x", "smooth must be a number"),
    ("", b"", "no frame received"),
    ("", b"not an image", "frame: not an image"),
])
def test_live_frame_bad_requests_get_one_line_errors(live_client, query, body, message):
    r = live_client.post("/api/live/frame" + query, data=body, content_type="image/jpeg")
    assert r.status_code == 400
    assert message in r.get_json()["error"] and "\n" not in r.get_json()["error"]
