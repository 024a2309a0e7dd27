"""EnvPool's Atari (C++ threads) as an rlfocal vector environment: ``env.vector_mode=envpool`` (issue 13).

EnvPool resets an environment on the step *after* its episode ends (that step's action is ignored, its reward 0).
`EnvPoolVecEnv` turns this into `SerialVecEnv`'s same-step resets: the pool runs in async mode with one result per
``recv`` (``batch_size=1``); ``step_async`` sends all N actions and ``step_wait`` receives until every environment has
reported. An environment whose step ended an episode is sent its reset step at once (the others may still be
stepping) and its reply becomes ``obs[i]`` while ``next_obs[i]`` keeps the final observation; the reset step itself
is neither returned nor counted. Between ``step_async`` and ``step_wait`` the C++ threads really step
(``env.overlap``).

Settings are `rlfocal.envs.atari.make_atari`'s: sticky actions 0.25, up to ``noop_max`` no-op frames at reset,
``frame_skip`` with the max of the last two frames, 84 x 84 grey uint8, ``frame_stack`` frames oldest first, no FIRE
at reset, at most 108,000 frames (``108_000 // frame_skip`` agent steps) a game, and in training a lost life ends the
episode (``terminated=True``) while the game goes on, with sign-clipped rewards. ``episodes`` holds whole games
(game over or truncation) with the raw score (EnvPool's ``info["reward"]``) and the agent steps taken. Frames are
bit-identical to `make_atari`'s for the same emulator states (checked with sticky actions off and one no-op), but
the runs differ:

- After a lost life EnvPool resumes the game with 1 to ``noop_max`` single-frame no-ops and pushes that frame onto
  the stack; `make_atari` takes one no-op agent step (4 frames) and starts a fresh stack. An episode's length here
  counts only agent steps, not that no-op step, which `make_atari`'s statistics count (nor does its return count
  points scored during EnvPool's no-ops).
- A game is cut at 27,000 agent steps (at frame skip 4), reset no-ops not counted; ALE's 108,000 frames count them.
- On the step that ends a game the final frame is not max-pooled (EnvPool cuts the frame skip short).
- ``noop_max`` must be at least 1 (EnvPool crashes with 0), and ALE is seeded its own way, so environment i of
  ``seed`` is reproducible in this mode but is not the game that ``serial`` or ``async`` play for the same seed.

Seeds: environment i is seeded ``seed + i`` (EnvPool's own rule for a pool of ``seed``). EnvPool cannot reseed at
reset, so ``reset(seed=s)`` rebuilds the pool of ``s``; ``reset()`` resets the running pool, where under episodic
life a game in progress carries on after no-ops (as `EpisodicLife.reset` does without a seed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from rlfocal.envs.atari import ATARI_ARGS
from rlfocal.envs.checks import Arg, EnvArgumentError, check_args, integer
from rlfocal.envs.vector import SplitStep, VecStep
from rlfocal.extras import require_extra

ENVPOOL_ARGS = {**ATARI_ARGS, "noop_max": Arg("an integer >= 1 (EnvPool takes a no-op at every reset)", integer(1).ok)}
"""The Atari keywords envpool mode takes: `make_atari`'s, with ``noop_max >= 1``; nothing else goes through."""

_ATARI = re.compile(r"ALE/(\w+)-v5")
MAX_FRAMES = 108_000  # ALE v5's frames per game (30 minutes)


class EnvPoolVecEnv(SplitStep[VecStep]):
    """An EnvPool-like pool of N environments (async, ``batch_size=1``) with same-step resets, as `SerialVecEnv`.

    ``make_pool(seed)`` builds the pool, environment i seeded ``seed + i``. The pool takes ``send(actions, env_ids)``
    and ``async_reset()``; ``recv()`` gives one environment's ``(obs, reward, terminated, truncated, info)`` as
    arrays of length 1, with ``info["env_id"]``, the raw reward ``info["reward"]``, the game over
    ``info["terminated"]`` and the game's agent steps ``info["elapsed_step"]`` (0 after a reset that restarted it:
    how a game that ended in the no-ops after a lost life shows).
    """

    def __init__(self, make_pool: Callable[[int], Any], seed: int, num_envs: int) -> None:
        self._make_pool = make_pool
        self.num_envs = num_envs
        self.pool = make_pool(seed)
        self.single_observation_space = self.pool.observation_space
        self.single_action_space = self.pool.action_space
        self.single_action_space.seed(seed)
        space = self.single_observation_space
        self._obs = np.zeros((num_envs, *space.shape), dtype=space.dtype)
        self._ids = np.arange(num_envs, dtype=np.int32)
        self._return = np.zeros(num_envs, dtype=np.float64)  # the raw score of each game so far
        self._length = np.zeros(num_envs, dtype=np.int64)  # agent steps of each game so far

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every environment; with a seed, rebuild the pool with environment i seeded ``seed + i``."""
        if seed is not None:
            self.pool.close()
            self.pool = self._make_pool(seed)
        self.pool.async_reset()
        for _ in range(self.num_envs):
            obs, *_, info = self.pool.recv()
            self._obs[info["env_id"][0]] = obs[0]
        self._return[:] = 0.0
        self._length[:] = 0
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> VecStep:
        self.step_async(actions)
        return self.step_wait()

    def _start(self, actions: np.ndarray) -> None:
        self.pool.send(np.asarray(actions, dtype=np.int32), self._ids)

    def _finish(self) -> VecStep:
        n = self.num_envs
        next_obs = np.empty_like(self._obs)
        rewards = np.empty(n, dtype=np.float32)
        terminated, truncated = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        resetting = np.zeros(n, dtype=bool)
        episodes = []
        waiting = n
        while waiting:
            obs, reward, term, trunc, info = self.pool.recv()
            i = int(info["env_id"][0])
            if resetting[i]:  # the reply to the reset step sent below: what to act on next
                self._obs[i] = obs[0]
                # a game still counted after a lost life, but the reset restarted it: it ended in the no-ops
                if self._length[i] and info["elapsed_step"][0] == 0:
                    episodes.append((i, float(self._return[i]), int(self._length[i])))
                    self._return[i], self._length[i] = 0.0, 0
                waiting -= 1
                continue
            next_obs[i], rewards[i], terminated[i], truncated[i] = obs[0], reward[0], term[0], trunc[0]
            self._return[i] += info["reward"][0]
            self._length[i] += 1
            if not (term[0] or trunc[0]):
                self._obs[i] = obs[0]
                waiting -= 1
                continue
            if info["terminated"][0] or trunc[0]:  # a whole game ended, not just a life
                episodes.append((i, float(self._return[i]), int(self._length[i])))
                self._return[i], self._length[i] = 0.0, 0
            self.pool.send(np.zeros(1, dtype=np.int32), self._ids[i : i + 1])  # EnvPool resets on the next step
            resetting[i] = True
        episodes.sort()  # replies come in any order; report in environment order, as SerialVecEnv does
        return VecStep(self._obs.copy(), next_obs, rewards, terminated, truncated, episodes)

    def close(self) -> None:
        self.pool.close()


def envpool_task(name: str) -> str:
    """EnvPool's id of the Atari game ``ALE/<Game>-v5`` (``<Game>-v5``); any other name is refused."""
    match = _ATARI.fullmatch(name)
    if match is None:
        raise EnvArgumentError(f"env.vector_mode=envpool is for Atari ids ALE/<Game>-v5, got {name!r}")
    return f"{match.group(1)}-v5"


def make_envpool_vec(name: str, seed: int, num_envs: int, *, train: bool = True, **kwargs: Any) -> EnvPoolVecEnv:
    """``num_envs`` EnvPool environments of the Atari game ``name`` (``ALE/<Game>-v5``), environment i seeded
    ``seed + i``, with `make_atari(train=train, **kwargs)`'s preprocessing (see the module docstring)."""
    task = envpool_task(name)
    check_args(f"{name} with env.vector_mode=envpool", kwargs, ENVPOOL_ARGS)
    envpool = require_extra("envpool", "envpool", "env.vector_mode=envpool")
    if task not in envpool.list_all_envs():
        raise EnvArgumentError(f"EnvPool has no Atari game {task!r} (for {name!r})")
    frame_skip = kwargs.get("frame_skip", 4)
    settings = {
        "noop_max": kwargs.get("noop_max", 30),
        "frame_skip": frame_skip,
        "stack_num": kwargs.get("frame_stack", 4),
        "repeat_action_probability": kwargs.get("repeat_action_probability", 0.25),
        "max_episode_steps": MAX_FRAMES // frame_skip,
        "episodic_life": train,
        "reward_clip": train,
        "use_fire_reset": False,
        "img_height": 84,
        "img_width": 84,
        "gray_scale": True,
    }

    def make_pool(pool_seed: int) -> Any:
        threads = min(num_envs, os.cpu_count() or 1)  # EnvPool's default would be batch_size, i.e. one thread
        return envpool.make(task, env_type="gymnasium", num_envs=num_envs, batch_size=1, num_threads=threads,
                            seed=pool_seed, **settings)  # fmt: skip

    return EnvPoolVecEnv(make_pool, seed, num_envs)
