"""The sum tree against hand-drawn trees and a brute-force float64 reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlfocal.replay import SumTree


def reference_find(leaves: np.ndarray, x: float) -> int:
    """First leaf whose cumulative sum exceeds x: sum(p[:i]) <= x < sum(p[:i+1])."""
    return int(np.searchsorted(np.cumsum(leaves), x, side="right"))


def test_four_leaf_tree_matches_drawing():
    """
            10
          /    \\
         3      7
        / \\    / \\
       1   2  3   4      leaves 0..3; prefix x picks the leaf whose interval [c_i, c_i + p_i) holds x
    """
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert tree.total == 10.0
    assert tree._sums[2:4].tolist() == [3.0, 7.0]
    queries = np.array([0.0, 0.999, 1.0, 2.5, 3.0, 5.999, 6.0, 9.999])
    assert tree.find(queries).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert tree.get(np.array([3, 0])).tolist() == [4.0, 1.0]
    assert tree.min_nonzero == 1.0


def test_eight_leaf_tree_with_zeros_never_returns_a_zero_leaf():
    """
                    8
               /         \\
              3           5
            /   \\       /   \\
           3     0     0     5
          / \\   / \\   / \\   / \\
         1   2 0   0 0   0 0   5      boundaries 1, 3 and the empty middle must be skipped
    """
    tree = SumTree(8)
    tree.update(np.arange(8), np.array([1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0]))
    assert tree.total == 8.0
    assert tree._sums[2:8].tolist() == [3.0, 5.0, 3.0, 0.0, 0.0, 5.0]
    assert tree.find(np.array([0.0, 1.0, 2.999, 3.0, 7.999])).tolist() == [0, 1, 1, 7, 7]
    assert tree.find(np.array([np.nextafter(8.0, 0.0)])).tolist() == [7]


def test_capacity_not_a_power_of_two():
    """Capacity 5 uses 8 leaves internally but only accepts indices 0..4."""
    tree = SumTree(5)
    tree.update(np.arange(5), np.ones(5))
    assert tree.total == 5.0
    assert tree.find(np.array([4.5])).tolist() == [4]
    with pytest.raises(ValueError, match="index 5"):
        tree.update(np.array([5]), np.array([1.0]))


def test_duplicate_indices_last_write_wins():
    tree = SumTree(4)
    tree.update(np.array([2, 1, 2, 2]), np.array([7.0, 1.0, 3.0, 0.5]))
    assert tree.get(np.array([1, 2])).tolist() == [1.0, 0.5]
    assert tree.total == 1.5


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 70),
    ops=st.lists(
        st.lists(st.tuples(st.integers(0, 69), st.integers(0, 50)), min_size=1, max_size=20),
        min_size=1,
        max_size=15,
    ),
    scale=st.sampled_from([1.0, 0.25, 2.0**-20, 2.0**30]),
)
def test_random_updates_match_reference_exactly(capacity, ops, scale):
    """Dyadic priorities sum exactly in float64, so totals and every edge query must match the reference exactly."""
    tree = SumTree(capacity)
    leaves = np.zeros(capacity)
    for batch in ops:
        idx = np.array([i % capacity for i, _ in batch])
        prio = np.array([v * scale for _, v in batch])
        tree.update(idx, prio)
        for i, p in zip(idx, prio, strict=True):  # sequential reference: last write wins
            leaves[i] = p
        assert tree.total == leaves.sum()
        np.testing.assert_array_equal(tree.get(np.arange(capacity)), leaves)
        positive = leaves[leaves > 0]
        assert tree.min_nonzero == (positive.min() if positive.size else np.inf)
        if tree.total == 0:
            continue
        cums = np.cumsum(leaves)
        edges = np.concatenate([[0.0], cums[:-1][cums[:-1] < tree.total], [np.nextafter(tree.total, 0.0)]])
        mids = (np.concatenate([[0.0], cums[:-1]]) + cums)[leaves > 0] / 2
        queries = np.concatenate([edges, mids])
        found = tree.find(queries)
        assert found.tolist() == [reference_find(leaves, x) for x in queries]
        assert (leaves[found] > 0).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), capacity=st.integers(1, 300))
def test_random_float_priorities_find_is_consistent(seed, capacity):
    """With arbitrary floats, each answer's interval holds its query up to rounding, and is never a zero leaf."""
    rng = np.random.default_rng(seed)
    tree = SumTree(capacity)
    leaves = rng.exponential(size=capacity) * (rng.random(capacity) < 0.7)
    leaves[rng.integers(capacity)] = 1.0  # at least one positive leaf
    tree.update(np.arange(capacity), leaves)
    assert tree.total == pytest.approx(math.fsum(leaves), rel=1e-12)
    queries = rng.random(500) * tree.total
    found = tree.find(queries)
    cums = np.concatenate([[0.0], np.cumsum(leaves)])
    tol = 1e-9 * tree.total
    assert (leaves[found] > 0).all()
    assert (cums[found] <= queries + tol).all() and (queries < cums[found + 1] + tol).all()


def test_root_stays_exact_after_a_million_updates():
    """Parents are recomputed from children, never incremented, so 10^6 updates leave no drift."""
    rng = np.random.default_rng(0)
    capacity = 10_000
    tree = SumTree(capacity)
    for _ in range(1000):
        tree.update(rng.integers(0, capacity, 1000), rng.exponential(size=1000) * 10.0 ** rng.integers(-6, 6))
    exact = math.fsum(tree.get(np.arange(capacity)))
    assert abs(tree.total - exact) <= 1e-9 * exact


def test_stratified_search_hits_each_segment():
    """With uniforms u_k, query k is (k + u_k) * total / B: equal leaves come back in order, one per segment."""
    tree = SumTree(8)
    tree.update(np.arange(8), np.full(8, 2.0))
    idx, prio = tree.sample_stratified(np.array([0.0, 0.5, 0.999999, 0.25, 0.0, 0.0, 0.0, 0.999999]))
    assert idx.tolist() == list(range(8))
    assert prio.tolist() == [2.0] * 8


def test_state_dict_round_trip():
    tree = SumTree(6)
    tree.update(np.arange(6), np.array([0.5, 0.0, 3.0, 1.0, 0.0, 2.0]))
    other = SumTree(6)
    other.load_state_dict(tree.state_dict())
    np.testing.assert_array_equal(other._sums, tree._sums)
    np.testing.assert_array_equal(other._mins, tree._mins)
    with pytest.raises(ValueError, match="capacity 6"):
        SumTree(7).load_state_dict(tree.state_dict())


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, "8"])
def test_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        SumTree(capacity)


@pytest.mark.parametrize(
    ("indices", "priorities", "match"),
    [
        ([0, 1], [1.0, float("nan")], "priority nan at index 1"),
        ([0, 1], [float("inf"), 1.0], "priority inf at index 0"),
        ([2], [-0.5], "priority -0.5 at index 2"),
        ([4], [1.0], "index 4 .* outside"),
        ([-1], [1.0], "index -1 .* outside"),
        ([0, 1], [1.0], "same 1-D shape"),
        ([0.0], [1.0], "integer array"),
    ],
)
def test_bad_update_raises_and_changes_nothing(indices, priorities, match):
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]))
    before = tree._sums.copy()
    with pytest.raises(ValueError, match=match):
        tree.update(np.array(indices), np.array(priorities))
    np.testing.assert_array_equal(tree._sums, before)


def test_bad_find():
    tree = SumTree(4)
    with pytest.raises(ValueError, match="total priority is 0"):
        tree.find(np.array([0.0]))
    tree.update(np.arange(4), np.ones(4))
    for x in (-0.1, 4.001, 5.0, float("nan")):
        with pytest.raises(ValueError, match=r"outside \[0, total=4.0\]"):
            tree.find(np.array([x]))
    with pytest.raises(ValueError, match="outside"):
        tree.get(np.array([4]))


def test_sampling_a_tree_of_zero_or_infinite_total_raises():
    """(|δ| + ε)^α underflows to 0 with a tiny ε and a large α (all leaf 0 and NaN weights before), and overflows
    to inf with huge errors: both are refused rather than answered."""
    tree = SumTree(4)
    with pytest.raises(ValueError, match=r"total priority is 0\.0: every priority is 0"):
        tree.sample_stratified(np.array([0.5, 0.5]))
    tree.set_from_errors(np.arange(4), np.zeros(4), eps=1e-200, floor=0.0, alpha=2.0)
    assert tree.get(np.arange(4)).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="total priority is 0.0"):
        tree.sample_stratified(np.array([0.5, 0.5]))
    tree.set_from_errors(np.arange(4), np.full(4, 1e200), eps=0.0, floor=0.0, alpha=2.0)
    with pytest.raises(ValueError, match="total priority is inf"):
        tree.sample_stratified(np.array([0.5, 0.5]))


def test_prefix_at_the_total_or_above_it_by_rounding_lands_on_the_last_positive_leaf():
    """The tree sums pairwise; a caller's cumsum or fsum of the same leaves may exceed it by a few ulps."""
    rng = np.random.default_rng(3)
    leaves = np.concatenate([rng.random(997) * 10.0 ** rng.integers(-8, 8, 997), np.zeros(27)])
    tree = SumTree(leaves.size)
    tree.update(np.arange(leaves.size), leaves)
    totals = np.array([tree.total, np.cumsum(leaves)[-1], math.fsum(leaves), np.nextafter(tree.total, np.inf)])
    assert totals.max() > tree.total
    assert tree.find(totals).tolist() == [996] * 4


@pytest.mark.parametrize("batch", [1, 3, 7, 10, 64, 1000])
def test_stratified_last_segment_lands_on_the_last_positive_leaf(batch):
    """(B - 1 + u) * (total / B) with u just below 1 may round onto or past the total: it still finds leaf 4."""
    tree = SumTree(8)
    tree.update(np.arange(8), np.array([0.1, 0.7, 0.2, 0.3, 0.3, 0.0, 0.0, 0.0]))
    idx, prio = tree.sample_stratified(np.full(batch, np.nextafter(1.0, 0.0)))
    assert idx[-1] == 4 and (prio > 0).all()
    idx, _ = tree.sample_stratified(np.ones(batch))  # a query exactly at the total
    assert idx[-1] == 4


def test_without_min_tree_sums_are_the_same_and_min_is_refused():
    """track_min=False (PER with batch-normalised weights) keeps one array; the sums do not change."""
    rng = np.random.default_rng(1)
    with_min, without = SumTree(50), SumTree(50, track_min=False)
    for _ in range(20):
        idx, prio = rng.integers(0, 50, 16), rng.exponential(size=16)
        with_min.update(idx, prio)
        without.update(idx, prio)
    np.testing.assert_array_equal(with_min._sums, without._sums)
    assert without.nbytes * 2 == with_min.nbytes
    with pytest.raises(ValueError, match="track_min=False"):
        _ = without.min_nonzero
