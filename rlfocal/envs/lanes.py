"""S seeds ("lanes") of E environments each, stepped in lockstep (issue 12): arrays ``[S, E, ...]`` in and out.

`make_lane_envs(name, seeds, E)` gives lane k exactly the environments of `make_vec_env(name, seeds[k], E)`, step for
step, with the same same-step resets and true final observations (see `vector.py`). Three ways to get there:

- `VecEnvLanes`, any environment: one vector environment per lane, stepped in turn (S = 1: the bare vector
  environment behind views with a lane axis).
- `FlatLanes` over one numpy-vectorised environment of all S·E copies, for our deterministic DeepSea
  (`DeepSeaVector`) and Blind Cliffwalk (`CliffwalkVector`): no Python loop per environment. Their dynamics ignore
  seeds, so lane k is the single-seed run of any seed.
- `FlatLanes` over `CartPoleVector` for CartPole (``fast_cartpole=True``, the default): gymnasium's vectorised
  CartPole, reset from one generator per environment seeded as `make_env` seeds it, so it too is step for step the
  single-seed run (bit for bit: the dynamics are the same float64 operations; `tests/test_env_lanes.py` checks it).

Stepping: ``step(actions)``, or ``step_async(actions)`` then ``step_wait()`` for the same `LaneStep`, so the training
loop can learn in between (``env.overlap``); only `VecEnvLanes` of ``mode="async"`` or ``"envpool"`` environments
steps meanwhile, the others step in ``step_wait``.

Seeding: ``reset(seed=s)`` resets lane k as ``make_vec_env(name, seeds[k], E).reset(seed=seeds[k] - seeds[0] + s)``,
i.e. every lane keeps its offset from lane 0 (environment i of lane k gets ``seeds[k] - seeds[0] + s + i``). With
``seeds = [cfg.seed + k]`` and ``s = cfg.seed + global_step`` (a resumed run) lane k resets exactly as a single-seed
run of seed ``cfg.seed + k`` resumed at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.utils.seeding import np_random

from rlfocal.envs.checks import check_args, integer
from rlfocal.envs.cliffwalk import CliffwalkVector
from rlfocal.envs.deepsea_vector import DeepSeaVector
from rlfocal.envs.registry import resolve_env
from rlfocal.envs.vector import VECTOR_MODES, AsyncVecEnv, SerialVecEnv, SplitStep, VecStep, make_vec_env

_FIELDS = ("obs", "next_obs", "rewards", "terminated", "truncated")
# the keywords CartPoleVectorEnv takes exactly as CartPoleEnv does (its sutton_barto_reward gives -0.0 for 0.0)
_FAST_CARTPOLE_ARGS = ("max_episode_steps",)


@dataclass
class LaneStep:
    """One step of S lanes of E environments; each field is `VecStep`'s with a leading lane axis."""

    obs: np.ndarray  # [S, E, ...] what to act on next: the reset observation where an episode just ended
    next_obs: np.ndarray  # [S, E, ...] the true next observation: the final one where an episode just ended
    rewards: np.ndarray  # [S, E] float32
    terminated: np.ndarray  # [S, E] bool
    truncated: np.ndarray  # [S, E] bool
    episodes: list[list[tuple[int, float, int]]]  # per lane: (env, return, length) of the episodes that finished


class VecEnvLanes:
    """One vector environment per lane (``envs[k]`` made with ``seeds[k]``), stepped one after another."""

    def __init__(self, envs: list[SerialVecEnv | AsyncVecEnv], seeds: list[int]) -> None:
        self.envs = envs
        self.num_seeds, self.num_envs = len(envs), envs[0].num_envs
        self.single_observation_space = envs[0].single_observation_space
        self.single_action_space = envs[0].single_action_space
        self._offsets = [s - seeds[0] for s in seeds]

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every lane (lane k with ``seeds[k] - seeds[0] + seed`` when a seed is given): obs ``[S, E, ...]``."""
        if self.num_seeds == 1:
            return self.envs[0].reset(seed)[None]
        seeds = [None if seed is None else seed + offset for offset in self._offsets]
        return np.stack([env.reset(s) for env, s in zip(self.envs, seeds, strict=True)])

    def step(self, actions: np.ndarray) -> LaneStep:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Start every lane's step: in the workers with ``mode="async"`` or ``"envpool"``, else in ``step_wait``."""
        _check_actions(actions, self.num_seeds, self.num_envs)
        for env, a in zip(self.envs, actions, strict=True):
            env.step_async(a)

    def step_wait(self) -> LaneStep:
        """Every lane's step that ``step_async`` started."""
        if self.num_seeds == 1:
            out = self.envs[0].step_wait()
            return LaneStep(out.obs[None], out.next_obs[None], out.rewards[None], out.terminated[None],
                            out.truncated[None], [out.episodes])  # fmt: skip
        outs = [env.step_wait() for env in self.envs]
        stacked = (np.stack([getattr(out, name) for out in outs]) for name in _FIELDS)
        return LaneStep(*stacked, [out.episodes for out in outs])

    def close(self) -> None:
        for env in self.envs:
            env.close()


class FlatLanes(SplitStep[LaneStep]):
    """S lanes of E environments inside one vectorised environment of S·E: lane k is its rows k·E .. k·E + E - 1.
    ``venv.reset(seed)`` must keep each environment's seed offset from environment 0 (as every lane does). In
    this process: ``step_async`` holds the actions, ``step_wait`` steps them."""

    def __init__(self, venv: DeepSeaVector | CliffwalkVector | CartPoleVector, num_seeds: int, num_envs: int) -> None:
        if venv.num_envs != num_seeds * num_envs:
            raise ValueError(f"a flat vector of {venv.num_envs} environments cannot hold {num_seeds} x {num_envs}")
        self.venv = venv
        self.num_seeds, self.num_envs = num_seeds, num_envs
        self.single_observation_space = venv.single_observation_space
        self.single_action_space = venv.single_action_space

    def _lanes(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.num_seeds, self.num_envs, *x.shape[1:])

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every environment (see the module docstring for seeds): obs ``[S, E, ...]``."""
        return self._lanes(self.venv.reset(seed))

    def step(self, actions: np.ndarray) -> LaneStep:
        _check_actions(actions, self.num_seeds, self.num_envs)
        out = self.venv.step(np.reshape(actions, -1))
        episodes: list[list[tuple[int, float, int]]] = [[] for _ in range(self.num_seeds)]
        for i, ret, length in out.episodes:
            episodes[i // self.num_envs].append((i % self.num_envs, ret, length))
        return LaneStep(*(self._lanes(getattr(out, name)) for name in _FIELDS), episodes)

    def close(self) -> None:
        self.venv.close()


class CartPoleVector:
    """gymnasium's vectorised CartPole with `SerialVecEnv`'s same-step resets; environment j starts from
    ``env_seeds[j]`` and draws its resets from its own generator, as `make_env("CartPole-v1", env_seeds[j])` does."""

    def __init__(self, env_seeds: list[int], name: str = "CartPole-v1", **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(_FAST_CARTPOLE_ARGS))
        if unknown:
            raise ValueError(f"fast_cartpole takes only {_FAST_CARTPOLE_ARGS} as keywords, got {unknown}")
        kwargs.setdefault("max_episode_steps", gym.spec(name).max_episode_steps)
        self.num_envs = len(env_seeds)
        self.venv: CartPoleVectorEnv = CartPoleVectorEnv(self.num_envs, **kwargs)
        self.single_observation_space = self.venv.single_observation_space
        self.single_action_space = self.venv.single_action_space
        self._seeds = np.asarray(env_seeds, dtype=np.int64)
        self._rngs: list[np.random.Generator] = []
        self._return = np.zeros(self.num_envs, dtype=np.float64)  # as RecordEpisodeStatistics sums them
        self._length = np.zeros(self.num_envs, dtype=np.int64)

    def _restart(self, envs: np.ndarray) -> None:
        """New episodes for ``envs``: a start state from each one's generator, as `CartPoleEnv.reset` draws it."""
        venv = self.venv
        for j in envs.tolist():
            venv.state[:, j] = self._rngs[j].uniform(low=venv.low, high=venv.high, size=(4,))
        venv.steps[envs] = 0
        venv.prev_done[envs] = False  # the restart is done: the vector env must not reset them again next step
        self._return[envs] = 0.0
        self._length[envs] = 0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every environment; with a seed, environment j's generator restarts from
        ``env_seeds[j] - env_seeds[0] + seed``; without one, from ``env_seeds[j]`` the first time and then goes on."""
        if seed is not None or not self._rngs:
            seeds = self._seeds if seed is None else self._seeds - self._seeds[0] + seed
            self._rngs = [np_random(int(s))[0] for s in seeds]
        self.venv.reset()  # the vector env's own state (steps, bounds); the start states are drawn below
        self._restart(np.arange(self.num_envs))
        return self.venv.state.T.astype(np.float32)

    def step(self, actions: np.ndarray) -> VecStep:
        obs, rewards, terminated, truncated, _ = self.venv.step(np.asarray(actions, dtype=np.int64))
        self._return += rewards
        self._length += 1
        done = np.flatnonzero(terminated | truncated)
        episodes = [(j, float(self._return[j]), int(self._length[j])) for j in done.tolist()]
        if done.size:
            self._restart(done)
            obs, next_obs = self.venv.state.T.astype(np.float32), obs
        else:
            next_obs = obs.copy()
        return VecStep(obs, next_obs, rewards, terminated, truncated, episodes)

    def close(self) -> None:
        self.venv.close()


def _is_cartpole(name: str) -> bool:
    """Whether gymnasium's vectorised entry point for ``name`` is `CartPoleVectorEnv` (CartPole-v0 and -v1)."""
    return gym.spec(name).vector_entry_point == f"{CartPoleVectorEnv.__module__}:{CartPoleVectorEnv.__name__}"


def _check_actions(actions: np.ndarray, num_seeds: int, num_envs: int) -> None:
    """Actions come as ``[S, E]``."""
    if np.shape(actions) != (num_seeds, num_envs):
        raise ValueError(f"actions has shape {np.shape(actions)}, expected ({num_seeds}, {num_envs})")


# Below this many environments in all (S·E) the numpy-vectorised DeepSea, Cliffwalk and CartPole cost more per step
# than one object per environment (DeepSea: 22 µs vs 6 µs at 1, 35 µs vs 130 µs at 32; CartPole: 89 µs vs 8 µs at 1).
VECTORISE_FROM = 8


def make_lane_envs(
    name: str,
    seeds: list[int],
    num_envs: int,
    *,
    mode: str = "serial",
    train: bool = True,
    fast_cartpole: bool = True,
    **kwargs: Any,
) -> VecEnvLanes | FlatLanes:
    """S = ``len(seeds)`` lanes of ``num_envs`` environments; lane k is ``make_vec_env(name, seeds[k], num_envs,
    mode=mode, train=train, **kwargs)`` step for step. Deterministic DeepSea and Cliffwalk are vectorised over all
    S·E environments (``mode`` is then moot, except ``envpool``, which is for Atari only), and so is CartPole unless
    ``fast_cartpole=False`` or a keyword other than ``max_episode_steps`` is given (see `CartPoleVector`)."""
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(integer(0).ok(seed) for seed in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, one per lane, got {seeds!r}")
    check_args("make_lane_envs", {"num_envs": num_envs}, {"num_envs": integer(1)})
    if mode not in VECTOR_MODES:
        raise ValueError(f"vector mode must be one of {VECTOR_MODES}, got {mode!r}")
    family, resolved = resolve_env(name, kwargs, prefix="")
    s, e = len(seeds), int(num_envs)
    if mode == "envpool" or s * e < VECTORISE_FROM:  # envpool: Atari (or make_vec_env's error); a handful: per env
        return _generic_lanes(name, seeds, e, mode, train, kwargs)
    if family == "deepsea" and resolved.pop("deterministic", True):
        return FlatLanes(DeepSeaVector(s * e, **resolved), s, e)
    if family == "cliffwalk":
        return FlatLanes(CliffwalkVector(s * e, **resolved), s, e)
    if fast_cartpole and family == "classic" and _is_cartpole(name) and set(kwargs) <= set(_FAST_CARTPOLE_ARGS):
        return FlatLanes(CartPoleVector([seed + i for seed in seeds for i in range(e)], name, **kwargs), s, e)
    return _generic_lanes(name, seeds, e, mode, train, kwargs)


def _generic_lanes(name: str, seeds, num_envs: int, mode: str, train: bool, kwargs: dict) -> VecEnvLanes:
    """One ``make_vec_env`` per seed lane."""
    envs = [make_vec_env(name, seed, num_envs, mode=mode, train=train, **kwargs) for seed in seeds]
    return VecEnvLanes(envs, list(seeds))
