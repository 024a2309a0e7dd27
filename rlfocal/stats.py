"""Aggregate statistics for few-run RL results, after rliable (Agarwal et al. 2021, https://arxiv.org/abs/2108.13264).

Pure numpy, no rliable or pandas: the interquartile mean, the optimality gap, rliable's stratified bootstrap with
percentile intervals, a per-x bootstrap band for learning curves, and the paired comparisons of issue 14's study
(probability of improvement, sign-flip tests, TOST equivalence, Holm's correction, the minimum detectable effect).
Every function rejects empty input and NaN/inf scores with a ``ValueError`` rather than returning a NaN that would
silently spread into a report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist

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


# ------------------------------------------------------------------------------------ paired comparisons
# The study pairs arms by seed (common random numbers: seed k of every arm shares its environment, initialisation
# and sampling streams), so the tests below take the per-seed differences d_k = x_k - y_k.


def probability_of_improvement(x: ArrayLike, y: ArrayLike) -> float:
    """P(X > Y) + P(X = Y) / 2 over all run pairs of one task: rliable's ``probability_of_improvement``
    (the Mann–Whitney U statistic over n·m). 0.5 means no difference; 1 means every run of X beats every run of Y."""
    a, b = _finite(x, "x").ravel(), _finite(y, "y").ravel()
    greater = (a[:, None] > b[None, :]).mean()
    ties = (a[:, None] == b[None, :]).mean()
    return float(greater + 0.5 * ties)


def probability_of_improvement_ci(
    x: ArrayLike, y: ArrayLike, reps: int = 2000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Point estimate and percentile CI of ``probability_of_improvement``, resampling the runs of X and of Y
    independently (rliable's interval for one task). Returns ``(point, low, high)``."""
    _check_ci(ci, reps)
    a, b = _finite(x, "x").ravel(), _finite(y, "y").ravel()
    rng = np.random.default_rng(seed)
    boot = [
        probability_of_improvement(a[rng.integers(0, a.size, a.size)], b[rng.integers(0, b.size, b.size)])
        for _ in range(reps)
    ]
    lo, hi = _percentile_interval(np.array(boot), ci)
    return probability_of_improvement(a, b), float(lo), float(hi)


def sign_flip_pvalue(d: ArrayLike, alternative: str = "two-sided", reps: int = 20_000, seed: int = 0) -> float:
    """p-value of the paired sign-flip (permutation) test of "the mean of the differences ``d`` is 0".

    Under the null each d_k is as likely to be -d_k (a distribution symmetric about 0), so the observed mean is
    compared with the means of ``reps`` random sign flips. Exact enumeration of all 2^n flips for n <= 16.
    ``alternative``: "two-sided", "greater" (mean > 0) or "less". The p-value counts the observed flip, as in
    (1 + #{at least as extreme}) / (1 + reps), so it is never 0.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative={alternative!r} is not allowed: one of two-sided, greater, less")
    x = _finite(d, "d").ravel()
    n = x.size
    if n <= 16:  # every sign pattern once
        signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        means = signs @ x / n
        observed, total, extra = x.mean(), means.size, 0
    else:
        rng = np.random.default_rng(seed)
        means = rng.choice([-1.0, 1.0], size=(reps, n)) @ x / n
        observed, total, extra = x.mean(), reps + 1, 1
    tol = 1e-12 * max(1.0, abs(observed))  # the observed mean among the flips must count as "as extreme"
    if alternative == "greater":
        hits = (means >= observed - tol).sum()
    elif alternative == "less":
        hits = (means <= observed + tol).sum()
    else:
        hits = (np.abs(means) >= abs(observed) - tol).sum()
    return float(min(1.0, (hits + extra) / total))


def tost_pvalue(d: ArrayLike, margin: float, reps: int = 20_000, seed: int = 0) -> float:
    """Two one-sided tests of equivalence on paired differences: p for "|mean(d)| >= margin" (reject: the arms
    are equivalent within ``margin``). The larger of the sign-flip p-values of "mean(d) > -margin" and
    "mean(d) < margin", each testing the differences shifted to its boundary."""
    if not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin={margin} is not allowed: must be a finite number > 0")
    x = _finite(d, "d").ravel()
    lower = sign_flip_pvalue(x + margin, "greater", reps, seed)
    upper = sign_flip_pvalue(x - margin, "less", reps, seed)
    return max(lower, upper)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control over all the comparisons given), in the
    order given: the k-th smallest p is multiplied by (m - k + 1), then made monotone and capped at 1."""
    p = _finite(list(pvalues), "pvalues").ravel()
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def minimum_detectable_effect(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean paired difference a two-sided level-``alpha`` test detects with probability
    ``power``: (z_{1-α/2} + z_{power}) · sd / √n (normal approximation; 2.80 · sd / √n at the defaults)."""
    if n < 2 or not (np.isfinite(sd_diff) and sd_diff >= 0):
        raise ValueError(f"need n >= 2 and a finite sd >= 0, got n={n}, sd_diff={sd_diff}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha={alpha} and power={power} must lie in (0, 1)")
    z = NormalDist().inv_cdf
    return float((z(1 - alpha / 2) + z(power)) * sd_diff / np.sqrt(n))
