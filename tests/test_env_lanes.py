"""Lane environments: lane k is exactly `make_vec_env(name, seeds[k], E)` step for step (observations, final
observations, rewards, terminations, truncations, finished episodes, seeded resets) on every path (one vector
environment per lane, the numpy-vectorised DeepSea and Cliffwalk, gymnasium's vectorised CartPole), and bad input
fails clearly."""

from __future__ import annotations

import numpy as np
import pytest

from rlfocal.envs.lanes import FlatLanes, VecEnvLanes, make_lane_envs
from rlfocal.envs.vector import make_vec_env

FIELDS = ("obs", "next_obs", "rewards", "terminated", "truncated")


def random_policy(rng: np.random.Generator):
    return lambda obs: rng.integers(0, 2, obs.shape[:2])


def balancing_policy(rng: np.random.Generator):
    """CartPole: push towards the pole's fall, with 2% noise; episodes run to the 500-step truncation."""

    def act(obs: np.ndarray) -> np.ndarray:
        push = ((obs[..., 2] + 0.5 * obs[..., 3]) > 0).astype(np.int64)
        return np.where(rng.random(push.shape) < 0.02, 1 - push, push)

    return act


def assert_lanes_replay_single_seed_runs(name, seeds, num_envs, steps, policy, reseed_at=None, **kwargs):
    """Step the lanes and one `make_vec_env` per seed with the same actions; every output bit for bit equal.
    At step ``reseed_at`` both reset with a seed (lane k: ``seeds[k] - seeds[0] + seed``). Returns the lanes."""
    lanes = make_lane_envs(name, seeds, num_envs, **kwargs)
    kwargs.pop("fast_cartpole", None)
    singles = [make_vec_env(name, seed, num_envs, **kwargs) for seed in seeds]
    assert (lanes.num_seeds, lanes.num_envs) == (len(seeds), num_envs)
    assert lanes.single_observation_space == singles[0].single_observation_space
    assert lanes.single_action_space == singles[0].single_action_space
    obs = lanes.reset()
    np.testing.assert_array_equal(obs, np.stack([env.reset() for env in singles]))
    counts = {"episodes": 0, "truncated": 0}
    for t in range(steps):
        if t == reseed_at:
            obs = lanes.reset(seed=100)
            expected = [env.reset(seed=100 + seed - seeds[0]) for env, seed in zip(singles, seeds, strict=True)]
            np.testing.assert_array_equal(obs, np.stack(expected))
        actions = policy(obs)
        mine, theirs = lanes.step(actions), [env.step(a) for env, a in zip(singles, actions, strict=True)]
        for field in FIELDS:
            a, b = getattr(mine, field), np.stack([getattr(out, field) for out in theirs])
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (t, field)
        assert mine.episodes == [out.episodes for out in theirs], t
        counts["episodes"] += sum(map(len, mine.episodes))
        counts["truncated"] += int(mine.truncated.sum())
        obs = mine.obs
    assert counts["episodes"] > 2 * len(seeds) * num_envs  # several episodes per environment
    lanes.close()
    return lanes, counts


def test_one_vector_env_per_lane_replays_each_seed():
    rng = np.random.default_rng(0)
    lanes, _ = assert_lanes_replay_single_seed_runs(
        "CartPole-v1", [4, 5, 9], 2, 300, random_policy(rng), reseed_at=150, fast_cartpole=False
    )
    assert isinstance(lanes, VecEnvLanes)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_one_lane_is_its_vector_env_with_a_lane_axis(num_envs):
    rng = np.random.default_rng(1)
    lanes, _ = assert_lanes_replay_single_seed_runs(
        "MountainCar-v0", [7], num_envs, 250, random_policy(rng), reseed_at=100, max_episode_steps=40
    )
    assert isinstance(lanes, VecEnvLanes)


def test_vectorised_cartpole_replays_each_seed_bit_for_bit_truncations_included():
    rng = np.random.default_rng(2)
    lanes, counts = assert_lanes_replay_single_seed_runs(
        "CartPole-v1", [0, 1, 5, 6], 3, 1600, balancing_policy(rng), reseed_at=900
    )
    assert isinstance(lanes, FlatLanes)
    assert counts["truncated"] > 0


def test_vectorised_cartpole_takes_cartpole_keywords_and_otherwise_steps_aside():
    rng = np.random.default_rng(3)
    lanes, counts = assert_lanes_replay_single_seed_runs(
        "CartPole-v0", [2, 3], 4, 400, balancing_policy(rng), max_episode_steps=60
    )
    assert isinstance(lanes, FlatLanes) and counts["truncated"] > 0
    assert isinstance(make_lane_envs("CartPole-v1", [0], 1, sutton_barto_reward=True), VecEnvLanes)
    assert isinstance(make_lane_envs("Acrobot-v1", [0], 1), VecEnvLanes)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("deepsea", {"size": 4}),
        ("DeepSea-5", {"mapping_seed": 7}),
        ("deepsea", {"size": 3, "randomize_actions": False, "unscaled_move_cost": 0.3}),
        ("cliffwalk", {"n": 3}),
        ("Cliffwalk-1", {}),
    ],
)
def test_vectorised_deepsea_and_cliffwalk_replay_each_seed(name, kwargs):
    rng = np.random.default_rng(4)
    lanes, _ = assert_lanes_replay_single_seed_runs(name, [0, 3, 4], 3, 120, random_policy(rng), 60, **kwargs)
    assert isinstance(lanes, FlatLanes)  # 3 x 3 = 9 environments: vectorised (VECTORISE_FROM = 8)


def test_stochastic_deepsea_steps_one_vector_env_per_lane():
    rng = np.random.default_rng(5)
    lanes, _ = assert_lanes_replay_single_seed_runs("deepsea", [1, 2], 2, 60, random_policy(rng), size=3,
                                                    deterministic=False)  # fmt: skip
    assert isinstance(lanes, VecEnvLanes)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: make_lane_envs("deepsea", [], 2),
            r"seeds must be a non-empty list of integers >= 0, one per lane, got \[\]",
        ),
        (lambda: make_lane_envs("deepsea", [0, -1], 2), r"got \[0, -1\]"),
        (lambda: make_lane_envs("deepsea", [0], 0), "num_envs=0 is not allowed: must be an integer >= 1"),
        (lambda: make_lane_envs("deepsea", [0], 1, mode="threads"), "vector mode must be one of"),
        (lambda: make_lane_envs("CartPol-v1", [0], 1), "Unknown environment 'CartPol-v1'"),
        (lambda: make_lane_envs("deepsea", [0], 1, size=0), "size=0 is not allowed"),
    ],
)
def test_bad_arguments_fail_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("name", "kwargs"), [("deepsea", {}), ("CartPole-v1", {}), ("CartPole-v1", {"fast_cartpole": False})]
)
def test_actions_of_the_wrong_shape_are_refused(name, kwargs):
    lanes = make_lane_envs(name, [0, 1], 3, **kwargs)
    lanes.reset()
    with pytest.raises(ValueError, match=r"actions has shape \(3, 2\), expected \(2, 3\)"):
        lanes.step(np.zeros((3, 2), np.int64))


def test_a_handful_of_environments_steps_one_object_each():
    """Below VECTORISE_FROM environments in all, the per-environment objects are faster: the generic path."""
    assert isinstance(make_lane_envs("deepsea", [0], 1, size=4), VecEnvLanes)
    assert isinstance(make_lane_envs("CartPole-v1", [0, 1], 3), VecEnvLanes)
    assert isinstance(make_lane_envs("CartPole-v1", [0, 1], 4), FlatLanes)
