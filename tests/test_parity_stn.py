"""Parity of the spatial transformer and the mipmap sampler with the original's recorded outputs
(tests/fixtures/parity/stn, see its README.md)."""
import pytest
import torch

from gangealing.config import STNConfig
from gangealing.geometry.similarity import affine_grid
from gangealing.geometry.warp import mipmap_warp_with_levels, warp
from gangealing.losses.flow import total_variation_loss
from gangealing.models.stn import SpatialTransformer

ATOL = 1e-4
CFG = STNConfig(transforms=("similarity", "flow"), flow_size=64, input_size=128, channel_multiplier=0.125, max_channels=32, num_heads=1)


def close(actual, expected, atol=ATOL):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def stn_dir(parity_dir):
    return parity_dir / "stn"


@pytest.fixture(scope="module")
def inputs(stn_dir):
    return torch.load(stn_dir / "inputs.pt")


@pytest.fixture(scope="module")
def fwd_out(stn_dir):
    return torch.load(stn_dir / "outputs_forward.pt")


@pytest.fixture(scope="module")
def aa_out(stn_dir):
    return torch.load(stn_dir / "outputs_aa_points_losses.pt")


@pytest.fixture(scope="module")
def stn(stn_dir):
    sd = torch.load(stn_dir / "stn.pt")
    model = SpatialTransformer(CFG).eval()
    # The original's state dict (with the constant tent kernels) loads strictly as it is...
    model.load_state_dict(sd, strict=True)
    # ...and without them, which is what our own state_dict() holds.
    stripped = {k: v for k, v in sd.items() if "input_downsample.kernel_" not in k}
    model.load_state_dict(stripped, strict=True)
    assert set(model.state_dict()) == set(stripped)
    return model


class _Capture:
    """Records the raw similarity parameters (output of the similarity head's linear layer)."""

    def __init__(self, module):
        self.values = []
        self.handle = module.register_forward_hook(lambda m, i, o: self.values.append(o.detach()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_state_dict_keys_match_original(stn, stn_dir):
    import json

    keys = json.loads((stn_dir / "state_dict_keys.json").read_text())
    expected = {k for k in keys if "input_downsample.kernel_" not in k}
    sd = stn.state_dict()
    assert set(sd) == expected
    for k in expected:
        assert list(sd[k].shape) == keys[k]["shape"], k
    assert sum(p.numel() for p in stn.parameters()) == 376998


@torch.no_grad()
def test_forward(stn, inputs, fwd_out):
    ref = fwd_out["fwd"]
    with _Capture(stn.stns[0].warp_head.linear) as cap:
        res = stn(inputs["x"], output_resolution=128)
    close(cap.values[0], ref["sim_raw_params"])
    close(res.matrix, ref["sim_matrix"])
    close(affine_grid(res.matrix, 64), ref["sim_grid"])
    close(res.similarity_images, ref["sim_out"])
    close(res.flow, ref["flow"])
    close(res.grid, ref["grid"])
    close(res.images, ref["out"])
    assert res.images.shape == (4, 3, 128, 128) and res.flipped is None


@torch.no_grad()
def test_forward_iters3(stn, inputs, fwd_out):
    ref = fwd_out["iters3"]
    with _Capture(stn.stns[0].warp_head.linear) as cap:
        res = stn(inputs["x"], output_resolution=128, iters=3)
    assert len(cap.values) == 3 and len(res.matrices) == 3
    close(torch.stack(cap.values), ref["sim_raw_params_per_iter"])
    close(torch.stack(res.matrices), ref["sim_matrices_per_iter"])
    close(res.similarity_images, ref["sim_out_final"])
    close(res.flow, ref["flow"])
    close(res.grid, ref["grid"])
    close(res.images, ref["out"])


@pytest.mark.parametrize("mode", ["reflection", "zeros"])
@torch.no_grad()
def test_forward_padding(stn, inputs, fwd_out, mode):
    ref = fwd_out[f"pad_{mode}"]
    res = stn(inputs["x"], output_resolution=128, padding_mode=mode)
    close(res.images, ref["out"])
    close(res.grid, ref["grid"])
    close(res.flow, ref["flow"])
    # The padding mode reaches the similarity pass too, so results differ from the border case.
    border = fwd_out["fwd"]
    assert (res.images - border["out"]).abs().max() > 1e-3


@torch.no_grad()
def test_flip(stn, inputs, fwd_out):
    ref = fwd_out["flip"]
    x = inputs["x"]
    res = stn(x, output_resolution=128, flip="auto")
    assert torch.equal(res.flipped, ref["flip_indices"].view(-1))
    close(res.images, ref["out"])
    close(res.grid, ref["warp"])
    close(res.flow, ref["flow"])
    # The TV values behind the decision, from plain forwards of x and of its mirror.
    tv = total_variation_loss(stn(x, output_resolution=128).flow, reduce_batch=False)
    tv_m = total_variation_loss(stn(x.flip(3), output_resolution=128).flow, reduce_batch=False)
    torch.testing.assert_close(tv, ref["tv_unflipped"], rtol=1e-3, atol=1e-9)
    torch.testing.assert_close(tv_m, ref["tv_mirrored"], rtol=1e-3, atol=1e-9)
    # Mirrored rows' matrix addresses the unmirrored input: the composition still holds.
    from gangealing.geometry.coords import apply_affine, identity_grid
    from gangealing.geometry.warp import resize_grid

    rebuilt = resize_grid(apply_affine(identity_grid(64) + res.flow, res.matrix), 128)
    close(rebuilt, res.grid, atol=1e-5)


@torch.no_grad()
def test_antialiased_output_32(stn, inputs, aa_out):
    ref = aa_out["aa_stn_out32"]
    x = inputs["x"]
    res = stn(x, output_resolution=32)
    close(res.images, ref["out"])
    close(res.grid, ref["grid"])
    close(res.flow, ref["flow"])
    close(mipmap_warp_with_levels(x, res.grid).levels_map, ref["levels_map"])
    close(warp(x, res.grid), ref["bilinear_no_aa"])


@pytest.mark.parametrize(
    "case",
    ["identity32_border", "identity32_reflection", "affine48_border", "affine48_reflection", "nonpow2_input96_affine48_border"],
)
@torch.no_grad()
def test_mipmap(inputs, aa_out, case):
    ref = aa_out["mipmap"][case]
    padding = case.rsplit("_", 1)[1]
    src = ref.get("input", inputs["x"])
    if case.startswith("affine48"):
        close(affine_grid(aa_out["mipmap"]["_affine_matrices"], 48), ref["grid"], atol=1e-6)
    res = mipmap_warp_with_levels(src, ref["grid"], max_num_levels=3.5, padding_mode=padding)
    close(res.images, ref["out"])
    close(res.levels_map, ref["levels_map"])
    if "bilinear_no_aa" in ref:
        close(warp(src, ref["grid"], padding_mode=padding), ref["bilinear_no_aa"])


@torch.no_grad()
def test_checkpoint_trained_smaller_evaluated_at_the_original_input_size(stn_dir, inputs, fwd_out, aa_out, tmp_path):
    """The original evaluates with the transformer built for the evaluation's --real_size. A checkpoint
    whose transformer was built at 64 (= flow_size), loaded with input_size=128, gives the tensors of
    the fixture's transformer built at 128 with the same weights (issue 12)."""
    from dataclasses import replace

    from gangealing.build import make_checkpoint
    from gangealing.checkpoint import save_checkpoint
    from gangealing.predictor import Congealer

    small = SpatialTransformer(replace(CFG, input_size=64)).eval()
    small.load_state_dict({k: v for k, v in torch.load(stn_dir / "stn.pt").items() if "input_downsample.kernel_" not in k})
    path = save_checkpoint(make_checkpoint("model", {"stn": small}), tmp_path / "trained_at_64.pt")
    x, xb, pts = inputs["x"], inputs["xB"], inputs["pointsA"]

    c = Congealer.from_checkpoint(path, device="cpu", flip=False, input_size=128)
    assert c.input_size == 128 and c.stn.cfg.input_size == 128
    res = c.align(x, output_resolution=128)
    ref = fwd_out["fwd"]
    close(res.matrix, ref["sim_matrix"])
    close(res.flow, ref["flow"])
    close(res.grid, ref["grid"])
    close(res.images, ref["out"])
    moved = c.transfer_points(x, xb, pts, legacy=True)
    torch.testing.assert_close(moved, aa_out["points"]["transfer"], atol=1e-3, rtol=0)

    # At the size it was trained at, the 128 px images are first resized to 64: other numbers.
    trained = Congealer.from_checkpoint(path, device="cpu", flip=False)
    assert trained.input_size == 64
    assert (trained.transfer_points(x, xb, pts, legacy=True) - aa_out["points"]["transfer"]).abs().max() > 0.1


def test_input_size_must_be_a_multiple_of_the_flow_size(stn):
    from gangealing.predictor import Congealer

    with pytest.raises(ValueError, match="input size 100 must be a multiple of the model's flow size 64"):
        Congealer(stn, device="cpu").with_input_size(100)
