"""LaneReplay: lane k behaves exactly like a standalone buffer of seed k, lanes cannot influence each other, the
S = 1 view copies nothing, and bad input fails with a message naming the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlfocal.replay import PrioritizedReplay, UniformReplay
from rlfocal.replay.lanes import LaneReplay

OBS = (4,)


def per(seed: int, **kwargs) -> PrioritizedReplay:
    """The PER buffer every test uses: small, n-step, β annealed so the schedule is visible."""
    return PrioritizedReplay(64, OBS, seed=seed, beta_steps=20, n_step=3, gamma=0.9, **kwargs)


def step_data(rng: np.random.Generator, lanes: int, envs: int) -> tuple[np.ndarray, ...]:
    """One vectorised step for ``lanes`` lanes of ``envs`` environments: ``[S, E, ...]`` arrays."""
    obs = rng.standard_normal((lanes, envs, *OBS)).astype(np.float32)
    next_obs = rng.standard_normal((lanes, envs, *OBS)).astype(np.float32)
    actions = rng.integers(0, 2, (lanes, envs))
    rewards = rng.standard_normal((lanes, envs)).astype(np.float32)
    terminated = rng.random((lanes, envs)) < 0.1
    truncated = rng.random((lanes, envs)) < 0.05
    return obs, actions, rewards, next_obs, terminated, truncated


def tree_state(buffer: PrioritizedReplay) -> tuple:
    """What a PER lane samples from: its tree's leaves, max priority and β."""
    sampler = buffer.sampler
    return sampler.tree.state_dict()["leaves"].tobytes(), sampler.max_priority, sampler.beta


def run(lanes: LaneReplay, steps: int, envs: int, td_scale: np.ndarray, seed: int = 0) -> list:
    """Fill, sample and write back TD errors (lane k's scaled by ``td_scale[k]``); every batch, as numpy."""
    rng = np.random.default_rng(seed)
    env_ids = np.arange(envs)
    batches = []
    for _ in range(steps):
        lanes.add_batch(*step_data(rng, lanes.num_seeds, envs), env_ids)
        if len(lanes) >= 8:
            batch = lanes.sample_torch(8)
            batches.append(batch)
            td = torch.from_numpy(rng.standard_normal((lanes.num_seeds, 8)) * td_scale[:, None])
            lanes.update_priorities(batch.indices, td)
    return batches


@pytest.mark.parametrize("envs", [1, 3])
def test_lane_k_is_a_standalone_buffer_of_seed_k_fed_the_same_data(envs):
    seeds = [5, 6, 7, 8]
    lanes = LaneReplay([per(s) for s in seeds])
    singles = [per(s) for s in seeds]
    rng = np.random.default_rng(1)
    env_ids = np.arange(envs)
    updates = 0
    for t in range(60):
        data = step_data(rng, len(seeds), envs)
        lanes.add_batch(*data, env_ids)
        for k, single in enumerate(singles):
            single.add_batch(*(x[k] for x in data), env_ids)
        assert len(lanes) == min(len(s) for s in singles)
        if len(lanes) < 8:
            continue
        batch = lanes.sample_torch(8)
        td = torch.from_numpy(rng.standard_normal((len(seeds), 8)))
        lanes.update_priorities(batch.indices, td)
        updates += 1
        for k, single in enumerate(singles):
            alone = single.sample_torch(8)
            single.update_priorities(alone.indices, td[k])
            for name in ("obs", "actions", "rewards", "next_obs", "discounts", "weights", "indices"):
                mine, theirs = getattr(batch, name)[k], getattr(alone, name)
                assert mine.dtype == theirs.dtype and torch.equal(mine, theirs), (t, k, name)
    assert updates > 20
    assert lanes.stats() == [s.stats() for s in singles]
    for lane, single in zip(lanes.lanes, singles, strict=True):
        assert tree_state(lane) == tree_state(single)
    assert len({stats["beta"] for stats in lanes.stats()}) == 1 and lanes.stats()[0]["beta"] == 1.0  # annealed


def test_a_lane_with_huge_td_errors_leaves_the_other_lanes_bit_identical():
    normal = LaneReplay([per(s) for s in range(4)])
    wild = LaneReplay([per(s) for s in range(4)])
    run(normal, 50, 2, np.ones(4))
    batches = run(wild, 50, 2, np.array([1.0, 1.0, 1e6, 1.0]))
    assert wild.lanes[2].sampler.max_priority > 1e5  # the wild lane really was wild
    for k in (0, 1, 3):
        assert tree_state(wild.lanes[k]) == tree_state(normal.lanes[k])
        assert wild.stats()[k] == normal.stats()[k]
    assert batches[-1].indices.shape == (4, 8)


def test_one_lane_is_a_view_of_its_buffer_batch():
    lanes, single = LaneReplay([per(3)]), per(3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        data = step_data(rng, 1, 2)
        lanes.add_batch(*data, np.arange(2))
        single.add_batch(*(x[0] for x in data), np.arange(2))
    batch, alone = lanes.sample_torch(8), single.sample_torch(8)
    assert batch.obs.shape == (1, 8, *OBS) and batch.indices.shape == (1, 8)
    for name in ("obs", "actions", "rewards", "next_obs", "discounts", "weights", "indices"):
        assert torch.equal(getattr(batch, name)[0], getattr(alone, name))
    lanes.update_priorities(batch.indices, torch.ones(1, 8))  # the [1, B] shapes go back in


def test_state_dict_round_trip_continues_identically():
    lanes = LaneReplay([per(s) for s in range(3)])
    run(lanes, 30, 2, np.ones(3))
    copy = LaneReplay([per(s) for s in range(3)])
    copy.load_state_dict(lanes.state_dict())
    a, b = lanes.sample_torch(8), copy.sample_torch(8)
    assert torch.equal(a.obs, b.obs) and torch.equal(a.weights, b.weights) and torch.equal(a.indices, b.indices)
    assert lanes.nbytes == 3 * per(0).nbytes


def test_truncate_streams_ends_every_lanes_pending_windows():
    lanes = LaneReplay([per(s) for s in range(2)])
    rng = np.random.default_rng(0)
    obs, actions, rewards, next_obs, _, _ = step_data(rng, 2, 1)
    no = np.zeros((2, 1), bool)
    lanes.add_batch(obs, actions, rewards, next_obs, no, no, np.arange(1))
    assert len(lanes) == 0  # the 3-step windows are still open
    lanes.truncate_streams()
    assert [len(lane) for lane in lanes.lanes] == [1, 1]


def test_uniform_lanes_sample_like_their_buffers():
    lanes = LaneReplay([UniformReplay(32, OBS, seed=s) for s in (0, 1)])
    singles = [UniformReplay(32, OBS, seed=s) for s in (0, 1)]
    data = step_data(np.random.default_rng(0), 2, 16)
    lanes.add_batch(*data, np.arange(16))
    for k, single in enumerate(singles):
        single.add_batch(*(x[k] for x in data), np.arange(16))
    batch = lanes.sample_torch(4)
    for k, single in enumerate(singles):
        assert torch.equal(batch.indices[k], single.sample_torch(4).indices)
    assert lanes.stats() == [{}, {}]


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="at least one buffer"):
        LaneReplay([])
    lanes = LaneReplay([per(s) for s in range(2)])
    obs, actions, rewards, next_obs, term, trunc = step_data(np.random.default_rng(0), 3, 1)
    with pytest.raises(ValueError, match=r"obs has shape \(3, 1, 4\): its leading axis must be the 2 lanes"):
        lanes.add_batch(obs, actions[:2], rewards[:2], next_obs[:2], term[:2], trunc[:2], np.arange(1))
    with pytest.raises(ValueError, match=r"rewards has shape \(\): its leading axis must be the 2 lanes"):
        lanes.add_batch(obs[:2], actions[:2], 1.0, next_obs[:2], term[:2], trunc[:2], np.arange(1))
    with pytest.raises(ValueError, match=r"obs has shape \(2, 5\), expected \(2, 4\)"):  # the lane's own check
        rest = (np.repeat(x[:2], 2, axis=1) for x in (actions, rewards, next_obs, term, trunc))
        lanes.add_batch(np.zeros((2, 2, 5)), *rest, np.arange(2))
    run(lanes, 20, 1, np.ones(2))
    with pytest.raises(ValueError, match=r"indices has shape \(8,\), expected \(2, batch_size\)"):
        lanes.update_priorities(np.zeros(8, np.int64), torch.zeros(8))
    with pytest.raises(ValueError, match=r"td_errors has shape \(2, 7\), expected the shape of indices \(2, 8\)"):
        lanes.update_priorities(np.zeros((2, 8), np.int64), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="the saved replay holds 1 lane states, this one has 2 lanes"):
        lanes.load_state_dict(lanes.state_dict()[:1])
    with pytest.raises(ValueError, match="the saved replay holds dict, this one has 2 lanes"):
        lanes.load_state_dict({})
