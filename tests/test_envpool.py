"""``env.vector_mode=envpool``: EnvPool's next-step resets become same-step ones (against a scripted fake pool, so
this runs without EnvPool), bad names and keywords fail clearly, and, where EnvPool is installed, real Atari games
look like `make_atari`'s and train end to end."""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlfocal.config import register_configs, validate
from rlfocal.envs.envpool_vec import EnvPoolVecEnv
from rlfocal.envs.vector import make_vec_env
from rlfocal.extras import MissingExtra
from rlfocal.train import run

# Per environment, the events of its agent steps, repeated: "." plays on, "l" loses a life (the game goes on),
# "g" is game over, "t" truncation, "L" loses a life and the game ends during the no-ops of the reset step after it
# (EnvPool then restarts the game in that reset without saying so, but for ``elapsed_step`` 0). The raw reward of a
# game's k-th step (from 0) is 5 * (k % 3 - 1).
SCRIPTS = ["..l..g", ".g", "...t", "l.l.g"]


class FakePool:
    """EnvPool's async interface in numpy: ``send`` queues steps, ``recv`` returns one of them (in a scrambled
    order), and an environment whose last step ended an episode resets on its next step (action ignored, reward 0).
    Observation ``[env, results so far, 1 if a reset reply]``; it records every action that stepped a game."""

    observation_space = gym.spaces.Box(0, 10**6, (3,), np.int64)
    action_space = gym.spaces.Discrete(3)
    scripts = SCRIPTS

    def __init__(self, seed: int, num_envs: int) -> None:
        self.seed = seed
        n = num_envs
        self.rng = np.random.default_rng(seed)
        self.queue: list[tuple[int, int | None]] = []
        self.ended = np.ones(n, dtype=bool)  # the next send for an env resets it
        self.count = np.zeros(n, dtype=np.int64)  # results returned
        self.event = np.zeros(n, dtype=np.int64)  # position in the env's script
        self.game_step = np.zeros(n, dtype=np.int64)
        self.actions: list[list[int]] = [[] for _ in range(n)]
        self.closed = False

    def async_reset(self) -> None:
        self.ended[:] = True
        self.queue += [(i, None) for i in range(len(self.ended))]

    def send(self, actions: np.ndarray, env_ids: np.ndarray) -> None:
        assert actions.dtype == np.int32 and env_ids.dtype == np.int32
        self.queue += list(zip(env_ids.tolist(), actions.tolist(), strict=True))

    def recv(self):
        i, action = self.queue.pop(int(self.rng.integers(len(self.queue))))
        self.count[i] += 1
        if self.ended[i]:  # the reset step
            self.ended[i] = False
            if action is None or self._game_over(i):
                self.game_step[i] = 0
            return self._result(i, is_reset=1, reward=0.0, raw=0.0, term=False, trunc=False, game_over=False)
        self.actions[i].append(action)
        script = self.scripts[i % len(self.scripts)]
        event = script[self.event[i] % len(script)]
        self.event[i] += 1
        raw = 5.0 * (self.game_step[i] % 3 - 1)
        self.game_step[i] += 1
        self.ended[i] = event != "."
        return self._result(i, 0, np.sign(raw), raw, event in "lgL", event == "t", event == "g")

    def _game_over(self, i: int) -> bool:
        script = self.scripts[i % len(self.scripts)]
        return script[(self.event[i] - 1) % len(script)] in "gtL"

    def _result(self, i, is_reset, reward, raw, term, trunc, game_over):
        obs = np.array([[i, self.count[i], is_reset]], dtype=np.int64)
        info = {"env_id": np.array([i], np.int32), "reward": np.array([raw], np.float32),
                "terminated": np.array([int(game_over)], np.int32),
                "elapsed_step": np.array([self.game_step[i]], np.int32)}  # fmt: skip
        return obs, np.array([reward], np.float32), np.array([term]), np.array([trunc]), info

    def close(self) -> None:
        self.closed = True


def fake_vec(
    seed: int = 0, num_envs: int = len(SCRIPTS), pool: type[FakePool] = FakePool
) -> tuple[EnvPoolVecEnv, list[FakePool]]:
    pools: list[FakePool] = []

    def make_pool(pool_seed: int) -> FakePool:
        pools.append(pool(pool_seed, num_envs))
        return pools[-1]

    return EnvPoolVecEnv(make_pool, seed, num_envs), pools


def expected_run(i: int, steps: int):
    """Env i's steps as a same-step vector env gives them: (reward, terminated, truncated, reset next) per step, and
    its finished games as (env, raw return, agent steps)."""
    script = SCRIPTS[i]
    rows, games, ret, length, k = [], [], 0.0, 0, 0
    for t in range(steps):
        event = script[t % len(script)]
        raw = 5.0 * (k % 3 - 1)
        ret, length, k = ret + raw, length + 1, k + 1
        rows.append((np.sign(raw), event in "lg", event == "t", event != "."))
        if event in "gt":
            games.append((t, (i, ret, length)))
            ret, length, k = 0.0, 0, 0
    return rows, games


def test_episode_ends_keep_the_final_obs_and_act_on_the_reset_obs_in_the_same_step():
    steps, n = 24, len(SCRIPTS)
    venv, pools = fake_vec()
    obs = venv.reset()
    assert obs.shape == (n, 3) and (obs[:, 2] == 1).all()  # every env starts from a reset reply
    rng = np.random.default_rng(1)
    sent, outs = [], []
    for _ in range(steps):
        sent.append(rng.integers(3, size=n))
        outs.append(venv.step(sent[-1]))
    for i in range(n):
        rows, games = expected_run(i, steps)
        prev = obs[i]
        for t, (reward, term, trunc, reset) in enumerate(rows):
            out = outs[t]
            assert (out.rewards[i], out.terminated[i], out.truncated[i]) == (reward, term, trunc)
            assert out.next_obs[i][2] == 0 and out.next_obs[i][1] == prev[1] + 1  # the step's own, final, result
            if reset:  # acted on next: the reset reply, the one result after the final observation
                assert out.obs[i][2] == 1 and out.obs[i][1] == out.next_obs[i][1] + 1
            else:
                np.testing.assert_array_equal(out.obs[i], out.next_obs[i])
            prev = out.obs[i]
        assert [(t, e) for t, out in enumerate(outs) for e in out.episodes if e[0] == i] == games
        assert games  # the script ended games in this run
        assert pools[0].actions[i] == [int(a[i]) for a in sent]  # reset steps took no action of the agent's
    assert all(out.episodes == sorted(out.episodes) for out in outs)


def test_a_lost_life_is_terminal_but_the_game_and_its_score_go_on():
    venv, _ = fake_vec()
    venv.reset()
    outs = [venv.step(np.zeros(len(SCRIPTS), np.int64)) for _ in range(5)]
    # env 3's script "l.l.g": two lives lost, then game over
    assert [bool(o.terminated[3]) for o in outs] == [True, False, True, False, True]
    games = [[e for e in o.episodes if e[0] == 3] for o in outs]
    assert games == [[], [], [], [], [(3, -5.0 + 0.0 + 5.0 - 5.0 + 0.0, 5)]]  # one game of five steps, raw rewards


def test_a_game_that_ends_in_the_no_ops_after_a_lost_life_is_reported_then():
    """A lost life whose reset no-ops end the game (EnvPool restarts it inside that reset step): the game is
    reported at the step that lost the life, and the next game counts from zero."""

    class NoOpDeath(FakePool):
        scripts = [".L..g"]

    venv, _ = fake_vec(num_envs=1, pool=NoOpDeath)
    venv.reset()
    outs = [venv.step(np.zeros(1, np.int64)) for _ in range(5)]
    assert [bool(o.terminated[0]) for o in outs] == [False, True, False, False, True]
    assert [o.episodes for o in outs] == [[], [(0, -5.0 + 0.0, 2)], [], [], [(0, -5.0 + 0.0 + 5.0, 3)]]


def test_reset_with_a_seed_rebuilds_the_pool_of_that_seed_and_without_keeps_it():
    venv, pools = fake_vec(seed=7, num_envs=3)
    assert pools[0].seed == 7
    venv.reset()
    venv.step(np.zeros(3, np.int64))
    venv.reset()
    assert len(pools) == 1
    venv.reset(seed=100)
    assert len(pools) == 2 and pools[0].closed and pools[1].seed == 100
    venv.close()
    assert pools[1].closed


def test_step_halves_in_the_wrong_order_are_refused():
    venv, _ = fake_vec()
    venv.reset()
    with pytest.raises(RuntimeError, match="step_wait called without a pending step"):
        venv.step_wait()
    venv.step_async(np.zeros(len(SCRIPTS), np.int64))
    with pytest.raises(RuntimeError, match="step_async called while a step is pending"):
        venv.step_async(np.zeros(len(SCRIPTS), np.int64))
    assert venv.step_wait().obs.shape == (len(SCRIPTS), 3)


def test_envpool_mode_is_for_atari_ids_only():
    with pytest.raises(ValueError, match=r"envpool is for Atari ids ALE/<Game>-v5, got 'CartPole-v1'"):
        make_vec_env("CartPole-v1", 0, 2, mode="envpool")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"full_action_space": True}, "full_action_space is not an argument of ALE/Pong-v5 with env.vector_mode="
         "envpool; allowed: noop_max, frame_skip, frame_stack, repeat_action_probability"),
        ({"noop_max": 0}, r"noop_max=0 is not allowed: must be an integer >= 1 \(EnvPool"),
        ({"frame_skip": 0}, "frame_skip=0 is not allowed: must be an integer >= 1"),
    ],
)  # fmt: skip
def test_envpool_mode_refuses_other_keywords_naming_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_vec_env("ALE/Pong-v5", 0, 2, mode="envpool", **kwargs)


def test_missing_envpool_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "envpool", None)  # import envpool now fails as if it were not installed
    with pytest.raises(MissingExtra, match=r'env.vector_mode=envpool needs envpool: pip install -e "\.\[envpool\]"'):
        make_vec_env("ALE/Pong-v5", 0, 2, mode="envpool")


# Real EnvPool (skipped where it is not installed, as in CI).


def test_real_pong_has_make_atari_spaces_and_clipped_rewards():
    pytest.importorskip("envpool")
    from rlfocal.envs.atari import make_atari

    venv = make_vec_env("ALE/Pong-v5", 0, 2, mode="envpool")
    reference = make_atari("ALE/Pong-v5")
    assert venv.single_observation_space == reference.observation_space  # Box(0, 255, (4, 84, 84), uint8)
    assert venv.single_action_space == reference.action_space
    assert venv.pool.spec.config.max_episode_steps == 27_000  # 108,000 frames at frame skip 4
    obs = venv.reset()
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(300):
        out = venv.step(rng.integers(6, size=2))
        going = ~(out.terminated | out.truncated)
        np.testing.assert_array_equal(out.next_obs[going, :3], obs[going, 1:])  # oldest frame first
        rewards.append(out.rewards)
        obs = out.obs
    assert set(np.unique(rewards)) <= {-1.0, 0.0, 1.0} and np.any(rewards)
    venv.close()


def test_real_env_i_replays_seed_plus_i_and_reset_with_a_seed_starts_over():
    pytest.importorskip("envpool")
    actions = np.random.default_rng(0).integers(4, size=(200, 2))

    def play(venv, env_actions, seed=None):
        return np.stack([venv.reset(seed)] + [venv.step(a).next_obs for a in env_actions])

    pair = make_vec_env("ALE/Breakout-v5", 5, 2, mode="envpool")
    runs = play(pair, actions)
    np.testing.assert_array_equal(runs, play(pair, actions, seed=5))  # reset(seed=5): the same games again
    alone = play(make_vec_env("ALE/Breakout-v5", 6, 1, mode="envpool"), actions[:, 1:])
    np.testing.assert_array_equal(runs[:, 1], alone[:, 0])  # env 1 of seed 5 is env 0 of seed 6
    assert (runs[:, 0] != runs[:, 1]).any()


def test_real_frames_match_make_atari_until_the_first_life_is_lost():
    pytest.importorskip("envpool")
    from rlfocal.envs.atari import make_atari

    same = {"noop_max": 1, "repeat_action_probability": 0.0}  # the same emulator states: one no-op, no sticky actions
    venv = make_vec_env("ALE/Breakout-v5", 0, 1, mode="envpool", **same)
    env = make_atari("ALE/Breakout-v5", **same)
    np.testing.assert_array_equal(venv.reset()[0], env.reset(seed=0)[0])
    rng = np.random.default_rng(0)
    for _ in range(1_000):
        action = int(rng.integers(4))
        obs, reward, terminated, _, _ = env.step(action)
        out = venv.step(np.array([action]))
        np.testing.assert_array_equal(out.next_obs[0], obs)
        assert (out.rewards[0], out.terminated[0]) == (reward, terminated)
        if terminated:
            break
    assert terminated


def test_real_breakout_life_loss_is_terminal_and_the_game_goes_on():
    pytest.importorskip("envpool")
    venv = make_vec_env("ALE/Breakout-v5", 3, 1, mode="envpool")
    obs = venv.reset()
    rng = np.random.default_rng(0)
    length, ends = 0, []
    for _ in range(3_000):
        out = venv.step(rng.integers(4, size=1))
        length += 1
        if out.episodes:
            break
        if out.terminated[0]:
            ends.append(length)
            # the game went on: the stack slid on by one frame (a new game starts with four copies of one frame)
            np.testing.assert_array_equal(out.obs[0, :3], out.next_obs[0, 1:])
            assert (out.obs[0] != out.obs[0, :1]).any()
        else:
            np.testing.assert_array_equal(out.obs[0, :3], obs[0, 1:])
        obs = out.obs
    assert out.terminated[0] and len(ends) == 4  # four lives lost, then game over with the fifth
    assert out.episodes == [(0, out.episodes[0][1], length)]  # one game, every agent step of it
    new_game = out.obs[0]
    assert (new_game == new_game[:1]).all()
    venv.close()


def test_real_episode_returns_are_raw_scores():
    pytest.importorskip("envpool")
    venv = make_vec_env("ALE/SpaceInvaders-v5", 0, 2, mode="envpool")
    venv.reset()
    rng = np.random.default_rng(0)
    clipped = np.zeros(2)
    for _ in range(5_000):
        out = venv.step(rng.integers(6, size=2))
        clipped += out.rewards
        if out.episodes:
            env, score, _ = out.episodes[0]
            assert score > clipped[env]  # aliens are worth 5 to 30 points, the clipped reward 1
            break
    assert out.episodes
    venv.close()


def test_real_envpool_has_no_such_game():
    pytest.importorskip("envpool")
    with pytest.raises(ValueError, match="EnvPool has no Atari game 'NoSuchGame-v5'"):
        make_vec_env("ALE/NoSuchGame-v5", 0, 1, mode="envpool")


def test_real_envpool_trains_end_to_end(tmp_path):
    pytest.importorskip("envpool")
    overrides = ["env=atari/pong", "env.vector_mode=envpool", "env.num_envs=4", "env.overlap=true", "total_steps=400",
                 "agent.learning_starts=100", "replay.capacity=1000", "eval_episodes=1", "checkpoint_every=400",
                 "logger=csv", "progress=false", "device=cpu"]  # fmt: skip
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    run(validate(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["global_step"] == 400
