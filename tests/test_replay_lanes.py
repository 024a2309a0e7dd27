"""LaneReplay: lane k behaves exactly like a standalone buffer of seed k, lanes cannot influence each other, the
S = 1 view copies nothing, the stacked S > 1 path samples bit for bit what the per-lane loop samples, and bad input
fails with a message naming the value."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from rlfocal.replay import LAPReplay, PrioritizedReplay, UniformReplay
from rlfocal.replay.buffer import Batch
from rlfocal.replay.lanes import LaneReplay

OBS = (4,)
BATCH_FIELDS = tuple(f.name for f in fields(Batch))


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


# ------------------------------------------------------------------ the stacked fast path against the per-lane loop
def make_lane_buffer(kind: str, seed: int, frame_stack: int = 1):
    """One lane of each sampling rule, n-step storage (frame-stacked when asked)."""
    obs_shape = (frame_stack, 3, 3) if frame_stack > 1 else OBS
    storage = dict(n_step=2, gamma=0.9, frame_stack=frame_stack)
    if kind == "uniform":
        return UniformReplay(48, obs_shape, seed=seed, **storage)
    if kind == "lap":
        return LAPReplay(48, obs_shape, seed=seed, min_priority=0.5, **storage)
    is_norm = "buffer" if kind == "per_buffer" else "batch"
    return PrioritizedReplay(48, obs_shape, seed=seed, beta_steps=15, is_norm=is_norm, **storage)


def reference_sample(buffers: list, batch_size: int) -> dict[str, np.ndarray]:
    """What the lanes sample: each buffer's own ``sample``, lane by lane, stacked."""
    batches = [buffer.sample(batch_size) for buffer in buffers]
    return {name: np.stack([getattr(b, name) for b in batches]) for name in BATCH_FIELDS}


def reference_update(buffers: list, slots, td, lanes=None) -> list[int]:
    """The per-lane write-back: lanes with non-finite errors are skipped and returned."""
    nonfinite = []
    for k in range(len(buffers)) if lanes is None else lanes:
        if not np.isfinite(td[k]).all():
            nonfinite.append(k)
            continue
        buffers[k].update_priorities(slots[k], td[k])
    return nonfinite


def lane_state(buffer) -> tuple:
    """Everything a lane's next draws depend on, as bytes and numbers."""
    st, sampler = buffer.storage, buffer.sampler
    arrays = [getattr(st, name).tobytes() for name in st.gathered_arrays()]
    tree = getattr(sampler, "tree", None)
    leaves = b"" if tree is None else tree.state_dict()["leaves"].tobytes()
    return st.start, st.size, *arrays, leaves, sampler.stats(), str(buffer.rng.bit_generator.state)


def frame_steps(rng: np.random.Generator, lanes: int, envs: int, frames: np.ndarray) -> tuple[np.ndarray, ...]:
    """One chained frame-stacked step: obs is each stream's previous next_obs; ``frames`` ``[S, E, 2, 3, 3]``."""
    new = rng.standard_normal((lanes, envs, 1, 3, 3)).astype(np.float32)
    next_obs = np.concatenate([frames[:, :, 1:], new], axis=2)
    actions = rng.integers(0, 2, (lanes, envs))
    rewards = rng.standard_normal((lanes, envs)).astype(np.float32)
    terminated = np.zeros((lanes, envs), bool)
    return frames, actions, rewards, next_obs, terminated, terminated.copy()


@pytest.mark.parametrize("kind", ["uniform", "per", "per_buffer", "lap"])
@pytest.mark.parametrize("num_seeds", [2, 3, 5])
def test_stacked_lanes_sample_and_update_bitwise_like_the_per_lane_loop(kind, num_seeds):
    seeds = [11 + 3 * k for k in range(num_seeds)]
    lanes = LaneReplay([make_lane_buffer(kind, s) for s in seeds])
    singles = [make_lane_buffer(kind, s) for s in seeds]
    rng = np.random.default_rng(num_seeds)
    for k in range(num_seeds):  # lanes of different fill: lane k gets 4k extra steps of its own
        for _ in range(4 * k):
            step = tuple(x[0] for x in step_data(rng, 1, 1))
            lanes.lanes[k].add_batch(*step)
            singles[k].add_batch(*step)
    for t in range(70):  # 70 steps of 48 slots: the rings wrap, evicting slots that hold priorities
        data = step_data(rng, num_seeds, 2)
        lanes.add_batch(*data, np.arange(2))
        for k, single in enumerate(singles):
            single.add_batch(*(x[k] for x in data), np.arange(2))
        batch_size = (5, 7, 16)[t % 3]  # odd sizes too: the weights' power runs over rows of any length
        if len(lanes) < batch_size:
            continue
        batch = lanes.sample_torch(batch_size)
        expected = reference_sample(singles, batch_size)
        for name in BATCH_FIELDS:
            mine, theirs = getattr(batch, name).numpy(), expected[name]
            assert mine.dtype == theirs.dtype and mine.tobytes() == theirs.tobytes(), (t, name)
        td = rng.standard_normal((num_seeds, batch_size)) * rng.choice([0.1, 1.0, 30.0], (num_seeds, 1))
        stopped = [0] if t % 4 == 1 else None  # lane 0 stopped: its priorities stay
        if t % 5 == 2:
            td[-1, 1] = np.nan  # the last lane's errors are not finite: skipped and returned
        live = None if stopped is None else [k for k in range(num_seeds) if k not in stopped]
        got = lanes.update_priorities(batch.indices, torch.from_numpy(td.astype(np.float32)), lanes=live)
        assert got == reference_update(singles, expected["indices"], td.astype(np.float32), lanes=live)
        for lane, single in zip(lanes.lanes, singles, strict=True):
            assert lane_state(lane) == lane_state(single), t
    assert [s.sampler.stats() for s in singles] == lanes.stats()


def test_stacked_frame_stack_lanes_gather_like_their_buffers():
    lanes = LaneReplay([make_lane_buffer("per", s, frame_stack=2) for s in (0, 1, 2)])
    singles = [make_lane_buffer("per", s, frame_stack=2) for s in (0, 1, 2)]
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.standard_normal((3, 2, 1, 3, 3)).astype(np.float32), 2, axis=2)
    for _ in range(40):  # past capacity: the slot ring wraps
        data = frame_steps(rng, 3, 2, frames)
        lanes.add_batch(*data, np.arange(2))
        for k, single in enumerate(singles):
            single.add_batch(*(x[k] for x in data), np.arange(2))
        frames = data[3]
        if len(lanes) < 6:
            continue
        batch, expected = lanes.sample_torch(6), reference_sample(singles, 6)
        for name in BATCH_FIELDS:
            assert getattr(batch, name).numpy().tobytes() == expected[name].tobytes(), name
        td = rng.standard_normal((3, 6))
        lanes.update_priorities(batch.indices, td)
        reference_update(singles, expected["indices"], td)


def test_stacked_lanes_resume_from_a_checkpoint_and_keep_their_arrays_stacked():
    lanes = LaneReplay([make_lane_buffer("per_buffer", s) for s in range(3)])
    run(lanes, 30, 2, np.ones(3))
    resumed = LaneReplay([make_lane_buffer("per_buffer", s) for s in range(3)])
    resumed.load_state_dict(lanes.state_dict())
    singles = [make_lane_buffer("per_buffer", s) for s in range(3)]
    for single, state in zip(singles, lanes.state_dict(), strict=True):
        single.load_state_dict(state)
    for _ in range(5):
        batch, expected = resumed.sample_torch(8), reference_sample(singles, 8)
        assert batch.indices.numpy().tobytes() == expected["indices"].tobytes()
        assert batch.weights.numpy().tobytes() == expected["weights"].tobytes()
        td = np.random.default_rng(0).standard_normal((3, 8))
        resumed.update_priorities(batch.indices, td)
        reference_update(singles, expected["indices"], td)
    for lane, single in zip(resumed.lanes, singles, strict=True):
        assert lane_state(lane) == lane_state(single)


def test_lanes_of_different_layouts_or_bad_indices_fail_with_a_message():
    with pytest.raises(ValueError, match="lanes need one sampler type, uniform or prioritized: got PrioritizedSampler"):
        LaneReplay([make_lane_buffer("per", 0), make_lane_buffer("uniform", 1)])
    with pytest.raises(ValueError, match=r"lane 1's actions has shape \(64,\) and dtype int64, lane 0's \(48,\)"):
        LaneReplay([make_lane_buffer("per", 0), per(1)])
    lanes = LaneReplay([make_lane_buffer("per", s) for s in range(2)])
    run(lanes, 10, 1, np.ones(2))
    before = [lane_state(lane) for lane in lanes.lanes]
    slots = np.zeros((2, 8), np.int64)
    slots[1, 3] = 47  # not stored yet
    with pytest.raises(ValueError, match=r"index 47 does not hold a transition \(buffer holds \d+ of 48\)"):
        lanes.update_priorities(slots, np.ones((2, 8)))
    assert [lane_state(lane) for lane in lanes.lanes] == before  # no lane changed
    with pytest.raises(ValueError, match="batch_size 40 is larger than the"):
        lanes.sample_torch(40)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        lanes.sample_torch(0)


def test_filled_buffers_keep_their_transitions_when_stacked():
    filled = [make_lane_buffer("per", s) for s in (0, 1)]
    rng = np.random.default_rng(3)
    for buffer in filled:
        for _ in range(12):
            buffer.add_batch(*(x[0] for x in step_data(rng, 1, 1)))
    singles = [make_lane_buffer("per", s) for s in (0, 1)]
    for single, buffer in zip(singles, filled, strict=True):
        single.load_state_dict(buffer.state_dict())
    lanes = LaneReplay(filled)
    batch, expected = lanes.sample_torch(4), reference_sample(singles, 4)
    for name in BATCH_FIELDS:
        assert getattr(batch, name).numpy().tobytes() == expected[name].tobytes(), name
