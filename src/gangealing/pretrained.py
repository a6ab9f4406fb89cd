"""The original GANgealing release's pre-trained models, by name, wherever a checkpoint is asked for.

``Congealer.from_checkpoint("cat")`` and ``gangealing align photos/ --ckpt cat`` work as upstream:
the first use downloads ``<base>/<name>.pt`` (the original's published file) into the PyTorch hub
cache, ``torch.hub.get_dir()/checkpoints/gangealing/``, converts it to the gangealing format with
:func:`gangealing.io.import_checkpoint` and caches the conversion next to it
(``<name>.gangealing.pt``); later uses read the converted file only. Each model's test-time
settings (the original's ``PRETRAINED_TEST_HYPERPARAMS``: iterations, padding mode, number of
clusters) are stored in the converted checkpoint's ``meta["test"]`` and applied unless the caller
overrides them.

``<base>`` is ``http://efrosgans.eecs.berkeley.edu/gangealing/pretrained`` (the original's
location), or the environment variable ``GANGEALING_PRETRAINED_URL`` (any URL ``urllib``
opens, e.g. a mirror or ``file:///data/gangealing``). ``GANGEALING_CACHE`` overrides the cache
folder. Without network access the first use fails with one :class:`PretrainedUnavailable`
message saying where to put the file by hand.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Union

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

DEFAULT_URL = "http://efrosgans.eecs.berkeley.edu/gangealing/pretrained"
URL_ENV = "GANGEALING_PRETRAINED_URL"
CACHE_ENV = "GANGEALING_CACHE"

# The original's test-time settings per released model (utils/download.py). num_heads is the
# number of clusters; it is read from the weights and only checked against this.
PRETRAINED: Dict[str, Dict[str, Any]] = {
    "bicycle": {"padding_mode": "reflection", "iters": 3, "num_heads": 1},
    "car": {"padding_mode": "reflection", "iters": 3, "num_heads": 4},
    "cat": {"padding_mode": "border", "iters": 3, "num_heads": 1},
    "cat_ssl_mix6": {"padding_mode": "border", "iters": 3, "num_heads": 1},
    "celeba": {"padding_mode": "border", "iters": 1, "num_heads": 1},
    "cub": {"padding_mode": "border", "iters": 1, "num_heads": 1},
    "dog": {"padding_mode": "border", "iters": 3, "num_heads": 1},
    "horse": {"padding_mode": "reflection", "iters": 3, "num_heads": 4},
    "tvmonitor": {"padding_mode": "reflection", "iters": 3, "num_heads": 1},
}


class PretrainedUnavailable(CheckpointError):
    """A released model could not be downloaded (offline, moved, or a bad mirror URL)."""


def is_pretrained_name(source: Any) -> bool:
    """Whether ``source`` is a released model name (and not an existing file of that name)."""
    return isinstance(source, str) and source in PRETRAINED and not os.path.exists(source)


def cache_dir() -> Path:
    """Where released models are kept: ``$GANGEALING_CACHE`` or ``torch.hub.get_dir()/checkpoints/gangealing``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "gangealing"


def url_for(name: str) -> str:
    """The download URL of a released model (honours ``$GANGEALING_PRETRAINED_URL``)."""
    base = os.environ.get(URL_ENV) or DEFAULT_URL
    return f"{base.rstrip('/')}/{name}.pt"


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically (a killed download leaves no partial file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            shutil.copyfileobj(r, f, length=1 << 20)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def download_original(name: str) -> Path:
    """The original-format file of a released model, downloaded once into :func:`cache_dir`."""
    if name not in PRETRAINED:
        raise CheckpointError(f"unknown released model {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    dest = cache_dir() / f"{name}.pt"
    if dest.is_file():
        return dest
    url = url_for(name)
    try:
        _download(url, dest)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise PretrainedUnavailable(
            f"cannot download the released model {name!r} from {url} ({reason}). Without network access, "
            f"download {DEFAULT_URL}/{name}.pt elsewhere and save it as {dest}, pass the file's path "
            f"instead of the name, or point ${URL_ENV} at a mirror") from None
    return dest


def load_pretrained(name: str) -> Checkpoint:
    """A released model as a gangealing :class:`Checkpoint` (downloaded and converted on first use)."""
    from .io import import_checkpoint

    settings = dict(PRETRAINED[name]) if name in PRETRAINED else None
    if settings is None:
        raise CheckpointError(f"unknown released model {name!r}; known: {', '.join(sorted(PRETRAINED))}")
    converted = cache_dir() / f"{name}.gangealing.pt"
    if converted.is_file():
        return load_checkpoint(converted)
    original = download_original(name)
    ckpt, _ = import_checkpoint(original)
    heads = int(ckpt.config["stn"].get("num_heads", 1))
    if heads != settings["num_heads"]:
        raise CheckpointError(f"{original}: the released {name!r} model has {settings['num_heads']} clusters, "
                              f"this file has {heads}; delete it to download it again")
    ckpt.meta = dict(ckpt.meta)
    ckpt.meta["test"] = {**dict(ckpt.meta.get("test") or {}), **settings}
    ckpt.meta["pretrained"] = {"name": name, "url": url_for(name)}
    save_checkpoint(ckpt, converted)
    return ckpt


def resolve_checkpoint(source: Union[str, os.PathLike, Checkpoint]) -> Checkpoint:
    """Any checkpoint source -> :class:`Checkpoint`: a Checkpoint, a released name (the original's),
    a zoo name (this project's committed models, :mod:`gangealing.zoo`), or a file in any format
    :func:`gangealing.io.import_checkpoint` reads (ours, original GANgealing, ...)."""
    if isinstance(source, Checkpoint):
        return source
    if is_pretrained_name(source):
        return load_pretrained(source)
    path = Path(source)
    if not path.is_file() and isinstance(source, str):
        from .zoo import GENERATORS, MODELS, MODELS_ENV, resolve_model_file

        # This project's committed models by name ("gangealing-cat"), found the way `bench` finds them.
        entry = MODELS.get(source) or GENERATORS.get(source)
        if entry is not None:
            found = resolve_model_file(entry.path)
            if found is None:
                raise CheckpointError(f"{source}: a model of this project's zoo, but {entry.path} is not here; run "
                                      f"from a clone of the repository or set {MODELS_ENV} to the folder that "
                                      "holds models/")
            path = found
    if not path.exists():
        raise CheckpointError(f"{source}: no such checkpoint file, and not a released model name "
                              f"({', '.join(sorted(PRETRAINED))}) nor a zoo model name (gangealing.zoo)")
    from .io import import_checkpoint

    ckpt, _ = import_checkpoint(path)
    return ckpt
