"""Float64 sum tree (plus a min tree) with batched, compiled update and prefix-sum search.

The tree is an implicit binary heap over ``2 * P`` nodes, ``P`` the next power of two >= capacity: node 1 is
the root, node ``k`` has children ``2k`` and ``2k + 1``, leaf ``i`` lives at node ``P + i``. Parents are always
recomputed from their two children (never incremented by a delta), so the root is a pairwise sum of the leaves
and does not drift, however many updates it sees. It knows nothing about transitions or sampling policy.

The compiled kernels ``set_leaves``, ``set_priorities_from_errors``, ``descend`` and ``descend_stratified`` are the
public numba-level API: code compiled with numba (the Cliffwalk experiment's inner loop) calls them on a tree's
node arrays directly; everything else goes through ``SumTree``. Their ``_lanes`` variants run them over S trees
stacked ``[S, 2P, columns]`` in one call (``LaneReplay``, one tree per seed).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_INF = np.inf
_ROUNDING = 1e-12  # relative slack for a caller's prefix sum that exceeds the total only by float rounding


@njit(cache=True)
def _first_bad_update(indices, priorities, capacity):  # pragma: no cover - compiled
    """Position of the first out-of-range index or non-finite / negative priority, or -1."""
    for i in range(indices.shape[0]):
        idx = indices[i]
        p = priorities[i]
        if idx < 0 or idx >= capacity or not (p >= 0.0 and p < _INF):
            return i
    return -1


@njit(cache=True)
def set_leaves(nodes, leaf0, indices, priorities):  # pragma: no cover - compiled
    """Write all leaves (the last write of a duplicate index wins), then repair their ancestors.

    ``nodes[k, 0]`` is node k's sum and, when a second column exists, ``nodes[k, 1]`` its min: one cache line
    brings both children's sums and mins. Ancestors are repaired per run of consecutive indices, level by level
    over the run's span, so a contiguous block of k leaves (a bulk add) costs about 2k node updates, not k log C.
    """
    track_min = nodes.shape[1] == 2
    n = indices.shape[0]
    for i in range(n):
        node = indices[i] + leaf0
        p = priorities[i]
        nodes[node, 0] = p
        if track_min:
            nodes[node, 1] = p if p > 0.0 else _INF  # zero leaves can never be sampled: they do not bound the min
    i = 0
    while i < n:
        j = i
        while j + 1 < n and indices[j + 1] == indices[j] + 1:
            j += 1
        lo = (indices[i] + leaf0) >> 1
        hi = (indices[j] + leaf0) >> 1
        while lo >= 1:
            for node in range(lo, hi + 1):
                left = node << 1
                nodes[node, 0] = nodes[left, 0] + nodes[left + 1, 0]
                if track_min:
                    nodes[node, 1] = min(nodes[left, 1], nodes[left + 1, 1])
            lo >>= 1
            hi >>= 1
        i = j + 1


@njit(cache=True)
def set_priorities_from_errors(nodes, leaf0, indices, errors, eps, floor, alpha):  # pragma: no cover - compiled
    """``p_i = max(|e_i| + eps, floor)^alpha`` written at ``indices`` (PER: floor 0; LAP: eps 0, floor m).

    Returns the largest raw (pre-exponent) priority, or -(position + 1) of the first non-finite error, in which
    case nothing is written.
    """
    n = indices.shape[0]
    raw_max = 0.0
    for i in range(n):
        e = errors[i]
        if not (e > -_INF and e < _INF):  # NaN fails both comparisons
            return -(i + 1.0)
        raw = max(abs(e) + eps, floor)
        raw_max = max(raw_max, raw)
    priorities = np.empty(n)
    for i in range(n):
        priorities[i] = max(abs(errors[i]) + eps, floor) ** alpha
    set_leaves(nodes, leaf0, indices, priorities)
    return raw_max


@njit(cache=True)
def descend(sums, leaf0, prefixes, out_idx, out_prio):  # pragma: no cover - compiled
    """For each prefix x find the leaf i with sum(p[:i]) <= x < sum(p[:i+1]).

    Only ever steps into a child whose sum is positive, so it never returns a zero-priority leaf: a query that
    float rounding pushes past the last positive leaf of a subtree (or exactly onto an edge followed by zeros)
    falls back to that subtree's last positive leaf instead of landing in empty space.
    """
    for i in range(prefixes.shape[0]):
        x = prefixes[i]
        node = 1
        while node < leaf0:
            left = node << 1
            left_sum = sums[left]
            if x < left_sum or sums[left + 1] <= 0.0:
                node = left
            else:
                x -= left_sum
                node = left + 1
        out_idx[i] = node - leaf0
        out_prio[i] = sums[node]


@njit(cache=True)
def descend_stratified(sums, leaf0, uniforms, out_idx, out_prio):  # pragma: no cover - compiled
    """Stratified search: query i is ``(i + u_i) * total / B``, one point in each of B equal segments."""
    batch = uniforms.shape[0]
    segment = sums[1] / batch
    prefixes = np.empty(batch)
    for i in range(batch):
        prefixes[i] = (i + uniforms[i]) * segment
    descend(sums, leaf0, prefixes, out_idx, out_prio)


@njit(cache=True)
def descend_stratified_lanes(nodes, leaf0, uniforms, out_idx, out_prio):  # pragma: no cover - compiled
    """``descend_stratified`` in each of S trees stacked as ``nodes[S, 2P, columns]``: row k of the arrays in tree k."""
    for k in range(nodes.shape[0]):
        descend_stratified(nodes[k, :, 0], leaf0, uniforms[k], out_idx[k], out_prio[k])


@njit(cache=True)
def set_priorities_from_errors_lanes(  # pragma: no cover - compiled
    nodes, leaf0, rows, indices, errors, eps, floor, alpha, raw_max
):
    """``set_priorities_from_errors`` in tree ``k = rows[j]`` of ``nodes[S, 2P, columns]`` from row k of ``indices``
    and ``errors`` (finite, checked by the caller), with lane k's ``eps``, ``floor`` and ``alpha``; ``raw_max[j]``
    gets its largest raw priority."""
    for j in range(rows.shape[0]):
        k = rows[j]
        raw_max[j] = set_priorities_from_errors(nodes[k], leaf0, indices[k], errors[k], eps[k], floor[k], alpha[k])


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1): the leaf count of a heap-layout tree over n slots."""
    return 1 << max(0, (n - 1).bit_length())


class SumTree:
    """Sum (and optionally min) of non-negative float64 priorities over ``capacity`` leaves, all initially 0.

    ``update`` and ``find`` are batched: one compiled loop over the batch, O(B log C). The min tree costs a second
    array on every update (for a random batch, memory traffic dominates), so ``track_min=False`` drops it where
    nothing needs the minimum (PER with batch-normalised IS weights).
    """

    def __init__(self, capacity: int, track_min: bool = True) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity <= 0:
            raise ValueError(f"SumTree capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self.track_min = bool(track_min)
        self._leaf0 = next_pow2(self.capacity)
        self._nodes = np.zeros((2 * self._leaf0, 2 if self.track_min else 1), dtype=np.float64)
        if self.track_min:
            self._nodes[:, 1] = np.inf

    @property
    def _sums(self) -> np.ndarray:
        return self._nodes[:, 0]

    @property
    def _mins(self) -> np.ndarray:
        return self._nodes[:, 1]

    @property
    def total(self) -> float:
        """Sum of all priorities."""
        return float(self._sums[1])

    @property
    def min_nonzero(self) -> float:
        """Smallest positive priority (``inf`` when every leaf is 0); bounds the largest IS weight."""
        if not self.track_min:
            raise ValueError("this SumTree was built with track_min=False; build it with track_min=True")
        return float(self._mins[1])

    @property
    def nbytes(self) -> int:
        return self._nodes.nbytes

    def move_nodes(self, nodes: np.ndarray) -> None:
        """Keep the nodes in ``nodes`` from now on (same shape and dtype, e.g. one tree of a stack that a kernel
        searches at once), copying the current ones there."""
        if nodes.shape != self._nodes.shape or nodes.dtype != self._nodes.dtype:
            raise ValueError(f"nodes has shape {nodes.shape} and dtype {nodes.dtype}, this tree needs "
                             f"{self._nodes.shape} and {self._nodes.dtype}")  # fmt: skip
        np.copyto(nodes, self._nodes)
        self._nodes = nodes

    def _check_indices(self, indices) -> np.ndarray:
        indices = np.asarray(indices)
        if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or indices.size == 0):
            raise ValueError(
                f"indices must be a 1-D integer array, got shape {indices.shape} and dtype {indices.dtype}"
            )
        return indices.astype(np.int64, copy=False)

    def update(self, indices, priorities, *, validate: bool = True) -> None:
        """Set ``priority[indices[k]] = priorities[k]``; with duplicate indices the last write wins.

        Raises ``ValueError`` (and changes nothing) on an index outside ``[0, capacity)`` or a priority that is
        NaN, infinite or negative. ``validate=False`` skips those checks, for callers that made the int64 indices and
        float64 priorities themselves (a sampler writing its running maximum into freshly stored slots).
        """
        if not validate:
            set_leaves(self._nodes, self._leaf0, indices, priorities)
            return
        indices = self._check_indices(indices)
        priorities = np.asarray(priorities, dtype=np.float64)
        if priorities.shape != indices.shape:
            raise ValueError(
                f"indices and priorities must have the same 1-D shape, got {indices.shape} and {priorities.shape}"
            )
        bad = _first_bad_update(indices, priorities, self.capacity)
        if bad >= 0:
            idx, p = int(indices[bad]), float(priorities[bad])
            if not 0 <= idx < self.capacity:
                raise ValueError(f"index {idx} (position {bad}) is outside [0, {self.capacity})")
            raise ValueError(f"priority {p} at index {idx} (position {bad}) is invalid: must be finite and >= 0")
        set_leaves(self._nodes, self._leaf0, indices, priorities)

    def set_from_errors(self, indices: np.ndarray, errors: np.ndarray, eps: float, floor: float, alpha: float) -> float:
        """Set ``p_i = max(|errors_i| + eps, floor)^alpha`` in one compiled pass; returns the largest raw priority.

        ``indices`` must be valid int64 leaves (the caller checks them); a non-finite error raises ``ValueError``
        and changes nothing.
        """
        result = set_priorities_from_errors(self._nodes, self._leaf0, indices, errors, eps, floor, alpha)
        if result < 0:
            pos = int(-result) - 1
            raise ValueError(f"td_errors must be finite, got {errors[pos]} at position {pos}")
        return result

    def get(self, indices) -> np.ndarray:
        """Priorities of the given leaves."""
        indices = self._check_indices(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self.capacity):
            bad = indices[(indices < 0) | (indices >= self.capacity)][0]
            raise ValueError(f"index {int(bad)} is outside [0, {self.capacity})")
        return self._sums[indices + self._leaf0]

    def find(self, prefix_sums) -> np.ndarray:
        """Leaf index ``i`` with ``sum(p[:i]) <= x < sum(p[:i + 1])`` for each ``x`` in ``[0, total]``.

        Never returns a zero-priority leaf, even for ``x`` exactly on a boundary. ``x`` equal to the total, or above
        it by float rounding only (relative 1e-12: a total the caller summed in another order), lands on the last
        positive leaf.
        """
        prefix_sums = np.asarray(prefix_sums, dtype=np.float64)
        if prefix_sums.ndim != 1:
            raise ValueError(f"prefix_sums must be 1-D, got shape {prefix_sums.shape}")
        total = self._checked_total()
        outside = ~((prefix_sums >= 0.0) & (prefix_sums <= total * (1.0 + _ROUNDING)))  # also catches NaN
        if outside.any():
            raise ValueError(f"prefix sum {prefix_sums[outside][0]!r} is outside [0, total={total!r}]")
        return self._search(prefix_sums)[0]

    def _checked_total(self) -> float:
        """The total, or ``ValueError`` when nothing can be sampled (every priority 0, or the sum overflowed)."""
        total = self.total
        if not 0.0 < total < _INF:
            raise ValueError(
                f"cannot sample a tree whose total priority is {total!r}: every priority is 0 or they overflow "
                "(with (|δ| + ε)^α, a larger eps or a smaller alpha keeps them representable)"
            )
        return total

    def _search(self, prefix_sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.empty(prefix_sums.shape[0], dtype=np.int64)
        prio = np.empty(prefix_sums.shape[0], dtype=np.float64)
        descend(self._sums, self._leaf0, prefix_sums, idx, prio)
        return idx, prio

    def sample_stratified(self, uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leaves and their priorities for the stratified queries ``(k + uniforms[k]) * total / B``.

        ``uniforms`` are draws from [0, 1) supplied by the caller's RNG. Raises ``ValueError`` when the total is 0
        or infinite, where the queries would be meaningless (all leaf 0, NaN weights downstream).
        """
        self._checked_total()
        idx = np.empty(uniforms.shape[0], dtype=np.int64)
        prio = np.empty(uniforms.shape[0], dtype=np.float64)
        descend_stratified(self._sums, self._leaf0, uniforms, idx, prio)
        return idx, prio

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "leaves": self._sums[self._leaf0 : self._leaf0 + self.capacity].copy()}

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"state is for capacity {state['capacity']}, this tree has {self.capacity}")
        leaves = np.asarray(state["leaves"], dtype=np.float64)
        fresh = SumTree(self.capacity, self.track_min)
        fresh.update(np.arange(self.capacity), leaves)  # validates before anything here changes
        np.copyto(self._nodes, fresh._nodes)  # in place: the nodes may be a view into a stack of trees
