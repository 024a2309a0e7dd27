"""Compiled inner loop of the Blind Cliffwalk experiment: Q-learning from a fixed replay memory, tabular or linear.

One call of ``run`` is one (model, arm, n, seed): it replays one memory row per update until the mean squared error
of Q against the true values falls below the threshold, Q diverges, or the update cap is reached. Q is kept as a
flat vector over the 2n state-action pairs (``pair = 2 * state + action``). In Blind Cliffwalk a pair determines
its transition, so the rows of one pair are duplicates: they share one current TD error but keep priorities of
their own, as in PER.

The linear model is Q(s, a) = w_a · φ(s) with φ(s) = [one-hot(s), 1] (DESIGN.md §4.1). Since Q = Φw, a gradient
step w_a += c·φ(s) moves Q(s, a) by 2c and Q(s', a) by c for every other state s' (the shared bias); ``apply_step``
updates Q directly by that rule, so the tabular model is the same code without the bias.

The per-sample losses enter only through their derivative dℓ/dδ (``loss_grad``): with δ = y − Q(s, a) and the
target y held fixed, a gradient step on ℓ(δ) is a step c = η · dℓ/dδ. The tests check every derivative against
torch autograd of ``rlfocal.losses`` with the whole memory as the batch.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# The repo's sum tree, driven through its compiled kernels: a Python-level SumTree call per update would cost
# microseconds, and uniform replay at n = 16 makes millions of updates.
from rlfocal.replay.sumtree import descend, set_leaves

UNIFORM, GREEDY, PROPORTIONAL, RANK, ORACLE = 0, 1, 2, 3, 4
MSE, FOCAL, FOCAL_NORM, MIRROR = 0, 1, 2, 3

_TINY = np.finfo(np.float64).tiny  # the floor rlfocal.losses._power puts under focal's base (float64)
# MSE beyond this (true values lie in [0, 1]: an RMS error 10x the largest) stops a run as diverged; unstable linear
# runs oscillate at MSE 1e-2..1e4 for as long as they run instead of blowing up
_DIVERGED_MSE = 100.0
_RESYNC = 4095  # recompute the squared error exactly every 4096 updates: the running sum drifts


@njit(cache=True)
def focal_modulator(td: float, gamma: float, tau: float) -> float:
    """Focal-TD's modulator m = (1 − e^(−L/τ))^γ for L = δ²/2, with the base floored as ``rlfocal.losses`` does."""
    s = -math.expm1(-0.5 * td * td / tau)
    return max(s, _TINY) ** gamma


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
def priority(td: float, alpha: float, eps: float) -> float:
    """PER's proportional priority (|δ| + ε)^α, also the mirror's weight before normalisation."""
    return (abs(td) + eps) ** alpha


@njit(cache=True)
def running_mean_update(mean: float, x: float, first: bool, momentum: float) -> float:
    """One step of ``rlfocal.losses.RunningMean`` on a single sample: the first sets the mean, later ones blend."""
    if first:
        return x
    return momentum * mean + (1.0 - momentum) * x


@njit(cache=True)
def memory_mean(pair_td, counts, loss: int, alpha: float, eps: float, gamma: float, tau: float) -> float:
    """Mean over every memory row of the weight to normalise: focal's m (FOCAL_NORM) or mirror's p (MIRROR).

    The rows of a pair share its current TD error, so the mean over the M rows is a count-weighted mean over pairs:
    exact, from fresh errors, at a cost of 2n instead of M.
    """
    total = 0.0
    rows = 0
    for j in range(pair_td.shape[0]):
        if loss == FOCAL_NORM:
            w = focal_modulator(pair_td[j], gamma, tau)
        else:
            w = priority(pair_td[j], alpha, eps)
        total += counts[j] * w
        rows += counts[j]
    return max(total / rows, _TINY)  # the floor rlfocal.losses._batch_mean uses


@njit(cache=True)
def loss_grad(
    td: float, loss: int, gamma: float, tau: float, alpha: float, eps: float, mean: float, max_weight: float
) -> float:
    """dℓ/dδ of one replayed sample; ``mean`` is ``memory_mean`` (FOCAL_NORM, MIRROR), ``max_weight`` inf: no clip.

    FOCAL_NORM is ``focal_td(normalize=True)`` with the memory as the batch: ℓ = (m / mean m)·L, the mean detached.
    A clipped weight is a constant (torch's clamp passes no gradient), so its derivative is ``max_weight``·δ.
    MIRROR's weight p / mean p is detached (Fujimoto et al. 2020, Theorem 1: uniform sampling of it has the
    expected gradient of PER without IS weights), so its derivative is w·δ.
    """
    if loss == MSE:
        return td
    if loss == FOCAL:
        return focal_mse_grad(td, gamma, tau)
    if loss == FOCAL_NORM:
        if focal_modulator(td, gamma, tau) / mean > max_weight:
            return max_weight * td
        return focal_mse_grad(td, gamma, tau) / mean
    return td * min(priority(td, alpha, eps) / mean, max_weight)


@njit(cache=True)
def sse_change(q, q_true, pair: int, c: float, linear: bool) -> float:
    """Change of Σ(Q − Q_true)² that ``apply_step(q, pair, c, linear)`` would make."""
    state, action = pair // 2, pair % 2
    lo, hi = (0, q.shape[0] // 2) if linear else (state, state + 1)
    change = 0.0
    for s in range(lo, hi):
        j = 2 * s + action
        step = 2.0 * c if linear and s == state else c
        err = q[j] - q_true[j]
        change += step * (2.0 * err + step)
    return change


@njit(cache=True)
def apply_step(q, pair: int, c: float, linear: bool) -> None:
    """The step w_a += c·φ(s) on Q = Φw for ``pair`` = (s, a): tabular moves Q(s, a) by c; linear, see the module."""
    state, action = pair // 2, pair % 2
    if not linear:
        q[pair] += c
        return
    for s in range(q.shape[0] // 2):
        q[2 * s + action] += 2.0 * c if s == state else c


@njit(cache=True)
def _ranks_before(stored, a: int, b: int) -> bool:
    """Row a ranks before row b: larger stored |δ| first, ties by row index (rows are shuffled per seed)."""
    return stored[a] > stored[b] or (stored[a] == stored[b] and a < b)


@njit(cache=True)
def rank_build(order, blocks, sizes, block_of) -> None:
    """Cut ``order`` (all rows, best rank first) into consecutive blocks of half the blocks' capacity.

    The rank order is kept as a list of sorted blocks of about √M rows (a square-root decomposition): moving one
    row costs O(√M) instead of the O(M) of one sorted array, and rebuilding every √M moves keeps blocks in bounds.
    """
    half = blocks.shape[1] // 2
    sizes[:] = 0
    for j in range(order.shape[0]):
        b = j // half
        blocks[b, sizes[b]] = order[j]
        sizes[b] += 1
        block_of[order[j]] = b


@njit(cache=True)
def rank_order(blocks, sizes, out) -> None:
    """Write all rows, best rank first, into ``out``."""
    j = 0
    for b in range(sizes.shape[0]):
        for k in range(sizes[b]):
            out[j] = blocks[b, k]
            j += 1


@njit(cache=True)
def rank_move(blocks, sizes, block_of, stored, row: int, value: float) -> None:
    """Set ``stored[row] = value`` and move ``row`` to its rank; a block gains at most one row per call."""
    b = block_of[row]
    k = 0
    while blocks[b, k] != row:
        k += 1
    for j in range(k, sizes[b] - 1):
        blocks[b, j] = blocks[b, j + 1]
    sizes[b] -= 1
    stored[row] = value
    target = -1  # the first block whose last row ranks after ``row``, else the last non-empty block
    for b in range(sizes.shape[0]):
        if sizes[b] > 0:
            target = b
            if not _ranks_before(stored, blocks[b, sizes[b] - 1], row):
                break
    j = sizes[target]
    while j > 0 and _ranks_before(stored, row, blocks[target, j - 1]):
        blocks[target, j] = blocks[target, j - 1]
        j -= 1
    blocks[target, j] = row
    sizes[target] += 1
    block_of[row] = target


@njit(cache=True)
def rank_sample(cdf, blocks, sizes, u: float) -> int:
    """Rank-based PER: the row of rank k (1-based) with probability k^−α / Σ, by inverting ``cdf`` at u ∈ [0, 1)."""
    k = min(np.searchsorted(cdf, u * cdf[-1], side="right"), cdf.shape[0] - 1)
    b = 0
    while k >= sizes[b]:
        k -= sizes[b]
        b += 1
    return blocks[b, k]


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
def _td(q, pair, pair_reward, pair_next, pair_term, discount):  # pragma: no cover - compiled
    """δ = r + γ·max_a' Q(s', a') − Q(s, a), the target masked at termination."""
    target = pair_reward[pair]
    if not pair_term[pair]:
        nxt = pair_next[pair]
        target += discount * max(q[2 * nxt], q[2 * nxt + 1])
    return target - q[pair]


@njit(cache=True)
def run(
    row_pair,
    pair_reward,
    pair_next,
    pair_term,
    q0,
    q_true,
    linear,
    sampler,
    loss,
    alpha,
    eps,
    gamma,
    tau,
    max_weight,
    eta,
    discount,
    threshold,
    max_updates,
    rng_seed,
    leaf0,
):  # pragma: no cover - compiled
    """Replay until MSE(Q, q_true) < threshold. Returns (updates, converged, diverged, final MSE).

    ``sampler``: UNIFORM rows; GREEDY the row of largest stored |δ|; PROPORTIONAL rows ∝ (|δ| + ε)^α from a sum
    tree with ``leaf0`` leaves; RANK rows ∝ rank^−α by stored |δ|; ORACLE the pair whose plain update most lowers
    the MSE (a scan of the 2n pairs). Stored priorities start at the maximum, 1 (the prefilled memory counts as new)
    and only the replayed row's is refreshed, from its pre-update |δ|. ``loss``: MSE, FOCAL, FOCAL_NORM (``tau`` <= 0
    means τ = running mean of the replayed L) or MIRROR. Common random numbers: UNIFORM, PROPORTIONAL and RANK each
    consume exactly one uniform u per update from numba's generator seeded with ``rng_seed``, so arms of one seed
    read the same u at the same update (row ⌊u·M⌋, prefix u·Σp, or rank quantile u).
    """
    np.random.seed(rng_seed)  # noqa: NPY002 - numba's per-process generator
    rows = row_pair.shape[0]
    pairs = q0.shape[0]
    q = q0.copy()
    sse = 0.0
    for j in range(pairs):
        sse += (q[j] - q_true[j]) ** 2
    limit = threshold * pairs
    counts = np.bincount(row_pair, minlength=pairs)

    stored = np.ones(rows)  # stored |δ| per row: the maximum priority, 1, until the row is replayed
    max_tree = np.empty(0)
    if sampler == GREEDY:
        max_tree = np.full(2 * leaf0, -1.0)
        max_tree[leaf0 : leaf0 + rows] = stored
        for node in range(leaf0 - 1, 0, -1):
            max_tree[node] = max(max_tree[2 * node], max_tree[2 * node + 1])
    nodes = np.zeros((2 * leaf0, 1))
    sums = nodes[:, 0]
    one_idx = np.zeros(1, dtype=np.int64)
    one_val = np.ones(1)
    prefix = np.zeros(1)
    if sampler == PROPORTIONAL:
        set_leaves(nodes, leaf0, np.arange(rows), np.full(rows, priority(1.0, alpha, eps)))
    half = int(math.sqrt(rows)) + 1
    order = np.arange(rows)  # all rows tie at 1 and ties go by row index
    blocks = np.empty((rows // half + 2, 2 * half), dtype=np.int64)
    sizes = np.zeros(rows // half + 2, dtype=np.int64)
    block_of = np.empty(rows, dtype=np.int64)
    cdf = np.empty(0)
    if sampler == RANK:
        rank_build(order, blocks, sizes, block_of)
        cdf = np.cumsum(np.arange(1.0, rows + 1.0) ** -alpha)

    pair_td = np.empty(pairs)
    tau_mean = 0.0
    for t in range(max_updates):
        i = -1
        if sampler == UNIFORM:
            i = min(int(np.random.random() * rows), rows - 1)  # noqa: NPY002
        elif sampler == GREEDY:
            i = _max_tree_argmax(max_tree, leaf0)
        elif sampler == PROPORTIONAL:
            prefix[0] = np.random.random() * sums[1]  # noqa: NPY002
            descend(sums, leaf0, prefix, one_idx, one_val)
            i = one_idx[0]
        elif sampler == RANK:
            i = rank_sample(cdf, blocks, sizes, np.random.random())  # noqa: NPY002
        if i >= 0:
            p = row_pair[i]
        else:
            best = np.inf
            p = 0
            for j in range(pairs):
                gain = sse_change(q, q_true, j, eta * _td(q, j, pair_reward, pair_next, pair_term, discount), linear)
                if gain < best:
                    best = gain
                    p = j

        td = _td(q, p, pair_reward, pair_next, pair_term, discount)
        if sampler == GREEDY:
            _max_tree_set(max_tree, leaf0, i, abs(td))
        elif sampler == PROPORTIONAL:
            one_idx[0] = i
            one_val[0] = priority(td, alpha, eps)
            set_leaves(nodes, leaf0, one_idx, one_val)
        elif sampler == RANK:
            rank_move(blocks, sizes, block_of, stored, i, abs(td))
            if t % half == half - 1:
                rank_order(blocks, sizes, order)
                rank_build(order, blocks, sizes, block_of)

        tau_t = tau
        if tau <= 0.0 and (loss == FOCAL or loss == FOCAL_NORM):
            tau_mean = running_mean_update(tau_mean, 0.5 * td * td, t == 0, 0.99)
            tau_t = max(tau_mean, 1e-8)  # RunningMean's default floor
        mean = 1.0
        if loss == FOCAL_NORM or loss == MIRROR:
            for j in range(pairs):
                pair_td[j] = _td(q, j, pair_reward, pair_next, pair_term, discount)
            mean = memory_mean(pair_td, counts, loss, alpha, eps, gamma, tau_t)
        c = eta * loss_grad(td, loss, gamma, tau_t, alpha, eps, mean, max_weight)

        sse += sse_change(q, q_true, p, c, linear)
        apply_step(q, p, c, linear)
        if not sse < _DIVERGED_MSE * pairs:  # also catches NaN
            return t + 1, False, True, np.inf
        if sse < limit or (t & _RESYNC) == 0:
            sse = 0.0
            for j in range(pairs):
                sse += (q[j] - q_true[j]) ** 2
            if sse < limit:
                return t + 1, True, False, sse / pairs
    return max_updates, False, False, sse / pairs
