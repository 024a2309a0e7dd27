"""Vectorised environments for training: N copies of one environment behind one ``step(actions)``.

Both kinds reset an environment in the same step its episode ends, and hand back the true final observation
beside the reset one, so the replay stores ``(obs, action, reward, final_obs)`` and the agent acts on the reset
observation next: nothing is lost at episode boundaries and no step is wasted on a reset.

- ``SerialVecEnv``: the environments stepped one after another in this process. Cheapest for fast
  environments and for N = 1, where it adds about a microsecond to a step (gymnasium's ``SyncVectorEnv`` adds ~80).
- ``AsyncVecEnv``: gymnasium's ``AsyncVectorEnv``, one subprocess each: for slow environments (Atari) on
  machines with cores to spare.
- ``EnvPoolVecEnv`` (``mode="envpool"``, Atari only, the ``[envpool]`` extra): EnvPool's C++ thread pool, its
  next-step resets turned into same-step ones (`rlfocal.envs.envpool_vec`, which lists how its games differ).

Environment i is ``make_env(name, seed + i, ...)``, so N = 1 is exactly the single environment of ``seed`` (in
EnvPool, environment i is seeded ``seed + i`` too, but EnvPool plays its own game of that seed).
All step in two halves, ``step_async(actions)`` then ``step_wait()`` (`SplitStep`), so the training loop can
learn while the environments step (``env.overlap``): ``AsyncVecEnv`` steps in its workers meanwhile and
``EnvPoolVecEnv`` in its threads, ``SerialVecEnv`` only when waited for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import gymnasium as gym
import numpy as np

from rlfocal.envs.registry import make_env

if TYPE_CHECKING:
    from rlfocal.envs.envpool_vec import EnvPoolVecEnv

VECTOR_MODES = ("serial", "async", "envpool")


@dataclass
class VecStep:
    """One step of N environments."""

    obs: np.ndarray  # [N, ...] what to act on next: the reset observation where an episode just ended
    next_obs: np.ndarray  # [N, ...] the true next observation: the final one where an episode just ended
    rewards: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    episodes: list[tuple[int, float, int]] = field(default_factory=list)  # (env, return, length) that finished


StepT = TypeVar("StepT")


class SplitStep(Generic[StepT]):
    """A step in two halves, ``step_async(actions)`` then ``step_wait()``, with bad orders refused. By default the
    step runs in ``step_wait`` (nothing here runs beside this process); `AsyncVecEnv` starts it in its workers."""

    _waiting = False

    def step_async(self, actions: np.ndarray) -> None:
        """Start a step of ``actions``; ``step_wait()`` returns it."""
        if self._waiting:
            raise RuntimeError("step_async called while a step is pending: call step_wait() first")
        self._start(actions)
        self._waiting = True

    def step_wait(self) -> StepT:
        """The step that ``step_async`` started, once it is done."""
        if not self._waiting:
            raise RuntimeError("step_wait called without a pending step: call step_async(actions) first")
        self._waiting = False
        return self._finish()

    def _start(self, actions: np.ndarray) -> None:
        self._actions = actions

    def _finish(self) -> StepT:
        return self.step(self._actions)


class SerialVecEnv(SplitStep[VecStep]):
    """N environments stepped in turn in this process, each reset in the step its episode ends."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        if not env_fns:
            raise ValueError("a vector environment needs at least one environment")
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        space = self.single_observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), dtype=space.dtype)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every environment (environment i with ``seed + i`` when a seed is given)."""
        for i, env in enumerate(self.envs):
            self._obs[i] = env.reset(seed=None if seed is None else seed + i)[0]
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> VecStep:
        n = self.num_envs
        next_obs = np.empty_like(self._obs)
        rewards = np.empty(n, dtype=np.float32)
        terminated, truncated = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
        episodes = []
        for i, env in enumerate(self.envs):
            obs, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            next_obs[i] = obs
            if terminated[i] or truncated[i]:
                if "episode" in info:  # a whole episode (for Atari: a whole game, not a life) ended
                    episodes.append((i, float(info["episode"]["r"]), int(info["episode"]["l"])))
                obs, _ = env.reset()
            self._obs[i] = obs
        return VecStep(self._obs.copy(), next_obs, rewards, terminated, truncated, episodes)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class AsyncVecEnv(SplitStep[VecStep]):
    """gymnasium's ``AsyncVectorEnv`` (a subprocess per environment, same-step autoreset) as a ``SerialVecEnv``;
    between ``step_async`` and ``step_wait`` the workers step while this process does something else."""

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        if not env_fns:
            raise ValueError("a vector environment needs at least one environment")
        self.venv = gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.num_envs = self.venv.num_envs
        self.single_observation_space = self.venv.single_observation_space
        self.single_action_space = self.venv.single_action_space

    def reset(self, seed: int | None = None) -> np.ndarray:
        seeds = None if seed is None else [seed + i for i in range(self.num_envs)]
        return self.venv.reset(seed=seeds)[0]

    def step(self, actions: np.ndarray) -> VecStep:
        self.step_async(actions)
        return self.step_wait()

    def _start(self, actions: np.ndarray) -> None:
        self.venv.step_async(np.asarray(actions))

    def _finish(self) -> VecStep:
        obs, rewards, terminated, truncated, info = self.venv.step_wait()
        next_obs = obs.copy()
        episodes = []
        done = np.flatnonzero(info.get("_final_obs", np.zeros(self.num_envs, bool)))
        final_info: dict[str, Any] = info.get("final_info", {})
        for i in done:
            next_obs[i] = info["final_obs"][i]
            if final_info.get("_episode", np.zeros(self.num_envs, bool))[i]:
                ep = final_info["episode"]
                episodes.append((int(i), float(ep["r"][i]), int(ep["l"][i])))
        return VecStep(obs, next_obs, rewards.astype(np.float32), terminated, truncated, episodes)

    def close(self) -> None:
        self.venv.close()


def make_vec_env(
    name: str, seed: int, num_envs: int, *, mode: str = "serial", train: bool = True, **kwargs: Any
) -> SerialVecEnv | AsyncVecEnv | EnvPoolVecEnv:
    """``num_envs`` copies of ``make_env(name, seed + i, train=train, **kwargs)``, stepped ``serial`` or ``async``;
    ``envpool``: EnvPool's copies of the Atari game ``name`` with the same settings (`make_envpool_vec`)."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if mode not in VECTOR_MODES:
        raise ValueError(f"vector mode must be one of {VECTOR_MODES}, got {mode!r}")
    if mode == "envpool":
        from rlfocal.envs.envpool_vec import make_envpool_vec  # imports envpool_vec's vector types from here

        return make_envpool_vec(name, seed, int(num_envs), train=train, **kwargs)
    make_env(name, seed, train=train, **kwargs).close()  # fail here, with make_env's message, on a bad name
    fns = [partial(make_env, name, seed + i, train=train, **kwargs) for i in range(int(num_envs))]
    return SerialVecEnv(fns) if mode == "serial" else AsyncVecEnv(fns)
