"""Samplers: frequencies follow P(i), IS weights follow the formula, β anneals, LAP and uniform behave."""

import numpy as np
import pytest
import torch
from scipy import stats

from rlfocal.replay import LAPReplay, PrioritizedReplay, SumTree, UniformReplay


def filled(buffer_cls, n: int, capacity: int = 64, **kwargs):
    """A buffer holding n one-step transitions whose obs is the insertion number."""
    buf = buffer_cls(capacity, (1,), **kwargs)
    for t in range(n):
        buf.add(np.array([t], np.float32), t % 2, 1.0, np.array([t + 1], np.float32), False, False)
    return buf


def chi_square_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    return float(stats.chisquare(counts, counts.sum() * probs).pvalue)


def test_per_sampling_frequencies_match_p_alpha():
    """10^5+ stratified draws follow P(i) = p_i^α / Σ p^α with p_i = |δ_i| + ε (chi-square, fixed seed)."""
    td = np.random.default_rng(0).exponential(size=300) * np.repeat([0.0, 0.1, 1.0], 100)
    buf = filled(PrioritizedReplay, len(td), capacity=512, alpha=0.6, eps=1e-2, seed=1)
    buf.update_priorities(np.arange(len(td)), td)
    counts = np.zeros(512)
    for _ in range(400):
        np.add.at(counts, buf.sample(256).indices, 1)
    p = (td + 1e-2) ** 0.6
    assert counts[len(td) :].sum() == 0
    assert chi_square_pvalue(counts[: len(td)], p / p.sum()) > 1e-3
    # and the test has power: the same counts reject α = 1
    p1 = td + 1e-2
    assert chi_square_pvalue(counts[: len(td)], p1 / p1.sum()) < 1e-6


def test_tree_sampling_skips_zero_priority_and_unfilled_leaves():
    """Zero leaves (evicted or never written) are never returned, across many stratified draws."""
    rng = np.random.default_rng(0)
    tree = SumTree(100)
    prio = np.where(rng.random(40) < 0.5, 0.0, rng.exponential(size=40))
    tree.update(np.arange(40), prio)
    for _ in range(200):
        idx, p = tree.sample_stratified(rng.random(64))
        assert (prio[idx] > 0).all() and (p > 0).all() and (idx < 40).all()


@pytest.mark.parametrize("buffer_cls", [UniformReplay, PrioritizedReplay, LAPReplay])
def test_unfilled_slots_are_never_sampled(buffer_cls):
    buf = filled(buffer_cls, 10, capacity=1000)
    for _ in range(50):
        batch = buf.sample(10)
        assert (batch.indices < 10).all()
        np.testing.assert_array_equal(batch.obs[:, 0], batch.indices)


def test_uniform_frequencies_after_the_ring_wraps():
    """After wrap-around the window starts mid-array; uniform draws cover exactly the stored transitions."""
    buf = filled(UniformReplay, 100, capacity=40, seed=3)
    assert len(buf) == 40 and buf.storage.start == 20
    counts = np.zeros(40)
    for _ in range(400):
        batch = buf.sample(32)
        assert (batch.weights == 1).all()
        assert (batch.obs[:, 0] >= 60).all()
        np.add.at(counts, batch.indices, 1)
    assert chi_square_pvalue(counts, np.full(40, 1 / 40)) > 1e-3


@pytest.mark.parametrize("is_norm", ["batch", "buffer"])
def test_is_weights_equal_the_formula(is_norm):
    """w_i = (N P(i))^-β normalised by its max over the batch, or over the whole buffer."""
    td = np.linspace(0.0, 4.0, 20)
    buf = filled(PrioritizedReplay, 20, alpha=0.7, beta=0.5, is_norm=is_norm)
    buf.update_priorities(np.arange(20), td)
    probs = (td + 1e-6) ** 0.7 / ((td + 1e-6) ** 0.7).sum()
    for _ in range(20):
        batch = buf.sample(8)
        w = (20 * probs[batch.indices]) ** -0.5
        w_max = w.max() if is_norm == "batch" else ((20 * probs.min()) ** -0.5)
        np.testing.assert_allclose(batch.weights, w / w_max, rtol=1e-6)
        assert batch.weights.dtype == np.float32


def test_beta_anneals_linearly_to_its_endpoints():
    buf = filled(PrioritizedReplay, 16, beta=0.4, beta_steps=10)
    seen = [buf.beta]
    for _ in range(20):
        buf.sample(4)
        seen.append(buf.beta)
    assert seen[0] == 0.4
    assert seen[5] == pytest.approx(0.7)
    assert seen[10] == 1.0 and seen[20] == 1.0
    assert all(b <= a for a, b in zip(seen[1:], seen[:-1], strict=True))


def test_beta_fixed_without_schedule_and_settable():
    buf = filled(PrioritizedReplay, 16, beta=0.4)
    for _ in range(5):
        buf.sample(4)
    assert buf.beta == 0.4
    buf.beta = 0.9
    assert buf.beta == 0.9
    with pytest.raises(ValueError, match="beta must be a finite number in"):
        buf.beta = 1.5


def test_new_transitions_enter_at_max_priority():
    buf = filled(PrioritizedReplay, 4, alpha=0.5, eps=1e-6)
    tree = buf.sampler.tree
    np.testing.assert_allclose(tree.get(np.arange(4)), 1.0)  # nothing seen yet: max priority is 1
    buf.update_priorities(np.array([0, 1]), np.array([3.0, -8.0]))  # the sign of δ does not matter
    np.testing.assert_allclose(tree.get(np.array([0, 1])), np.sqrt([3.0 + 1e-6, 8.0 + 1e-6]))
    buf.add(np.zeros(1, np.float32), 0, 0.0, np.zeros(1, np.float32), False, False)
    assert tree.get(np.array([4]))[0] == pytest.approx(np.sqrt(8.0 + 1e-6))
    assert buf.stats()["priority_max"] == pytest.approx(8.0 + 1e-6)


def test_lap_priorities_and_unit_weights():
    """LAP: p = max(|δ|, m)^α, no IS weights (Fujimoto et al. 2020)."""
    buf = filled(LAPReplay, 5, alpha=0.4, min_priority=1.0)
    buf.update_priorities(np.arange(5), np.array([0.0, 0.5, 1.0, -2.0, 10.0]))
    np.testing.assert_allclose(buf.sampler.tree.get(np.arange(5)), np.array([1.0, 1.0, 1.0, 2.0, 10.0]) ** 0.4)
    assert (buf.sample(5).weights == 1).all()


def test_priorities_accept_torch_tensors():
    buf = filled(PrioritizedReplay, 8)
    batch = buf.sample_torch(4)
    assert isinstance(batch.obs, torch.Tensor) and batch.obs.shape == (4, 1)
    buf.update_priorities(batch.indices, torch.ones(4, requires_grad=True) * 2)
    np.testing.assert_allclose(buf.sampler.tree.get(batch.indices.numpy()), (2.0 + 1e-6) ** 0.6)


def test_sample_torch_on_cpu_shares_memory_with_the_gather():
    buf = filled(UniformReplay, 8)
    batch = buf.sample(4)
    tensors = batch.to_torch("cpu")
    tensors.obs[0, 0] = -1.0
    assert batch.obs[0, 0] == -1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sample_torch_on_cuda_matches_numpy_sample():
    a, b = filled(PrioritizedReplay, 32, seed=5), filled(PrioritizedReplay, 32, seed=5)
    for _ in range(3):
        ref = a.sample(8)
        got = b.sample_torch(8, "cuda")
        assert got.obs.is_cuda and got.weights.is_cuda and not got.indices.is_cuda  # indices stay on the host
        for name in ("obs", "actions", "rewards", "next_obs", "discounts", "indices", "weights"):
            np.testing.assert_array_equal(getattr(got, name).cpu().numpy(), getattr(ref, name))
