"""make_env for every family, and our own DeepSea and Blind Cliffwalk against hand-computed values."""

import sys

import gymnasium as gym
import numpy as np
import pytest

from rlfocal.envs import (
    ENV_NAMES,
    CliffwalkEnv,
    DeepSeaEnv,
    EnvArgumentError,
    all_transitions,
    check_env,
    make_env,
    right_action,
    true_q,
)
from rlfocal.envs.atari import sign_reward
from rlfocal.extras import MissingExtra, require_extra


def rollout(env: gym.Env, steps: int, action_seed: int = 0) -> list[tuple]:
    """`steps` random actions (from their own seeded RNG), resetting at episode ends; every (obs, r, term, trunc)."""
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset()
    out = [(obs.copy(), 0.0, False, False)]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        out.append((obs.copy(), float(reward), bool(terminated), bool(truncated)))
        if terminated or truncated:
            obs, _ = env.reset()
            out.append((obs.copy(), 0.0, False, False))
    return out


# ------------------------------------------------------------------ every family, through make_env


@pytest.mark.parametrize("name", ENV_NAMES)
def test_every_listed_env_steps_within_its_observation_space(name):
    env = make_env(name, seed=0)
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n >= 2
    space = env.observation_space
    for obs, reward, *_ in rollout(env, 30):
        assert obs.shape == space.shape and obs.dtype == space.dtype, name
        assert space.contains(obs), name
        assert np.isfinite(reward)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_same_seed_gives_the_same_trajectory(name):
    first, second = (rollout(make_env(name, seed=3), 60) for _ in range(2))
    assert len(first) == len(second)
    for (o1, *rest1), (o2, *rest2) in zip(first, second, strict=True):
        np.testing.assert_array_equal(o1, o2)
        assert rest1 == rest2


def test_first_reset_uses_the_seed_and_later_resets_continue_the_rng():
    env = make_env("CartPole-v1", seed=7)
    first, _ = env.reset()
    reference = gym.make("CartPole-v1")
    np.testing.assert_array_equal(first, reference.reset(seed=7)[0])
    second, _ = env.reset()
    np.testing.assert_array_equal(second, reference.reset()[0])
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(env.reset(seed=7)[0], first)  # an explicit seed always wins


def test_action_space_is_seeded():
    a, b = (make_env("Acrobot-v1", seed=5).action_space for _ in range(2))
    assert [a.sample() for _ in range(20)] == [b.sample() for _ in range(20)]


def test_episode_statistics_report_the_raw_return():
    env = make_env("Cliffwalk-2", seed=0)
    env.reset()
    env.step(0)
    _, reward, terminated, _, info = env.step(1)
    assert terminated and reward == 1.0
    assert info["episode"]["r"] == 1.0 and info["episode"]["l"] == 2


def test_unknown_name_lists_valid_names_and_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'CartPole-v1'") as err:
        make_env("cartpole-v1x", seed=0)
    for name in ENV_NAMES:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="Valid names"):
        make_env("no-such-env", seed=0)


def test_continuous_classic_control_is_refused():
    with pytest.raises(ValueError, match="continuous"):
        make_env("Pendulum-v1", seed=0)


@pytest.mark.parametrize(
    ("module", "extra", "name"),
    [
        ("minatar", "minatar", "MinAtar/Breakout-v1"),
        ("ale_py", "atari", "ALE/Pong-v5"),
        ("cv2", "atari", "ALE/Pong-v5"),
        ("minigrid", "minigrid", "MiniGrid-Empty-5x5-v0"),
    ],
)
def test_a_missing_package_names_the_extra_that_installs_it(monkeypatch, module, extra, name):
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    with pytest.raises(MissingExtra) as err:
        make_env(name, seed=0)
    assert str(err.value).endswith(f'needs {module}: pip install -e ".[{extra}]" (or pip install "rlfocal[{extra}]")')
    assert "\n" not in str(err.value) and isinstance(err.value, ImportError)
    check_env(name, {})  # checking a name imports nothing optional


def test_require_extra_returns_the_module_and_lets_other_import_errors_through(monkeypatch, tmp_path):
    import json

    assert require_extra("json", "dev", "JSON") is json
    with pytest.raises(MissingExtra, match=r'^Thing needs no_such_pkg.sub: pip install -e "\.\[x\]"'):
        require_extra("no_such_pkg.sub", "x", "Thing")
    (tmp_path / "broken_pkg.py").write_text("import no_such_dependency_of_broken_pkg\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as err:  # installed, but its own dependency is missing
        require_extra("broken_pkg", "x", "Thing")
    assert not isinstance(err.value, MissingExtra) and err.value.name == "no_such_dependency_of_broken_pkg"


# ------------------------------------------------------------------ bad names and keywords


def test_a_typo_in_a_family_name_lists_every_real_choice():
    with pytest.raises(EnvArgumentError, match="Did you mean 'MinAtar/Breakout-v1'") as err:
        make_env("MinAtar/Breakot-v1", seed=0)
    for name in (*ENV_NAMES, "ALE/SpaceInvaders-v5", "minigrid/doorkey5x5", "MiniGrid-Empty-5x5-v0"):
        assert name in str(err.value)
    assert "_schema" not in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("deepsea", {"size": 0}, "size=0 is not allowed: must be an integer >= 1"),
        ("DeepSea-0", {}, "size=0 is not allowed: must be an integer >= 1"),
        ("deepsea", {"size": 2.5}, "size=2.5 is not allowed: must be an integer >= 1"),
        ("deepsea", {"size": True}, "size=True is not allowed: must be an integer >= 1"),
        ("DeepSea-5", {"size": 6}, "size=6 is not allowed: 'DeepSea-5' says size=5"),
        ("deepsea", {"deterministic": "yes"}, "deterministic='yes' is not allowed: must be true or false"),
        ("deepsea", {"randomize_actions": 1}, "randomize_actions=1 is not allowed: must be true or false"),
        (
            "deepsea",
            {"unscaled_move_cost": -0.1},
            "unscaled_move_cost=-0.1 is not allowed: must be a finite number >= 0",
        ),
        ("deepsea", {"unscaled_move_cost": float("nan")}, "unscaled_move_cost=nan is not allowed: must be a finite"),
        (
            "deepsea",
            {"mapping_seed": -1},
            "mapping_seed=-1 is not allowed: must be an integer in [0, 4294967295], or null",
        ),
        ("cliffwalk", {"n": 0}, "n=0 is not allowed: must be an integer >= 1"),
        ("Cliffwalk-3", {"n": 4}, "n=4 is not allowed: 'Cliffwalk-3' says n=3"),
        ("ALE/Pong-v5", {"frame_skip": 0}, "frame_skip=0 is not allowed: must be an integer >= 1"),
        ("ALE/Pong-v5", {"frame_stack": 0}, "frame_stack=0 is not allowed: must be an integer >= 1"),
        ("ALE/Pong-v5", {"noop_max": -1}, "noop_max=-1 is not allowed: must be an integer >= 0"),
        (
            "ALE/Pong-v5",
            {"repeat_action_probability": 2},
            "repeat_action_probability=2 is not allowed: must be a finite number in [0, 1]",
        ),
        (
            "MinAtar/Breakout-v1",
            {"sticky_action_prob": 1.5},
            "sticky_action_prob=1.5 is not allowed: must be a finite number in [0, 1]",
        ),
        (
            "MinAtar/Breakout-v1",
            {"difficulty_ramping": "no"},
            "difficulty_ramping='no' is not allowed: must be true or false",
        ),
        (
            "MinAtar/Breakout-v1",
            {"max_episode_steps": 0},
            "max_episode_steps=0 is not allowed: must be an integer >= 1",
        ),
        ("minigrid/empty5x5", {"obs": "rgb"}, "obs='rgb' is not allowed: must be one of 'flat', 'image'"),
        ("minigrid/empty5x5", {"max_steps": 0}, "max_steps=0 is not allowed: must be an integer >= 1"),
        ("CartPole-v1", {"max_episode_steps": -5}, "max_episode_steps=-5 is not allowed: must be an integer >= 1"),
    ],
)
def test_a_bad_keyword_names_the_key_and_what_is_allowed(name, kwargs, message):
    with pytest.raises(ValueError) as err:
        make_env(name, seed=0, **kwargs)
    assert str(err.value).startswith(message), err.value
    with pytest.raises(EnvArgumentError) as err:  # the same check, before anything is built, as the CLI names keys
        check_env(name, kwargs)
    assert str(err.value).startswith("env.kwargs." + message), err.value


@pytest.mark.parametrize(
    ("name", "key", "allowed"),
    [
        ("deepsea", "sizee", "size, deterministic, unscaled_move_cost, randomize_actions, mapping_seed"),
        ("Cliffwalk-4", "size", "n"),
        ("MinAtar/Breakout-v1", "sticky", "sticky_action_prob, difficulty_ramping, max_episode_steps"),
    ],
)
def test_an_unknown_keyword_names_the_allowed_ones(name, key, allowed):
    with pytest.raises(EnvArgumentError, match=f"^{key} is not an argument of {name}; allowed: {allowed}$"):
        make_env(name, seed=0, **{key: 1})
    prefixed = ", ".join(f"env.kwargs.{k}" for k in allowed.split(", "))
    with pytest.raises(EnvArgumentError, match=f"^env.kwargs.{key} is not an argument of {name}; allowed: {prefixed}$"):
        check_env(name, {key: 1})


def test_the_constructors_check_their_own_arguments():
    with pytest.raises(EnvArgumentError, match="^size=0 is not allowed"):
        DeepSeaEnv(0)
    with pytest.raises(EnvArgumentError, match="^n=-1 is not allowed"):
        CliffwalkEnv(-1)
    with pytest.raises(EnvArgumentError, match="^n=0 is not allowed"):
        all_transitions(0)
    check_env("deepsea", {"size": 4, "mapping_seed": None, "deterministic": False, "unscaled_move_cost": 0})
    check_env("CartPole-v1", {"sutton_barto_reward": True})  # open family: gymnasium.make checks the rest


# ------------------------------------------------------------------ Atari


def test_atari_observation_is_four_stacked_84x84_frames_padded_with_the_first():
    env = make_env("ALE/Pong-v5", seed=0)
    assert env.observation_space.shape == (4, 84, 84) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset()
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    for k in range(1, 4):  # gymnasium 1.x FrameStackObservation pads a new episode with its first frame
        np.testing.assert_array_equal(obs[k], obs[0])
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)


def test_atari_rewards_are_sign_clipped_in_training_and_raw_in_evaluation():
    """Same seed and actions: until the first lost life the two runs are identical except for the reward."""
    train, test = make_env("ALE/Phoenix-v5", seed=1, train=True), make_env("ALE/Phoenix-v5", seed=1, train=False)
    train.reset(), test.reset()
    rng = np.random.default_rng(0)
    raw_rewards = []
    for _ in range(100):
        action = int(rng.integers(train.action_space.n))
        o1, r1, term1, _, info1 = train.step(action)
        o2, r2, term2, _, _ = test.step(action)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == np.sign(r2)
        raw_rewards.append(r2)
        if term1 or term2:
            break
    assert max(raw_rewards) > 1  # Phoenix scores 20+ per hit: clipping was really exercised
    assert [sign_reward(r) for r in (-3.0, 0.0, 0.5)] == [-1.0, 0.0, 1.0] and type(sign_reward(np.int64(2))) is float


def test_atari_life_loss_terminates_in_training_and_the_game_goes_on():
    env = make_env("ALE/Breakout-v5", seed=0, train=True)
    _, info = env.reset()
    lives = info["lives"]
    rng = np.random.default_rng(0)
    for _ in range(2000):
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            break
    assert terminated and info["lives"] == lives - 1 > 0
    assert "episode" not in info  # the game is not over: no real-episode statistics yet
    _, info = env.reset()
    assert info["lives"] == lives - 1  # reset carried on with the remaining lives instead of a new game


def test_atari_evaluation_plays_whole_games():
    env = make_env("ALE/Breakout-v5", seed=0, train=False)
    _, info = env.reset()
    lives = info["lives"]
    rng = np.random.default_rng(0)
    for _ in range(3000):
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        assert not terminated or info["lives"] == 0
        if terminated or truncated:
            break
    assert terminated and lives > 1 and "episode" in info


# ------------------------------------------------------------------ MinAtar and MiniGrid


@pytest.mark.parametrize(
    ("name", "channels"),
    [
        ("MinAtar/Asterix-v1", 4),
        ("MinAtar/Breakout-v1", 4),
        ("MinAtar/Freeway-v1", 7),
        ("MinAtar/Seaquest-v1", 10),
        ("MinAtar/SpaceInvaders-v1", 6),
    ],
)
def test_minatar_observation_is_channel_first_uint8_zero_one(name, channels):
    env = make_env(name, seed=0)
    assert env.observation_space.shape == (channels, 10, 10) and env.observation_space.dtype == np.uint8
    obs, _ = env.reset()
    raw = env.unwrapped.game.state()  # MinAtar's own (10, 10, C) boolean grid
    np.testing.assert_array_equal(obs, np.transpose(raw, (2, 0, 1)))
    assert obs.flags.c_contiguous and set(np.unique(obs)) <= {0, 1}
    assert env.unwrapped.game.sticky_action_prob == 0.1  # MinAtar's default


def test_minigrid_flat_view_is_the_scaled_image_view():
    flat_env = make_env("MiniGrid-DoorKey-5x5-v0", seed=2)
    image_env = make_env("minigrid/doorkey5x5", seed=2, obs="image")
    assert flat_env.observation_space.shape == (147,) and flat_env.observation_space.dtype == np.float32
    assert image_env.observation_space.shape == (3, 7, 7) and image_env.observation_space.dtype == np.uint8
    for (flat, *_), (image, *_) in zip(rollout(flat_env, 40), rollout(image_env, 40), strict=True):
        scaled = image.transpose(1, 2, 0) / np.array([10.0, 5.0, 2.0])  # object, colour, state maxima
        np.testing.assert_allclose(flat, scaled.reshape(-1), rtol=1e-6)
        assert 0.0 <= flat.min() and flat.max() <= 1.0


# ------------------------------------------------------------------ DeepSea


def run_deepsea(env: DeepSeaEnv, choose) -> tuple[float, int, dict]:
    """Play one episode with `choose(row, col, right_index) -> action`; return (return, length, last info)."""
    env.reset(seed=0)
    mapping = env.action_mapping
    total, length, info, done = 0.0, 0, {}, False
    while not done:
        row, col = env.position
        _, reward, done, truncated, info = env.step(choose(row, col, int(mapping[row, col])))
        assert not truncated
        total += reward
        length += 1
    return total, length, info


@pytest.mark.parametrize("size", [1, 2, 5, 10, 20])
def test_deepsea_always_right_earns_the_treasure_minus_n_move_costs(size):
    env = DeepSeaEnv(size, mapping_seed=size)
    total, length, info = run_deepsea(env, lambda row, col, right: right)
    assert length == size
    # N right moves at 0.01/N each, the +1 on the last one: 1 - N * 0.01/N = 0.99 (bsuite's optimal return).
    assert total == pytest.approx(1.0 - size * (0.01 / size), abs=1e-12)
    assert total == pytest.approx(env.optimal_return()) and not info["bad_episode"]


@pytest.mark.parametrize("left_row", range(6))
def test_deepsea_one_left_move_anywhere_loses_the_treasure(left_row):
    size = 6
    env = DeepSeaEnv(size, mapping_seed=0)
    total, length, info = run_deepsea(env, lambda row, col, right: 1 - right if row == left_row else right)
    assert length == size and info["bad_episode"]
    # Every other move was right and paid its cost, yet no +1: after a left the column lags the row for good.
    assert total == pytest.approx(-(size - 1) * 0.01 / size)


def test_deepsea_observation_is_a_flat_one_hot_then_null_at_the_end():
    env = DeepSeaEnv(4, mapping_seed=1)
    obs, _ = env.reset()
    assert obs.shape == (16,) and obs.dtype == np.float32 and obs[0] == 1.0 and obs.sum() == 1.0
    right = env.action_mapping[0, 0]
    obs, *_ = env.step(right)
    assert obs.reshape(4, 4)[1, 1] == 1.0 and obs.sum() == 1.0
    for _ in range(3):
        obs, _, done, _, _ = env.step(0)
    assert done and not obs.any()
    with pytest.raises(RuntimeError):
        env.step(0)


def test_deepsea_mapping_is_bsuites_and_the_same_for_train_and_eval_seeds():
    expected = np.random.RandomState(42).binomial(1, 0.5, [10, 10])  # bsuite's sweep: mapping_seed=42
    np.testing.assert_array_equal(DeepSeaEnv(10, mapping_seed=42).action_mapping, expected)
    for seed in (0, 10_000):
        np.testing.assert_array_equal(make_env("deepsea", seed=seed, size=10).unwrapped.action_mapping, expected)
    other = make_env("DeepSea-10", seed=0, mapping_seed=7).unwrapped.action_mapping
    np.testing.assert_array_equal(other, np.random.RandomState(7).binomial(1, 0.5, [10, 10]))
    assert not np.array_equal(other, expected)
    assert np.all(DeepSeaEnv(5, randomize_actions=False).action_mapping == 1)
    assert make_env("DeepSea-7", seed=0).observation_space.shape == (49,)
    with pytest.raises(ValueError, match="size"):
        make_env("DeepSea-7", seed=0, size=8)


# ------------------------------------------------------------------ Blind Cliffwalk


def test_cliffwalk_right_action_alternates_along_the_chain():
    """
    state:     0      1      2      3
    right:   a=0 -> a=1 -> a=0 -> a=1 -> reward 1, end
    wrong:   a=1    a=0    a=1    a=0    -> reward 0, end
    """
    assert [right_action(s) for s in range(4)] == [0, 1, 0, 1]
    env = CliffwalkEnv(4)
    obs, _ = env.reset()
    assert obs.tolist() == [1, 0, 0, 0] and obs.dtype == np.float32
    for s in range(3):
        obs, reward, terminated, _, _ = env.step(s % 2)
        assert (reward, terminated) == (0.0, False) and obs.argmax() == s + 1
    _, reward, terminated, _, _ = env.step(1)
    assert (reward, terminated) == (1.0, True)
    for s in range(4):  # the wrong action ends the episode with nothing, wherever it is taken
        env.reset()
        for k in range(s):
            env.step(right_action(k))
        _, reward, terminated, _, _ = env.step(1 - right_action(s))
        assert (reward, terminated) == (0.0, True)


@pytest.mark.parametrize("n", range(1, 11))
def test_cliffwalk_memory_has_2_to_the_n_plus_1_minus_2_transitions_one_rewarding(n):
    memory = all_transitions(n)
    assert all(len(column) == 2 ** (n + 1) - 2 for column in memory.values())
    assert memory["reward"].sum() == 1.0 and np.count_nonzero(memory["reward"]) == 1
    last = np.flatnonzero(memory["reward"])[0]
    assert memory["state"][last] == n - 1 and memory["action"][last] == right_action(n - 1)
    moved = ~memory["terminated"]
    np.testing.assert_array_equal(memory["next_state"][moved], memory["state"][moved] + 1)
    assert np.all(memory["action"][moved] == memory["state"][moved] % 2)


def test_cliffwalk_memory_is_what_the_env_produces_for_every_action_sequence():
    n = 3
    rows = []
    for code in range(2**n):
        actions = [(code >> (n - 1 - k)) & 1 for k in range(n)]  # lexicographic, like itertools.product
        env = make_env(f"Cliffwalk-{n}", seed=0)
        obs, _ = env.reset()
        for action in actions:
            next_obs, reward, terminated, _, _ = env.step(action)
            rows.append((obs.argmax(), action, reward, next_obs.argmax(), terminated))
            obs = next_obs
            if terminated:
                break
    memory = all_transitions(n)
    expected = list(
        zip(*(memory[k].tolist() for k in ("state", "action", "reward", "next_state", "terminated")), strict=True)
    )
    assert [tuple(map(float, r)) for r in rows] == [tuple(map(float, r)) for r in expected]


def test_cliffwalk_true_q_by_hand():
    g = 0.5
    # n = 2: state 0 right (a=0) reaches the reward one step later; state 1 right (a=1) gets it now.
    np.testing.assert_allclose(true_q(2, g), [[g, 0.0], [0.0, 1.0]])
    # n = 3: rights are a=0, a=1, a=0.
    np.testing.assert_allclose(true_q(3, g), [[g**2, 0.0], [0.0, g], [1.0, 0.0]])


@pytest.mark.parametrize("n", [2, 5, 9])
def test_cliffwalk_true_q_satisfies_bellman_on_the_memory(n):
    gamma = 1 - 1 / n
    q, m = true_q(n, gamma), all_transitions(n)
    target = m["reward"] + gamma * (~m["terminated"]) * q[m["next_state"]].max(axis=1)
    np.testing.assert_allclose(q[m["state"], m["action"]], target, rtol=1e-6)
