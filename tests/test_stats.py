"""rlfocal.stats against hand-computed values, scipy, and the properties a stratified bootstrap must keep."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from rlfocal.stats import (
    holm,
    iqm,
    mean_ci_over_seeds,
    minimum_detectable_effect,
    optimality_gap,
    probability_of_improvement,
    probability_of_improvement_ci,
    sign_flip_pvalue,
    stratified_bootstrap_ci,
    tost_pvalue,
)


def test_iqm_of_a_hand_made_array():
    # sorted: -50 1 | 2 3 4 5 | 6 100 -> the middle half averages to 3.5; the outliers do not count
    assert iqm([100, 1, 2, 3, 4, 5, 6, -50]) == 3.5
    assert iqm([[1.0, 2.0], [3.0, 4.0]]) == 2.5  # a [runs, tasks] matrix is flattened, as in rliable


@pytest.mark.parametrize("n", range(1, 14))
def test_iqm_is_scipy_trim_mean(n):
    x = np.random.default_rng(n).normal(size=n)
    assert iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None), abs=1e-12)


def test_optimality_gap():
    assert optimality_gap([0.5, 1.2, 0.8, 1.0]) == pytest.approx((0.5 + 0 + 0.2 + 0) / 4)
    assert optimality_gap([0.5, 1.2, 0.8, 1.0], threshold=0.5) == 0.0
    assert optimality_gap([2.0, 3.0], threshold=4.0) == pytest.approx(1.5)


def test_bootstrap_resamples_within_each_task():
    """Task A's runs are all < 10 and task B's all > 100: every replicate must hold exactly 3 of A and 5 of B."""
    task_a, task_b = np.array([0.0, 1.0, 2.0]), np.array([100.0, 101.0, 102.0, 103.0, 104.0])
    seen = []

    def statistic(x: np.ndarray) -> float:
        seen.append(x.copy())
        return float(x.mean())

    stratified_bootstrap_ci({"arm": [task_a, task_b]}, statistic, reps=200)
    replicates = seen[:-1]  # the last call is the point estimate on the data itself
    assert len(replicates) == 200
    for x in replicates:
        assert x.size == 8 and (x < 10).sum() == 3
        assert set(x[x < 10]) <= set(task_a) and set(x[x > 100]) <= set(task_b)
    assert any(len(set(x[x < 10])) < 3 for x in replicates)  # it does resample, with replacement
    np.testing.assert_array_equal(seen[-1], np.concatenate([task_a, task_b]))


def test_bootstrap_matrix_and_ragged_forms_agree():
    m = np.random.default_rng(0).normal(size=(6, 3))
    as_matrix = stratified_bootstrap_ci({"a": m}, iqm, reps=300)
    as_tasks = stratified_bootstrap_ci({"a": [m[:, t] for t in range(3)]}, iqm, reps=300)
    assert as_matrix == as_tasks


def _ci(n_runs: int, seed: int) -> tuple[float, float, float]:
    scores = np.random.default_rng(seed).normal(0.5, 0.1, size=(n_runs, 2))
    return stratified_bootstrap_ci({"a": scores}, np.mean, reps=1000)["a"]


def test_bootstrap_ci_covers_the_true_mean_and_shrinks_with_more_runs():
    point, lo, hi = _ci(30, seed=1)
    assert lo < 0.5 < hi and lo < point < hi
    _, lo_big, hi_big = _ci(300, seed=1)
    assert lo_big < 0.5 < hi_big
    assert (hi_big - lo_big) < 0.5 * (hi - lo)  # width ~ 1/sqrt(n): about 0.32 of it here


def test_bootstrap_is_seeded_and_per_arm():
    scores = {"a": np.arange(12.0).reshape(4, 3), "b": np.ones((4, 3))}
    assert stratified_bootstrap_ci(scores, iqm, seed=3) == stratified_bootstrap_ci(scores, iqm, seed=3)
    alone = stratified_bootstrap_ci({"a": scores["a"]}, iqm, seed=3)
    assert alone["a"] == stratified_bootstrap_ci(scores, iqm, seed=3)["a"]  # other arms do not shift its draws


def test_ci_of_a_constant_is_a_point():
    point, lo, hi = stratified_bootstrap_ci({"a": np.full((5, 2), 0.7)}, optimality_gap)["a"]
    assert point == lo == hi == pytest.approx(0.3)
    mean, lo, hi = mean_ci_over_seeds(np.full((4, 6), 2.5), reps=100)
    np.testing.assert_allclose([mean, lo, hi], 2.5)


def test_mean_ci_over_seeds_is_the_mean_with_a_band_around_it():
    curves = np.random.default_rng(0).normal(size=(5, 40)) + np.linspace(0, 10, 40)
    mean, lo, hi = mean_ci_over_seeds(curves, reps=500, seed=1)
    np.testing.assert_allclose(mean, curves.mean(axis=0))
    assert mean.shape == lo.shape == hi.shape == (40,)
    assert np.all(lo <= mean + 1e-12) and np.all(mean <= hi + 1e-12) and np.all(hi - lo > 0)
    assert np.all(lo >= curves.min(axis=0) - 1e-12) and np.all(hi <= curves.max(axis=0) + 1e-12)
    again = mean_ci_over_seeds(curves, reps=500, seed=1)
    np.testing.assert_array_equal(lo, again[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: iqm([]), "scores is empty"),
        (lambda: iqm([1.0, np.nan]), "NaN"),
        (lambda: optimality_gap([]), "empty"),
        (lambda: optimality_gap([np.inf]), "NaN or inf"),
        (lambda: stratified_bootstrap_ci({}, iqm), "empty"),
        (lambda: stratified_bootstrap_ci({"a": []}, iqm), "'a' is empty"),
        (lambda: stratified_bootstrap_ci({"a": [[1.0], []]}, iqm), "task 1"),
        (lambda: stratified_bootstrap_ci({"a": np.array([[1.0, np.nan]])}, iqm), "NaN"),
        (lambda: stratified_bootstrap_ci({"a": np.ones(3)}, iqm), "matrix"),
        (lambda: stratified_bootstrap_ci({"a": np.ones((2, 2))}, iqm, ci=0.0), "ci=0.0"),
        (lambda: stratified_bootstrap_ci({"a": np.ones((2, 2))}, iqm, ci=1.0), "ci=1.0"),
        (lambda: stratified_bootstrap_ci({"a": np.ones((2, 2))}, iqm, ci=95), "ci=95"),
        (lambda: stratified_bootstrap_ci({"a": np.ones((2, 2))}, iqm, reps=0), "reps=0"),
        (lambda: mean_ci_over_seeds(np.ones((0, 3))), "empty"),
        (lambda: mean_ci_over_seeds(np.ones(3)), "seeds, x"),
        (lambda: mean_ci_over_seeds([[1.0, np.nan]]), "NaN"),
        (lambda: mean_ci_over_seeds(np.ones((2, 2)), reps=0), "reps=0"),
        (lambda: mean_ci_over_seeds(np.ones((2, 2)), ci=-0.1), "ci=-0.1"),
    ],
)
def test_bad_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call()


# ------------------------------------------------------------------------------------ paired comparisons


def test_probability_of_improvement_is_mann_whitney_u_over_nm():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 12).astype(float), rng.integers(0, 5, 9).astype(float)  # ties on purpose
    u = scipy_stats.mannwhitneyu(x, y).statistic
    assert probability_of_improvement(x, y) == pytest.approx(u / (x.size * y.size))
    assert probability_of_improvement([2.0, 3.0], [0.0, 1.0]) == 1.0 and probability_of_improvement([1.0], [1.0]) == 0.5
    point, lo, hi = probability_of_improvement_ci(x, y, reps=300)
    assert lo <= point <= hi and 0.0 <= lo and hi <= 1.0


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_the_exact_sign_flip_test_matches_scipys_permutation_test(alternative):
    scipy_stats = pytest.importorskip("scipy.stats")
    d = np.array([0.8, -0.3, 1.1, 0.4, 0.9, -0.2, 0.5, 1.3, 0.05, 0.7])
    ref = scipy_stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative=alternative
    ).pvalue
    assert sign_flip_pvalue(d, alternative) == pytest.approx(ref)


def test_the_monte_carlo_sign_flip_test_agrees_with_the_exact_one_and_holds_its_level():
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 1.0, 16)
    exact = sign_flip_pvalue(d)
    mc = sign_flip_pvalue(np.concatenate([d, d[:1] * 0]), reps=40_000)  # n = 17: sampled flips, one zero added
    assert mc == pytest.approx(exact, abs=0.02)
    # under the null (symmetric differences) a level-0.05 test rejects about 5% of the time
    rejections = [sign_flip_pvalue(rng.normal(0, 1, 20), reps=999, seed=i) < 0.05 for i in range(400)]
    assert 0.02 < np.mean(rejections) < 0.09


def test_tost_declares_equivalence_only_inside_the_margin():
    rng = np.random.default_rng(1)
    close = rng.normal(0.0, 0.1, 30)  # mean near 0, sd 0.1: equivalent within 0.2, not within 0.01
    assert tost_pvalue(close, 0.2, reps=5000) < 0.01
    assert tost_pvalue(close, 0.01, reps=5000) > 0.2
    shifted = close + 0.5  # clearly different: never equivalent within 0.2
    assert tost_pvalue(shifted, 0.2, reps=5000) > 0.9


def test_holm_adjusts_as_the_textbook_example():
    # Holm (1979)-style step-down: sorted p 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06, 0.06, in the given order
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_the_minimum_detectable_effect_has_the_stated_power():
    assert minimum_detectable_effect(1.0, 100) == pytest.approx(0.2802, abs=1e-4)
    # a z-test at the MDE rejects in ~80% of simulated paired samples (sd known, n = 30)
    rng = np.random.default_rng(2)
    mde = minimum_detectable_effect(1.0, 30)
    z = rng.normal(mde, 1.0, (20_000, 30)).mean(axis=1) * np.sqrt(30)
    assert np.mean(np.abs(z) > 1.959964) == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: probability_of_improvement([], [1.0]), "x is empty"),
        (lambda: sign_flip_pvalue([1.0, np.nan]), "NaN"),
        (lambda: sign_flip_pvalue([1.0], "bigger"), "alternative='bigger'"),
        (lambda: tost_pvalue([1.0, 2.0], 0.0), "margin=0.0"),
        (lambda: holm([0.5, 1.5]), "[0, 1]"),
        (lambda: minimum_detectable_effect(1.0, 1), "n >= 2"),
        (lambda: minimum_detectable_effect(1.0, 10, power=1.0), "power=1.0"),
    ],
)
def test_bad_comparison_input_raises_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[").replace(".", r"\.")):
        call()
