"""The Flask application: a static page (``static/``) and a small JSON API over a :class:`Workspace`.

API (all JSON answers; errors are ``{"error": message}`` with a 4xx/5xx status, never a traceback):

* ``GET  /api/info``: canvas size, limits, the model's frame, the demo set's id.
* ``GET  /api/average.png``: the average congealed image (canvas x canvas).
* ``POST /api/images`` (multipart, field ``images``, several files): a new set -> ``{"set", "images"}``.
* ``GET  /api/sets/<set>``: the set's images (data URLs, names, sizes).
* ``POST /api/propagate`` (multipart: ``set``, ``edit`` an RGBA PNG, optional ``opacity``):
  ``{"images": [data URLs]}``, the edit composited onto each image.
* ``POST /api/points`` (JSON ``{"set", "source": index | "average", "x", "y"}``): the point everywhere.
* ``POST /api/live/edit`` (multipart: ``edit`` an RGBA PNG, optional ``opacity``): the edit live frames
  get; the first call prepares the live back-end -> ``{"backend"}``.
* ``POST /api/live/frame?stream=ID&smooth=A`` (body: one frame as a JPEG / PNG file): the frame with the
  edit carried onto it, as a PNG; headers ``X-Server-Ms`` (decode, model, encode) and ``X-Backend``.
"""
from __future__ import annotations

import logging
import math
from importlib import resources
from pathlib import Path

from .workspace import BadInput, Workspace, data_url, decode_image, edit_tensor, tensor_png

log = logging.getLogger(__name__)

STATIC_DIR = Path(str(resources.files("gangealing.web").joinpath("static")))


def _require_flask():
    try:
        import flask  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the web page needs Flask: pip install 'gangealing[web]'") from None


def _number(value) -> float:
    """A finite JSON number (NaN, infinities, booleans and strings are refused: the answer must be valid JSON)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return float(value)


def _unit(value, name: str, high: float) -> float:
    """A form / query number in [0, high]; :class:`BadInput` otherwise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not 0.0 <= v <= high:
        raise BadInput(f"{name} must be a number in [0, {high:g}]")
    return v


def create_app(workspace: Workspace, *, max_upload_bytes: int = 32 * 1024 * 1024):
    """A Flask app serving the page and the API for ``workspace``."""
    _require_flask()
    from flask import Flask, jsonify, request, send_from_directory
    from werkzeug.exceptions import HTTPException

    app = Flask("gangealing.web", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_bytes)  # larger requests get a 413
    app.config["MAX_FORM_MEMORY_SIZE"] = int(max_upload_bytes)
    app.json.sort_keys = False
    ws = workspace

    def error(message: str, status: int):
        return jsonify(error=message), status

    @app.errorhandler(BadInput)
    def _bad_input(e):
        return error(str(e), 400)

    @app.errorhandler(HTTPException)
    def _http(e):
        if e.code == 413:
            return error(f"upload too large (at most {max_upload_bytes // (1024 * 1024)} MiB per request)", 413)
        return error(f"{e.name}: {e.description}", e.code or 500)

    @app.errorhandler(Exception)
    def _internal(e):
        log.exception("request failed")  # the trace stays in the server's log
        return error(f"internal error ({type(e).__name__}); see the server log", 500)

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC_DIR, name)

    @app.get("/api/info")
    def info():
        c = ws.congealer
        return jsonify(canvas=ws.canvas, frame=ws.frame_size, clusters=c.num_clusters, cluster=ws.cluster,
                       demo="demo" if _has_set("demo") else None, max_images=ws.limits.max_images,
                       max_side=ws.limits.max_side, max_upload_mib=max_upload_bytes // (1024 * 1024))

    def _has_set(key):
        try:
            ws.get_set(key)
            return True
        except BadInput:
            return False

    @app.get("/api/average.png")
    def average():
        return app.response_class(ws.average_png, mimetype="image/png")

    def describe(key: str):
        s = ws.get_set(key)
        return [dict(name=n, width=int(im.shape[-1]), height=int(im.shape[-2]), url=data_url(png))
                for n, im, png in zip(s.names, s.images, ws.originals(key))]

    @app.post("/api/images")
    def upload():
        files = request.files.getlist("images")
        if len(files) > ws.limits.max_images:
            raise BadInput(f"too many images: {len(files)} (at most {ws.limits.max_images})")
        key = ws.add_set([(f.filename or f"image_{i}", f.read()) for i, f in enumerate(files) if f])
        return jsonify(set=key, images=describe(key))

    @app.get("/api/sets/<key>")
    def get_set(key):
        return jsonify(set=key, images=describe(key))

    def form_edit():
        """The edit (4, R, R) and opacity of a multipart request."""
        f = request.files.get("edit")
        if f is None:
            raise BadInput("no edit received (field 'edit': an RGBA PNG)")
        opacity = _unit(request.form.get("opacity", 1.0), "opacity", 1.0)
        rgba = decode_image(f.read(), "edit", "RGBA", ws.limits)
        return edit_tensor(rgba, ws.canvas), opacity

    @app.post("/api/propagate")
    def propagate():
        key = request.form.get("set", "")
        ws.get_set(key)  # an unknown set fails before the edit is decoded
        edit, opacity = form_edit()
        out = ws.propagate(key, edit, opacity=opacity)
        return jsonify(images=[data_url(tensor_png(im)) for im in out])

    @app.post("/api/live/edit")
    def live_edit():
        edit, opacity = form_edit()
        return jsonify(backend=ws.set_live_edit(edit, opacity))

    @app.post("/api/live/frame")
    def live_frame():
        data = request.get_data(cache=False)
        if not data:
            raise BadInput("no frame received (POST one JPEG or PNG frame as the request body)")
        smooth = _unit(request.args.get("smooth", 0.0), "smooth", 0.99)
        png, info = ws.live_frame(request.args.get("stream", "default")[:64], data, smooth)
        res = app.response_class(png, mimetype="image/png")
        res.headers["X-Server-Ms"] = f"{info['decode_ms']:.2f},{info['model_ms']:.2f},{info['encode_ms']:.2f}"
        res.headers["X-Backend"] = info["backend"]
        res.headers["Cache-Control"] = "no-store"
        return res

    @app.post("/api/points")
    def points():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadInput('expected JSON {"set", "source", "x", "y"}')
        usage = 'expected JSON {"set", "source": image index or "average", "x", "y"} with finite numbers'
        try:
            x, y, source = _number(body["x"]), _number(body["y"]), body["source"]
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BadInput(usage) from None
        if source != "average" and (isinstance(source, bool) or not isinstance(source, int)):
            raise BadInput(f'"source" must be an image index (a whole number) or "average", got {source!r}')
        return jsonify(ws.points(str(body.get("set", "")), source, x, y))

    return app
