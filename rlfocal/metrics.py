"""The metric registry: every name a run writes, its unit and its one-line meaning, in one place.

The loop, the samplers' ``stats()`` (prefixed ``replay/``), the gauge (``gauge/``), ``metrics.csv`` (whose columns
are this registry, in this order) and wandb all use these names. ``check_row`` refuses a name not listed here, so
nothing reaches wandb and silently misses ``metrics.csv``, which is all the report reads. The x-axis is
``global_step`` (environment steps, summed over vectorised environments).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    meaning: str


METRICS: tuple[Metric, ...] = (
    Metric("global_step", "env steps", "environment steps so far (the x-axis)"),
    Metric("charts/episodic_return", "return", "mean training return of episodes finished since the last row"),
    Metric("charts/episodic_length", "env steps", "mean length of those episodes"),
    Metric("charts/episodes", "episodes", "training episodes finished so far"),
    Metric("charts/epsilon", "probability", "exploration ε of the behaviour policy"),
    Metric("charts/SPS", "env steps/s", "environment steps per second since the last row"),
    Metric("charts/updates", "updates", "gradient steps so far"),
    Metric("losses/td_loss", "loss", "weighted TD loss of the last gradient step (batch mean)"),
    Metric("losses/q_values", "return", "mean Q(s, a) of the last batch"),
    Metric("losses/td_abs", "return", "mean |δ| of the last batch"),
    Metric("replay/size", "transitions", "transitions stored"),
    Metric("replay/beta", "exponent", "current IS exponent β (prioritized samplers)"),
    Metric("replay/priority_max", "TD error", "largest raw priority seen, before the exponent (new slots get it)"),
    Metric("replay/priority_total", "mass", "sum tree total Σ p_i^α"),
    Metric("replay/is_weight_min", "weight", "smallest IS weight of the last batch (1 = no correction)"),
    Metric("eval/return", "return", "mean return of the evaluation policy (unclipped rewards, whole games)"),
    Metric("eval/return_std", "return", "standard deviation of those returns"),
    Metric("gauge/grad_cosine", "cosine", "focal-TD (uniform) vs PER·IS expected gradients on the probe"),
    Metric("gauge/shift_cosine", "cosine", "how focal and PER (β = 0) each move the update away from uniform Huber"),
    Metric("gauge/alpha_fit", "exponent", "slope α* of log focal weight (∂FL/∂δ)/(∂L/∂δ) on log |δ| (2γ if L ≪ τ)"),
    Metric("gauge/alpha_shift", "exponent", "PER (β = 0) exponent on 0.1..2 whose shift best matches focal's"),
    Metric("gauge/modulator_spearman", "rank corr.", "focal modulators vs the sampler's stored priorities"),
    Metric("gauge/priority_ess", "fraction", "effective sample size of the sampling distribution / N"),
    Metric("gauge/priority_staleness", "updates", "mean gradient steps since each stored priority was set"),
)

COLUMNS: tuple[str, ...] = tuple(m.name for m in METRICS)
_KNOWN = frozenset(COLUMNS)


def check_row(names: Iterable[str]) -> None:
    """Raise ``KeyError`` naming any metric not in the registry."""
    unknown = sorted(set(names) - _KNOWN)
    if unknown:
        raise KeyError(f"unregistered metric(s) {unknown}: add them to rlfocal.metrics.METRICS")


def prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """``{prefix/key: value}``, checked against the registry (for ``sampler.stats()`` and the gauge)."""
    row = {f"{prefix}/{k}": v for k, v in values.items()}
    check_row(row)
    return row
