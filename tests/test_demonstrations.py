"""``demonstrations=K``: the expert's first K episodes in every environment, stored like any other (issue 14's
DeepSea with exploration taken out of the question)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from test_run_faults import cli
from test_train import TINY, composed

from rlfocal.config import validate
from rlfocal.envs import EnvArgumentError, make_env
from rlfocal.envs.experts import Demonstrator, expert_policy
from rlfocal.runstate import StopFlag
from rlfocal.train import build_run, train

DEEPSEA = [*TINY, "env=deepsea", "env.kwargs.size=6", "total_steps=120", "agent.learning_starts=60", "eval_every=60"]


def play(name: str, seed: int, **kwargs) -> tuple[float, int]:
    env, policy = make_env(name, seed, **kwargs), expert_policy(name, kwargs)
    obs, _ = env.reset()
    total, steps, done = 0.0, 0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(int(policy(obs)))
        total, steps, done = total + reward, steps + 1, terminated or truncated
    return total, steps


@pytest.mark.parametrize(("name", "kwargs", "optimum"), [("deepsea", {"size": 12}, 0.99), ("cliffwalk", {"n": 7}, 1.0)])
def test_the_expert_plays_the_optimal_episode(name, kwargs, optimum):
    for seed in (0, 5):
        total, _ = play(name, seed, **kwargs)
        assert total == pytest.approx(optimum)
    assert play("deepsea", 0, size=9, mapping_seed=3)[0] == pytest.approx(0.99)  # another mapping, read from it


@pytest.mark.parametrize(
    ("name", "kwargs", "says"),
    [
        ("CartPole-v1", {}, "has none"),
        ("deepsea", {"deterministic": False}, "deterministic"),
        ("deepsea", {"mapping_seed": None}, "mapping"),
    ],
)
def test_an_environment_without_an_expert_is_refused_by_name(name, kwargs, says):
    with pytest.raises(EnvArgumentError, match=says):
        expert_policy(name, kwargs)


def test_the_demonstrator_hands_over_after_its_episodes():
    demo = Demonstrator(lambda obs: np.full(obs.shape[:2], 7), 2, np.zeros((2, 1), dtype=np.int64))
    obs, agent = np.zeros((2, 1, 3)), np.zeros((2, 1), dtype=np.int64)
    assert (demo.actions(obs, agent) == 7).all()
    demo.record(np.array([[True], [False]]))
    demo.record(np.array([[True], [True]]))
    assert demo.actions(obs, agent).tolist() == [[0], [7]]  # lane 0 has played its two episodes
    demo.record(np.array([[True], [True]]))
    assert not demo.active and (demo.actions(obs, agent) == 0).all() and demo.done.tolist() == [[2], [2]]
    off = Demonstrator(None, 0, np.zeros((1, 1)))
    assert not off.active and off.actions(obs, agent) is agent


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_every_seed_starts_with_the_optimal_episode_in_replay(tmp_path, num_seeds):
    cfg = composed([*DEEPSEA, "demonstrations=1", f"num_seeds={num_seeds}", "logger=none"])
    r = build_run(validate(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True))
    r.stop = StopFlag()
    try:
        train(r)
    finally:
        r.stop.restore()
    for lane in r.buffer.lanes:
        rewards = lane.storage.rewards[:6]
        assert rewards.sum() == pytest.approx(0.99) and rewards[-1] == pytest.approx(1 - 0.01 / 6)
        assert lane.storage.rewards[6:120].max() <= 0.0  # ε-greedy never found the treasure again by itself
    assert r.counters.demonstrated == [[1]] * num_seeds


def test_demonstrations_on_an_environment_without_an_expert_exit_2_in_one_line(tmp_path):
    out = cli(tmp_path, "demonstrations=1")  # CartPole
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("config error:") and "CartPole-v1" in out.stderr
    assert not (tmp_path / "metrics.csv").exists()


def test_a_resumed_run_does_not_demonstrate_again(tmp_path):
    assert cli(tmp_path, *DEEPSEA[len(TINY) :], "demonstrations=1", "checkpoint_every=60").returncode == 0
    cfg = composed([*DEEPSEA, "demonstrations=1", "checkpoint_every=60", "resume=true", "total_steps=180"])
    r = build_run(validate(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True))
    assert r.counters.global_step == 120 and not r.demonstrator.active
    fresh = build_run(validate(composed([*DEEPSEA, "demonstrations=1"])), tmp_path / "new", {})
    assert fresh.demonstrator.active
