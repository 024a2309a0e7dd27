"""The analogy gauge: its statistics against independent references, its gradient cosines against per-sample
gradients computed one transition at a time, and each seed lane of a batch read as that seed alone."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from test_train import composed, rows, train

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal import losses
from rlfocal.builders import make_agent, make_gauge, make_lane_replay, make_replay
from rlfocal.config import validate
from rlfocal.gauge import (
    ALPHA_GRID,
    GAUGE_KEYS,
    LaneView,
    alpha_fit,
    analogy_gauge,
    best_shift_alpha,
    effective_sample_size,
    fit_exponent,
    loss_slopes,
    rank_average,
    spearman,
)
from rlfocal.replay import PrioritizedReplay, PrioritizedSampler, UniformReplay


def test_rank_average_matches_scipy_with_ties():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 0.5, 1.0])
    np.testing.assert_array_equal(rank_average(x), stats.rankdata(x))


def test_spearman_matches_scipy_and_is_nan_for_constants():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = np.round(a + rng.normal(size=200), 1)  # ties on one side
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert math.isnan(spearman(a, np.ones(200)))


def test_effective_sample_size_endpoints():
    assert effective_sample_size(np.full(50, 0.3)) == pytest.approx(1.0)
    assert effective_sample_size(np.r_[1.0, np.zeros(49)]) == pytest.approx(1 / 50)
    assert effective_sample_size(np.array([1.0, 3.0])) == pytest.approx(16 / (2 * 10))


def _filled(buffer_cls, n: int = 64, **kwargs):
    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 2, hidden=(16,)), 2, losses.huber, seed=0)
    buf = buffer_cls(256, (4,), seed=0, **kwargs)
    rng = np.random.default_rng(1)
    for _ in range(n):
        buf.add(
            rng.normal(size=4).astype(np.float32),
            int(rng.integers(2)),
            float(rng.normal()),
            rng.normal(size=4).astype(np.float32),
            bool(rng.random() < 0.1),
            False,
        )
    return agent, buf


def _per_sample_grads(agent, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """δ and ∇_θ δ_i for each probe transition, one at a time (the independent reference)."""
    rows, deltas = [], []
    for i in range(batch.obs.shape[0]):
        one = type(batch)(**{k: getattr(batch, k)[i : i + 1] for k in batch.__dataclass_fields__})
        td, _ = agent.td_errors(one)
        grads = torch.autograd.grad(td.sum(), agent.params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]).double())
        deltas.append(td.detach().double())
    return torch.cat(deltas), torch.stack(rows)


def test_gradient_cosines_match_per_sample_reference():
    agent, buf = _filled(UniformReplay)
    gamma, alpha, beta, eps = 1.5, 0.6, 0.4, 1e-6
    per = PrioritizedSampler(1, alpha=alpha, beta=beta, eps=eps)
    out = analogy_gauge(
        agent, buf, np.random.default_rng(7), sample_size=32, focal_gamma=gamma, priority=per.priority, beta=beta
    )
    batch = buf.peek(32, np.random.default_rng(7)).to_torch()  # the same probe: same RNG seed
    td, jac = _per_sample_grads(agent, batch)
    # dℓ/dδ for each loss, by autograd on a float64 copy of δ
    d = td.clone().requires_grad_()
    huber_k = torch.autograd.grad(losses.huber(d).sum(), d)[0]
    tau = losses.huber(td).mean()
    focal_k = torch.autograd.grad(losses.focal_td(d, gamma=gamma, tau=tau).sum(), d)[0]
    p = (td.abs() + eps) ** alpha
    prob = p / p.sum()
    w = (prob * td.numel()) ** -beta
    w = w / w.max()
    g_f, g_u = (focal_k / 32) @ jac, (huber_k / 32) @ jac
    g_p, g_p0 = (prob * w * huber_k) @ jac, (prob * huber_k) @ jac

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    def unit(a):
        return a / a.norm()

    assert out["grad_cosine"] == pytest.approx(cos(g_f, g_p), abs=1e-5)
    assert out["shift_cosine"] == pytest.approx(cos(unit(g_f) - unit(g_u), unit(g_p0) - unit(g_u)), abs=1e-3)
    # alpha_fit against DESIGN.md §2.2's closed form w = s^γ + γ·x·e^(−x)·s^(γ−1), s = 1 − e^(−x), x = L/τ
    x = (losses.huber(td) / tau).numpy()
    s = -np.expm1(-x)
    w = s**gamma + gamma * x * np.exp(-x) * s ** (gamma - 1)
    assert out["alpha_fit"] == pytest.approx(np.polyfit(np.log(td.abs().numpy()), np.log(w), 1)[0], abs=1e-6)
    # alpha_shift: the grid's best PER(α) shift, each gradient summed from the per-sample ones
    shifts = {a: cos(unit(g_f) - unit(g_u), unit((p ** (a / alpha) * huber_k) @ jac) - unit(g_u)) for a in ALPHA_GRID}
    assert shifts[out["alpha_shift"]] == pytest.approx(max(shifts.values()), abs=1e-3)
    assert all(math.isnan(out[k]) for k in ("modulator_spearman", "priority_ess", "priority_staleness"))


def test_gamma_zero_is_huber_and_has_no_shift():
    agent, buf = _filled(UniformReplay)
    uniform = PrioritizedSampler(1, alpha=0.0, beta=0.0)
    out = analogy_gauge(
        agent, buf, np.random.default_rng(0), sample_size=64, focal_gamma=0.0, beta=0.0, priority=uniform.priority
    )
    assert out["grad_cosine"] == pytest.approx(1.0, abs=1e-6)  # α = 0, β = 0: PER is uniform; γ = 0: focal is Huber
    assert math.isnan(out["shift_cosine"])


def test_sampler_readings_on_prioritized_replay():
    agent, buf = _filled(PrioritizedReplay, n=40)
    stored = buf.stored_slots()
    buf.update_priorities(stored[:10], np.linspace(0.1, 5, 10))  # update 1 refreshes 10 slots
    buf.update_priorities(stored[:5], np.linspace(0.1, 5, 5))  # update 2 refreshes 5 of them again
    out = analogy_gauge(agent, buf, np.random.default_rng(0), sample_size=40, priority=buf.sampler.priority, beta=0.4)
    assert set(out) == set(GAUGE_KEYS)
    # staleness: 30 slots untouched since their write (2 updates ago), 5 refreshed at update 1, 5 at update 2
    assert out["priority_staleness"] == pytest.approx((30 * 2 + 5 * 1 + 5 * 0) / 40)
    leaves = buf.sampler.tree.get(stored)
    assert out["priority_ess"] == pytest.approx(leaves.sum() ** 2 / (40 * (leaves**2).sum()))
    assert -1 <= out["modulator_spearman"] <= 1


def test_gauge_leaves_training_state_alone():
    agent, buf = _filled(PrioritizedReplay, n=40)
    before = (buf.rng.bit_generator.state, buf.sampler.num_samples, buf.beta, [p.clone() for p in agent.params])
    analogy_gauge(agent, buf, np.random.default_rng(0), sample_size=16, priority=buf.sampler.priority, beta=buf.beta)
    assert buf.rng.bit_generator.state == before[0] and buf.sampler.num_samples == before[1]
    assert buf.beta == before[2]
    assert all(p.grad is None and torch.equal(p, q) for p, q in zip(agent.params, before[3], strict=True))


@pytest.mark.parametrize("dist", ["normal", "laplace"])
@pytest.mark.parametrize("gamma", [0.3, 1.0])
def test_alpha_fit_tends_to_two_gamma_as_tau_grows_for_mse(gamma, dist):
    """Focal-TD's effective weight (∂FL/∂δ)/(∂L/∂δ) ∝ |δ|^(2γ) when L ≪ τ (the α = 2γ prediction), not when τ ~ L."""
    td = torch.from_numpy(getattr(np.random.default_rng(0), dist)(size=4096))
    mean_loss = float((0.5 * td.square()).mean())
    far = alpha_fit(td, gamma, tau=1e4 * mean_loss, base="mse")
    near = alpha_fit(td, gamma, tau=mean_loss, base="mse")
    assert far == pytest.approx(2 * gamma, abs=0.02)
    assert near < 2 * gamma - 0.1


def test_alpha_fit_with_huber_is_two_gamma_inside_kappa_and_less_beyond():
    gamma, kappa = 0.3, 1.0
    td = torch.from_numpy(2.0 * np.random.default_rng(1).standard_normal(4096))  # ~60% of |δ| beyond κ
    tau = 1e4 * float(losses.huber(td, kappa).mean())
    d_base, d_focal = loss_slopes(td, gamma, tau, kappa=kappa)
    inside = td.abs() < kappa
    assert fit_exponent(td[inside], (d_focal / d_base)[inside]) == pytest.approx(2 * gamma, abs=0.02)
    assert gamma < alpha_fit(td, gamma, tau, kappa=kappa) < 2 * gamma - 0.05  # L grows only linearly beyond κ


def test_fit_exponent_is_nan_without_enough_usable_samples():
    td = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])  # δ = 0 is dropped: 8 usable
    assert fit_exponent(td, td.abs() ** 0.7) == pytest.approx(0.7)
    assert math.isnan(fit_exponent(td[:-1], td[:-1].abs() ** 0.7))
    assert math.isnan(fit_exponent(td, torch.where(td > 4, -1.0, 1.0)))  # w <= 0 is not usable
    assert math.isnan(fit_exponent(torch.ones(20), torch.ones(20)))  # one |δ|: no slope


@pytest.mark.parametrize("gamma", [0.3, 0.75])
def test_alpha_shift_finds_two_gamma_when_loss_is_small(gamma):
    """On a tiny network with L ≪ τ (MSE base), focal's shift is PER(α = 2γ)'s, so the grid's argmax is 2γ."""
    agent, buf = _filled(UniformReplay)
    td, _ = agent.td_errors(buf.peek(64, np.random.default_rng(0)).to_torch(), eager=True)
    d_base, d_focal = loss_slopes(td, gamma, 1e4 * float((0.5 * td.detach().square()).mean()), base="mse")

    def grad(c: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(td, agent.params, grad_outputs=c.float(), retain_graph=True)
        return torch.cat([g.reshape(-1) for g in grads]).double()

    priority = td.detach().double().abs() + 1e-6
    best = best_shift_alpha(grad(d_focal), grad(d_base), lambda a: grad(priority**a * d_base))
    assert best == pytest.approx(2 * gamma)


def test_alpha_shift_is_read_only_from_a_sampler_and_logged(tmp_path):
    buf = PrioritizedReplay(64, (4,), seed=0)
    rng = np.random.default_rng(1)
    for _ in range(64):
        buf.add(
            rng.standard_normal(4).astype(np.float32),
            int(rng.integers(2)),
            float(rng.random()),
            rng.standard_normal(4).astype(np.float32),
            False,
            False,
        )
    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 2, hidden=(8,)), 2, losses.huber, seed=0)
    out = analogy_gauge(agent, buf, np.random.default_rng(0), sample_size=64, priority=buf.sampler.priority, beta=0.0)
    assert 0.1 <= out["alpha_shift"] <= 2.0 and math.isfinite(out["alpha_fit"])
    plain = analogy_gauge(
        agent, buf, np.random.default_rng(0), sample_size=64, priority=lambda d: np.ones_like(d), beta=0.0
    )
    assert math.isnan(plain["alpha_shift"])  # a plain function carries no α to rescale


def test_alpha_fit_experiment_core_at_tiny_size():
    """experiments/alpha_fit/run.py: one row per (dist, base, τ, γ); α* rises towards 2γ with τ for the MSE base."""
    path = Path(__file__).resolve().parents[1] / "experiments" / "alpha_fit" / "run.py"
    spec = importlib.util.spec_from_file_location("alpha_fit_run", path)  # experiments/ is not a package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.fit_table(500, gammas=(0.3, 1.0), tau_multiples=(1.0, 1000.0))
    assert len(rows) == 3 * 2 * 2 * 2
    for dist in module.DISTS:
        sel = [r for r in rows if r["dist"] == dist and r["base"] == "mse"]
        mse = {(r["tau_multiple"], r["gamma"]): r["alpha_star"] for r in sel}
        for gamma in (0.3, 1.0):
            assert mse[1.0, gamma] < mse[1000.0, gamma] == pytest.approx(2 * gamma, abs=0.02)


def _lane_steps(num_seeds: int, n: int = 48) -> list[tuple[np.ndarray, ...]]:
    """``n`` vectorised steps (2 environments) of random CartPole-shaped transitions, arrays ``[S, 2, ...]``."""
    rng = np.random.default_rng(3)
    shape = (num_seeds, 2)
    return [
        (
            rng.normal(size=(*shape, 4)).astype(np.float32),
            rng.integers(2, size=shape),
            rng.normal(size=shape),
            rng.normal(size=(*shape, 4)).astype(np.float32),
            rng.random(shape) < 0.1,
            np.zeros(shape, dtype=bool),
        )
        for _ in range(n)
    ]


def test_each_lane_reads_as_its_seed_alone():
    """Lane k of a 3-seed batch (seeds 4..6) reads what a run of seed 4 + k reads alone: same network, same replay
    contents and priorities, same gauge RNG, twice in a row. Lane k runs the single network's float32 ops on its
    slices of the stacked parameters (bitwise equal here); 1e-6 relative leaves room for BLAS kernels that pick
    another summation order for a slice's memory alignment."""
    overrides = ["replay=per", "gauge.sample_size=64", "agent.hidden=[16]"]
    batch_cfg = validate(composed([*overrides, "seed=4", "num_seeds=3"]))
    agent = make_agent(batch_cfg, (4,), 2, torch.device("cpu"))
    replay = make_lane_replay(batch_cfg, [4, 5, 6], (4,), np.float32, 100)
    steps = _lane_steps(3)
    for step in steps:
        replay.add_batch(*step, np.arange(2))
    slots = np.stack([lane.stored_slots()[::3] for lane in replay.lanes])
    td = np.random.default_rng(5).normal(size=slots.shape)
    replay.update_priorities(slots, td)
    with torch.no_grad():  # the online nets move away from their targets (elementwise: the same floats alone)
        for p in agent.params:
            p.mul_(1.5)
    lane_gauges = [make_gauge(batch_cfg, lane, k) for k, lane in enumerate(replay.lanes)]
    for k in range(3):
        cfg = validate(composed([*overrides, f"seed={4 + k}"]))
        alone = make_agent(cfg, (4,), 2, torch.device("cpu"))
        buffer = make_replay(cfg, (4,), np.float32, 100)
        for step in steps:
            buffer.add_batch(*(x[k] for x in step), np.arange(2))
        buffer.update_priorities(slots[k], td[k])
        with torch.no_grad():
            for p in alone.params:
                p.mul_(1.5)
        gauge = make_gauge(cfg, buffer)
        for _ in range(2):  # the second reading checks that each lane's RNG moves as its seed's alone
            lane_out, alone_out = lane_gauges[k](agent), gauge(alone)
            assert all(math.isfinite(v) for v in lane_out.values())
            for key in GAUGE_KEYS:
                assert lane_out[key] == pytest.approx(alone_out[key], rel=1e-6, abs=1e-9), (k, key)


def test_lanes_read_their_own_networks():
    """On one replay and one probe, two lanes with different networks read differently, and two with the same
    network read the same: a lane's readings follow its own slice of the stacked parameters, and only it."""
    _, buf = _filled(PrioritizedReplay, n=64)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(make_network("mlp", (4,), 2, hidden=(16,)))

    def readings(agent: DQN, lane: int) -> dict[str, float]:
        kwargs = {"sample_size": 48, "priority": buf.sampler.priority, "beta": 0.4}
        return analogy_gauge(LaneView(agent, lane), buf, np.random.default_rng(0), **kwargs)

    different = DQN(nets, 2, losses.huber, seed=[0, 1])
    same = DQN([nets[1], copy.deepcopy(nets[1])], 2, losses.huber, seed=[0, 1])
    assert readings(different, 0)["grad_cosine"] != readings(different, 1)["grad_cosine"]
    assert readings(different, 0)["modulator_spearman"] != readings(different, 1)["modulator_spearman"]
    assert readings(same, 0) == readings(same, 1) == readings(different, 1)
    assert all(p.grad is None for p in different.params)  # the gauge only observes


def test_a_batch_of_seeds_logs_the_gauge_in_every_seed(tmp_path):
    """num_seeds=2: both seeds' metrics.csv carry finite gauge readings on the same rows, those where one shared
    counter says ``gauge.every`` updates have passed since the last reading (it moves once per reading)."""
    every = 10  # about two rows' worth of updates (CartPole: one update per 4 env steps, a row per 25)
    train(tmp_path, ["num_seeds=2", "seed=4", "replay=per", "logger.log_every=25", f"gauge.every={every}"])
    logs = [rows(tmp_path / f"seed_{seed}" / "metrics.csv") for seed in (4, 5)]
    last, due = 0, []
    for row in logs[0]:
        if int(row["charts/updates"]) - last >= every:
            due.append(row["global_step"])
            last = int(row["charts/updates"])
    assert len(due) >= 3 and len(due) < len(logs[0])  # not every row: the cadence is checked, not only presence
    for log in logs:
        assert [r["global_step"] for r in log if r["gauge/grad_cosine"] != ""] == due
        for r in log:
            if r["global_step"] in due:
                assert all(math.isfinite(float(r[f"gauge/{key}"])) for key in GAUGE_KEYS), r
    assert [r["gauge/grad_cosine"] for r in logs[0]] != [r["gauge/grad_cosine"] for r in logs[1]]
