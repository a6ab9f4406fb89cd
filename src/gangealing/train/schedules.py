"""Schedules of GANgealing training: psi annealing and the learning-rate restarts.

Steps are 1-based (step ``i`` is the i-th optimisation step), as in the original ``train.py``.

* psi (how far each per-sample target is pulled from the sample's own latent towards ``c``) falls
  from 1 to 0 over the first ``anneal`` steps (cosine by default) and stays 0 afterwards.
* The learning rates stay at their base value while psi anneals. Afterwards they follow a cosine
  with warm restarts in "epochs" of ``period`` steps, ``epoch = (i - anneal) / period``: cycle ``n``
  lasts ``period * t_mult**n`` steps and its peak is ``decay**n`` times the base rate (the original's
  ``DecayingCosineAnnealingWarmRestarts`` with ``T_0 = 1``). A checkpoint is worth keeping at the
  end of each cycle, where the rate reaches zero (:func:`lr_cycle_iters`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List

import torch

__all__ = [
    "ANNEAL_FUNCTIONS",
    "anneal_psi",
    "cosine_anneal",
    "linear_anneal",
    "restart_cycle",
    "restart_lr",
    "lr_cycle_iters",
    "RestartPosition",
    "DecayingCosineRestarts",
]


def cosine_anneal(i: float, num_steps: int, start: float = 1.0, end: float = 0.0) -> float:
    """``end + (start - end) * (1 + cos(pi i / num_steps)) / 2``, with the cosine in float32 as the
    original (so psi at step 1 of 4 is 0.8535534143447876, the fixture's value)."""
    cos = torch.cos(torch.tensor(math.pi * i / num_steps))  # float32 tensor arithmetic, as the original
    return float(end + 0.5 * (start - end) * (1 + cos))


def linear_anneal(i: float, num_steps: int, start: float = 1.0, end: float = 0.0) -> float:
    """``start - i (start - end) / num_steps`` (rounded to float32 as the original)."""
    return float(torch.tensor(start - i * (start - end) / num_steps, dtype=torch.float32))


ANNEAL_FUNCTIONS = {"cosine": cosine_anneal, "linear": linear_anneal}


def anneal_psi(step: int, anneal: int, fn: str = "cosine") -> float:
    """psi at 1-based ``step``: annealed from 1 to 0 over ``anneal`` steps, 0 afterwards (and for anneal 0)."""
    if fn not in ANNEAL_FUNCTIONS:
        raise ValueError(f"unknown psi annealing {fn!r}; choose from {sorted(ANNEAL_FUNCTIONS)}")
    if step >= anneal:
        return 0.0
    return ANNEAL_FUNCTIONS[fn](step, anneal)


@dataclass(frozen=True)
class RestartPosition:
    """Where an epoch falls in the restart schedule: cycle index, position in it, its length."""

    cycle: int  # n: 0 for the first cycle
    t_cur: float  # epochs since the cycle started
    t_i: float  # length of the cycle in epochs (t0 * t_mult**n)


def restart_cycle(epoch: float, t0: int = 1, t_mult: int = 2) -> RestartPosition:
    """The cycle containing ``epoch`` (>= 0) for cycles of ``t0 * t_mult**n`` epochs.

    Same arithmetic as the original (and torch's ``CosineAnnealingWarmRestarts``), except that the
    cycle index is computed exactly instead of by a floating ``log`` (which can land a hair below
    an integer at a cycle boundary).
    """
    if epoch < 0:
        raise ValueError(f"expected a non-negative epoch, got {epoch}")
    if epoch < t0:
        return RestartPosition(0, float(epoch), float(t0))
    if t_mult == 1:
        n = int(epoch // t0)
        return RestartPosition(n, float(epoch - n * t0), float(t0))
    n = int(math.log(epoch / t0 * (t_mult - 1) + 1, t_mult))
    start = lambda k: t0 * (t_mult**k - 1) / (t_mult - 1)  # noqa: E731  first epoch of cycle k
    while start(n + 1) <= epoch:
        n += 1
    while n > 0 and start(n) > epoch:
        n -= 1
    return RestartPosition(n, float(epoch - start(n)), float(t0 * t_mult**n))


def restart_lr(epoch: float, base_lr: float, t0: int = 1, t_mult: int = 2, decay: float = 0.9,
               eta_min: float = 0.0) -> float:
    """Learning rate at ``epoch``: ``decay**n (eta_min + (base - eta_min)(1 + cos(pi t_cur / t_i)) / 2)``."""
    pos = restart_cycle(epoch, t0, t_mult)
    return decay**pos.cycle * (eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * pos.t_cur / pos.t_i)) / 2)


def lr_cycle_iters(anneal: int, period: float, total: int, t_mult: int = 2) -> List[int]:
    """Steps (1-based) that end a learning-rate cycle: ``anneal - 1``, then every cycle end before ``total``.

    The original saves a checkpoint and a visual at each of these (its ``lr_cycle_iters``).
    """
    iters = [anneal - 1]
    if total <= anneal or period <= 0:
        return iters
    ratio = (total - anneal) / period
    num_cycles = int(math.log(ratio, t_mult)) if ratio >= 1 and t_mult > 1 else int(ratio) if t_mult == 1 else 0
    for n in range(num_cycles):
        iters.append(int(iters[-1] + period * t_mult**n))
    return iters


class DecayingCosineRestarts:
    """Sets the learning rate of an optimiser's groups from :func:`restart_lr` (``step(epoch)``).

    Before the first ``step`` every group keeps its base rate (the original never steps its
    schedulers while psi anneals). ``state_dict`` / ``load_state_dict`` for resuming.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, t0: int = 1, t_mult: int = 2, decay: float = 0.9,
                 eta_min: float = 0.0):
        if t0 < 1 or t_mult < 1:
            raise ValueError(f"need t0 >= 1 and t_mult >= 1, got {t0}, {t_mult}")
        self.optimizer = optimizer
        self.t0, self.t_mult, self.decay, self.eta_min = int(t0), int(t_mult), float(decay), float(eta_min)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = None  # type: float | None

    def step(self, epoch: float) -> None:
        """Set every group's rate for ``epoch`` (a float: steps since annealing / period)."""
        self.last_epoch = float(epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = restart_lr(epoch, base, self.t0, self.t_mult, self.decay, self.eta_min)

    def get_last_lr(self) -> List[float]:
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict[str, Any]:
        return {"t0": self.t0, "t_mult": self.t_mult, "decay": self.decay, "eta_min": self.eta_min,
                "base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.t0, self.t_mult = int(state["t0"]), int(state["t_mult"])
        self.decay, self.eta_min = float(state["decay"]), float(state["eta_min"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.last_epoch = state["last_epoch"]
        if self.last_epoch is not None:
            self.step(self.last_epoch)
