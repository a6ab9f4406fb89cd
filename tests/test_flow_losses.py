"""Flow regularisers: parity with the original and basic properties."""
import torch

from gangealing.losses.flow import flow_identity_loss, total_variation_loss


def _load(parity_dir):
    stn = parity_dir / "stn"
    losses = torch.load(stn / "outputs_aa_points_losses.pt")["losses"]
    flow = torch.load(stn / "outputs_forward.pt")["fwd"]["flow"]
    synthetic = torch.load(stn / "inputs.pt")["synthetic_flow"]
    return losses, flow, synthetic


def test_parity_fixture_flow(parity_dir):
    losses, flow, _ = _load(parity_dir)
    torch.testing.assert_close(total_variation_loss(flow, reduce_batch=False), losses["tv_per_image"], rtol=0, atol=1e-6)
    torch.testing.assert_close(total_variation_loss(flow), losses["tv_batch"], rtol=0, atol=1e-6)
    torch.testing.assert_close(flow_identity_loss(flow), losses["identity"], rtol=0, atol=1e-6)


def test_parity_synthetic_flow_exercises_linear_branch(parity_dir):
    losses, _, flow = _load(parity_dir)
    assert (flow[:, 1:] - flow[:, :-1]).abs().max() > 1  # the fixture does reach the linear part
    torch.testing.assert_close(total_variation_loss(flow, reduce_batch=False), losses["synthetic_tv_per_image"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(total_variation_loss(flow), losses["synthetic_tv_batch"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(flow_identity_loss(flow), losses["synthetic_identity"], rtol=1e-6, atol=1e-6)


def test_constant_flow_has_zero_tv():
    flow = torch.full((2, 5, 7, 2), 0.3)
    assert total_variation_loss(flow).item() == 0.0
    assert total_variation_loss(flow, reduce_batch=False).shape == (2,)


def test_tv_small_and_large_steps():
    # One vertical step of height d in channel 0 of a 2x1 flow: one vertical diff out of 2 entries.
    for d, rho in [(0.5, 0.125), (3.0, 2.5)]:
        flow = torch.zeros(1, 2, 1, 2)
        flow[0, 1, 0, 0] = d
        # vertical: mean over 2 entries (x and y components); horizontal: no entries -> nan avoided
        flow = flow.expand(1, 2, 2, 2).contiguous()  # W=2 so horizontal diffs exist (all zero)
        expected = rho * 2 / 4  # two of four vertical entries are d
        torch.testing.assert_close(total_variation_loss(flow), torch.tensor(expected))


def test_batch_mean_equals_mean_of_per_image():
    flow = torch.randn(3, 6, 6, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(total_variation_loss(flow), total_variation_loss(flow, False).mean())
    torch.testing.assert_close(flow_identity_loss(flow), flow_identity_loss(flow, False).mean())
    torch.testing.assert_close(flow_identity_loss(flow), flow.square().mean())
