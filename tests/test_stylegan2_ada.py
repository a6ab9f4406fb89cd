"""NVlabs stylegan2-ada-pytorch importer, tested on a fake pickle with the structure of a real one.

The fake is written the way ``torch_utils.persistence`` writes networks: every network object is a
``_reconstruct_persistent_obj(meta)`` call whose ``meta`` carries the module source and the
object's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, numpy-float
attributes such as ``weight_gain``), with ``dnnlib.util.EasyDict`` kwargs. Names and shapes follow
NVlabs ``training/networks.py`` (mapping.fc{i}, synthesis.b{res}.conv0/conv1/torgb, affine,
noise_const, noise_strength, const, resample_filter as a normalised 4x4 filter, w_avg).

Verified here: the converted generator loads strictly, and its mapping and its whole image (every
block, const noise) equal an independent re-computation of NVlabs' forward pass written below
from NVlabs' formulas (unscaled demodulated weights, ToRGB styles times 1/sqrt(fan_in),
transposed conv + FIR with NVlabs' own pad arithmetic). Not verified: a real NVlabs pickle (none is
available offline), fp16 arithmetic itself (only its normalisation is emulated), and the exact
unpickling of pickles written by very old torch versions (they use the same rebuild functions).
"""
import collections
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gangealing.checkpoint import CheckpointError
from gangealing.io.stylegan2_ada import import_stylegan2_ada, load_stylegan2_ada, load_stylegan2_ada_generator
from gangealing.models.ops import upfirdn2d
from gangealing.models.stylegan2 import Generator

Z = 16
SQRT2 = math.sqrt(2)
MODULE_SRC = "raise RuntimeError('the embedded NVlabs source must never be executed')\n"


class _Persistent:
    """Writes itself exactly as torch_utils.persistence does: _reconstruct_persistent_obj(meta)."""

    def __init__(self, class_name, params=None, buffers=None, modules=None, init_kwargs=None, **attrs):
        self.state = dict(
            training=False,
            _parameters=collections.OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in (params or {}).items()),
            _buffers=collections.OrderedDict(buffers or {}),
            _non_persistent_buffers_set=set(),
            _backward_hooks=collections.OrderedDict(),
            _forward_hooks=collections.OrderedDict(),
            _forward_pre_hooks=collections.OrderedDict(),
            _state_dict_hooks=collections.OrderedDict(),
            _load_state_dict_pre_hooks=collections.OrderedDict(),
            _modules=collections.OrderedDict(modules or {}),
            _init_args=(),
            _init_kwargs=init_kwargs if init_kwargs is not None else {},
            **attrs,
        )
        self.class_name = class_name

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=MODULE_SRC, class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


@pytest.fixture
def nvlabs_modules(monkeypatch):
    """Fake torch_utils / dnnlib modules so that pickle can name their globals while writing."""
    tu, tp = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, du = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    tp._reconstruct_persistent_obj = _reconstruct_persistent_obj
    easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    du.EasyDict = dn.EasyDict = easydict
    tu.persistence, dn.util = tp, du
    for name, mod in [("torch_utils", tu), ("torch_utils.persistence", tp), ("dnnlib", dn), ("dnnlib.util", du)]:
        monkeypatch.setitem(sys.modules, name, mod)
    return easydict


def _filter():
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = f[:, None] * f[None, :]
    return f / f.sum()  # NVlabs setup_filter([1,3,3,1]): a 4x4 filter summing to 1


def _fc(gen, in_f, out_f, lr=1.0, bias_init=0.0, activation="linear"):
    return _Persistent("FullyConnectedLayer",
                       params={"weight": torch.randn(out_f, in_f, generator=gen) / lr,
                               "bias": bias_init + 0.1 * torch.randn(out_f, generator=gen)},
                       activation=activation, weight_gain=np.float64(lr / np.sqrt(in_f)), bias_gain=lr)


def _layer(gen, in_c, out_c, res, up):
    return _Persistent(
        "SynthesisLayer",
        params={"weight": torch.randn(out_c, in_c, 3, 3, generator=gen),
                "noise_strength": 0.2 * torch.randn([], generator=gen),
                "bias": 0.1 * torch.randn(out_c, generator=gen)},
        buffers={"resample_filter": _filter(), "noise_const": torch.randn(res, res, generator=gen)},
        modules={"affine": _fc(gen, Z, in_c, bias_init=1.0)},
        resolution=res, up=up, use_noise=True, activation="lrelu", conv_clamp=256, padding=1, act_gain=np.sqrt(2),
    )


def _torgb(gen, in_c):
    return _Persistent("ToRGBLayer", params={"weight": torch.randn(3, in_c, 1, 1, generator=gen),
                                             "bias": 0.1 * torch.randn(3, generator=gen)},
                       modules={"affine": _fc(gen, Z, in_c, bias_init=1.0)}, conv_clamp=256,
                       weight_gain=np.float64(1 / np.sqrt(in_c)))


def make_fake_pickle(path, easydict, *, res=64, channel_base=1024, channel_max=32, num_fp16_res=2, lr=0.01,
                     n_mlp=2, c_dim=0, extra=None):
    gen = torch.Generator().manual_seed(0)
    log2 = int(math.log2(res))
    resolutions = [2**i for i in range(2, log2 + 1)]
    ch = {r: min(channel_base // r, channel_max) for r in resolutions}
    fp16_res = max(2 ** (log2 + 1 - num_fp16_res), 8)
    blocks = {}
    for r in resolutions:
        mods = {}
        params = {}
        if r == 4:
            params["const"] = torch.randn(ch[4], 4, 4, generator=gen)
        else:
            mods["conv0"] = _layer(gen, ch[r // 2], ch[r], r, 2)
        mods["conv1"] = _layer(gen, ch[r], ch[r], r, 1)
        mods["torgb"] = _torgb(gen, ch[r])
        blocks[f"b{r}"] = _Persistent("SynthesisBlock", params=params, buffers={"resample_filter": _filter()}, modules=mods,
                                      in_channels=0 if r == 4 else ch[r // 2], w_dim=Z, resolution=r, img_channels=3,
                                      is_last=r == res, architecture="skip", use_fp16=r >= fp16_res, channels_last=False,
                                      num_conv=1 if r == 4 else 2, num_torgb=1)
    num_ws = 2 * log2 - 2
    syn_kwargs = easydict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=256)
    synthesis = _Persistent("SynthesisNetwork", modules=blocks, init_kwargs=easydict(w_dim=Z, img_resolution=res, img_channels=3, **syn_kwargs),
                            w_dim=Z, img_resolution=res, img_resolution_log2=log2, img_channels=3,
                            block_resolutions=resolutions, num_ws=num_ws)
    fcs = {f"fc{i}": _fc(gen, Z, Z, lr=lr, activation="lrelu") for i in range(n_mlp)}
    mapping = _Persistent("MappingNetwork", modules=fcs, buffers={"w_avg": torch.randn(Z, generator=gen)},
                          init_kwargs=easydict(z_dim=Z, c_dim=c_dim, w_dim=Z, num_ws=num_ws, num_layers=n_mlp, lr_multiplier=lr),
                          z_dim=Z, c_dim=c_dim, w_dim=Z, num_ws=num_ws, num_layers=n_mlp, w_avg_beta=0.995)
    g_kwargs = easydict(z_dim=Z, c_dim=c_dim, w_dim=Z, img_resolution=res, img_channels=3,
                        mapping_kwargs=easydict(num_layers=n_mlp), synthesis_kwargs=syn_kwargs)
    g_ema = _Persistent("Generator", modules={"synthesis": synthesis, "mapping": mapping}, init_kwargs=g_kwargs,
                        z_dim=Z, c_dim=c_dim, w_dim=Z, img_resolution=res, img_channels=3, num_ws=num_ws)
    data = {"G": g_ema, "D": _Persistent("Discriminator"), "G_ema": g_ema, "augment_pipe": None,
            "training_set_kwargs": easydict(path="data.zip", resolution=res)}
    data.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(data, f)  # the default protocol, as NVlabs' training loop
    return g_ema


# ----------------------------------------------------------------------------- NVlabs reference
def _flat(rec, prefix=""):
    out = {prefix + k: v.detach() for k, v in {**rec.state["_parameters"], **rec.state["_buffers"]}.items()}
    for name, child in rec.state["_modules"].items():
        out.update(_flat(child, f"{prefix}{name}."))
    return out


def nvlabs_reference(rec, z, res, lr, n_mlp):
    """NVlabs G_ema(z, c=None, noise_mode='const'), written from NVlabs' formulas (fp32, fused_modconv=False)."""
    p = _flat(rec)
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()  # normalize_2nd_moment
    for i in range(n_mlp):
        w, b = p[f"mapping.fc{i}.weight"] * (lr / np.sqrt(Z)), p[f"mapping.fc{i}.bias"] * lr
        x = F.leaky_relu(x @ w.t() + b, 0.2) * SQRT2
    ws = x  # every block reads the same w (no mixing)
    f = _filter()

    def affine(pre):
        return ws @ (p[pre + ".affine.weight"] / np.sqrt(Z)).t() + p[pre + ".affine.bias"]

    def modconv(x, weight, styles, demodulate, up):
        n = x.shape[0]
        if demodulate:
            dcoefs = ((weight[None] * styles[:, None, :, None, None]).square().sum([2, 3, 4]) + 1e-8).rsqrt()
        x = x * styles[:, :, None, None]
        kh = weight.shape[-1]
        if up == 2:
            # conv2d_resample: padding 1, filter 4, up 2 -> transposed conv, then FIR with these pads.
            px0 = 1 + (4 + 2 - 1) // 2 - (kh - 1)
            px1 = 1 + (4 - 2) // 2 - (kh - 2)
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = upfirdn2d(x, f * 4, pad=(px0, px1))
        else:
            x = F.conv2d(x, weight, padding=kh // 2)
        return x * dcoefs.reshape(n, -1, 1, 1) if demodulate else x

    def layer(pre, x, up):
        x = modconv(x, p[pre + ".weight"], affine(pre), True, up)
        x = x + p[pre + ".noise_const"] * p[pre + ".noise_strength"]
        return F.leaky_relu(x + p[pre + ".bias"].view(1, -1, 1, 1), 0.2) * SQRT2

    def torgb(pre, x):
        styles = affine(pre) / np.sqrt(x.shape[1])
        return modconv(x, p[pre + ".weight"], styles, False, 1) + p[pre + ".bias"].view(1, -1, 1, 1)

    x = p["synthesis.b4.const"][None].repeat(z.shape[0], 1, 1, 1)
    x = layer("synthesis.b4.conv1", x, 1)
    img = torgb("synthesis.b4.torgb", x)
    r = 8
    while r <= res:
        x = layer(f"synthesis.b{r}.conv0", x, 2)
        x = layer(f"synthesis.b{r}.conv1", x, 1)
        img = upfirdn2d(img, f * 4, up=2, pad=(2, 1)) + torgb(f"synthesis.b{r}.torgb", x)  # upsample2d
        r *= 2
    return ws, img


# ----------------------------------------------------------------------------- tests
def test_conversion_matches_the_nvlabs_forward(tmp_path, nvlabs_modules):
    rec = make_fake_pickle(tmp_path / "net.pkl", nvlabs_modules)
    ada = load_stylegan2_ada(tmp_path / "net.pkl", trust_pickle=True)
    cfg = ada.config
    assert (cfg.size, cfg.style_dim, cfg.n_mlp, cfg.max_channels) == (64, Z, 2, 32)
    assert cfg.channel_multiplier == 0.0625  # 1024 // 64 = 16 = 256 * cm at 64 px
    assert cfg.num_fp16_res == 2 and cfg.lr_mlp == pytest.approx(0.01) and tuple(cfg.blur_kernel) == (1, 3, 3, 1)
    assert any("conv_clamp" in n for n in ada.notes)
    g = Generator(cfg).eval()
    g.load_state_dict(ada.state_dict, strict=True)
    torch.testing.assert_close(ada.w_avg, _flat(rec)["mapping.w_avg"][None])

    z = torch.randn(3, Z, generator=torch.Generator().manual_seed(5))
    ws_ref, img_ref = nvlabs_reference(rec, z, 64, 0.01, 2)
    with torch.no_grad():
        torch.testing.assert_close(g.mapping(z), ws_ref, rtol=0, atol=1e-5)
        img = g(z=z, noise="const")
    assert img.shape == img_ref.shape == (3, 3, 64, 64)
    torch.testing.assert_close(img, img_ref, rtol=0, atol=1e-4)
    assert img_ref.std() > 0.1  # a non-degenerate image


def test_converted_checkpoint_and_generator_helpers(tmp_path, nvlabs_modules):
    make_fake_pickle(tmp_path / "net.pkl", nvlabs_modules, res=16, channel_base=256, channel_max=16, num_fp16_res=0)
    ckpt, what = import_stylegan2_ada(tmp_path / "net.pkl", trust_pickle=True)
    assert ckpt.kind == "generator" and "StyleGAN2-ADA" in what and len(ckpt.meta["w_avg"]) == Z
    assert ckpt.config["generator"]["num_fp16_res"] == 0
    g, w_avg = load_stylegan2_ada_generator(tmp_path / "net.pkl", trust_pickle=True)
    assert isinstance(g, Generator) and w_avg.shape == (1, Z) and g.cfg.size == 16


def test_refuses_without_trust(tmp_path, nvlabs_modules):
    make_fake_pickle(tmp_path / "net.pkl", nvlabs_modules, res=8, channel_base=64, channel_max=8)
    with pytest.raises(CheckpointError, match="trust_pickle=True") as e:
        load_stylegan2_ada(tmp_path / "net.pkl")
    assert "executing source code" in str(e.value)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_never_runs_code_from_the_pickle(tmp_path, nvlabs_modules):
    marker = tmp_path / "pwned"
    make_fake_pickle(tmp_path / "net.pkl", nvlabs_modules, res=8, channel_base=64, channel_max=8,
                     extra={"payload": _Evil(marker)})
    ada = load_stylegan2_ada(tmp_path / "net.pkl", trust_pickle=True)  # the embedded MODULE_SRC would raise
    assert ada.config.size == 8
    assert not marker.exists()


def test_conditional_generators_are_refused(tmp_path, nvlabs_modules):
    make_fake_pickle(tmp_path / "net.pkl", nvlabs_modules, res=8, channel_base=64, channel_max=8, c_dim=10)
    with pytest.raises(CheckpointError, match="conditional"):
        load_stylegan2_ada(tmp_path / "net.pkl", trust_pickle=True)


def test_not_a_network_pickle(tmp_path):
    with open(tmp_path / "x.pkl", "wb") as f:
        pickle.dump({"foo": 1}, f)
    with pytest.raises(CheckpointError, match="G_ema"):
        load_stylegan2_ada(tmp_path / "x.pkl", trust_pickle=True)
