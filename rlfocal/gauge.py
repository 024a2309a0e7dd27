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
- ``alpha_fit``: the exponent α* for which |δ|^α best matches focal-TD's effective per-sample weight relative to
  Huber, ``w_i = (∂FL/∂δ_i)/(∂L/∂δ_i)`` (``fit_exponent``: least squares of log w on log |δ|). DESIGN.md §2.2
  predicts α* = 2γ for L ≪ τ; the gauge's τ is the probe's mean loss, where it falls below.
- ``alpha_shift``: the PER (β = 0) exponent α in ``ALPHA_GRID`` whose shift best matches focal's (largest
  ``shift_cosine``); needs ``priority`` to be a bound sampler method with ``alpha`` > 0, else NaN.
- ``modulator_spearman``: Spearman rank correlation between the focal modulators ``(1 − e^{−L/τ})^γ`` (a monotone
  function of the fresh |δ|) and the priorities the sampler actually stores for S, which were set when each
  transition was last replayed: 1 means PER's stale priorities rank surprise as focal does now.
- ``priority_ess``: effective sample size ``(Σp)² / (N Σp²)`` of the sampling distribution over all N stored
  transitions (1 = uniform; small = a few transitions dominate).
- ``priority_staleness``: mean number of gradient steps since each stored priority was last set.

The last three need a prioritized sampler and are NaN under uniform sampling. The gauge only observes: it draws
from its own RNG, takes gradients with ``torch.autograd.grad`` (parameters' ``.grad`` untouched) and changes no
optimizer, sampler or loss state. With several seeds trained as lanes, ``LaneView`` lets it read one lane exactly as
it reads that seed's agent alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch.func import functional_call

from agents.dqn import td_error
from rlfocal import losses
from rlfocal.metrics import COLUMNS

GAUGE_KEYS = tuple(name.removeprefix("gauge/") for name in COLUMNS if name.startswith("gauge/"))
# PER exponents that ``alpha_shift`` searches; α = 0 is uniform replay, which moves nothing (no shift to compare)
ALPHA_GRID = tuple(round(0.1 * k, 1) for k in range(1, 21))
MIN_FIT_SAMPLES = 8


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


def loss_slopes(
    td: torch.Tensor, gamma: float, tau: float, base: str = "huber", kappa: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's ``∂L/∂δ_i`` and ``∂FL/∂δ_i`` (float64): L the base loss, FL = ``focal_td`` with γ and τ.

    Both losses are elementwise in δ, so one backward of their sum w.r.t. δ gives every sample's own derivative.
    """
    d = td.detach().double().requires_grad_()
    base_loss = losses.huber(d, kappa) if base == "huber" else losses.mse(d)
    focal = losses.focal_td(d, gamma=gamma, tau=tau, base=base, kappa=kappa)
    return torch.autograd.grad(base_loss.sum(), d)[0], torch.autograd.grad(focal.sum(), d)[0]


def fit_exponent(td: torch.Tensor, weight: torch.Tensor) -> float:
    """α*: the slope of the least-squares line ``log w = α log|δ| + c`` (with intercept c).

    Fitted over the samples with |δ| > 1e-12·max|δ| and a finite w > 0; NaN with fewer than ``MIN_FIT_SAMPLES``
    of them, or when their |δ| are all equal.
    """
    abs_td, weight = td.detach().double().abs(), weight.detach().double()
    keep = (abs_td > 1e-12 * abs_td.max()) & torch.isfinite(weight) & (weight > 0)
    if int(keep.sum()) < MIN_FIT_SAMPLES:
        return math.nan
    x, y = abs_td[keep].log(), weight[keep].log()
    x = x - x.mean()
    sxx = float(x @ x)
    return float(x @ (y - y.mean())) / sxx if sxx > 0 else math.nan


def alpha_fit(td: torch.Tensor, gamma: float, tau: float, base: str = "huber", kappa: float = 1.0) -> float:
    """α* of ``fit_exponent`` for focal-TD's effective weight ``w_i = (∂FL/∂δ_i)/(∂L/∂δ_i)`` (DESIGN.md §2.2)."""
    d_base, d_focal = loss_slopes(td, gamma, tau, base, kappa)
    return fit_exponent(td, d_focal / d_base)  # 0/0 at δ = 0 is NaN, which the fit drops


def _unit(g: torch.Tensor) -> torch.Tensor:
    norm = g.norm()
    return g / norm if norm > 0 else g


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity; NaN when either vector is zero (e.g. no shift at all from γ = 0 or α = 0)."""
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else math.nan


def shift_cosine(g_focal: torch.Tensor, g_uniform: torch.Tensor, g_per: torch.Tensor) -> float:
    """Cosine between focal's shift ``ĝ_F − ĝ_U`` and PER (β = 0)'s ``ĝ_P − ĝ_U``, ĝ the unit gradients (so the
    gradients' scales, e.g. a mean or a sum, do not matter)."""
    u = _unit(g_uniform)
    return _cosine(_unit(g_focal) - u, _unit(g_per) - u)


def best_shift_alpha(
    g_focal: torch.Tensor,
    g_uniform: torch.Tensor,
    per_gradient: Callable[[float], torch.Tensor],
    grid: tuple[float, ...] = ALPHA_GRID,
) -> float:
    """The α in ``grid`` whose PER (β = 0) gradient ``per_gradient(α)`` maximises ``shift_cosine``; NaN if no
    cosine is defined. One gradient per α; an answer at an end of the grid means the best α may lie beyond it."""
    cosines = np.array([shift_cosine(g_focal, g_uniform, per_gradient(a)) for a in grid])
    return math.nan if np.isnan(cosines).all() else grid[int(np.nanargmax(cosines))]


def _sampler_alpha(priority: Callable[[np.ndarray], np.ndarray]) -> float | None:
    """The exponent α of the sampler whose bound ``priority`` method this is (None for a plain function)."""
    return getattr(getattr(priority, "__self__", None), "alpha", None)


class LaneView:
    """Seed lane ``lane`` of a ``DQN`` with S > 1 lanes, as the one-seed agent ``analogy_gauge`` reads: ``device``,
    ``params`` (that lane's slices of the stacked parameters, taken now: make one per reading) and ``td_errors``."""

    def __init__(self, agent, lane: int) -> None:
        self.device = agent.device
        self._agent = agent
        self._online = {name: p[lane] for name, p in agent.q_net.named_parameters()}
        # gradients w.r.t. these slices are lane k's alone (the stacked parameters' .grad stays untouched)
        self.params = list(self._online.values())
        self._online |= {name: b[lane] for name, b in agent.q_net.named_buffers()}
        target = agent.target_net
        self._target = {name: t[lane] for name, t in [*target.named_parameters(), *target.named_buffers()]}

    def td_errors(self, batch, *, eager: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The lane's ``td_error`` on batch fields ``[B, ...]``: the stacked modules called with one lane's slices
        run the single network's forward, always eagerly (``eager`` is accepted as ``DQN.td_errors`` takes it)."""
        a = self._agent
        online = partial(functional_call, a.q_net, self._online)
        target_net = partial(functional_call, a.target_net, self._target)
        with a._autocast():
            return td_error(online, target_net, batch, a.double)


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
    """The gauge's readings (keys ``GAUGE_KEYS``) for ``agent`` (a one-seed ``agents.dqn.DQN`` or a ``LaneView``)
    on ``buffer`` (its seed's ``ReplayBuffer``).

    ``focal_gamma`` is focal-TD's γ (the α = 2γ prediction); its τ is the probe's mean Huber loss (the scale-free
    ``tau: auto`` without a running state). The PER side is a sampler's: ``priority`` (its ``priority(td)``, the mass
    p^α it would store) and its IS exponent ``beta``; nothing here restates α or ε. For ``alpha_shift`` the
    priorities at another exponent a are ``priority(td)^(a/α)``, with α read from the sampler ``priority`` is bound to.
    """
    batch = buffer.peek(min(sample_size, len(buffer)), rng).to_torch(agent.device)
    td, _ = agent.td_errors(batch, eager=True)
    tau = max(float(losses.huber(td.detach().double(), kappa).mean()), 1e-12)
    d_base, d_focal = loss_slopes(td, focal_gamma, tau, kappa=kappa)
    stored_priority = torch.as_tensor(priority(td.detach().cpu().numpy()), device=td.device).double()
    prob = stored_priority / stored_priority.sum()
    w = (prob * td.numel()).pow(-beta)
    w = w / w.max()

    def vjp(cotangent: torch.Tensor) -> torch.Tensor:
        # directions are all that is read: rescaling to max 1 keeps float32 cotangents away from under/overflow
        c = (cotangent / cotangent.abs().max().clamp_min(1e-300)).to(td.dtype)
        grads = torch.autograd.grad(td, agent.params, grad_outputs=c, retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads]).double()

    # each expected gradient on the probe is Σ_i c_i ∇δ_i with c_i a per-sample weight times dℓ/dδ_i
    g_focal, g_uniform = vjp(d_focal), vjp(d_base)
    out = {k: math.nan for k in GAUGE_KEYS}
    out["grad_cosine"] = _cosine(g_focal, vjp(prob * w * d_base))
    out["shift_cosine"] = shift_cosine(g_focal, g_uniform, vjp(prob * d_base))
    out["alpha_fit"] = fit_exponent(td, d_focal / d_base)  # 0/0 at δ = 0 is NaN, which the fit drops
    sampler_alpha = _sampler_alpha(priority)
    if sampler_alpha:
        out["alpha_shift"] = best_shift_alpha(
            g_focal, g_uniform, lambda a: vjp(stored_priority ** (a / sampler_alpha) * d_base)
        )

    sampler = buffer.sampler
    if hasattr(sampler, "tree"):
        modulator = losses.focal_modulator(losses.huber(td.detach(), kappa), focal_gamma, tau)
        slots = batch.indices.cpu().numpy()
        out["modulator_spearman"] = spearman(modulator.cpu().numpy(), sampler.tree.get(slots))
        stored = buffer.stored_slots()
        out["priority_ess"] = effective_sample_size(sampler.tree.get(stored))
        out["priority_staleness"] = float(sampler.staleness(stored).mean())
    return out
