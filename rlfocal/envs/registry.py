"""`make_env(name, seed)`: one entry point for every environment the experiments use.

Families and names (see `ENV_NAMES`; DeepSea, Cliffwalk and Atari accept any member, not only those listed):

- classic control: CartPole-v1, Acrobot-v1, MountainCar-v0 (any discrete-action gymnasium classic-control id).
  Observation float32 vector.
- MinAtar: MinAtar/{Asterix,Breakout,Freeway,Seaquest,SpaceInvaders}-v1. Observation uint8 (C, 10, 10), 0/1.
- Atari: ALE/<Game>-v5, any game ale-py ships. Observation uint8 (4, 84, 84).
- MiniGrid: MiniGrid-DoorKey-5x5-v0, MiniGrid-Empty-5x5-v0 (aliases minigrid/doorkey5x5, minigrid/empty5x5).
  Observation float32 (147,), or uint8 (3, 7, 7) with `obs="image"`.
- DeepSea: DeepSea-<N>, or "deepsea" with `size=N` (default 10). Observation float32 one-hot (N*N,).
- Cliffwalk: Cliffwalk-<n>, or "cliffwalk" with `n=n` (default 8). Observation float32 one-hot (n,).

Every action space is Discrete. `train` only changes Atari (episodic life and reward clipping in training, raw
games for evaluation); the other families ignore it. Other keyword arguments go to the family's constructor.

Seeding: the returned environment's first `reset()` without a seed uses `seed` (see `wrappers.SeedOnFirstReset`),
and its action and observation spaces are seeded with `seed`, so the same (name, seed, actions) always give the
same trajectory. DeepSea's action mapping is *not* drawn from `seed`: it defaults to bsuite's sweep setting
`mapping_seed=42` (one fixed problem for every run), so a training environment and its evaluation environment,
made with different seeds, face the same MDP. Pass `mapping_seed=` to draw another.

Episode statistics: every environment reports `info["episode"] = {"r", "l", "t"}` (gymnasium's
RecordEpisodeStatistics: raw return, length, wall time) on the step that ends an episode. For Atari that is the end
of a real game, with the raw score, also in training mode where the agent sees clipped rewards and lives.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import gymnasium as gym
import numpy as np

from rlfocal.envs.atari import make_atari
from rlfocal.envs.cliffwalk import CliffwalkEnv
from rlfocal.envs.deepsea import DeepSeaEnv
from rlfocal.envs.minatar import MINATAR_IDS, make_minatar
from rlfocal.envs.minigrid import MINIGRID_ALIASES, MINIGRID_IDS, make_minigrid
from rlfocal.envs.wrappers import Float32Observation, SeedOnFirstReset

CLASSIC_CONTROL_IDS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
ATARI_IDS = tuple(
    f"ALE/{game}-v5" for game in ("Pong", "Breakout", "BattleZone", "DoubleDunk", "NameThisGame", "Phoenix", "Qbert")
)
DEEPSEA_DEFAULT_SIZE = 10
DEEPSEA_MAPPING_SEED = 42  # bsuite/experiments/deep_sea/sweep.py: SETTINGS use mapping_seed=42 for every size
CLIFFWALK_DEFAULT_N = 8

ENV_NAMES: list[str] = [
    *CLASSIC_CONTROL_IDS,
    *MINATAR_IDS,
    *ATARI_IDS,
    *MINIGRID_IDS,
    *MINIGRID_ALIASES,
    f"DeepSea-{DEEPSEA_DEFAULT_SIZE}",
    "deepsea",
    f"Cliffwalk-{CLIFFWALK_DEFAULT_N}",
    "cliffwalk",
]
"""Names `make_env` accepts. DeepSea-<N>, Cliffwalk-<n>, ALE/<Game>-v5 (any game ale-py ships) and the other
discrete-action classic-control ids (e.g. CartPole-v0) also work."""

_FAMILY_PATTERNS = (
    "DeepSea-<N>, Cliffwalk-<n>, ALE/<Game>-v5 (any game ale-py ships), any discrete-action classic-control id"
)
_DEEPSEA = re.compile(r"deepsea(?:-(\d+))?", re.IGNORECASE)
_CLIFFWALK = re.compile(r"cliffwalk(?:-(\d+))?", re.IGNORECASE)
_ATARI = re.compile(r"ALE/\w+-v5")
_CLASSIC_MODULE = "gymnasium.envs.classic_control"


def _size_from(name: str, digits: str | None, kwargs: dict[str, Any], key: str, default: int) -> int:
    """The size given in the name ("DeepSea-12") or as a keyword (size=12); both must agree."""
    from_kwargs = kwargs.pop(key, None)
    if digits is not None and from_kwargs is not None and int(digits) != int(from_kwargs):
        raise ValueError(f"{name!r} says {key}={digits} but {key}={from_kwargs} was passed")
    if digits is not None:
        return int(digits)
    return int(from_kwargs) if from_kwargs is not None else default


def _is_classic_control(name: str) -> bool:
    spec = gym.registry.get(name)
    return spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith(_CLASSIC_MODULE)


def _unknown(name: str) -> ValueError:
    lowered = {n.lower(): n for n in ENV_NAMES}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.4)
    hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
    return ValueError(
        f"Unknown environment {name!r}.{hint} Valid names: {', '.join(ENV_NAMES)}; and the families {_FAMILY_PATTERNS}."
    )


def _build(name: str, train: bool, kwargs: dict[str, Any]) -> gym.Env:
    """Construct the bare (unseeded) environment for `name`, with its family's wrappers."""
    stats = gym.wrappers.RecordEpisodeStatistics
    if _is_classic_control(name):
        env = gym.make(name, **kwargs)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"{name!r} has continuous actions ({env.action_space}); rlfocal's agents need Discrete")
        if env.observation_space.dtype != np.float32:
            env = Float32Observation(env)
        return stats(env)
    if name in MINATAR_IDS:
        return stats(make_minatar(name, **kwargs))
    if name in MINIGRID_IDS or name.lower() in MINIGRID_ALIASES:
        return stats(make_minigrid(MINIGRID_ALIASES.get(name.lower(), name), **kwargs))
    if _ATARI.fullmatch(name):
        return make_atari(name, train=train, **kwargs)  # records raw game statistics inside its own stack
    if match := _DEEPSEA.fullmatch(name):
        size = _size_from(name, match.group(1), kwargs, "size", DEEPSEA_DEFAULT_SIZE)
        kwargs.setdefault("mapping_seed", DEEPSEA_MAPPING_SEED)
        return stats(DeepSeaEnv(size, **kwargs))
    if match := _CLIFFWALK.fullmatch(name):
        n = _size_from(name, match.group(1), kwargs, "n", CLIFFWALK_DEFAULT_N)
        return stats(CliffwalkEnv(n, **kwargs))
    raise _unknown(name)


def make_env(name: str, seed: int, *, train: bool = True, **kwargs: Any) -> gym.Env:
    """Make environment `name`, deterministic given `seed` (see the module docstring for names and options).

    Args:
      name: one of `ENV_NAMES`, or DeepSea-<N>, Cliffwalk-<n>, ALE/<Game>-v5.
      seed: seeds the first `reset()`, the action space and the observation space.
      train: Atari only: True adds episodic life and sign-clipped rewards; False (evaluation) gives raw games.
      **kwargs: passed to the family (e.g. `size=` for deepsea, `n=` for cliffwalk, `obs="image"` for MiniGrid,
        `max_episode_steps=` or `sticky_action_prob=` for MinAtar, `repeat_action_probability=` for Atari).

    Raises:
      ValueError: unknown name (the message lists the valid names and the closest match).
      ImportError: the family's package is missing (the message says what to pip install).
    """
    env = SeedOnFirstReset(_build(name, train, dict(kwargs)), seed)
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env
