"""Generator parity with the original GANgealing generator (fixtures in parity/generator).

The original is called as ``g(styles, ...)`` with flags; each case below reproduces one such call
through our API. The mapping (see also the module docstring of gangealing.models.stylegan2):

  case          original call                                          ours
  mapping_w     g.style(z)                                             G.mapping(z)
  mapping_only  g([z], mapping_only=True)[0]                           G.mapping(z)
  a             g([z], randomize_noise=False)                          G(z=z, noise='const')
  b             ... + return_latents=True -> latent                    G.w_plus(z=z)
  c             g([z], truncation=0.7, truncation_latent=t,            G(z=z, psi=0.7, w_avg=t, noise='const')
                  inject_index=8, randomize_noise=False)
  c2            the same with inject_index=4 (the original truncates   G.synthesis(G.mix(G.truncate(w, .7, t), w, 4))
                only rows 0-3: its two-style quirk)
  d             g([z, z2], inject_index=3, randomize_noise=False)      G.synthesis(G.mix(w(z), w(z2), 3))
  e             g([w_plus], input_is_latent=True, ...)                 G(w_plus=w_plus, noise='const')
  f             g([w], input_is_latent=True, ...) with 2-D w           G(w=w, noise='const')
  g             g([z], noise=explicit_noise)                           G(z=z, noise=explicit_noise)
"""
import pytest
import torch

from gangealing.io.rosinality import load_rosinality
from gangealing.models.stylegan2 import Generator

ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture(parity_dir):
    d = parity_dir / "generator"
    gen = torch.load(d / "gen.pt", weights_only=True)
    ck = load_rosinality(gen)
    g = Generator(ck.g_config).eval()
    g.load_state_dict(ck.g_ema, strict=True)  # strict: every rosinality key and buffer
    return g, torch.load(d / "inputs.pt", weights_only=True), torch.load(d / "outputs.pt", weights_only=True)


def _calls(g, inp, out):
    z, z2, t = inp["z"], inp["z2"], inp["truncation_latent"]
    w = g.mapping(z)
    c2_latent = g.mix(g.truncate(w, 0.7, t), w, 4)
    d_latent = g.mix(w, g.mapping(z2), 3)
    return {
        "mapping_w": w,
        "mapping_only": g.mapping(z),
        "a_image": g(z=z, noise="const"),
        "b_image": g.synthesis(g.w_plus(z=z), noise="const"),
        "b_latent": g.w_plus(z=z),
        "c_image": g(z=z, psi=0.7, w_avg=t, noise="const"),
        "c_latent": g.w_plus(z=z, psi=0.7, w_avg=t),
        "c2_image": g.synthesis(c2_latent, noise="const"),
        "c2_latent": c2_latent,
        "d_image": g.synthesis(d_latent, noise="const"),
        "d_latent": d_latent,
        "e_image": g(w_plus=inp["w_plus"], noise="const"),
        "e_latent": g.w_plus(w_plus=inp["w_plus"]),
        "f_image": g(w=out["mapping_w"], noise="const"),
        "g_image": g(z=z, noise=inp["explicit_noise"]),
    }


@pytest.mark.parametrize("fused", [False, True], ids=["shared-weight", "grouped"])
def test_every_parity_case(fixture, fused):
    g, inp, out = fixture
    g.fused_modconv = fused
    try:
        with torch.no_grad():
            ours = _calls(g, inp, out)
    finally:
        g.fused_modconv = False
    assert set(ours) == set(out)
    for name, ref in out.items():
        assert ours[name].shape == ref.shape, name
        torch.testing.assert_close(ours[name], ref, rtol=0, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_latent_patterns_and_noise_modes(fixture):
    g, inp, out = fixture
    with torch.no_grad():
        assert torch.equal(out["c2_latent"][:, 4:], g.mapping(inp["z"]).unsqueeze(1).expand(-1, 4, -1))
        const = g(z=inp["z"], noise="const")
        # The fixture's noise buffers are the registered ones, so passing them equals 'const'.
        torch.testing.assert_close(g(z=inp["z"], noise=inp["noise_buffers"]), const, rtol=0, atol=0)
        assert (g(z=inp["z"], noise=inp["explicit_noise"]) - const).abs().max() > 1e-3


def test_mean_latent_matches_the_original_rng_use(fixture):
    g, inp, _ = fixture
    torch.manual_seed(11)  # the fixture: mean_latent(4096) right after torch.manual_seed(11)
    with torch.no_grad():
        torch.testing.assert_close(g.mean_latent(4096), inp["truncation_latent"], rtol=0, atol=1e-5)
