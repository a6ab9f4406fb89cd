"""psi annealing and the decaying cosine learning-rate restarts of GANgealing training."""
import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from gangealing.train.schedules import (DecayingCosineRestarts, anneal_psi, cosine_anneal, linear_anneal,
                                        lr_cycle_iters, restart_cycle, restart_lr)


def test_psi_values_of_the_parity_fixture():
    # The original computes the cosine in float32: these are its values at steps 1 and 2 of 4.
    assert anneal_psi(1, 4) == 0.8535534143447876
    assert anneal_psi(2, 4) == 0.4999999701976776
    assert anneal_psi(4, 4) == 0.0 and anneal_psi(10, 4) == 0.0


def test_psi_falls_monotonically_from_one_to_zero():
    values = [anneal_psi(i, 100) for i in range(0, 101)]
    assert values[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert anneal_psi(50, 100, "linear") == pytest.approx(0.5)
    assert linear_anneal(25, 100) == pytest.approx(0.75)
    assert cosine_anneal(50, 100) == pytest.approx(0.5, abs=1e-7)
    with pytest.raises(ValueError):
        anneal_psi(1, 10, "exp")
    assert anneal_psi(1, 0) == 0.0  # no annealing: the target is c from the start


def test_restart_lr_is_torch_cosine_restarts_with_decaying_peaks():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    ref = CosineAnnealingWarmRestarts(opt, T_0=1, T_mult=2)
    for epoch in [0.0, 0.25, 0.5, 0.99, 1.0, 1.5, 2.9, 3.0, 5.0, 6.99, 7.0, 12.3, 15.0, 40.0]:
        ref.step(epoch)
        n = restart_cycle(epoch).cycle
        assert restart_lr(epoch, 1.0) == pytest.approx(0.9**n * ref.get_last_lr()[0], abs=1e-12), epoch


def test_cycles_double_and_restart_at_exact_boundaries():
    assert (restart_cycle(0.99).cycle, restart_cycle(1.0).cycle, restart_cycle(2.99).cycle, restart_cycle(3.0).cycle) == (0, 1, 1, 2)
    assert restart_cycle(3.0).t_cur == 0.0 and restart_cycle(3.0).t_i == 4.0
    # math.log(2**29, 2) is 29.000000000000004; the cycle index must not depend on such rounding.
    for k in (10, 20, 29):
        assert restart_cycle(2.0**k - 1).cycle == k
        assert restart_cycle(2.0**k - 1 - 1e-6).cycle == k - 1
    assert restart_lr(1.0, 1.0) == pytest.approx(0.9)  # peak of the second cycle
    assert restart_lr(2.0, 1.0) == pytest.approx(0.45)  # middle of the second cycle


def test_lr_cycle_iters_of_the_paper_schedule():
    assert lr_cycle_iters(150_000, 37_500, 1_500_000, 2) == [149999, 187499, 262499, 412499, 712499, 1312499]
    assert lr_cycle_iters(10, 5, 8) == [9]  # shorter than the annealing: no cycle ends


def test_scheduler_keeps_base_rate_until_stepped_and_resumes():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([p], lr=0.01)
    sched = DecayingCosineRestarts(opt, t0=1, t_mult=2, decay=0.9)
    assert sched.get_last_lr() == [0.01]
    sched.step(1.5)
    assert sched.get_last_lr()[0] == pytest.approx(0.9 * 0.01 * (1 + math.cos(math.pi * 0.25)) / 2)
    opt2 = torch.optim.Adam([p], lr=0.01)
    sched2 = DecayingCosineRestarts(opt2)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()
