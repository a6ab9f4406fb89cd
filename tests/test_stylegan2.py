"""StyleGAN2 generator / discriminator: shapes, latents, noise, num_fp16_res, config inference, importer."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from gangealing.checkpoint import CheckpointError
from gangealing.config import DiscriminatorConfig, GeneratorConfig
from gangealing.io.rosinality import import_rosinality, load_rosinality, load_rosinality_generator
from gangealing.models.stylegan2 import (
    Discriminator,
    Generator,
    ModulatedConv2d,
    channel_widths,
    infer_discriminator_config,
    infer_generator_config,
)


def tiny_g(size=16, **kw) -> Generator:
    torch.manual_seed(0)
    cfg = GeneratorConfig(**{"size": size, "style_dim": 16, "n_mlp": 2, "max_channels": 8, **kw})
    return Generator(cfg).eval()


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [8, 16, 32, 64, 128, 256])
def test_output_shapes_for_every_input_kind(size):
    g = tiny_g(size)
    n_latent = 2 * int(math.log2(size)) - 2
    assert g.n_latent == n_latent and g.num_layers == n_latent - 1
    gen = torch.Generator().manual_seed(1)
    z = g.sample_z(2, gen)
    with torch.no_grad():
        w = g.mapping(z)
        assert w.shape == (2, 16)
        img_z = g(z=z, noise="const")
        assert img_z.shape == (2, 3, size, size) and torch.isfinite(img_z).all()
        torch.testing.assert_close(g(w=w, noise="const"), img_z, rtol=0, atol=0)
        torch.testing.assert_close(g(w_plus=g.broadcast(w), noise="const"), img_z, rtol=0, atol=0)
        torch.testing.assert_close(g.synthesis(w, noise="const"), img_z, rtol=0, atol=0)


@pytest.mark.parametrize("size", [512, 1024])
def test_large_sizes_build(size):
    with torch.device("meta"):
        g = Generator(GeneratorConfig(size=size, style_dim=8, n_mlp=1, max_channels=4))
    assert g.n_latent == 2 * int(math.log2(size)) - 2 and len(g.to_rgbs) == int(math.log2(size)) - 2


def test_bad_inputs_raise():
    g = tiny_g(8)
    z = torch.randn(2, 16)
    with pytest.raises(ValueError, match="exactly one"):
        g(z=z, w=z)
    with pytest.raises(ValueError, match="rows"):
        g(w_plus=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="w_avg"):
        g(z=z, psi=0.5)
    with pytest.raises(ValueError, match="noise"):
        g(z=z, noise="fixed")
    with pytest.raises(ValueError, match="power of two"):
        Generator(GeneratorConfig(size=48, max_channels=8))


# ----------------------------------------------------------------------------- latents
def test_mix_and_truncate():
    g = tiny_g(16)  # n_latent 6
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    m = g.mix(a, b, 2)
    assert m.shape == (3, 6, 16)
    assert torch.equal(m[:, :2], a[:, None].expand(-1, 2, -1)) and torch.equal(m[:, 2:], b[:, None].expand(-1, 4, -1))
    assert torch.equal(g.mix(a, b, 0), g.broadcast(b)) and torch.equal(g.mix(a, b, 6), g.broadcast(a))
    per_sample = g.mix(a, b, torch.tensor([0, 2, 6]))
    for i, k in enumerate([0, 2, 6]):
        assert torch.equal(per_sample[i], g.mix(a[i:i + 1], b[i:i + 1], k)[0])
    with pytest.raises(ValueError):
        g.mix(a, b, 7)
    avg = torch.randn(1, 16)
    assert torch.equal(g.truncate(a, 1.0, avg), avg + (a - avg))
    torch.testing.assert_close(g.truncate(a, 0.0, avg), avg.expand(3, -1))
    torch.testing.assert_close(g.w_plus(w=a, psi=0.5, w_avg=avg), g.broadcast(avg + 0.5 * (a - avg)))


def test_sampling_uses_the_given_generator_only():
    g = tiny_g(8)
    w1 = g.sample_w(4, torch.Generator().manual_seed(3))
    torch.manual_seed(123)  # the global RNG must not matter
    w2 = g.sample_w(4, torch.Generator().manual_seed(3))
    assert torch.equal(w1, w2)
    torch.manual_seed(5)
    m1 = g.mean_latent(64)
    torch.manual_seed(5)
    assert torch.equal(m1, g.mapping(torch.randn(64, 16)).mean(0, keepdim=True)) and m1.shape == (1, 16)


# ----------------------------------------------------------------------------- noise
def test_noise_modes():
    g = tiny_g(16)
    w = torch.randn(2, 16)
    with torch.no_grad():
        for conv in [g.conv1, *g.convs]:
            conv.noise.weight.fill_(0.3)  # make noise visible
        r1 = g(w=w, noise="random", generator=torch.Generator().manual_seed(0))
        r2 = g(w=w, noise="random", generator=torch.Generator().manual_seed(0))
        r3 = g(w=w, noise="random", generator=torch.Generator().manual_seed(1))
        assert torch.equal(r1, r2) and (r1 - r3).abs().max() > 1e-3
        const = g(w=w, noise="const")
        assert torch.equal(const, g(w=w, noise=g.const_noise()))
        zeros = [torch.zeros(s) for s in g.noise_shapes(2)]
        none = g(w=w, noise="none")
        torch.testing.assert_close(none, g(w=w, noise=zeros), rtol=0, atol=1e-6)
        assert (none - const).abs().max() > 1e-3
        # None entries of an explicit list are drawn from the generator.
        mixed = [None] + list(g.const_noise()[1:])
        assert torch.equal(g(w=w, noise=mixed, generator=torch.Generator().manual_seed(0)),
                           g(w=w, noise=mixed, generator=torch.Generator().manual_seed(0)))
        with pytest.raises(ValueError, match="noise tensors"):
            g(w=w, noise=zeros[:-1])
    assert [n for n, _ in g.named_buffers() if n.startswith("noises.")] == [f"noises.noise_{i}" for i in range(g.num_layers)]


# ----------------------------------------------------------------------------- num_fp16_res
def _original_modconv(conv: ModulatedConv2d, x, w, normalize: bool):
    """The original GANgealing ModulatedConv2d formula (grouped conv), written out independently."""
    n, i, h, wd = x.shape
    style = F.linear(w, conv.modulation.weight * conv.modulation.scale, conv.modulation.bias).view(n, 1, i, 1, 1)
    if normalize:
        style = style / torch.max(torch.abs(style))
    weight = conv.scale * conv.weight
    if normalize:
        size = torch.tensor(i * conv.kernel_size**2, dtype=torch.float32)
        weight = weight * torch.sqrt(1.0 / size) / torch.amax(torch.abs(weight), dim=(2, 3, 4), keepdim=True)
    weight = weight * style
    weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(n, conv.out_channel, 1, 1, 1)
    k = conv.kernel_size
    if conv.upsample:
        wt = weight.transpose(1, 2).reshape(n * i, conv.out_channel, k, k)
        out = F.conv_transpose2d(x.view(1, n * i, h, wd), wt, stride=2, groups=n)
        return conv.blur(out.view(n, conv.out_channel, *out.shape[2:]))
    out = F.conv2d(x.view(1, n * i, h, wd), weight.view(n * conv.out_channel, i, k, k), padding=k // 2, groups=n)
    return out.view(n, conv.out_channel, h, wd)


def test_num_fp16_res_normalises_exactly_the_top_resolutions():
    g0, g2 = tiny_g(32), tiny_g(32, num_fp16_res=2)  # log_size 5: resolutions 16 and 32 normalised
    g2.load_state_dict(g0.state_dict(), strict=True)
    with torch.no_grad():
        for g in (g0, g2):  # tiny weights: the 1e-8 of the demodulation then matters
            for conv in [g.conv1, *g.convs]:
                conv.conv.weight.mul_(1e-5)
    expect = [False, False, True, True, True, True]  # convs at 8, 8, 16, 16, 32, 32
    assert [c.conv.normalize for c in g2.convs] == expect
    assert not g2.conv1.conv.normalize and not any(t.conv.normalize for t in [g2.to_rgb1, *g2.to_rgbs])
    torch.manual_seed(1)
    w = torch.randn(3, 16)
    with torch.no_grad():
        pairs = [(g0.conv1, g2.conv1, 4)] + [(a, b, 4 * 2 ** (k // 2)) for k, (a, b) in enumerate(zip(g0.convs, g2.convs))]
        for (a, b, res), normalized in zip(pairs, [False] + expect):
            x = torch.randn(3, a.conv.in_channel, res, res)
            ya, yb = a.conv(x, w), b.conv(x, w)
            if normalized:
                assert (ya - yb).abs().max() > 1e-2 * ya.abs().max()
                torch.testing.assert_close(yb, _original_modconv(b.conv, x, w, True), rtol=1e-4, atol=1e-5)
                torch.testing.assert_close(b.conv(x, w, fused=True), yb, rtol=1e-4, atol=1e-5)
            else:
                assert torch.equal(ya, yb)
            torch.testing.assert_close(ya, _original_modconv(a.conv, x, w, False), rtol=1e-4, atol=1e-5)
        for a, b in zip([g0.to_rgb1, *g0.to_rgbs], [g2.to_rgb1, *g2.to_rgbs]):
            x = torch.randn(3, a.conv.in_channel, 4, 4)
            assert torch.equal(a(x, w), b(x, w))


# ----------------------------------------------------------------------------- inference
@pytest.mark.parametrize(
    "kw",
    [
        dict(size=32, style_dim=64, n_mlp=2, max_channels=32),
        dict(size=256, style_dim=512, n_mlp=8, channel_multiplier=2),
        dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2),
        dict(size=128, style_dim=32, n_mlp=3, channel_multiplier=0.5, max_channels=64),
        dict(size=512, style_dim=512, n_mlp=8, channel_multiplier=1),
        dict(size=64, style_dim=16, n_mlp=1, channel_multiplier=4, max_channels=1024),
        dict(size=16, style_dim=16, n_mlp=4, max_channels=16, blur_kernel=(1, 2, 1)),
    ],
)
def test_infer_generator_config_round_trip(kw):
    cfg = GeneratorConfig(**kw)
    with torch.device("meta"):
        sd = Generator(cfg).state_dict()
    got = infer_generator_config(sd) if "blur_kernel" not in kw else None
    if got is None:  # the blur kernel is read from the buffer values, so build this one for real
        got = infer_generator_config(Generator(cfg).state_dict())
    assert channel_widths(got.size, got.channel_multiplier, got.max_channels) == channel_widths(
        cfg.size, cfg.channel_multiplier, cfg.max_channels)
    assert (got.size, got.style_dim, got.n_mlp, tuple(got.blur_kernel)) == (cfg.size, cfg.style_dim, cfg.n_mlp, tuple(cfg.blur_kernel))
    assert infer_generator_config(sd, num_fp16_res=3).num_fp16_res == 3


def test_infer_rejects_non_rosinality_widths():
    g = tiny_g(64, channel_multiplier=0.125, max_channels=32)
    sd = dict(g.state_dict())
    sd["convs.4.conv.weight"] = torch.zeros(1, 8, 5, 3, 3)  # 32 px with 5 input channels: no config gives this
    with pytest.raises(ValueError, match="form"):
        infer_generator_config(sd)


@pytest.mark.parametrize("kw", [dict(size=32, max_channels=16), dict(size=256, channel_multiplier=2), dict(size=64, channel_multiplier=0.5, max_channels=64, image_channels=1)])
def test_infer_discriminator_config_round_trip(kw):
    cfg = DiscriminatorConfig(**kw)
    with torch.device("meta"):
        sd = Discriminator(cfg).state_dict()
    got = infer_discriminator_config(sd)
    assert got.size == cfg.size and got.image_channels == cfg.image_channels
    assert channel_widths(got.size, got.channel_multiplier, got.max_channels) == channel_widths(
        cfg.size, cfg.channel_multiplier, cfg.max_channels)


# ----------------------------------------------------------------------------- discriminator
def _rosinality_d_keys(log_size: int):
    keys = ["convs.0.0.weight", "convs.0.1.bias"]
    for j in range(1, log_size - 1):
        keys += [f"convs.{j}.conv1.0.weight", f"convs.{j}.conv1.1.bias", f"convs.{j}.conv2.0.kernel",
                 f"convs.{j}.conv2.1.weight", f"convs.{j}.conv2.2.bias", f"convs.{j}.skip.0.kernel", f"convs.{j}.skip.1.weight"]
    return keys + ["final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight", "final_linear.0.bias",
                   "final_linear.1.weight", "final_linear.1.bias"]


def test_discriminator_keys_and_shapes():
    torch.manual_seed(0)
    d = Discriminator(DiscriminatorConfig(size=32, max_channels=16))
    sd = d.state_dict()
    assert list(sd) == _rosinality_d_keys(5)
    assert sd["convs.0.0.weight"].shape == (16, 3, 1, 1) and sd["final_conv.0.weight"].shape == (16, 17, 3, 3)
    assert sd["final_linear.0.weight"].shape == (16, 256) and sd["final_linear.1.weight"].shape == (1, 16)
    for n in (1, 3, 4, 8):  # 3 is not divisible by the group of 4: falls back to a smaller group
        assert d(torch.randn(n, 3, 32, 32)).shape == (n, 1)


def test_minibatch_stddev_matches_direct_computation():
    d = Discriminator(DiscriminatorConfig(size=8, max_channels=4))
    x = torch.randn(8, 4, 4, 4)
    out = d.minibatch_stddev(x)
    assert out.shape == (8, 5, 4, 4)
    for n in range(8):
        members = x[[n % 2 + 2 * j for j in range(4)]]  # groups of 4 strided by N/G = 2, as rosinality
        expect = torch.sqrt(members.var(0, unbiased=False) + 1e-8).mean()
        torch.testing.assert_close(out[n, 4], expect.expand(4, 4))


def test_gradients_flow_through_g_and_d():
    g = tiny_g(16).train()
    d = Discriminator(DiscriminatorConfig(size=16, max_channels=8))
    gen = torch.Generator().manual_seed(0)
    img = g(z=g.sample_z(4, gen), generator=gen)
    loss = F.softplus(-d(img)).mean()
    loss.backward()
    for name, p in [*g.named_parameters(), *d.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- rosinality importer
def _rosinality_file(tmp_path):
    g = tiny_g(16)
    d = Discriminator(DiscriminatorConfig(size=16, max_channels=8))
    path = tmp_path / "ros.pt"
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g.state_dict(), "latent_avg": torch.randn(16),
                "args": argparse.Namespace(size=16, num_fp16_res=1, path="/data")}, path)
    return path, g


def test_load_rosinality_file_with_namespace(tmp_path):
    path, g = _rosinality_file(tmp_path)
    ck = load_rosinality(path)
    assert ck.g_config.size == 16 and ck.d_config.size == 16 and ck.latent_avg.shape == (1, 16)
    assert ck.args["path"] == "/data"
    g2 = load_rosinality_generator(path)
    w = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(g2(w=w, noise="const"), g(w=w, noise="const"))
    ckpt, what = import_rosinality(torch.load(path, weights_only=False))
    assert "rosinality" in what and ckpt.kind == "generator" and set(ckpt.config) == {"generator", "discriminator"}
    assert ckpt.config["generator"]["num_fp16_res"] == 1 and len(ckpt.meta["w_avg"]) == 16


def test_load_rosinality_bare_and_prefixed_state_dicts():
    g = tiny_g(8)
    assert load_rosinality(g.state_dict()).g_config == g.cfg
    prefixed = {"module." + k: v for k, v in g.state_dict().items()}
    assert load_rosinality({"g_ema": prefixed}).g_config == g.cfg


@pytest.mark.parametrize("obj, words", [({"foo": torch.zeros(1)}, "keys [foo]"), ([1, 2], "list"),
                                        ({"g_ema": {"input.input": torch.zeros(1)}}, "lacks")])
def test_foreign_inputs_give_one_clear_error(obj, words):
    with pytest.raises(CheckpointError) as e:
        load_rosinality(obj)
    assert words in str(e.value) and len(str(e.value).splitlines()) == 1


def test_missing_key_is_one_line():
    sd = dict(tiny_g(8).state_dict())
    del sd["convs.1.noise.weight"]
    with pytest.raises(CheckpointError) as e:
        load_rosinality({"g_ema": sd})
    msg = str(e.value)
    assert "1 missing (convs.1.noise.weight)" in msg and len(msg.splitlines()) == 1


def test_foreign_file_is_refused(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a checkpoint") as e:
        load_rosinality(tmp_path / "x.pt")
    assert "trust-pickle" not in str(e.value)  # never points at the unsafe flag for a file that is no pickle
