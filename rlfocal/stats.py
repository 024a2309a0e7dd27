"""Aggregate statistics for few-run RL results, after rliable (Agarwal et al. 2021, https://arxiv.org/abs/2108.13264).

Pure numpy, no rliable or pandas: the interquartile mean, the optimality gap, rliable's stratified bootstrap with
percentile intervals, and a per-x bootstrap band for learning curves. Every function rejects empty input and
NaN/inf scores with a ``ValueError`` rather than returning a NaN that would silently spread into a report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike


def _finite(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    if x.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_ci(ci: float, reps: int) -> None:
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci={ci} is not allowed: must be in (0, 1)")
    if reps < 1:
        raise ValueError(f"reps={reps} is not allowed: must be >= 1")


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean of all scores (flattened): the mean after cutting ``int(0.25 n)`` from each end.

    The same numbers as rliable's ``aggregate_iqm``, i.e. ``scipy.stats.trim_mean(scores, 0.25, axis=None)``,
    written out in numpy because scipy is only a dev dependency.
    """
    x = np.sort(_finite(scores).ravel())
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def optimality_gap(scores: ArrayLike, threshold: float = 1.0) -> float:
    """Mean shortfall below ``threshold``, ``mean(max(threshold - s, 0))``: 0 when every run reaches it."""
    x = _finite(scores)
    return float(np.maximum(threshold - x, 0.0).mean())


def _percentile_interval(samples: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100.0 * (1.0 - ci) / 2.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail], axis=0)
    return lo, hi


def _tasks(scores: ArrayLike | Sequence[ArrayLike], arm: str) -> list[np.ndarray]:
    """One 1-D array of run scores per task, from a ``[runs, tasks]`` matrix or a ragged list of per-task runs."""
    if isinstance(scores, np.ndarray):
        matrix = _finite(scores, f"scores of {arm!r}")
        if matrix.ndim != 2:
            raise ValueError(f"scores of {arm!r} must be a [runs, tasks] matrix, got shape {matrix.shape}")
        return [matrix[:, t] for t in range(matrix.shape[1])]
    tasks = list(scores)
    if not tasks:
        raise ValueError(f"scores of {arm!r} is empty")
    return [_finite(t, f"scores of {arm!r}, task {i}").ravel() for i, t in enumerate(tasks)]


def stratified_bootstrap_ci(
    score_matrix_per_arm: Mapping[str, ArrayLike | Sequence[ArrayLike]],
    statistic: Callable[[np.ndarray], float],
    reps: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Point estimate and percentile CI of ``statistic`` per arm, resampling runs within each task.

    Like rliable's ``StratifiedBootstrap``: each replicate draws, for every task separately, as many runs as that
    task has, with replacement, so a task never gains or loses runs. An arm's scores are a ``[runs, tasks]`` array
    or a list with one 1-D array of runs per task (tasks may have different run counts). ``statistic`` sees all
    tasks' scores concatenated into one 1-D array, as rliable's IQM and optimality gap flatten the matrix.
    Each arm uses its own generator seeded with ``seed``, so its interval does not depend on the other arms.

    Returns ``{arm: (point, low, high)}``.
    """
    _check_ci(ci, reps)
    if not score_matrix_per_arm:
        raise ValueError("score_matrix_per_arm is empty")
    out = {}
    for arm, scores in score_matrix_per_arm.items():
        tasks = _tasks(scores, arm)
        rng = np.random.default_rng(seed)
        resampled = np.concatenate([t[rng.integers(0, t.size, size=(reps, t.size))] for t in tasks], axis=1)
        boot = np.array([statistic(row) for row in resampled])  # [reps]
        lo, hi = _percentile_interval(boot, ci)
        out[arm] = (float(statistic(np.concatenate(tasks))), float(lo), float(hi))
    return out


def mean_ci_over_seeds(
    curves: ArrayLike, reps: int = 2000, seed: int = 0, ci: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve and percentile CI of the mean, bootstrapping seeds (rows) independently at each x (column).

    ``curves`` is ``[seeds, x]`` on a shared x grid. The same resampled seeds serve every x in one replicate.
    Returns ``(mean, low, high)``, each of shape ``[x]``.
    """
    _check_ci(ci, reps)
    y = _finite(curves, "curves")
    if y.ndim != 2:
        raise ValueError(f"curves must be a [seeds, x] array, got shape {y.shape}")
    n = y.shape[0]
    rng = np.random.default_rng(seed)
    # a replicate's mean is (draw counts / n) @ curves: [reps, n] @ [n, x] without materialising [reps, n, x]
    counts = np.stack([np.bincount(rng.integers(0, n, size=n), minlength=n) for _ in range(reps)])
    boot = counts @ y / n  # [reps, x]
    lo, hi = _percentile_interval(boot, ci)
    return y.mean(axis=0), lo, hi
