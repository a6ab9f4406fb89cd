"""A local web page to paint on the average congealed image and watch the edit land on every image.

``gangealing serve`` starts it; :func:`create_app` and :class:`Workspace` are the pieces (Flask, the
``web`` extra, is imported only when an app is created).
"""
from .demo import demo_workspace, find_default_checkpoint
from .workspace import BadInput, Limits, Workspace


def create_app(*args, **kwargs):
    """The Flask app (see :mod:`gangealing.web.app`)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)


def make_server(app, host: str = "127.0.0.1", port: int = 7860):
    """A threaded WSGI server (werkzeug's) for ``app``; ``port=0`` picks a free port (``server.port``)."""
    from werkzeug.serving import make_server as _make

    return _make(host, int(port), app, threaded=True)


__all__ = ["BadInput", "Limits", "Workspace", "create_app", "demo_workspace", "find_default_checkpoint", "make_server"]
