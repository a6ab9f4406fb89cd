import pytest
import torch

from gangealing.config import STNConfig
from gangealing.geometry.coords import apply_affine, identity_grid
from gangealing.geometry.similarity import affine_grid
from gangealing.geometry.warp import flip_grid, mipmap_warp, resize_grid, warp
from gangealing.models.stn import AlignResult, SpatialTransformer, convex_upsample


def tiny(transforms=("similarity", "flow"), flow_size=32, input_size=64, num_heads=1, max_channels=16):
    return STNConfig(transforms=transforms, flow_size=flow_size, input_size=input_size, channel_multiplier=0.5,
                     max_channels=max_channels, num_heads=num_heads)


def perturbed(cfg, seed=0):
    """A transformer whose heads are not the identity (as the parity fixture, scaled down)."""
    torch.manual_seed(seed)
    model = SpatialTransformer(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
        for stn in model.stns:
            head = stn.warp_head
            if hasattr(head, "linear"):
                head.linear.weight.normal_(0, 0.1, generator=g)
                head.linear.bias.normal_(0, 0.03, generator=g)
            else:
                head.flow_out[-1].weight.normal_(0, 0.04, generator=g)
                head.flow_out[-1].bias.normal_(0, 0.002, generator=g)
    return model.eval()


def images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=size, mode="bicubic", align_corners=False)
    return (x / x.abs().amax(dim=(1, 2, 3), keepdim=True)).clamp(-1, 1)


# ------------------------------------------------------------------------------------------------
# Construction and state dicts
# ------------------------------------------------------------------------------------------------


def test_flow_size_32_builds_and_runs():
    # The original cannot build a flow transformer at flow_size 32 (KeyError 2); we can.
    model = SpatialTransformer(tiny())
    res = model(images())
    assert isinstance(res, AlignResult)
    assert res.images.shape == (3, 3, 32, 32) and res.grid.shape == (3, 32, 32, 2)
    assert res.flow.shape == (3, 32, 32, 2) and res.matrix.shape == (3, 2, 3)
    assert res.similarity_images.shape == (3, 3, 32, 32) and len(res.matrices) == 1
    assert res.flipped is None and res.heads is None


@pytest.mark.parametrize("transforms", [("similarity", "flow"), ("similarity",), ("flow",)])
def test_state_dict_layout(transforms):
    model = SpatialTransformer(tiny(transforms))
    keys = set(model.state_dict())
    assert all(k.startswith("stns.0.") or k.startswith("stns.1.") for k in keys)
    assert not any("input_downsample" in k for k in keys)  # constants: rebuilt, not saved
    if transforms[0] == "similarity":
        assert {"stns.0.warp_head.linear.weight", "stns.0.warp_head.one_hot", "stns.0.warp_head.warper.blur_filter", "stns.0.final_linear.weight"} <= keys
    if transforms == ("flow",):
        assert "stns.0.warp_head.mask_out.2.weight" in keys and not any(k.startswith("stns.1.") for k in keys)
    if len(transforms) == 2:
        assert "stns.1.warp_head.flow_out.2.weight" in keys
    # State dicts holding the original's constant tent kernels load strictly.
    sd = dict(model.state_dict())
    sd["stns.0.input_downsample.kernel_horz"] = torch.zeros(3, 1, 1, 4)
    sd["stns.0.input_downsample.kernel_vert"] = torch.zeros(3, 1, 4, 1)
    model.load_state_dict(sd, strict=True)
    assert model.stns[0].input_downsample.kernel_horz.abs().sum() > 0  # not overwritten


def test_load_original_single_transform_layout():
    src = perturbed(tiny(("similarity",)))
    unprefixed = {k[len("stns.0."):]: v for k, v in src.state_dict().items()}
    dst = SpatialTransformer(tiny(("similarity",)))
    dst.load_original_state_dict(unprefixed)
    x = images()
    torch.testing.assert_close(dst(x).images, src(x).images)


def test_widths_follow_max_channels():
    model = SpatialTransformer(tiny(max_channels=8))
    assert model.stns[0].convs[0][0].weight.shape == (8, 3, 1, 1)
    assert model.stns[1].warp_head.mask_out[-1].weight.shape == (9 * 64, 8, 3, 3)
    big = SpatialTransformer(STNConfig(flow_size=64, input_size=64, channel_multiplier=0.25, max_channels=1000))
    assert big.stns[0].convs[0][0].weight.shape[0] == 64  # 256 * 0.25 at 64 px
    assert big.stns[0].final_conv[0].weight.shape[0] == 512  # the 4x4 entry


# ------------------------------------------------------------------------------------------------
# Identity initialisation
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transforms", [("similarity", "flow"), ("similarity",), ("flow",)])
def test_fresh_transformer_is_the_identity(transforms):
    model = SpatialTransformer(tiny(transforms, flow_size=32, input_size=32))
    x = images(size=32)
    res = model(x)
    if res.matrix is not None:
        assert torch.equal(res.matrix, torch.eye(2, 3).expand(3, 2, 3))
    if res.flow is not None:
        assert torch.equal(res.flow, torch.zeros_like(res.flow))
    assert torch.equal(res.grid, identity_grid(32, 3))
    # The identity grid samples pixel centres: the output is the input.
    torch.testing.assert_close(res.images, x, atol=1e-6, rtol=0)


def test_fresh_transformer_with_larger_input():
    model = SpatialTransformer(tiny())
    x = images(size=64)
    res = model(x, output_resolution=64)
    assert torch.equal(res.matrix, torch.eye(2, 3).expand(3, 2, 3))
    assert torch.equal(res.flow, torch.zeros_like(res.flow))
    # The 32-px grid upsampled to 64: identity away from the clamped border.
    torch.testing.assert_close(res.images[..., 1:-1, 1:-1], x[..., 1:-1, 1:-1], atol=1e-5, rtol=0)
    # Downsampled output: the mipmap blurs, but it is the identity warp of the input.
    small = model(x, output_resolution=16)
    torch.testing.assert_close(small.grid, identity_grid(16, 3), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------------
# Forward semantics
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_composition_and_sampling():
    model = perturbed(tiny())
    x = images()
    res = model(x, output_resolution=48)
    # grid = M @ [identity + flow; 1], resized; pixels sampled once from the input.
    full = apply_affine(identity_grid(32) + res.flow, res.matrix)
    torch.testing.assert_close(res.grid, resize_grid(full, 48))
    torch.testing.assert_close(res.images, mipmap_warp(x, res.grid), atol=1e-6, rtol=0)
    # The similarity stage: the same matrix, sampled at flow_size from the input.
    torch.testing.assert_close(res.similarity_images, mipmap_warp(x, affine_grid(res.matrix, 32)), atol=1e-6, rtol=0)
    assert (res.matrix - torch.eye(2, 3)).abs().max() > 1e-2 and res.flow.abs().max() > 1e-3


@torch.no_grad()
def test_sampling_from_another_source():
    model = perturbed(tiny())
    x = images()
    hi = torch.nn.functional.interpolate(x, size=128, mode="bilinear", align_corners=False)
    ref = model(x, output_resolution=64)
    res = model(x, output_resolution=64, source=hi)
    # The similarity regresses from x; every pass (so also the flow's input) samples the source.
    torch.testing.assert_close(res.matrix, ref.matrix)
    torch.testing.assert_close(res.similarity_images, mipmap_warp(hi, affine_grid(res.matrix, 32)))
    torch.testing.assert_close(res.images, mipmap_warp(hi, res.grid))
    assert (res.images - ref.images).abs().max() > 1e-4


@torch.no_grad()
def test_iterations_compose_similarities():
    model = perturbed(tiny(("similarity",)))
    x = images()
    one = model(x)
    res = model(x, iters=3)
    assert len(res.matrices) == 3
    torch.testing.assert_close(res.matrices[0], one.matrix)
    # Pass 2 regresses from pass 1's output and composes to the right of pass 1's matrix.
    second = model(one.images)
    torch.testing.assert_close(res.matrices[1], res.matrices[0] @ torch.cat([second.matrix, torch.tensor([[[0.0, 0, 1]]]).expand(3, 1, 3)], 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.matrix, res.matrices[-1])
    torch.testing.assert_close(res.grid, affine_grid(res.matrix, 32))


@torch.no_grad()
def test_padding_modes_and_no_antialias():
    model = perturbed(tiny())
    x = images()
    outs = {m: model(x, padding_mode=m, antialias=False) for m in ("border", "reflection", "zeros")}
    for m, res in outs.items():
        torch.testing.assert_close(res.images, warp(x, res.grid, padding_mode=m), atol=1e-6, rtol=0)
    assert (outs["zeros"].images - outs["border"].images).abs().max() > 1e-3
    with pytest.raises(ValueError):
        model(x, padding_mode="zero")


@torch.no_grad()
def test_flip_auto():
    model = perturbed(tiny())
    x = images(n=6)
    res = model(x, flip="auto")
    plain, mirror = model(x), model(x.flip(3))
    from gangealing.losses.flow import total_variation_loss

    tv, tv_m = total_variation_loss(plain.flow, reduce_batch=False), total_variation_loss(mirror.flow, reduce_batch=False)
    assert torch.equal(res.flipped, tv_m < tv)
    f = res.flipped.view(-1, 1, 1, 1)
    torch.testing.assert_close(res.images, torch.where(f, mirror.images, plain.images), atol=1e-5, rtol=0)
    torch.testing.assert_close(res.flow, torch.where(f, mirror.flow, plain.flow), atol=1e-6, rtol=0)
    torch.testing.assert_close(res.grid, torch.where(f, flip_grid(mirror.grid), plain.grid), atol=1e-6, rtol=0)
    # The returned grid and matrix address the unmirrored input.
    torch.testing.assert_close(warp(x, res.grid), warp(torch.where(f, x.flip(3), x), torch.where(f, mirror.grid, plain.grid)), atol=1e-5, rtol=0)
    torch.testing.assert_close(apply_affine(identity_grid(32) + res.flow, res.matrix), res.grid, atol=1e-6, rtol=0)
    # Mirroring the input flips every decision (barring exact ties).
    res_m = model(x.flip(3), flip="auto")
    assert torch.equal(res_m.flipped, ~res.flipped)
    torch.testing.assert_close(res_m.images, res.images, atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        SpatialTransformer(tiny(("similarity",)))(x, flip="auto")


# ------------------------------------------------------------------------------------------------
# K heads
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transforms", [("similarity", "flow"), ("similarity",), ("flow",)])
@torch.no_grad()
def test_k_heads(transforms):
    k, n = 3, 2
    model = perturbed(tiny(transforms, num_heads=k))
    x = images(n=n)
    res = model(x, iters=2 if transforms[0] == "similarity" else 1)
    assert res.images.shape == (n * k, 3, 32, 32) and res.grid.shape == (n * k, 32, 32, 2)
    assert torch.equal(res.heads, torch.arange(k).repeat(n))
    if res.flow is not None:
        assert res.flow.shape == (n * k, 32, 32, 2)
    # Picking one head per image gives the matching rows (image-major: row i K + k).
    heads = torch.tensor([2, 0])
    pick = model(x, heads=heads, iters=2 if transforms[0] == "similarity" else 1)
    rows = torch.arange(n) * k + heads
    assert pick.images.shape == (n, 3, 32, 32) and torch.equal(pick.heads, heads)
    torch.testing.assert_close(pick.images, res.images[rows], atol=1e-5, rtol=0)
    torch.testing.assert_close(pick.grid, res.grid[rows], atol=1e-5, rtol=0)
    # Heads differ from each other.
    assert (res.grid[0] - res.grid[1]).abs().max() > 1e-3
    if transforms[-1] == "flow":
        flipped = model(x, flip="auto")
        assert flipped.flipped.shape == (n * k,) and flipped.images.shape == (n * k, 3, 32, 32)


def test_convex_upsample_of_constant_flow():
    # A constant low-res flow upsamples to factor * that constant in the interior (softmax weights
    # sum to 1); zero padding pulls the border rows towards 0.
    flow = torch.full((1, 2, 4, 4), 0.5)
    mask = torch.randn(1, 9 * 64, 4, 4)
    up = convex_upsample(flow, mask, 8)
    assert up.shape == (1, 32, 32, 2)
    torch.testing.assert_close(up[:, 8:24, 8:24], torch.full((1, 16, 16, 2), 4.0))


# ------------------------------------------------------------------------------------------------
# Training-related properties
# ------------------------------------------------------------------------------------------------


def test_gradients_reach_every_parameter():
    model = perturbed(tiny()).train()
    x = images()
    res = model(x)
    (res.images.square().mean() + res.flow.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_fresh_heads_receive_gradients():
    # At the identity the trunk gets no gradient (zero output layers), but the heads do.
    model = SpatialTransformer(tiny())
    res = model(images())
    (res.images - images(seed=1)[..., ::2, ::2]).square().mean().backward()
    assert model.stns[0].warp_head.linear.weight.grad.abs().sum() > 0
    assert model.stns[1].warp_head.flow_out[-1].weight.grad.abs().sum() > 0


@torch.no_grad()
def test_channels_last_and_resolution():
    model = perturbed(tiny())
    x = images()
    ref = model(x, output_resolution=40)
    assert ref.images.shape == (3, 3, 40, 40)
    model_cl = perturbed(tiny()).to(memory_format=torch.channels_last)
    res = model_cl(x.to(memory_format=torch.channels_last), output_resolution=40)
    torch.testing.assert_close(res.images, ref.images, atol=1e-5, rtol=0)


def test_input_validation():
    model = SpatialTransformer(tiny())
    with pytest.raises(ValueError):
        model(torch.zeros(1, 3, 48, 48))
    with pytest.raises(ValueError):
        SpatialTransformer(tiny(("flow",)))(images(), iters=2)
    with pytest.raises(ValueError):
        model(images(), flip="yes")
    with pytest.raises(ValueError):
        SpatialTransformer(tiny(("flow", "similarity")))


def test_zero_flow_script_writes_a_similarity_only_copy_and_keeps_the_input(tmp_path, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    from gangealing.build import build_from_checkpoint
    from gangealing.checkpoint import load_checkpoint, save_checkpoint
    from gangealing.models.stn import FlowHead
    from gangealing.predictor import Congealer
    from helpers import tiny_checkpoint

    src = Path(tiny_checkpoint(tmp_path / "m.pt", size=16, translate=0.25))
    ckpt = load_checkpoint(src)
    stn = build_from_checkpoint(ckpt, "stn")
    with torch.no_grad():
        for m in stn.modules():
            if isinstance(m, FlowHead):  # a flow that is not the identity
                m.flow_out[-1].weight.normal_()
    ckpt.state["stn"] = stn.state_dict()
    save_checkpoint(ckpt, src)
    before = src.read_bytes()
    script = Path(__file__).resolve().parents[1] / "scripts" / "zero_flow.py"
    monkeypatch.setattr(sys, "argv", ["zero_flow.py", str(src), str(tmp_path / "out.pt")])
    runpy.run_path(str(script), run_name="__main__")
    assert src.read_bytes() == before  # the input is never written
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a = Congealer.from_checkpoint(str(src)).stn(x)
        b = Congealer.from_checkpoint(str(tmp_path / "out.pt")).stn(x)
    assert a.flow.abs().max() > 0 and b.flow.abs().max() == 0
    assert torch.allclose(a.matrix, b.matrix)  # the similarity is untouched
    monkeypatch.setattr(sys, "argv", ["zero_flow.py", str(src), str(src)])
    with pytest.raises(SystemExit, match="never overwritten"):
        runpy.run_path(str(script), run_name="__main__")
