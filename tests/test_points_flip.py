"""Key points through mirrored alignment: flips and the left/right permutation are consistent.

The transformer knows no coordinates: points go through its result with the pure functions of
:mod:`gangealing.geometry.points` (the predictor's point methods are built on them)."""
import torch

from gangealing.geometry.coords import hflip_points
from gangealing.geometry.points import congeal_result, permute_keypoints, uncongeal_result
from helpers import parity_stn as _parity_stn


def test_transfer_to_the_mirror_image_lands_on_the_mirrored_points(parity_dir):
    stn = _parity_stn(parity_dir)
    x = torch.load(parity_dir / "stn" / "inputs.pt")["x"]
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(4, 6, 2, generator=g) * 100 + 14
    perm = [1, 0, 3, 2, 4, 5]
    with torch.no_grad():
        a, b = stn(x, flip="auto"), stn(x.flip(3), flip="auto")
        # An image and its mirror make opposite choices, so both align the same pixels.
        assert torch.equal(a.flipped, ~b.flipped)
        plain = uncongeal_result(b, congeal_result(a, pts, 128), 128)
        out = permute_keypoints(plain, perm, mask=a.flipped ^ b.flipped)
    expected = hflip_points(pts, 128)
    # Up to the congealed frame's quantisation (one 64-grid pixel is about 2 input pixels).
    assert (plain - expected).abs().max() < 2.5
    assert torch.equal(out, plain[:, perm])


def test_flip_none_and_auto_agree_where_nothing_is_mirrored(parity_dir):
    stn = _parity_stn(parity_dir)
    x = torch.load(parity_dir / "stn" / "inputs.pt")["x"]
    pts = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(1)) * 100 + 14
    with torch.no_grad():
        res = stn(x, flip="auto")
        flipped = res.flipped
        auto = congeal_result(res, pts, 128)
        none = congeal_result(stn(x), pts, 128)
    keep = ~flipped
    assert keep.any() and flipped.any()
    assert torch.equal(auto[keep], none[keep])
    # Mirrored rows congeal the mirrored point through the mirrored image.
    with torch.no_grad():
        via_mirror = congeal_result(stn(x.flip(3)), hflip_points(pts, 128), 128)
    assert torch.equal(auto[flipped], via_mirror[flipped])
