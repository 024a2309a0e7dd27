"""Blind Cliffwalk experiment (experiments/cliffwalk): the compiled loss derivatives equal torch autograd of
rlfocal.losses with the memory as the batch, rank-based sampling and the linear step match brute-force
references, arms with identical mechanics give identical runs (common random numbers), and the script runs."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlfocal.envs.cliffwalk import true_q
from rlfocal.losses import RunningMean, focal_td, mirror

CLIFF_DIR = Path(__file__).resolve().parents[1] / "experiments" / "cliffwalk"
sys.path.insert(0, str(CLIFF_DIR))  # run.py imports its sibling kernels.py, as it does when run as a script
_spec = importlib.util.spec_from_file_location("cliffwalk_run", CLIFF_DIR / "run.py")
cliff = importlib.util.module_from_spec(_spec)
sys.modules["cliffwalk_run"] = cliff  # dataclasses look their module up there
_spec.loader.exec_module(cliff)
kernels = cliff.kernels


def _td_samples() -> torch.Tensor:
    rng = np.random.default_rng(0)
    td = np.concatenate([rng.normal(0.0, 1.0, 200), rng.normal(0.0, 1e-3, 50), [0.0, 1e-9, -1e-9, 5.0, -12.0]])
    return torch.tensor(td, dtype=torch.float64)


def _memory_td() -> tuple[np.ndarray, np.ndarray]:
    """Per-pair TD errors and row counts of a Cliffwalk-like memory (n = 6: counts 2^(n−s−1) per pair)."""
    counts = np.repeat(2 ** np.arange(5, -1, -1), 2)
    pair_td = np.random.default_rng(2).normal(0.0, 0.5, counts.size)
    pair_td[-1] = 1.0  # the rare rewarding pair, one row
    return pair_td, counts


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("tau", [1.0, 0.05, 3.0])
def test_focal_grad_matches_autograd(gamma, tau):
    td = _td_samples().requires_grad_(True)
    focal_td(td, gamma=gamma, tau=tau, base="mse").sum().backward()
    ours = np.array([kernels.focal_mse_grad(float(d), gamma, tau) for d in td.detach()])
    np.testing.assert_allclose(ours, td.grad.numpy(), rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("max_weight", [None, 2.0])
@pytest.mark.parametrize(("gamma", "tau"), [(0.3, 100.0), (0.3, 0.05), (2.0, 1.0)])
def test_normalised_focal_grad_matches_autograd_over_the_whole_memory(gamma, tau, max_weight):
    pair_td, counts = _memory_td()
    td = torch.tensor(np.repeat(pair_td, counts), requires_grad=True)  # every row of the memory: the batch
    focal_td(td, gamma=gamma, tau=tau, base="mse", normalize=True, max_weight=max_weight).sum().backward()
    mean = kernels.memory_mean(pair_td, counts, kernels.FOCAL_NORM, 0.6, 1e-6, gamma, tau)
    cap = math.inf if max_weight is None else max_weight
    ours = [kernels.loss_grad(d, kernels.FOCAL_NORM, gamma, tau, 0.6, 1e-6, mean, cap) for d in pair_td]
    np.testing.assert_allclose(np.repeat(ours, counts), td.grad.numpy(), rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("max_weight", [None, 2.0])
@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_mirror_grad_matches_autograd_over_the_whole_memory(alpha, max_weight):
    pair_td, counts = _memory_td()
    td = torch.tensor(np.repeat(pair_td, counts), requires_grad=True)
    mirror(td, alpha=alpha, eps=1e-6, base="mse", max_weight=max_weight).sum().backward()
    mean = kernels.memory_mean(pair_td, counts, kernels.MIRROR, alpha, 1e-6, 0.0, 1.0)
    cap = math.inf if max_weight is None else max_weight
    ours = [kernels.loss_grad(d, kernels.MIRROR, 0.0, 1.0, alpha, 1e-6, mean, cap) for d in pair_td]
    np.testing.assert_allclose(np.repeat(ours, counts), td.grad.numpy(), rtol=1e-12, atol=1e-300)


def test_running_mean_matches_rlfocal():
    reference = RunningMean(momentum=0.99)
    mean = 0.0
    for t, x in enumerate(np.random.default_rng(1).exponential(size=50)):
        mean = kernels.running_mean_update(mean, x, t == 0, 0.99)
        assert mean == pytest.approx(reference.update(torch.tensor([x])), rel=1e-14)


def test_rank_structure_keeps_the_brute_force_order_and_sampling_probabilities():
    rows, alpha = 200, 0.7
    rng = np.random.default_rng(3)
    stored = np.ones(rows)
    half = int(math.sqrt(rows)) + 1
    blocks = np.empty((rows // half + 2, 2 * half), dtype=np.int64)
    sizes = np.zeros(rows // half + 2, dtype=np.int64)
    block_of = np.empty(rows, dtype=np.int64)
    order = np.arange(rows)
    kernels.rank_build(order, blocks, sizes, block_of)
    cdf = np.cumsum(np.arange(1.0, rows + 1.0) ** -alpha)
    for t in range(2000):
        value = rng.choice([1.0, 0.5, rng.random()])  # ties included: they go by row index
        kernels.rank_move(blocks, sizes, block_of, stored, int(rng.integers(rows)), value)
        if t % half == half - 1:  # the rebuild run() makes
            kernels.rank_order(blocks, sizes, order)
            kernels.rank_build(order, blocks, sizes, block_of)
        if t % 97 == 0:
            kernels.rank_order(blocks, sizes, order)
            brute = np.lexsort((np.arange(rows), -stored))  # descending |δ|, ties by row
            np.testing.assert_array_equal(order, brute)
    # P(row of rank k) = k^−α / Σ: the u-interval that maps to each row has exactly that width
    brute_p = np.empty(rows)
    brute_p[np.lexsort((np.arange(rows), -stored))] = np.arange(1.0, rows + 1.0) ** -alpha / cdf[-1]
    edges = np.concatenate([[0.0], cdf / cdf[-1]])
    sampled = [kernels.rank_sample(cdf, blocks, sizes, u) for u in (edges[:-1] + edges[1:]) / 2]
    kernel_p = np.zeros(rows)
    np.add.at(kernel_p, sampled, np.diff(edges))
    np.testing.assert_allclose(kernel_p, brute_p, rtol=1e-12)


@pytest.mark.parametrize("linear", [False, True])
def test_step_matches_a_hand_computed_gradient_step(linear):
    n = 5
    rng = np.random.default_rng(4)
    phi = cliff.features(n) if linear else np.eye(2 * n)
    w = rng.normal(0.0, 0.1, phi.shape[1])
    q, q_true = phi @ w, true_q(n, 1.0 - 1.0 / n).ravel()
    for pair, c in ((3, 0.2), (2 * n - 2, -0.05)):
        expected = phi @ (w + c * phi[pair])  # w += c·∇_w Q(s, a) = c·φ(s, a)
        change = kernels.sse_change(q, q_true, pair, c, linear)
        kernels.apply_step(q, pair, c, linear)
        np.testing.assert_allclose(q, expected, rtol=1e-13)
        assert change == pytest.approx(((expected - q_true) ** 2).sum() - ((phi @ w - q_true) ** 2).sum(), rel=1e-10)
        w = w + c * phi[pair]


@pytest.mark.parametrize("model", cliff.MODELS)
def test_first_update_matches_numpy(model):
    # greedy replays row 0 first (every row ties at priority 1), so the first update needs no random draw
    n, seed, eta = 6, 2, cliff.ETA
    order, q0, w0, _ = cliff.initial_values(n, seed)
    phi = cliff.features(n) if model == "linear" else np.eye(2 * n)
    w = w0 if model == "linear" else q0
    memory = cliff._memory(n)
    pair, nxt = memory["row_pair"][order[0]], memory["next_state"][memory["row_pair"][order[0]]]
    q, discount = phi @ w, 1.0 - 1.0 / n
    bootstrap = 0.0 if memory["terminated"][pair] else discount * max(q[2 * nxt], q[2 * nxt + 1])
    w = w + eta * (memory["reward"][pair] + bootstrap - q[pair]) * phi[pair]
    mse = ((phi @ w - true_q(n, discount).ravel()) ** 2).mean()
    assert cliff.run_one("greedy", n, seed, model, max_updates=1)["final_mse"] == pytest.approx(mse, rel=1e-12)


@pytest.mark.parametrize("model", cliff.MODELS)
@pytest.mark.parametrize(
    "twin",
    [cliff.Arm(loss="focal", gamma=0.0), cliff.Arm(loss="focal_norm", gamma=0.0), cliff.Arm(loss="mirror", alpha=0.0),
     cliff.Arm("proportional", alpha=0.0)],
)  # fmt: skip
def test_arms_with_identical_mechanics_give_identical_runs(twin, model):
    # common random numbers: γ = 0 or α = 0 makes each of these uniform replay of the plain loss, draw for draw
    for n, seed in ((4, 0), (6, 1), (7, 5)):
        ours, uniform = cliff.run_one(twin, n, seed, model), cliff.run_one("uniform", n, seed, model)
        assert ours["updates"] == uniform["updates"] and ours["final_mse"] == uniform["final_mse"]


@pytest.mark.parametrize("model", cliff.MODELS)
@pytest.mark.parametrize("arm", list(cliff.ARMS))
def test_learner_reaches_true_q(arm, model):
    if model == "linear" and arm == "uniform_eta1":
        pytest.skip("η‖φ‖² = 2 with φ = [one-hot, 1]: the linear step at η = 1 overshoots and diverges")
    # 1e-8, not less: focal-TD's step shrinks like |δ|^(1+2γ) near the fixed point, so its last digits come slowly
    result = cliff.run_one(arm, 3, seed=0, model=model, max_updates=10**6, threshold=1e-8)
    assert result["converged"] and not result["diverged"]
    assert result["final_mse"] < 1e-8


def test_unclipped_reweighting_diverges_where_the_clipped_one_converges():
    for pair in (("mirror", "mirror_clip4"), ("focal_norm_tau100", "focal_norm_tau100_clip4")):
        unclipped, clipped = (cliff.run_one(arm, 8, seed=0) for arm in pair)
        assert unclipped["diverged"] and not unclipped["converged"]
        assert clipped["converged"]


@pytest.mark.parametrize("n", [4, 5, 6])
def test_prioritised_and_oracle_beat_uniform(n):
    def median(arm):
        runs = [cliff.run_one(arm, n, seed) for seed in range(10)]
        assert all(r["converged"] for r in runs)
        return np.median([r["updates"] for r in runs])

    uniform = median("uniform")
    for arm in ("oracle", "per", "rank", "greedy"):
        assert median(arm) < uniform, arm


def test_runs_are_deterministic_in_their_seed():
    for arm in ("per", "rank"):
        assert cliff.run_one(arm, 6, seed=3) == cliff.run_one(arm, 6, seed=3)
        assert cliff.run_one(arm, 6, seed=3) != cliff.run_one(arm, 6, seed=4)


def test_summary_and_pairs_count_unconverged_runs_at_their_cap():
    base = {"model": "tabular", "n": 4, "transitions": 30, "cap": 100, "diverged": False, "final_mse": 0.0}
    rows = [{**base, "arm": "per", "seed": s, "updates": u, "converged": c}
            for s, (u, c) in enumerate([(10, True), (20, True), (7, False)])]  # fmt: skip
    rows += [{**base, "arm": "uniform", "seed": s, "updates": 20, "converged": True} for s in range(3)]
    rows += [{**base, "arm": arm, "seed": 3, "updates": 5, "converged": False} for arm in ("per", "uniform")]
    (per,) = [s for s in cliff.summarise(rows) if s["arm"] == "per"]
    assert per["median"] == 60 and per["converged"] == 2 and per["median_censored"]  # values 10, 20, 100, 100
    (pair,) = [p for p in cliff.paired(rows) if p["arm"] == "per" and p["reference"] == "uniform"]
    assert pair["both_unconverged"] == 1 and pair["censored_pairs"] == 1  # seed 3 has no ratio: left out
    assert pair["median_ratio"] == 1.0
    assert pair["frac_arm_fewer"] == pytest.approx(1 / 3)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="unknown arm"):
        cliff.run_one("nope", 4, seed=0)
    with pytest.raises(ValueError, match="unknown model"):
        cliff.run_one("uniform", 4, seed=0, model="deep")
    with pytest.raises(ValueError, match="n \\(chain length\\) must be an integer >= 2"):
        cliff.run_one("uniform", 1, seed=0)
    with pytest.raises(ValueError, match="unknown arm"):
        cliff.main(["--arms", "uniform", "nope"])
    with pytest.raises(ValueError, match="n-min"):
        cliff.main(["--n-max", "1"])


def test_quick_writes_results(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, str(CLIFF_DIR / "run.py"), "--quick", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    with (out / "updates.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cliff.MODELS) * len(cliff.ARMS) * 4 * 3  # models × arms × n = 2..5 × 3 seeds
    assert {"model", "arm", "n", "seed", "updates", "converged", "cap"} <= set(rows[0])
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == len(cliff.MODELS) * len(cliff.ARMS) * 4
    assert {"median", "q25", "q75", "median_ci_lo", "median_ci_hi"} <= set(summary[0])
    with (out / "paired.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(cliff.MODELS) * len(cliff.PAIRS) * 4
    assert (out / "cliffwalk.png").read_bytes()[:4] == b"\x89PNG"
    assert "git commit" in (out / "command.txt").read_text()
