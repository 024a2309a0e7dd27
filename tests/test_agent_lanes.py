"""DQN lanes: S seeds trained in lockstep with stacked parameters must behave as S single-seed DQNs.

Every lane is checked against a single-seed twin built from the same seed and fed the same batches: actions
identical, TD errors and losses to 1e-6 relative, parameters to 1e-5. On this CPU the forward passes, TD errors and
losses of a lane are bit for bit its twin's on the same parameters; its gradients are not: the MLP's lanes run as
one batched matmul (``baddbmm``), whose backward sums in another order than a lane's ``addmm`` (a few 1e-9 apart),
and fused Adam takes the stacked tensor in other SIMD chunks than a lane alone (a vectorised body, a scalar tail).
Also: per-lane clipping, NaN isolation, the S = 1 adapters (bit for bit), the checkpoint round trip, the one-hot
first layer, and the MinAtar CNN (vmapped, whose gradients stay bit for bit)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from agents.dqn import DQN, LaneBatch
from agents.lanes import stack_modules
from agents.networks import make_network

SEEDS = [3, 5, 7, 9]


def huber(td: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.huber_loss(td, torch.zeros_like(td), reduction="none")


def _net(seed: int, kind: str, obs_shape: tuple[int, ...], num_actions: int, dueling: bool = False, one_hot=False):
    torch.manual_seed(seed)
    return make_network(kind, obs_shape, num_actions, dueling=dueling, hidden=(32, 32), one_hot=one_hot)


def _agents(
    kind="mlp", obs_shape=(4,), num_actions=3, dueling=False, seeds=SEEDS, one_hot=False, **kwargs
) -> tuple[DQN, list[DQN]]:
    """A lanes agent over ``seeds`` and its single-seed twins, each network initialised from its seed."""
    kwargs = {"lr": 1e-2, **kwargs}
    nets = [_net(s, kind, obs_shape, num_actions, dueling, one_hot) for s in seeds]
    lanes = DQN(nets, num_actions, huber, seed=seeds, **kwargs)
    twins = [
        DQN(_net(s, kind, obs_shape, num_actions, dueling, one_hot), num_actions, huber, seed=s, **kwargs)
        for s in seeds
    ]
    return lanes, twins


def _obs(rng: np.random.Generator, shape: tuple[int, ...], one_hot: bool = False) -> np.ndarray:
    if one_hot:  # DeepSea-like: one 1 per row, some rows all zero (the null observation after an episode's end)
        rows = np.eye(shape[-1], dtype=np.float32)[rng.integers(0, shape[-1], shape[:-1])]
        return rows * (rng.random((*shape[:-1], 1)) < 0.8)
    if len(shape) == 3:  # MinAtar: 0/1 channels
        return (rng.random(shape) < 0.2).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


def _batches(
    rng: np.random.Generator, num_lanes: int, obs_shape=(4,), num_actions=3, n=16, one_hot=False
) -> list[LaneBatch]:
    """One single-seed batch per lane."""
    return [
        LaneBatch(
            obs=torch.from_numpy(_obs(rng, (n, *obs_shape), one_hot)),
            actions=torch.from_numpy(rng.integers(0, num_actions, n)),
            rewards=torch.from_numpy(rng.normal(size=n).astype(np.float32)),
            next_obs=torch.from_numpy(_obs(rng, (n, *obs_shape), one_hot)),
            discounts=torch.from_numpy(np.where(rng.random(n) < 0.2, 0.0, 0.99).astype(np.float32)),
            weights=torch.from_numpy(rng.uniform(0.2, 1.0, n).astype(np.float32)),
        )
        for _ in range(num_lanes)
    ]


def _stack(batches: list[LaneBatch]) -> LaneBatch:
    return LaneBatch(*(torch.stack(fields) for fields in zip(*batches, strict=True)))


def _lane_params(agent: DQN, k: int) -> list[torch.Tensor]:
    return [p[k] for p in agent.params]


def _assert_relative(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    """``max |actual − expected| <= rel · max |expected|``: relative to the tensor's scale, since a TD error near 0
    (a cancellation) has no meaningful relative error of its own."""
    assert (actual - expected).abs().max() <= rel * expected.abs().max(), (actual, expected)


def _assert_lane_is_twin(lanes: DQN, twins: list[DQN], k: int, out, twin_out, param_rel: float = 1e-5) -> None:
    _assert_relative(out.loss[k], twin_out.loss, 1e-6)
    _assert_relative(out.td_errors[k], twin_out.td_errors, 1e-6)
    torch.testing.assert_close(out.q_mean[k], twin_out.q_mean, rtol=1e-6, atol=1e-6)  # a mean of Q ~ 1: cancels
    for p, q in zip(_lane_params(lanes, k), twins[k].params, strict=True):
        _assert_relative(p, q, param_rel)


def _run_in_lockstep(
    lanes: DQN, twins: list[DQN], steps: int, obs_shape=(4,), num_actions=3, poison=None, param_rel=1e-5, one_hot=False
) -> None:
    """``steps`` updates with act_lanes between them and target updates on the way, each lane against its twin;
    ``poison = (lane, step)`` gives that lane NaN rewards from that step on (its twin is then no longer compared)."""
    rng = np.random.default_rng(0)
    epsilon = np.array([0.0, 0.3, 0.6, 1.0])[: lanes.num_seeds]
    for step in range(steps):
        num_envs = 1 + step % 3  # E = 1 takes act's path, E > 1 act_batch's
        obs = _obs(rng, (lanes.num_seeds, num_envs, *obs_shape), one_hot)
        actions = lanes.act_lanes(obs, epsilon)
        assert actions.dtype == np.int64 and actions.shape == (lanes.num_seeds, num_envs)
        for k, twin in enumerate(twins):
            np.testing.assert_array_equal(actions[k], twin.act_batch(obs[k], float(epsilon[k])))
        batches = _batches(rng, lanes.num_seeds, obs_shape, num_actions, one_hot=one_hot)
        if poison is not None and step >= poison[1]:
            batches[poison[0]] = batches[poison[0]]._replace(
                rewards=torch.full_like(batches[poison[0]].rewards, np.nan)
            )
        out = lanes.learn_lanes(_stack(batches))
        for k, twin in enumerate(twins):
            twin_out = twin.learn(batches[k])
            if poison is None or k != poison[0]:
                _assert_lane_is_twin(lanes, twins, k, out, twin_out, param_rel)
        if step in (7, 13):
            tau = 0.5 if step == 7 else 1.0
            lanes.update_target(tau)
            for twin in twins:
                twin.update_target(tau)


@pytest.mark.parametrize("dueling", [False, True])
def test_lanes_match_single_seed_twins(dueling):
    lanes, twins = _agents(dueling=dueling)
    assert lanes.num_seeds == 4
    _run_in_lockstep(lanes, twins, steps=20)
    assert not lanes.nonfinite_lanes.any()


@pytest.mark.parametrize("one_hot", [False, True])
def test_lane_td_errors_and_losses_are_bitwise_their_twins_on_this_cpu(one_hot):
    """Documents what the tolerances above allow for: on equal parameters, stacking the MLP changes no bit of the
    forward passes (dense or one-hot first layer); the gradients are the twins' to 1e-6."""
    obs_shape = (6,)
    lanes, twins = _agents(obs_shape=obs_shape, one_hot=one_hot)
    batches = _batches(np.random.default_rng(1), 4, obs_shape, one_hot=one_hot)
    out = lanes.learn_lanes(_stack(batches))
    for k, twin in enumerate(twins):
        twin_out = twin.learn(batches[k])
        assert torch.equal(out.td_errors[k], twin_out.td_errors) and torch.equal(out.loss[k], twin_out.loss)
        for p, q in zip(lanes.params, twin.params, strict=True):
            _assert_relative(p.grad[k], q.grad, 1e-6)


def test_gradient_norm_is_clipped_per_lane():
    """Lane 1's huge TD errors are clipped to the max norm; lanes 0 and 2 take exactly their unclipped gradient."""
    max_norm = 10.0
    lanes, clipped = _agents(seeds=[3, 5, 7], max_grad_norm=max_norm)
    unclipped = _agents(seeds=[3, 5, 7], max_grad_norm=None)[1]
    lanes.td_loss = torch.square  # MSE: the gradient grows with the TD error
    for twin in clipped + unclipped:
        twin.td_loss = torch.square
    batches = _batches(np.random.default_rng(2), 3)
    batches[1] = batches[1]._replace(rewards=batches[1].rewards * 1e4)
    lanes.learn_lanes(_stack(batches))
    lane_norms = torch.linalg.vector_norm(torch.stack([p.grad.flatten(1).norm(dim=1) for p in lanes.params]), dim=0)
    for k in range(3):
        clipped[k].learn(batches[k])
        unclipped[k].learn(batches[k])
        twin_grads = [p.grad for p in (clipped if k == 1 else unclipped)[k].params]
        for p, g in zip(lanes.params, twin_grads, strict=True):
            torch.testing.assert_close(p.grad[k], g, rtol=1e-6, atol=1e-7)
    raw_norms = [torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in u.params])) for u in unclipped]
    assert raw_norms[0] < max_norm and raw_norms[2] < max_norm and raw_norms[1] > 100 * max_norm
    torch.testing.assert_close(lane_norms[1], torch.tensor(max_norm), rtol=1e-5, atol=0)


def test_a_nan_in_one_lane_leaves_the_others_alone():
    lanes, twins = _agents()
    _run_in_lockstep(lanes, twins, steps=12, poison=(2, 4))
    assert lanes.nonfinite_lanes.tolist() == [False, False, True, False]
    assert torch.isnan(lanes.params[0][2]).any() and all(torch.isfinite(p[[0, 1, 3]]).all() for p in lanes.params)


def test_one_seed_lane_methods_are_the_single_seed_methods_bit_for_bit():
    (single,), (twin,) = (_agents(seeds=[3])[1], _agents(seeds=[3])[1])
    assert single.num_seeds == 1 and single.nonfinite_lanes.shape == (1,)
    rng = np.random.default_rng(3)
    for step in range(6):
        obs = _obs(rng, (1, 1 + step % 2, 4))
        np.testing.assert_array_equal(single.act_lanes(obs, 0.5), twin.act_batch(obs[0], 0.5)[None])
        batch = _batches(rng, 1)[0]
        out, twin_out = single.learn_lanes(_stack([batch])), twin.learn(batch)
        assert out.loss.shape == (1,) and out.td_errors.shape == (1, 16) and out.q_mean.shape == (1,)
        assert torch.equal(out.loss[0], twin_out.loss) and torch.equal(out.td_errors[0], twin_out.td_errors)
        assert torch.equal(out.q_mean[0], twin_out.q_mean)
    assert all(torch.equal(p, q) for p, q in zip(single.params, twin.params, strict=True))
    assert single.state_dict().keys() == twin.state_dict().keys() and isinstance(single.state_dict()["rng"], dict)


def test_state_dict_round_trip_restores_every_lane():
    lanes, _ = _agents()
    _run_in_lockstep(lanes, [], steps=3)
    buffer = io.BytesIO()
    torch.save(lanes.state_dict(), buffer)  # as checkpoints do: tensors and plain data, loaded with weights_only
    buffer.seek(0)
    restored, _ = _agents(seeds=[11, 12, 13, 14])
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    rng = np.random.default_rng(4)
    for _ in range(3):
        obs = _obs(rng, (4, 2, 4))
        np.testing.assert_array_equal(restored.act_lanes(obs, 0.5), lanes.act_lanes(obs, 0.5))
        batch = _stack(_batches(rng, 4))
        assert torch.equal(restored.learn_lanes(batch).td_errors, lanes.learn_lanes(batch).td_errors)
    assert all(torch.equal(p, q) for p, q in zip(restored.params, lanes.params, strict=True))
    targets = zip(restored.target_net.parameters(), lanes.target_net.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in targets)


@pytest.mark.parametrize("dueling", [False, True])
def test_one_hot_lanes_match_their_twins(dueling):
    lanes, twins = _agents(obs_shape=(9,), dueling=dueling, one_hot=True)
    _run_in_lockstep(lanes, twins, steps=20, obs_shape=(9,), one_hot=True)


@pytest.mark.parametrize("contiguous", [False, True])
def test_one_hot_lanes_resume_exactly(contiguous):
    """The one-hot table is stored transposed; a checkpoint's Adam state must come back in that layout, even when it
    was saved contiguous (fused Adam pairs elements by memory order: a mismatch corrupts the update silently)."""
    lanes, _ = _agents(obs_shape=(9,), one_hot=True)
    rng = np.random.default_rng(8)
    batches = [_stack(_batches(rng, 4, (9,), one_hot=True)) for _ in range(6)]
    for batch in batches[:3]:
        lanes.learn_lanes(batch)
    state = lanes.state_dict()
    if contiguous:  # new dicts: the state dict's inner ones are the optimizer's own
        optimizer = state["optimizer"]
        packed = {i: {k: v.contiguous() for k, v in s.items()} for i, s in optimizer["state"].items()}
        state = {**state, "optimizer": {**optimizer, "state": packed}}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    restored, _ = _agents(obs_shape=(9,), one_hot=True, seeds=[11, 12, 13, 14])
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for batch in batches[3:]:
        assert torch.equal(restored.learn_lanes(batch).td_errors, lanes.learn_lanes(batch).td_errors)
    assert all(torch.equal(p, q) for p, q in zip(restored.params, lanes.params, strict=True))


@pytest.mark.parametrize("lanes", [1, 3])
def test_one_hot_first_layer_is_the_dense_layer(lanes):
    """Same parameters, same one-hot inputs (all-zero rows too): the lookup's Q-values are the matmul's bit for bit
    (one exact product per output; zeros add nothing), its gradients equal to float rounding."""
    dense = [_net(s, "mlp", (9,), 3) for s in SEEDS[:lanes]]
    lookup = [_net(s, "mlp", (9,), 3, one_hot=True) for s in SEEDS[:lanes]]
    if lanes > 1:
        dense, lookup = stack_modules(dense), stack_modules(lookup)
    else:
        dense, lookup = dense[0], lookup[0]
    obs = torch.from_numpy(_obs(np.random.default_rng(2), (lanes, 64, 9), one_hot=True))
    obs = obs if lanes > 1 else obs[0]
    q_dense, q_lookup = dense(obs), lookup(obs)
    assert torch.equal(q_dense, q_lookup)
    q_dense.square().sum().backward()
    q_lookup.square().sum().backward()
    for p, q in zip(dense.parameters(), lookup.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-6, atol=1e-7)


def test_minatar_cnn_lanes_match_their_twins():
    """The vmapped convolution sums in another order than a lane's own (TD errors ~1e-7 relative, gradients ~1e-6),
    and Adam's first steps, about lr · sign(g), amplify that where |g| is near its eps: parameters agree to 1e-3
    relative, actions exactly, TD errors and losses to 1e-6."""
    shape = (4, 10, 10)
    lanes, twins = _agents("minatar", shape, num_actions=3, seeds=[3, 5])
    assert lanes._numpy_q is None  # the vmapped torch forward acts
    _run_in_lockstep(lanes, twins, steps=3, obs_shape=shape, param_rel=1e-3)


@pytest.mark.parametrize("kind, obs_shape", [("mlp", (4,)), ("minatar", (2, 10, 10))])
def test_compiled_lanes_match_eager_lanes(kind, obs_shape):
    """agent.compile with several seeds: the stacked MLP and the vmapped CNN compile; same numbers to float
    tolerance (inductor fuses and reorders elementwise work)."""
    eager, _ = _agents(kind, obs_shape, seeds=[3, 5])
    compiled, _ = _agents(kind, obs_shape, seeds=[3, 5], compile=True)
    rng = np.random.default_rng(6)
    for _ in range(3):
        batch = _stack(_batches(rng, 2, obs_shape))
        out, compiled_out = eager.learn_lanes(batch), compiled.learn_lanes(batch)
        torch.testing.assert_close(compiled_out.td_errors, out.td_errors, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled_out.loss, out.loss, rtol=1e-5, atol=1e-6)
    for p, q in zip(compiled.params, eager.params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_network_and_seed_counts_must_match():
    with pytest.raises(ValueError, match="2 networks but 3 seeds"):
        DQN([_net(3, "mlp", (4,), 2), _net(5, "mlp", (4,), 2)], 2, huber, seed=[1, 2, 3])
