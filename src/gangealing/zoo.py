"""The model zoo: the models and generators this project trained and committed, by name.

One registry for `gangealing bench`, `gangealing demo` and the Generators section. An entry says
where its file is (relative to a checkout: ``models/<name>/...``), which embedded data it aligns or
was trained on (``animals:cat``, ``mnist``, ``mnist:3``; see :mod:`gangealing.data.embedded`) and
how the tables name it. Files are looked up, in order, under ``$GANGEALING_MODELS`` (a folder that
holds ``models/``' contents or a checkout), the working directory, and the checkout this package
was imported from; a missing file is not an error here (the benchmark skips and lists it).

Any other model is benchable too: :func:`parse_model_spec` turns ``FILE=animals:giraffe`` (the
spelling of ``gangealing bench --model``) into an entry for that file.

These are this project's models; the original release's models (``cat``, ``car``, ...) live in
:mod:`gangealing.pretrained`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

__all__ = [
    "ModelEntry",
    "GeneratorEntry",
    "MODELS",
    "GENERATORS",
    "MODELS_ENV",
    "model_roots",
    "resolve_model",
    "resolve_model_file",
    "available_models",
    "parse_model_spec",
]

MODELS_ENV = "GANGEALING_MODELS"


@dataclass(frozen=True)
class ModelEntry:
    """A GANgealing model: where its file is, what it aligns, and its role in the tables."""

    path: str  # relative to a checkout (or absolute)
    dataset: str  # 'animals' or 'mnist'
    classes: Tuple[str, ...]  # the classes it was trained on (all of them for a clustering model)
    label: str  # how the tables name it
    ablation: bool = False
    note: str = ""

    @property
    def data(self) -> str:
        """The embedded-data name of what it aligns (``animals:cat``, ``mnist:3``, ``mnist``)."""
        if self.dataset == "mnist" and len(self.classes) == 10:
            return "mnist"
        return f"{self.dataset}:{','.join(self.classes)}"


@dataclass(frozen=True)
class GeneratorEntry:
    """A committed generator: its file (relative to a checkout) and the embedded data it was trained on."""

    path: str
    data: str
    note: str = ""


MODELS: Dict[str, ModelEntry] = {
    "gangealing-cat": ModelEntry("models/gangealing-cat/model.pt", "animals", ("cat",), "GANgealing (K=1, gan-cat)"),
    "gangealing-dog": ModelEntry("models/gangealing-dog/model.pt", "animals", ("dog",), "GANgealing (K=1, gan-dog)"),
    "gangealing-horse": ModelEntry("models/gangealing-horse/model.pt", "animals", ("horse",),
                                   "GANgealing (K=1 + flips, gan-horse)"),
    "gangealing-tiny-cat": ModelEntry("models/gangealing-tiny-cat/model.pt", "animals", ("cat",),
                                      "GANgealing (tiny, K=1, gan-tiny-cat)"),
    "gangealing-tiny-cat-k2flips": ModelEntry("models/gangealing-tiny-cat-k2flips/model.pt", "animals", ("cat",),
                                              "GANgealing (tiny, K=2 + flips, gan-tiny-cat)"),
    "gangealing-tiny-cat-sim": ModelEntry("models/gangealing-tiny-cat-sim/model.pt", "animals", ("cat",),
                                          "similarity-only ablation (tiny, gan-tiny-cat)", ablation=True),
    "gangealing-tiny-mnist3": ModelEntry("models/gangealing-tiny-mnist3/model.pt", "mnist", ("3",),
                                         "GANgealing (tiny, K=1, input jitter)"),
    "gangealing-mnist-k10": ModelEntry("models/gangealing-mnist-k10/model.pt", "mnist",
                                       tuple(str(d) for d in range(10)), "GANgealing (K=10, Lloyd seeds + re-seeding, gan-mnist)"),
}

GENERATORS: Dict[str, GeneratorEntry] = {
    "gan-mnist": GeneratorEntry("models/gan-mnist/generator.pt", "mnist", "tiny (R1 1), CPU, 19.4k steps of 16"),
    "gan-tiny-mnist": GeneratorEntry("models/gan-tiny-mnist/generator.pt", "mnist", "tiny, CPU, 7k steps of 16"),
    "gan-tiny-cat": GeneratorEntry("models/gan-tiny-cat/generator.pt", "animals:cat", "tiny, CPU, 2.5k steps of 16"),
    "gan-cat": GeneratorEntry("models/gan-cat/generator.pt", "animals:cat", "tiny arch., H200, 3.8k steps of 64"),
    "gan-cat-r1": GeneratorEntry("models/gan-cat-r1/generator.pt", "animals:cat", "tiny (R1 1, ADA), CPU, 8.9k steps of 16"),
    "gan-dog": GeneratorEntry("models/gan-dog/generator.pt", "animals:dog", "tiny arch., H200, 3.7k steps of 64"),
    "gan-dog-r1": GeneratorEntry("models/gan-dog-r1/generator.pt", "animals:dog", "tiny (R1 1, ADA), CPU, 11.3k steps of 16"),
    "gan-horse": GeneratorEntry("models/gan-horse/generator.pt", "animals:horse", "tiny arch., H200, 3.8k steps of 64"),
    "gan-horse-r1": GeneratorEntry("models/gan-horse-r1/generator.pt", "animals:horse",
                                   "tiny (R1 1, ADA), CPU, 20.8k steps of 16"),
}


def model_roots() -> List[Path]:
    """Where repository-relative model paths are looked up, in order."""
    roots = []
    env = os.environ.get(MODELS_ENV)
    if env:
        # Either a checkout-like folder (holding models/) or the models folder itself.
        roots += [Path(env), Path(env).parent] if Path(env).name == "models" else [Path(env)]
    roots.append(Path.cwd())
    here = Path(__file__).resolve().parents[2]  # src/gangealing/zoo.py -> the checkout (when not installed as a wheel)
    if (here / "models").is_dir():
        roots.append(here)
    return roots


def resolve_model_file(path: Union[str, os.PathLike], root: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """A repository-relative (or absolute) file, looked up under ``root`` or :func:`model_roots`; None if absent."""
    p = Path(path)
    if p.is_absolute():
        return p if p.is_file() else None
    for r in ([Path(root)] if root is not None else model_roots()):
        if (r / p).is_file():
            return r / p
    return None


def resolve_model(name: str, root: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
    """The file of registry model ``name``, or None when it is not there."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; the zoo has: {', '.join(MODELS)}")
    return resolve_model_file(MODELS[name].path, root)


def available_models(names: Optional[Iterable[str]] = None, root=None) -> Tuple[Dict[str, Path], List[str]]:
    """``({name: path}, [missing names])`` over ``names`` (default: the whole registry)."""
    found, missing = {}, []
    for n in (list(names) if names is not None else list(MODELS)):
        p = resolve_model(n, root)
        (missing.append(n) if p is None else found.__setitem__(n, p))
    return found, missing


def parse_model_spec(spec: str) -> Tuple[str, ModelEntry]:
    """``FILE=DATA[=LABEL]`` -> ``(name, entry)`` for a model that is not in the zoo.

    ``DATA`` names what the model aligns: ``animals:CLASS`` (mask-transfer rows on that class's test
    silhouettes), ``mnist:DIGIT`` (PCK rows) or ``mnist`` (a 10-cluster model: clustering accuracy).
    The name is the file's folder name (``runs/giraffe/model.pt`` -> ``giraffe``).
    """
    parts = spec.split("=")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValueError(f"--model {spec!r}: expected FILE=DATA or FILE=DATA=LABEL, e.g. "
                         "runs/giraffe/model.pt=animals:giraffe")
    file, data = parts[0], parts[1]
    if not Path(file).is_file():
        raise FileNotFoundError(f"--model {spec!r}: no file {file!r}")
    dataset, _, cls = data.partition(":")
    if dataset == "animals":
        from .data.embedded import ANIMAL_CLASSES

        if cls not in ANIMAL_CLASSES:
            raise ValueError(f"--model {spec!r}: unknown animal class {cls!r}; the embedded silhouettes have: "
                             f"{', '.join(ANIMAL_CLASSES)}")
        classes: Tuple[str, ...] = (cls,)
    elif dataset == "mnist":
        if cls and cls not in [str(d) for d in range(10)]:
            raise ValueError(f"--model {spec!r}: 'mnist:{cls}' is not a digit; use mnist:0 ... mnist:9, or mnist "
                             "for a 10-cluster model")
        classes = (cls,) if cls else tuple(str(d) for d in range(10))
    else:
        raise ValueError(f"--model {spec!r}: data must be animals:CLASS, mnist:DIGIT or mnist, not {data!r}")
    p = Path(file)
    name = p.parent.name if p.name == "model.pt" and p.parent.name else p.stem
    label = parts[2] if len(parts) == 3 and parts[2] else f"{name} ({data})"
    return name, ModelEntry(str(p.resolve()), dataset, classes, label)
