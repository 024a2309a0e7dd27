"""The analogy gauge (DESIGN.md §4.4): how closely does focal-TD under uniform sampling act like PER, right now?

Measured on a uniform probe of M stored transitions S, with the current networks and fresh TD errors δ:

- ``grad_cosine``: cosine between the two expected batch gradients on S, computed exactly as weighted sums over S
  (no sampling noise): focal-TD under uniform sampling, ``g_F = ∇ mean_i FL(δ_i)``, and Huber·IS under PER,
  ``∇ Σ_i P_i w_i L(δ_i)`` with ``P_i ∝ (|δ_i| + ε)^α`` and ``w_i = (M P_i)^-β / max_j w_j``.
- ``shift_cosine``: the sharper question. All those gradients share the uniform Huber gradient ``g_U``'s direction
  (cosines near 1 are common and say little), so compare how each reweighting *moves* the update away from it:
  cosine between ``ĝ_F − ĝ_U`` and ``ĝ_P − ĝ_U`` (unit vectors), with PER at β = 0, i.e. its prioritisation alone
  (at β = 1 PER's expected gradient on a fixed buffer is exactly uniform's and the shift vanishes). The mirror loss
  scores exactly 1 here (Fujimoto et al.'s Theorem 1 on the probe); 0 means unrelated reweightings.
- ``modulator_spearman``: Spearman rank correlation between the focal modulators ``(1 − e^{−L/τ})^γ`` (a monotone
  function of the fresh |δ|) and the priorities the sampler actually stores for S, which were set when each
  transition was last replayed: 1 means PER's stale priorities rank surprise as focal does now.
- ``priority_ess``: effective sample size ``(Σp)² / (N Σp²)`` of the sampling distribution over all N stored
  transitions (1 = uniform; small = a few transitions dominate).
- ``priority_staleness``: mean number of gradient steps since each stored priority was last set.

The last three need a prioritized sampler and are NaN under uniform sampling. The gauge only observes: it draws
from its own RNG, takes gradients with ``torch.autograd.grad`` (parameters' ``.grad`` untouched) and changes no
optimizer, sampler or loss state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from rlfocal import losses
from rlfocal.metrics import COLUMNS

GAUGE_KEYS = tuple(name.removeprefix("gauge/") for name in COLUMNS if name.startswith("gauge/"))


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # boundaries of runs of equal values; every member of a run gets the mean of the run's positions
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ: Pearson correlation of average ranks; NaN when either side is constant."""
    ra, rb = rank_average(np.asarray(a, np.float64)), rank_average(np.asarray(b, np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else math.nan


def effective_sample_size(p: np.ndarray) -> float:
    """``(Σp)² / (N Σp²)``: 1 for equal weights, 1/N when one item holds all the mass."""
    p = np.asarray(p, np.float64)
    return float(p.sum() ** 2 / (p.size * (p @ p)))


def _flat_grad(objective: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """∇ objective as one float64 vector; leaves ``.grad`` untouched and keeps the graph for the next call."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(objective, params, retain_graph=True)]).double()


def _unit(g: torch.Tensor) -> torch.Tensor:
    norm = g.norm()
    return g / norm if norm > 0 else g


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity; NaN when either vector is zero (e.g. no shift at all from γ = 0 or α = 0)."""
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else math.nan


def analogy_gauge(
    agent,
    buffer,
    rng: np.random.Generator,
    *,
    priority: Callable[[np.ndarray], np.ndarray],
    beta: float,
    sample_size: int = 1024,
    focal_gamma: float = 0.3,
    kappa: float = 1.0,
) -> dict[str, float]:
    """The gauge's readings (keys ``GAUGE_KEYS``) for ``agent`` (a ``agents.dqn.DQN``) on ``buffer``.

    ``focal_gamma`` is focal-TD's γ (the α = 2γ prediction); its τ is the probe's mean Huber loss (the scale-free
    ``tau: auto`` without a running state). The PER side is a sampler's: ``priority`` (its ``priority(td)``, the mass
    p^α it would store) and its IS exponent ``beta``; nothing here restates α or ε.
    """
    batch = buffer.peek(min(sample_size, len(buffer)), rng).to_torch(agent.device)
    td, _ = agent.td_errors(batch, eager=True)
    loss = losses.huber(td, kappa)
    tau = loss.detach().mean().clamp_min(1e-12)
    focal = losses.focal_td(td, gamma=focal_gamma, tau=tau, kappa=kappa)
    with torch.no_grad():
        p = torch.as_tensor(priority(td.detach().cpu().numpy()), device=td.device)
        prob = p / p.sum()
        w = (prob * td.numel()).pow(-beta)
        w = w / w.max()
    grads = [
        _flat_grad(objective, agent.params)
        for objective in (focal.mean(), (prob * w * loss).sum(), loss.mean(), (prob * loss).sum())
    ]
    g_focal, g_per, g_uniform, g_prioritized = grads
    out = {k: math.nan for k in GAUGE_KEYS}
    out["grad_cosine"] = _cosine(g_focal, g_per)
    u = _unit(g_uniform)
    out["shift_cosine"] = _cosine(_unit(g_focal) - u, _unit(g_prioritized) - u)

    sampler = buffer.sampler
    if hasattr(sampler, "tree"):
        modulator = losses.focal_modulator(loss.detach(), focal_gamma, tau)
        slots = batch.indices.cpu().numpy()
        out["modulator_spearman"] = spearman(modulator.cpu().numpy(), sampler.tree.get(slots))
        stored = buffer.stored_slots()
        out["priority_ess"] = effective_sample_size(sampler.tree.get(stored))
        out["priority_staleness"] = float(sampler.staleness(stored).mean())
    return out
