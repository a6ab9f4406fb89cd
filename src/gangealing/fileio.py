"""Atomic file writes: a reader (or a killed process) sees the old file or the new one, never half."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, then move it into place.

    The temporary file gets the permissions of an ordinary new file (``mkstemp`` makes it 0600)
    and is removed if ``write`` fails or the process is interrupted; a full disk raises an
    ``OSError`` (``ENOSPC``) that names ``path``, and leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno == errno.ENOSPC and e.filename is None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e  # name the file
        raise
    return path


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_output_folder(path: PathLike) -> Path:
    """``path`` as a folder to write into; a ``ValueError`` when it is a file or lies under one
    (``/dev/null/out``), before any work is done."""
    p = Path(path)
    probe = _existing(p)
    if not probe.is_dir():
        where = "is a file" if probe == p else f"lies under {probe}, which is not a folder"
        raise ValueError(f"output folder {path} {where}; choose a folder for the outputs")
    return p


def check_not_input(out: PathLike, source, what: str = "the input model") -> Path:
    """``out`` as a path to write; a ``ValueError`` when it is the file ``source`` names (a path or
    anything else, e.g. a released model's name): inputs are never overwritten."""
    o = Path(out)
    if isinstance(source, (str, os.PathLike)) and Path(source).exists() and o.exists() \
            and o.resolve() == Path(source).resolve():
        raise ValueError(f"--out {o} is {what}; the input model is never overwritten: choose another --out")
    return o


def check_output_file(path: PathLike) -> Path:
    """``path`` as a file to write; a ``ValueError`` when it is a folder or lies under a file."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"output {path} is a folder; give a file name")
    probe = _existing(p.parent)
    if not probe.is_dir():
        raise ValueError(f"output {path} lies under {probe}, which is not a folder; choose another path")
    return p


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (what was measured or loaded, exactly)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def save_npy(path: PathLike, array) -> Path:
    """``np.save`` of ``array`` to ``path`` (which should end in ``.npy``), atomically."""
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, array))
