"""``env.overlap=true`` (issue 13): the environments step while the learner takes its gradient steps. A run keeps its
step and update schedule, stores exactly the transitions its environments made, and survives SIGTERM and resume;
the lane environments' ``step_async``/``step_wait`` give ``step``'s `LaneStep` and refuse a wait without a start."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from test_train import rows, train

import rlfocal.train
from rlfocal.envs import make_env
from rlfocal.envs.lanes import FlatLanes, VecEnvLanes, make_lane_envs

FIELDS = ("obs", "next_obs", "rewards", "terminated", "truncated")
DEEPSEA = ["env=deepsea", "env.kwargs.size=4", "total_steps=200", "agent.learning_starts=40", "agent.batch_size=16"]


def test_overlap_trains_on_the_same_step_and_update_schedule(tmp_path):
    """Same logged steps, updates and warm-up episodes as overlap=false; after the first update the runs part, since
    the gradient steps sample the replay before this step's transitions are stored."""
    for overlap in ("false", "true"):
        summary = train(tmp_path / overlap, ["replay=per", f"env.overlap={overlap}"])
        assert summary["global_step"] == 300 and summary["updates"] == (300 - 100) // 4
    serial, overlapped = rows(tmp_path / "false" / "metrics.csv"), rows(tmp_path / "true" / "metrics.csv")
    for key in ("global_step", "charts/updates"):
        assert [r[key] for r in overlapped] == [r[key] for r in serial], key
    warm_up = [k for k, r in enumerate(serial) if int(r["global_step"]) <= 100]
    for key in ("charts/episodes", "charts/episodic_return"):
        assert [overlapped[k][key] for k in warm_up] == [serial[k][key] for k in warm_up], key
    assert all(float(r["losses/td_loss"]) >= 0 for r in overlapped[len(warm_up) :])
    assert [r["losses/td_loss"] for r in overlapped] != [r["losses/td_loss"] for r in serial]
    assert (tmp_path / "true" / "summary.json").exists()


@pytest.mark.parametrize(("mode", "num_envs"), [("serial", 1), ("async", 2), ("serial", 8)])
def test_overlap_stores_the_transitions_the_environments_made(tmp_path, monkeypatch, mode, num_envs):
    """Each environment's stored stream, replayed action by action in a fresh DeepSea from its reset, gives back the
    stored observations, rewards and ends: no action is paired with another step's observations (one lane object
    per environment, async workers, and the numpy-vectorised DeepSea at 8)."""
    runs = []
    real_finish = rlfocal.train.finish
    monkeypatch.setattr(rlfocal.train, "finish", lambda r: runs.append(r) or real_finish(r))
    train(tmp_path, [*DEEPSEA, "env.overlap=true", f"env.vector_mode={mode}", f"env.num_envs={num_envs}"])
    (r,) = runs
    assert isinstance(r.envs, FlatLanes if num_envs == 8 else VecEnvLanes)
    storage = r.buffer.lanes[0].storage
    assert storage.size == 200 and storage.start == 0 and r.counters.updates > 0
    for i in range(num_envs):
        rows_i = slice(i, storage.size, num_envs)  # n_step = 1: each step writes one row per environment, in order
        obs, actions, next_obs = storage.obs[rows_i], storage.actions[rows_i], storage.next_obs[rows_i]
        rewards, terminated = storage.rewards[rows_i], storage.terminated[rows_i]
        env = make_env("deepsea", i, size=4)
        expected_obs, _ = env.reset()
        for t in range(len(actions)):
            np.testing.assert_array_equal(obs[t], expected_obs, err_msg=f"env {i} step {t}")
            expected_obs, reward, ended, _, _ = env.step(int(actions[t]))
            np.testing.assert_array_equal(next_obs[t], expected_obs, err_msg=f"env {i} step {t}")
            assert (rewards[t], terminated[t]) == (np.float32(reward), ended), (i, t)
            if ended:
                expected_obs, _ = env.reset()


@pytest.mark.parametrize("seeds", [[3], [3, 4]])
def test_step_async_and_step_wait_in_the_workers_give_step(seeds):
    """Two async lane sets from the same seeds, one stepped with step(), one with step_async/step_wait: the same
    LaneStep bit for bit, resets included; after step_async every worker is busy stepping (gymnasium's state)."""
    stepped, split = (make_lane_envs("CartPole-v1", seeds, 2, mode="async") for _ in range(2))
    assert isinstance(split, VecEnvLanes)
    np.testing.assert_array_equal(stepped.reset(seed=7), split.reset(seed=7))
    rng, episodes = np.random.default_rng(0), 0
    for t in range(60):
        actions = rng.integers(0, 2, (len(seeds), 2))
        mine = stepped.step(actions)
        split.step_async(actions)
        assert all(env.venv._state.value == "step" for env in split.envs)
        theirs = split.step_wait()
        for field in FIELDS:
            assert getattr(mine, field).tobytes() == getattr(theirs, field).tobytes(), (t, field)
        assert mine.episodes == theirs.episodes, t
        episodes += sum(map(len, mine.episodes))
    assert episodes > len(seeds) * 2  # random CartPole episodes last ~20 steps: resets were stepped too
    stepped.close()
    split.close()


@pytest.mark.parametrize(
    ("name", "num_envs", "mode"), [("CartPole-v1", 1, "serial"), ("CartPole-v1", 2, "async"), ("deepsea", 8, "serial")]
)
def test_a_wait_without_a_start_and_two_starts_are_refused(name, num_envs, mode):
    envs = make_lane_envs(name, [0], num_envs, mode=mode)
    envs.reset()
    actions = np.zeros((1, num_envs), dtype=np.int64)
    with pytest.raises(RuntimeError, match=r"step_wait called without a pending step: call step_async\(actions\)"):
        envs.step_wait()
    envs.step_async(actions)
    with pytest.raises(RuntimeError, match=r"step_async called while a step is pending: call step_wait\(\) first"):
        envs.step_async(actions)
    assert envs.step_wait().obs.shape[:2] == (1, num_envs)  # the pending step is still there and still works
    envs.close()


def test_sigterm_during_the_gradient_steps_waits_for_the_step_then_resumes(tmp_path, monkeypatch):
    """SIGTERM while the async workers step: the loop waits for the step and stores it before the checkpoint
    (every checkpoint holds exactly global_step transitions) and exits; resume=true finishes the schedule."""
    overrides = ["replay=per", "env.overlap=true", "env.num_envs=2", "env.vector_mode=async", "save_replay=true"]
    real_learn_step, real_checkpoint, stored = rlfocal.train.learn_step, rlfocal.train.checkpoint, []

    def learn_step(r):
        if r.counters.updates == 5:
            signal.raise_signal(signal.SIGTERM)  # the run's StopFlag takes it
        return real_learn_step(r)

    def checkpoint(r):
        stored.append((r, r.counters.global_step, len(r.buffer)))
        real_checkpoint(r)

    monkeypatch.setattr(rlfocal.train, "learn_step", learn_step)
    monkeypatch.setattr(rlfocal.train, "checkpoint", checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, overrides)
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert len(stored) == 1 and 100 < stored[0][1] < 150  # stopped at the 6th update, before step 150's checkpoint
    stored[0][0].envs.close()  # the CLI exits here; in this process the forked workers would hold the run's lock
    summary = train(tmp_path, [*overrides, "resume=true"])
    assert summary["global_step"] == 300
    assert all(step == size for _, step, size in stored)
    assert [int(r["global_step"]) for r in rows(tmp_path / "metrics.csv")] == list(range(50, 301, 50))
