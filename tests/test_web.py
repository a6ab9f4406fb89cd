"""The web page's API (gangealing.web) through Flask's test client, on an identity-initialised tiny model."""
import base64
import io
import json

import numpy as np
import pytest
import torch

pytest.importorskip("flask", reason="the web extra (Flask) is not installed")

from PIL import Image  # noqa: E402

from gangealing.web import Limits, Workspace, create_app  # noqa: E402
from helpers import identity_congealer  # noqa: E402

CANVAS = 32


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def from_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def client():
    gen = torch.Generator().manual_seed(1)
    avg_images = torch.rand(3, 3, 16, 16, generator=gen) * 2 - 1
    demo = torch.rand(2, 3, 24, 24, generator=gen) * 2 - 1
    ws = Workspace(identity_congealer(), avg_images, demo, canvas=CANVAS, limits=Limits(max_images=3, max_sets=2))
    app = create_app(ws, max_upload_bytes=200_000)
    return app.test_client()


def upload(client, arrays, names=None):
    names = names or [f"im{i}.png" for i in range(len(arrays))]
    data = {"images": [(io.BytesIO(png(a) if isinstance(a, np.ndarray) else a), n) for a, n in zip(arrays, names)]}
    return client.post("/api/images", data=data, content_type="multipart/form-data")


def test_page_and_static_files_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and b"<canvas" in page.data
    assert b"http://" not in page.data and b"https://" not in page.data  # nothing from a CDN
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/static/../app.py").status_code == 404
    info = client.get("/api/info").get_json()
    assert info["canvas"] == CANVAS and info["frame"] == 16 and info["demo"] == "demo"
    avg = Image.open(io.BytesIO(client.get("/api/average.png").data))
    assert avg.size == (CANVAS, CANVAS)


def test_propagate_changes_exactly_the_painted_pixels(client):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (CANVAS, CANVAS, 3), dtype=np.uint8)
    out = upload(client, [image])
    assert out.status_code == 200, out.get_json()
    body = out.get_json()
    assert body["images"][0]["width"] == CANVAS and np.array_equal(from_data_url(body["images"][0]["url"]), image)

    edit = np.zeros((CANVAS, CANVAS, 4), np.uint8)
    edit[5:12, 20:27] = (0, 255, 0, 255)
    res = client.post("/api/propagate", data={"set": body["set"], "edit": (io.BytesIO(png(edit)), "edit.png")},
                      content_type="multipart/form-data")
    assert res.status_code == 200, res.get_json()
    result = from_data_url(res.get_json()["images"][0])
    changed = np.any(result != image, axis=-1)
    assert np.array_equal(changed, edit[..., 3] > 0)  # identity model: the edit lands where it was painted
    assert np.all(result[5:12, 20:27] == (0, 255, 0))


def test_points_transfer_between_images_and_average(client):
    out = upload(client, [np.zeros((16, 16, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)]).get_json()
    pts = client.post("/api/points", json={"set": out["set"], "source": 0, "x": 3.0, "y": 10.0}).get_json()
    # identity model: pixel (3, 10) of a 16 px image is pixel (6.5, 20.5) of a 32 px one and of the 32 px canvas
    np.testing.assert_allclose(pts["images"], [[3.0, 10.0], [6.5, 20.5]], atol=1e-3)
    np.testing.assert_allclose(pts["average"], [6.5, 20.5], atol=1e-3)
    back = client.post("/api/points", json={"set": out["set"], "source": "average", "x": 6.5, "y": 20.5}).get_json()
    np.testing.assert_allclose(back["images"], [[3.0, 10.0], [6.5, 20.5]], atol=1e-3)


@pytest.mark.parametrize("change, words", [
    ('"x": NaN', "finite numbers"), ('"x": 1e309', "finite numbers"), ('"y": Infinity', "finite numbers"),
    ('"x": true', "finite numbers"), ('"x": "3"', "finite numbers"),
    ('"source": true', "whole number"), ('"source": 0.5', "whole number"), ('"source": "0"', "whole number"),
])
def test_points_refuse_what_is_not_a_finite_number_or_an_index(client, change, words):
    key = upload(client, [np.zeros((16, 16, 3), np.uint8)]).get_json()["set"]
    fields = {"set": f'"{key}"', "source": "0", "x": "3.0", "y": "10.0"}
    name, value = change.split(": ", 1)
    fields[name.strip('"')] = value
    body = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"  # raw: json.dumps cannot write 1e309
    r = client.post("/api/points", data=body, content_type="application/json")
    assert r.status_code == 400 and words in json.loads(r.data)["error"]


def test_demo_set_is_available(client):
    body = client.get("/api/sets/demo").get_json()
    assert [im["width"] for im in body["images"]] == [24, 24]


@pytest.mark.parametrize("case", ["not_image", "too_many", "too_large", "no_files", "unknown_set", "bad_json"])
def test_bad_requests_get_a_clear_json_message(client, case):
    if case == "not_image":
        r = upload(client, [b"%PDF-1.4 not an image"], names=["notes.pdf"])
        expect = "notes.pdf: not an image"
    elif case == "too_many":
        r = upload(client, [np.zeros((4, 4, 3), np.uint8)] * 4)
        expect = "too many images"
    elif case == "too_large":
        r = upload(client, [np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)])
        expect = "upload too large"
    elif case == "no_files":
        r = client.post("/api/images", data={}, content_type="multipart/form-data")
        expect = "no files received"
    elif case == "unknown_set":
        r = client.post("/api/propagate", data={"set": "nope", "edit": (io.BytesIO(png(np.zeros((4, 4, 4), np.uint8))), "e.png")},
                        content_type="multipart/form-data")
        expect = "unknown image set"
    else:
        r = client.post("/api/points", data="{", content_type="application/json")
        expect = "expected JSON"
    assert 400 <= r.status_code < 500
    body = json.loads(r.data)
    assert expect in body["error"]
    assert b"Traceback" not in r.data


def test_old_sets_are_dropped_but_the_demo_stays(client):
    keys = [upload(client, [np.zeros((4, 4, 3), np.uint8)]).get_json()["set"] for _ in range(3)]
    assert client.get(f"/api/sets/{keys[0]}").status_code == 400
    assert client.get(f"/api/sets/{keys[-1]}").status_code == 200
    assert client.get("/api/sets/demo").status_code == 200


def test_serve_without_checkpoint_reports_where_it_looked(tmp_path, monkeypatch, capsys):
    from gangealing.cli import main
    from gangealing.web import demo

    monkeypatch.setattr(demo, "default_checkpoint_candidates", lambda: [tmp_path / "missing.pt"])
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "demo model was not found" in err and "missing.pt" in err and "--ckpt" in err


def test_default_checkpoint_is_found_in_the_repository():
    from gangealing.web import find_default_checkpoint

    assert find_default_checkpoint().name == "model.pt"


def test_an_edit_of_another_size_is_resized_to_the_canvas(client):
    image = np.full((CANVAS, CANVAS, 3), 100, np.uint8)
    key = upload(client, [image]).get_json()["set"]
    edit = np.zeros((CANVAS // 2, CANVAS // 2, 4), np.uint8)
    edit[:, : CANVAS // 4] = (255, 255, 255, 255)  # left half, opaque white
    res = client.post("/api/propagate", data={"set": key, "edit": (io.BytesIO(png(edit)), "e.png"), "opacity": "1"},
                      content_type="multipart/form-data")
    result = from_data_url(res.get_json()["images"][0]).astype(int)[1:-1]
    # Inside the frame only: the identity grid upsampled from the 16 px flow is not exact on the border pixels.
    assert np.all(result[:, 1: CANVAS // 2 - 1] == 255) and np.all(result[:, CANVAS // 2 + 1:] == 100)
