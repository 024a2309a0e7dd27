"""Vectorised environments: each sub-environment is exactly the single environment of its seed, final observations
are the true ones at episode ends, serial and async agree step for step, and bad arguments fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from rlfocal.envs import make_env, right_action
from rlfocal.envs.cliffwalk import CliffwalkVector
from rlfocal.envs.deepsea_vector import DeepSeaVector
from rlfocal.envs.vector import make_vec_env


def _actions(steps: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(steps, n))


def test_each_sub_env_replays_its_single_env_with_same_step_resets():
    n, steps = 3, 200
    acts = _actions(steps, n)
    venv = make_vec_env("CartPole-v1", 7, n)
    first = venv.reset()
    log = [venv.step(a) for a in acts]
    for i in range(n):
        env = make_env("CartPole-v1", 7 + i)
        obs, _ = env.reset()
        np.testing.assert_array_equal(first[i], obs)
        ret, length, episodes = 0.0, 0, []
        for t in range(steps):
            nxt, r, term, trunc, _ = env.step(int(acts[t, i]))
            out = log[t]
            np.testing.assert_array_equal(out.next_obs[i], nxt)  # the true next observation, final ones included
            assert (out.rewards[i], out.terminated[i], out.truncated[i]) == (r, term, trunc)
            ret, length = ret + r, length + 1
            if term or trunc:
                episodes.append((i, ret, length))
                ret, length = 0.0, 0
                nxt, _ = env.reset()
            np.testing.assert_array_equal(out.obs[i], nxt)  # what the agent acts on next: the reset observation
        assert [e for out in log for e in out.episodes if e[0] == i] == episodes
        assert episodes  # the check covered episode ends


def test_serial_and_async_agree_step_for_step():
    acts = _actions(150, 2, seed=1)
    outs = {}
    for mode in ("serial", "async"):
        venv = make_vec_env("CartPole-v1", 3, 2, mode=mode)
        outs[mode] = [venv.reset()] + [venv.step(a) for a in acts]
        venv.close()
    np.testing.assert_array_equal(outs["serial"][0], outs["async"][0])
    for s, a in zip(outs["serial"][1:], outs["async"][1:], strict=True):
        for field in ("obs", "next_obs", "rewards", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(s, field), getattr(a, field))
        assert s.episodes == a.episodes


def test_reset_with_a_seed_seeds_env_i_with_seed_plus_i():
    venv = make_vec_env("CartPole-v1", 0, 2)
    obs = venv.reset(seed=100)
    for i in range(2):
        np.testing.assert_array_equal(obs[i], make_env("CartPole-v1", 0).reset(seed=100 + i)[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, "num_envs must be an integer >= 1, got 0"),
        (
            {"num_envs": 2, "mode": "threads"},
            "vector mode must be one of ('serial', 'async', 'envpool'), got 'threads'",
        ),
        ({"num_envs": 2, "name": "CartPol-v1"}, "CartPol-v1"),
    ],
)
def test_bad_arguments_fail_clearly(kwargs, message):
    kwargs = {"name": "CartPole-v1", "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_vec_env(**kwargs)


@pytest.mark.parametrize(
    ("size", "kwargs"),
    [
        (1, {}),
        (2, {}),
        (5, {}),
        (4, {"mapping_seed": 7}),
        (3, {"randomize_actions": False}),
        (6, {"unscaled_move_cost": 0.3}),
    ],
)
def test_deepsea_vector_matches_single_deepseas_step_for_step(size, kwargs):
    n, steps = 4, 120
    vector = DeepSeaVector(n, size, **kwargs)
    singles = make_vec_env("deepsea", 11, n, size=size, **kwargs)
    for i in range(n):
        np.testing.assert_array_equal(vector.action_mappings[i], singles.envs[i].unwrapped.action_mapping)
    np.testing.assert_array_equal(vector.reset(seed=5), singles.reset(seed=5))
    acts = _actions(steps, n, seed=size)
    for t in range(steps):
        mine, theirs = vector.step(acts[t]), singles.step(acts[t])
        for field in ("obs", "next_obs", "rewards", "terminated", "truncated"):
            a, b = getattr(mine, field), getattr(theirs, field)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (t, field)  # bit for bit
        assert mine.episodes == theirs.episodes, t
    bad = [env.unwrapped.total_bad_episodes for env in singles.envs]
    np.testing.assert_array_equal(vector.total_bad_episodes, bad)
    assert 0 < sum(bad) < n * steps // size  # both kinds of episode happened


def test_deepsea_vector_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_envs=0 is not allowed: must be an integer >= 1"):
        DeepSeaVector(0)
    with pytest.raises(ValueError, match="size=0 is not allowed"):
        DeepSeaVector(2, 0)
    vector = DeepSeaVector(2, 3)
    vector.reset()
    for bad in ([0], [0, 2], [[0, 1]]):
        with pytest.raises(ValueError, match="needs 2 actions, each 0 or 1"):
            vector.step(np.array(bad))


@pytest.mark.parametrize("n", [1, 2, 5])
def test_cliffwalk_vector_matches_single_cliffwalks_step_for_step(n):
    k, steps = 4, 150
    vector = CliffwalkVector(k, n)
    singles = make_vec_env("cliffwalk", 3, k, n=n)
    np.testing.assert_array_equal(vector.reset(seed=5), singles.reset(seed=5))
    # mostly right moves, so that some episodes reach the treasure
    rights = np.array([[right_action(s) for s in range(n)]] * k)
    episodes = []
    for t in range(steps):
        state = np.array([env.unwrapped.state for env in singles.envs])
        wrong = np.random.default_rng(t).random(k) < 0.2
        acts = np.where(wrong, 1 - rights[np.arange(k), state], rights[np.arange(k), state])
        mine, theirs = vector.step(acts), singles.step(acts)
        for field in ("obs", "next_obs", "rewards", "terminated", "truncated"):
            a, b = getattr(mine, field), getattr(theirs, field)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (t, field)  # bit for bit
        assert mine.episodes == theirs.episodes, t
        episodes += mine.episodes
    returns = {ret for _, ret, _ in episodes}
    assert returns == {0.0, 1.0}  # both kinds of episode happened


def test_cliffwalk_vector_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_envs=0 is not allowed: must be an integer >= 1"):
        CliffwalkVector(0)
    with pytest.raises(ValueError, match="n=0 is not allowed"):
        CliffwalkVector(2, 0)
    vector = CliffwalkVector(2, 3)
    vector.reset()
    for bad in ([0], [0, 2], [[0, 1]]):
        with pytest.raises(ValueError, match="needs 2 actions, each 0 or 1"):
            vector.step(np.array(bad))
