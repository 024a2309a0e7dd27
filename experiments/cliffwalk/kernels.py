"""Compiled inner loop of the Blind Cliffwalk experiment: tabular Q-learning from a fixed replay memory.

One call of ``run_tabular`` is one (arm, n, seed): it replays one memory row per update until the mean squared error
of Q against the true values falls below the threshold, Q diverges, or the update cap is reached. Q is a flat vector
over the 2n state-action pairs (``pair = 2 * state + action``); the memory has one row per stored transition, and
rows of the same pair are duplicates with priorities of their own.

The per-sample losses enter only through their derivative dℓ/dδ (``focal_mse_grad``, ``mirror_mse_grad``): with
δ = y − Q(s, a) and the target y held fixed, a gradient step on ℓ(δ) is Q(s, a) += η · dℓ/dδ. The tests check both
derivatives against torch autograd of ``rlfocal.losses.focal_td`` and ``rlfocal.losses.mirror``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# The repo's sum tree, driven through its compiled kernels: a Python-level SumTree call per update would cost
# microseconds, and uniform replay at n = 16 makes millions of updates.
from rlfocal.replay.sumtree import descend, set_leaves

UNIFORM, GREEDY, PROPORTIONAL, ORACLE = 0, 1, 2, 3
MSE, FOCAL, MIRROR = 0, 1, 2

_TINY = np.finfo(np.float64).tiny  # the floor rlfocal.losses._power puts under focal's base (float64)
_DIVERGED = 1e6  # |Q| beyond this (true values lie in [0, 1]) counts as divergence


@njit(cache=True)
def focal_mse_grad(td: float, gamma: float, tau: float) -> float:
    """dℓ/dδ of ``focal_td(td, gamma, tau, base="mse")``, per sample (no ``normalize``, no ``max_weight``).

    ℓ = m·L with L = δ²/2, x = L/τ, s = 1 − e^(−x), m = s^γ. Then dℓ/dL = s^γ + γ·s^(γ−1)·e^(−x)·x and
    dℓ/dδ = δ·s^γ·(1 + γ·(1 − s)·x/s); x/s → 1 as δ → 0, so the bracket stays finite. Like the torch code, s is
    floored at the smallest normal float, below which m is a constant.
    """
    if gamma == 0.0:
        return td
    x = 0.5 * td * td / tau
    s = -math.expm1(-x)
    if s < _TINY:
        return _TINY**gamma * td
    return td * s**gamma * (1.0 + gamma * (1.0 - s) * x / s)


@njit(cache=True)
def mirror_mse_grad(td: float, priority: float, mean_priority: float, max_weight: float) -> float:
    """dℓ/dδ of ``mirror(base="mse")`` with the buffer mean in place of the batch mean: δ · min(p_i / mean p, w_max).

    The weight is detached, so dℓ/dδ = w·δ. Fujimoto et al. 2020, Theorem 1: with the mean over the whole buffer,
    uniform sampling of this loss has PER's expected gradient (β = 0). ``max_weight`` = inf means no clip.
    """
    return td * min(priority / mean_priority, max_weight)


@njit(cache=True)
def running_mean_update(mean: float, x: float, first: bool, momentum: float) -> float:
    """One step of ``rlfocal.losses.RunningMean`` on a single sample: the first sets the mean, later ones blend."""
    if first:
        return x
    return momentum * mean + (1.0 - momentum) * x


@njit(cache=True)
def _max_tree_set(tree, leaf0, i, value):  # pragma: no cover - compiled
    node = leaf0 + i
    tree[node] = value
    node >>= 1
    while node >= 1:
        tree[node] = max(tree[2 * node], tree[2 * node + 1])
        node >>= 1


@njit(cache=True)
def _max_tree_argmax(tree, leaf0):  # pragma: no cover - compiled
    """Leaf with the largest value; ties go to the lowest index (rows are shuffled per seed: ties break at random)."""
    node = 1
    while node < leaf0:
        left = 2 * node
        node = left if tree[left] >= tree[left + 1] else left + 1
    return node - leaf0


@njit(cache=True)
def _target(q, reward, next_state, terminated, discount):  # pragma: no cover - compiled
    if terminated:
        return reward
    return reward + discount * max(q[2 * next_state], q[2 * next_state + 1])


@njit(cache=True)
def run_tabular(
    row_pair,
    row_reward,
    row_next,
    row_term,
    q0,
    q_true,
    sampler,
    loss,
    alpha,
    eps,
    focal_gamma,
    focal_tau,
    max_weight,
    eta,
    discount,
    threshold,
    max_updates,
    rng_seed,
    init_from_td,
    sum_nodes,
    leaf0,
):  # pragma: no cover - compiled
    """Replay until MSE(Q, q_true) < threshold. Returns (updates, converged, diverged, final MSE).

    ``sampler``: UNIFORM rows; GREEDY the row of largest stored |δ|; PROPORTIONAL rows ∝ (|δ| + ε)^α from the sum
    tree ``sum_nodes``; ORACLE the pair whose update most lowers the MSE (scans the 2n pairs). Stored priorities
    start at the maximum, 1 (the prefilled memory counts as new), or with ``init_from_td`` at the initial Q's |δ|;
    only the replayed row's is then refreshed, from its pre-update δ. ``loss``: MSE, FOCAL (``focal_tau`` <= 0
    means τ = running mean of L) or MIRROR (weight from the sum tree's exact buffer mean of the stored priorities,
    the replayed row's refreshed first). Draws come from numba's own global generator, seeded here per run.
    """
    np.random.seed(rng_seed)  # noqa: NPY002 - numba's per-process generator
    rows = row_pair.shape[0]
    pairs = q0.shape[0]
    q = q0.copy()
    sse = 0.0
    for j in range(pairs):
        sse += (q[j] - q_true[j]) ** 2
    limit = threshold * pairs

    # one representative row per pair (duplicates are identical transitions), for the oracle's scan
    pair_row = np.full(pairs, -1, dtype=np.int64)
    for i in range(rows):
        if pair_row[row_pair[i]] < 0:
            pair_row[row_pair[i]] = i

    raw = np.ones(rows)  # stored |δ| before any replay: the maximum priority, 1, or the initial Q's |δ|
    if init_from_td:
        for i in range(rows):
            raw[i] = abs(_target(q, row_reward[i], row_next[i], row_term[i], discount) - q[row_pair[i]])
    max_tree = np.empty(0)
    if sampler == GREEDY:
        max_tree = np.full(2 * leaf0, -1.0)
        max_tree[leaf0 : leaf0 + rows] = raw
        for node in range(leaf0 - 1, 0, -1):
            max_tree[node] = max(max_tree[2 * node], max_tree[2 * node + 1])
    use_sum_tree = sampler == PROPORTIONAL or loss == MIRROR
    one_idx = np.zeros(1, dtype=np.int64)
    one_val = np.ones(1)
    prefix = np.zeros(1)
    if use_sum_tree:
        set_leaves(sum_nodes, leaf0, np.arange(rows), (raw + eps) ** alpha)
    sums = sum_nodes[:, 0]

    tau_mean = 0.0
    for t in range(max_updates):
        if sampler == UNIFORM:
            i = np.random.randint(0, rows)  # noqa: NPY002
        elif sampler == GREEDY:
            i = _max_tree_argmax(max_tree, leaf0)
        elif sampler == PROPORTIONAL:
            prefix[0] = np.random.random() * sums[1]  # noqa: NPY002
            descend(sums, leaf0, prefix, one_idx, one_val)
            i = one_idx[0]
        else:
            best = np.inf
            i = 0
            for j in range(pairs):
                r = pair_row[j]
                new = q[j] + eta * (_target(q, row_reward[r], row_next[r], row_term[r], discount) - q[j])
                gain = (new - q_true[j]) ** 2 - (q[j] - q_true[j]) ** 2
                if gain < best:
                    best = gain
                    i = r

        p = row_pair[i]
        td = _target(q, row_reward[i], row_next[i], row_term[i], discount) - q[p]
        if sampler == GREEDY:
            _max_tree_set(max_tree, leaf0, i, abs(td))
        if use_sum_tree:
            one_idx[0] = i
            one_val[0] = (abs(td) + eps) ** alpha
            set_leaves(sum_nodes, leaf0, one_idx, one_val)

        if loss == MSE:
            grad = td
        elif loss == FOCAL:
            tau = focal_tau
            if tau <= 0.0:
                tau_mean = running_mean_update(tau_mean, 0.5 * td * td, t == 0, 0.99)
                tau = max(tau_mean, 1e-8)  # RunningMean's default floor
            grad = focal_mse_grad(td, focal_gamma, tau)
        else:
            grad = mirror_mse_grad(td, (abs(td) + eps) ** alpha, sums[1] / rows, max_weight)

        old = q[p]
        q[p] = old + eta * grad
        if not abs(q[p]) < _DIVERGED:  # also catches NaN
            return t + 1, False, True, np.inf
        sse += (q[p] - q_true[p]) ** 2 - (old - q_true[p]) ** 2
        if sse < limit or (t & 4095) == 0:
            sse = 0.0  # recompute exactly: the running sum drifts over millions of updates
            for j in range(pairs):
                sse += (q[j] - q_true[j]) ** 2
            if sse < limit:
                return t + 1, True, False, sse / pairs
    return max_updates, False, False, sse / pairs
