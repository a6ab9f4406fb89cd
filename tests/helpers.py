"""Helpers shared by test modules (no test module imports another)."""
import argparse
import io
import json
import lzma
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gangealing.build import build, make_checkpoint
from gangealing.checkpoint import save_checkpoint
from gangealing.config import GeneratorConfig, STNConfig
from gangealing.data.cub import CUB_PART_NAMES
from gangealing.models.stn import SpatialTransformer
from gangealing.predictor import Congealer
from gangealing.train.presets import get_preset

# ------------------------------------------------------------------------------ parity fixtures
# The original's recorded numbers (tests/fixtures/parity, see its README.md). In the repository each
# needed .pt file is stored as <name>.pt.xz (see pack_parity); unpack_parity writes the upstream
# layout (<name>.pt, plain torch.load-able) that the tests read.

PARITY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parity"
# What pack_parity keeps of the upstream folder: the files a test reads, the READMEs and the
# construction records; calls.json, preview.png and generator/state_dict_keys.json are read by no test.
PARITY_FILES = {
    ".": ["README.md"],
    "generator": ["README.md", "config.json", "gen.pt", "inputs.pt", "outputs.pt"],
    "stn": ["README.md", "config.json", "state_dict_keys.json", "stn.pt", "inputs.pt", "outputs_forward.pt",
            "outputs_aa_points_losses.pt"],
    "checkpoint": ["README.md", "checkpoint_keys.json", "checkpoint.pt", "latent_learner_reference.pt"],
    "pck": ["README.md", "inputs.pt", "outputs.pt"],
}
# Entries that no test reads (dropped by pack_parity).
PARITY_DROPPED = {"stn/outputs_aa_points_losses.pt": [("points", "congeal_full_outA"), ("points", "congeal_full_flow")]}
# Values that are copies of another file's (the upstream checkpoint README says so); stored once.
PARITY_SHARED = {"checkpoint/checkpoint.pt": {"g_ema": ("generator/gen.pt", "g_ema"), "t_ema": ("stn/stn.pt", None)}}
_PACKED, _SAME_AS = "__packed_float32__", "__same_as__"


def _torch_load(f):
    with torch.serialization.safe_globals([argparse.Namespace]):  # the original checkpoint's `args`
        return torch.load(f, map_location="cpu", weights_only=True)


def _pack_tensor(t):
    """A float32 tensor as its bytes split into 4 planes (sign/exponent bytes compress well), after
    subtracting (mod 2**32, exact) the bit pattern `delta` elements back, whichever xz likes best."""
    bits = t.contiguous().numpy().reshape(-1).view("<u4")
    best = None
    for delta in sorted({0, 1, t.shape[-1]}):
        if delta >= bits.size:
            continue
        d = bits.copy()
        if delta:
            d[delta:] -= bits[:-delta]
        planes = d.view(np.uint8).reshape(-1, 4).T.copy()
        size = len(lzma.compress(planes.tobytes()))
        if best is None or size < best[0]:
            best = size, delta, planes
    return {_PACKED: torch.from_numpy(best[2]), "shape": list(t.shape), "delta": best[1]}


def _unpack_tensor(p):
    d = p[_PACKED].numpy().T.reshape(-1).view("<u4")
    if p["delta"]:
        pad = np.zeros(-d.size % p["delta"], d.dtype)
        d = np.concatenate([d, pad]).reshape(-1, p["delta"]).cumsum(0, dtype=np.uint32).reshape(-1)[: d.size]
    return torch.from_numpy(d.view(np.float32).copy()).view(p["shape"])


def _replace(obj, fn):
    """Replace, in place, every dict or list value v below obj by fn(v), or descend where that is None."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in list(items):
        new = fn(v)
        if new is None:
            _replace(v, fn)
        else:
            obj[k] = new
    return obj


def _get(obj, key):
    return obj if key is None else obj[key]


def pack_parity(src, dst=PARITY_FIXTURES):
    """Write the trimmed, compressed copy of an upstream parity folder `src` (e.g. ``../shared/parity``)."""
    src, dst = Path(src), Path(dst)
    for folder, names in PARITY_FILES.items():
        (dst / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            rel = f"{folder}/{name}".removeprefix("./")
            if not name.endswith(".pt"):
                if name != "README.md" or not (dst / rel).exists():  # ours carry notes on this copy
                    shutil.copyfile(src / rel, dst / rel)
                continue
            obj = _torch_load(src / rel)
            for *parents, key in PARITY_DROPPED.get(rel, []):
                parent = obj
                for k in parents:
                    parent = parent[k]
                del parent[key]
            for key, (other, other_key) in PARITY_SHARED.get(rel, {}).items():
                ref = _get(_torch_load(src / other), other_key)
                assert list(ref) == list(obj[key]) and all(torch.equal(ref[k], obj[key][k]) for k in ref), (rel, key)
                obj[key] = {_SAME_AS: [other, other_key]}
            _replace(obj, lambda v: _pack_tensor(v) if isinstance(v, torch.Tensor) and v.dtype == torch.float32
                     and v.numel() >= 256 else None)
            buf = io.BytesIO()
            torch.save(obj, buf)
            (dst / f"{rel}.xz").write_bytes(lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def unpack_parity(src, dst):
    """Write the upstream layout of the packed fixtures `src` into `dst` (plain .pt files); returns dst."""
    src, dst = Path(src), Path(dst)
    cache = {}

    def restore(v):
        if isinstance(v, dict) and _PACKED in v:
            return _unpack_tensor(v)
        if isinstance(v, dict) and _SAME_AS in v:
            other, key = v[_SAME_AS]
            return _get(load(other), key)
        return None

    def load(rel):
        if rel not in cache:
            cache[rel] = _replace(_torch_load(io.BytesIO(lzma.decompress((src / f"{rel}.xz").read_bytes()))), restore)
        return cache[rel]

    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src).as_posix()
        if f.is_dir():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".pt.xz"):
            torch.save(load(rel.removesuffix(".xz")), dst / rel.removesuffix(".xz"))
        else:
            shutil.copyfile(f, dst / rel)
    return dst


# The composed similarity + flow transformer of the parity fixtures (parity/stn).
PARITY_STN = STNConfig(transforms=("similarity", "flow"), flow_size=64, input_size=128, channel_multiplier=0.125,
                       max_channels=32, num_heads=1)


def parity_stn(parity_dir) -> SpatialTransformer:
    """The fixtures' transformer with the original's weights, in eval mode."""
    model = SpatialTransformer(PARITY_STN)
    model.load_original_state_dict(torch.load(parity_dir / "stn" / "stn.pt"))
    return model.eval()


# ------------------------------------------------------------------------------ tiny models


def tiny_checkpoint(path, size=16, translate=0.0, heads=1, max_channels=16):
    """A model checkpoint file whose transformer is the identity (optionally a translation by
    ``translate``); returns its path as a string."""
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=size, input_size=size, channel_multiplier=0.125, max_channels=max_channels,
                                 num_heads=heads))
    if translate:
        with torch.no_grad():
            stn.stns[0].warp_head.linear.bias[2] = translate  # raw tx of the similarity (normalised units)
    save_checkpoint(make_checkpoint("model", {"stn": stn}), path)
    return str(path)


def identity_congealer() -> Congealer:
    """A freshly built transformer starts at the identity warp (flip off: the mapping is known exactly)."""
    torch.manual_seed(0)
    stn = build("stn", STNConfig(flow_size=16, input_size=16, channel_multiplier=0.125, max_channels=16))
    return Congealer(stn, device="cpu", flip=False)


def tiny_generator(seed=0):
    torch.manual_seed(seed)
    return build("generator", GeneratorConfig(size=16, style_dim=32, n_mlp=2, max_channels=16)).eval()


def tiny_cfg(**kw):
    base = dict(flow_size=16, input_size=16, stn_max_channels=16, micro_batch=4, batch=8, iters=6, anneal_psi=2,
                period=2, pca_samples=500, kmeans_candidates=40, log_every=1, vis_every=1000, ckpt_every=1000,
                n_sample=4, n_mean=8, inject=3)
    base.update(kw)
    return get_preset("tiny", **base)


# ------------------------------------------------------------------------------ fake datasets

CUB_W, CUB_H = 60, 50
CUB_NAMES = [f"001.Fake_Bird/Fake_Bird_000{i}_{i}.jpg" for i in range(1, 6)]
# Every image: the same tight box and key points, so an identity model transfers them exactly.
CUB_BOX_1BASED = (11.0, 21.0, 50.0, 40.0)  # x1 y1 x2 y2
CUB_PART_XY = [(12 + 2 * k, 22 + k) for k in range(15)]  # 1-based
CUB_HIDDEN = {4: [13, 14]}  # image id -> 0-based parts not visible


def write_acsm_mat(path, entries):
    """A MATLAB v5 file shaped like ACSM's val_cub_cleaned.mat: struct array `images` (1, N) with id, rel_path, bbox."""
    sio = pytest.importorskip("scipy.io", reason="writing the ACSM .mat needs scipy (pip install scipy)")
    box_t = [("x1", "O"), ("y1", "O"), ("x2", "O"), ("y2", "O")]
    arr = np.zeros((1, len(entries)), dtype=[("id", "O"), ("rel_path", "O"), ("train", "O"), ("bbox", "O")])
    for j, (image_id, rel, box) in enumerate(entries):
        b = np.zeros((1, 1), dtype=box_t)
        for k, v in zip("x1 y1 x2 y2".split(), box):
            b[0, 0][k] = np.array([[v]])
        arr[0, j]["id"] = np.array([[image_id]], dtype=np.uint16)
        arr[0, j]["rel_path"] = np.array([rel])
        arr[0, j]["train"] = np.array([[0]], dtype=np.uint8)
        arr[0, j]["bbox"] = b
    sio.savemat(str(path), {"images": arr})


def make_fake_cub(tmp_path, with_mat=True):
    """CUB_200_2011/ in the release's layout (5 images), plus ACSM's val_cub_cleaned.mat beside it."""
    root = tmp_path / "CUB_200_2011"
    (root / "parts").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in CUB_NAMES:
        p = root / "images" / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (CUB_H, CUB_W, 3), dtype=np.uint8)).save(p, quality=95)
    (root / "images.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(CUB_NAMES, 1)))
    (root / "parts" / "parts.txt").write_text("".join(f"{k} {n}\n" for k, n in enumerate(CUB_PART_NAMES, 1)))
    lines = []
    for i in range(1, len(CUB_NAMES) + 1):
        for k, (x, y) in enumerate(CUB_PART_XY):
            hidden = k in CUB_HIDDEN.get(i, [])
            lines.append(f"{i} {k + 1} {0.0 if hidden else float(x)} {0.0 if hidden else float(y)} {0 if hidden else 1}\n")
    (root / "parts" / "part_locs.txt").write_text("".join(lines))
    (root / "bounding_boxes.txt").write_text("".join(f"{i} 10.0 20.0 40.0 20.0\n" for i in range(1, 6)))
    (root / "train_test_split.txt").write_text("".join(f"{i} {int(i <= 2)}\n" for i in range(1, 6)))
    if with_mat:  # ACSM keeps images 2..5, in this order
        write_acsm_mat(tmp_path / "val_cub_cleaned.mat", [(i, CUB_NAMES[i - 1], CUB_BOX_1BASED) for i in (2, 3, 4, 5)])
    return root


SPAIR_K = 15  # cat: the published permutation has 15 entries
SPAIR_BASE = np.array([[4 + 2 * k, 6 + (k % 5) * 3] for k in range(SPAIR_K)], dtype=np.float64)  # in a 40x30 image
# Target offsets along x (original pixels): 5 exact, 4 by 1 px, 3 by 3 px, 3 by 5 px.
SPAIR_OFFSETS = np.array([0.0] * 5 + [1.0] * 4 + [3.0] * 3 + [5.0] * 3)


def _jpeg(path, w, h, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path, quality=95)


def _spair_pair(root, split, idx, category, src, trg, src_kps, trg_kps, ids, sizes, boxes):
    name = f"{idx:06d}-{src}-{trg}:{category}"
    d = {
        "filename": f"{name}.json", "src_imname": f"{src}.jpg", "trg_imname": f"{trg}.jpg",
        "src_imsize": list(sizes[0]) + [3], "trg_imsize": list(sizes[1]) + [3],
        "src_bndbox": boxes[0], "trg_bndbox": boxes[1], "category": category,
        "src_pose": "Frontal", "trg_pose": "Left", "src_kps": np.asarray(src_kps).tolist(),
        "trg_kps": np.asarray(trg_kps).tolist(), "kps_ids": [str(i) for i in ids], "mirror": 0,
        "viewpoint_variation": 1, "scale_variation": 0, "truncation": 0, "occlusion": 0,
    }
    p = root / "PairAnnotation" / split / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(d))
    lay = root / "Layout" / "large" / f"{split}.txt"
    lay.parent.mkdir(parents=True, exist_ok=True)
    with open(lay, "a") as f:
        f.write(name + "\n")


def make_fake_spair(tmp_path):
    """SPair-71k/ with 3 cat images (40x30, 40x30, 30x40), 3 test pairs, 1 trn pair and a dog pair."""
    root = tmp_path / "SPair-71k"
    sizes = {"a": (40, 30), "b": (40, 30), "c": (30, 40)}
    for i, (n, (w, h)) in enumerate(sizes.items()):
        _jpeg(root / "JPEGImages" / "cat" / f"2010_00000{i}_{n}.jpg", w, h, i)
        anno = {"filename": f"2010_00000{i}_{n}.jpg", "image_width": w, "image_height": h, "category": "cat",
                "bndbox": [0, 0, w - 1, h - 1], "kps": {str(k): None for k in range(SPAIR_K)}}
        p = root / "ImageAnnotation" / "cat" / f"2010_00000{i}_{n}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(anno))
    _jpeg(root / "JPEGImages" / "dog" / "2011_000001.jpg", 20, 20, 9)
    a, b, c = (f"2010_00000{i}_{n}" for i, n in enumerate("abc"))
    ids = list(range(SPAIR_K))
    box = [0, 0, 39, 29]
    base, offsets = SPAIR_BASE, SPAIR_OFFSETS
    # 1: a -> a, identical key points.  2: a -> b, target = source + offsets in x.
    _spair_pair(root, "test", 1, "cat", a, a, base, base, ids, (sizes["a"], sizes["a"]), (box, box))
    _spair_pair(root, "test", 2, "cat", a, b, base, base + np.stack([offsets, 0 * offsets], 1), ids,
                (sizes["a"], sizes["b"]), (box, box))
    # 3: b -> c with only 4 key points annotated in both (ids 0, 3, 7, 14).
    sub = [0, 3, 7, 14]
    _spair_pair(root, "test", 3, "cat", b, c, base[sub], base[sub][:, ::-1], sub, (sizes["b"], sizes["c"]),
                (box, [2, 3, 20, 35]))
    _spair_pair(root, "trn", 4, "cat", c, a, base[:2], base[:2], [0, 1], (sizes["c"], sizes["a"]), ([0, 0, 29, 39], box))
    _spair_pair(root, "test", 5, "dog", "2011_000001", "2011_000001", [[1, 1]], [[2, 2]], [0], ((20, 20), (20, 20)),
                ([0, 0, 19, 19], [0, 0, 19, 19]))
    return root


# ------------------------------------------------------------------------------ headless browser

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_browser():
    """Chromium's executable (GANGEALING_CHROMIUM, else Debian's / PATH's), or None."""
    for cand in (os.environ.get("GANGEALING_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                 shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def launch_browser(extra_args=()):
    """Yield a headless Chromium (Playwright) started with ``extra_args``; skips the test without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; see scripts/install_browser.sh)")
    exe = find_browser()
    if exe is None:
        pytest.skip("no Chromium executable found (bash scripts/install_browser.sh, or set GANGEALING_CHROMIUM)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=BROWSER_ARGS + list(extra_args))
        yield b
        b.close()
