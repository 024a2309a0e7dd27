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
games for evaluation); the other families ignore it. Other keyword arguments go to the family's constructor;
`check_env` checks a name and its keywords without building anything (each family's table of arguments: DeepSea,
Cliffwalk and MinAtar take only their own; classic control, Atari and MiniGrid pass unknown ones on to gymnasium).

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
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from rlfocal.envs.atari import ATARI_ARGS, make_atari
from rlfocal.envs.checks import Arg, EnvArgumentError, check_args, integer
from rlfocal.envs.cliffwalk import CLIFFWALK_ARGS, CliffwalkEnv
from rlfocal.envs.deepsea import DEEPSEA_ARGS, DeepSeaEnv
from rlfocal.envs.minatar import MINATAR_ARGS, MINATAR_IDS, make_minatar
from rlfocal.envs.minigrid import MINIGRID_ALIASES, MINIGRID_ARGS, MINIGRID_IDS, make_minigrid
from rlfocal.envs.wrappers import SeedOnFirstReset

CLASSIC_CONTROL_IDS = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0")
_ATARI_GAMES = ("Pong", "Breakout", "BattleZone", "DoubleDunk", "NameThisGame", "Phoenix", "Qbert", "Seaquest")
ATARI_IDS = tuple(f"ALE/{game}-v5" for game in (*_ATARI_GAMES, "SpaceInvaders"))
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

# family: (its keyword arguments, whether unknown keywords pass on to gymnasium.make)
_FAMILY_ARGS: dict[str, tuple[Mapping[str, Arg], bool]] = {
    "classic": ({"max_episode_steps": integer(1)}, True),
    "minatar": (MINATAR_ARGS, False),
    "minigrid": (MINIGRID_ARGS, True),
    "atari": (ATARI_ARGS, True),
    "deepsea": (DEEPSEA_ARGS, False),
    "cliffwalk": (CLIFFWALK_ARGS, False),
}
# the families whose size can be in the name ("DeepSea-12"): pattern, keyword, default
_SIZED = {"deepsea": (_DEEPSEA, "size", DEEPSEA_DEFAULT_SIZE), "cliffwalk": (_CLIFFWALK, "n", CLIFFWALK_DEFAULT_N)}


def one_hot_observations(name: str) -> bool:
    """Whether `name`'s observations are one-hot rows (0/1, at most one 1): DeepSea and Cliffwalk (the null
    observation after DeepSea's end is all zeros). Such inputs let an MLP's first layer be a lookup."""
    return _family(name) in ("deepsea", "cliffwalk")


def _is_classic_control(name: str) -> bool:
    spec = gym.registry.get(name)
    return spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith(_CLASSIC_MODULE)


def _unknown(name: str) -> EnvArgumentError:
    lowered = {n.lower(): n for n in ENV_NAMES}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.4)
    hint = f" Did you mean {lowered[close[0]]!r}?" if close else ""
    return EnvArgumentError(
        f"Unknown environment {name!r}.{hint} Valid names: {', '.join(ENV_NAMES)}; and the families {_FAMILY_PATTERNS}."
    )


def _family(name: str) -> str:
    """Which family `name` belongs to, from the name alone (no optional package is imported)."""
    if _is_classic_control(name):
        return "classic"
    if name in MINATAR_IDS:
        return "minatar"
    if name in MINIGRID_IDS or name.lower() in MINIGRID_ALIASES:
        return "minigrid"
    if _ATARI.fullmatch(name):
        return "atari"
    for family, (pattern, *_) in _SIZED.items():
        if pattern.fullmatch(name):
            return family
    raise _unknown(name)


def resolve_env(name: str, kwargs: Mapping[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    """`name`'s family and its checked keywords, with a size from the name ("DeepSea-12") and defaults filled in."""
    family, kwargs = _family(name), dict(kwargs)
    if family in _SIZED:
        pattern, key, default = _SIZED[family]
        digits = pattern.fullmatch(name).group(1)
        if digits is not None:
            if key in kwargs and kwargs[key] != int(digits):
                raise EnvArgumentError(f"{prefix}{key}={kwargs[key]!r} is not allowed: {name!r} says {key}={digits}")
            kwargs[key] = int(digits)
        kwargs.setdefault(key, default)
    if family == "deepsea":
        kwargs.setdefault("mapping_seed", DEEPSEA_MAPPING_SEED)
    spec, open_ended = _FAMILY_ARGS[family]
    check_args(name, kwargs, spec, open_ended=open_ended, prefix=prefix)
    return family, kwargs


def check_env(name: str, kwargs: Mapping[str, Any], *, prefix: str = "env.kwargs.") -> None:
    """Check an environment name and its keywords without building anything or importing an optional package.

    Raises `EnvArgumentError` (a `ValueError`) in one line: an unknown name lists every valid one; a bad keyword is
    named as `prefix + key` with what is allowed (`env.kwargs.size=0 is not allowed: must be an integer >= 1`).
    """
    resolve_env(name, kwargs, prefix)


def _build(family: str, name: str, train: bool, kwargs: dict[str, Any]) -> gym.Env:
    """Construct the bare (unseeded) environment for `name`, with its family's wrappers."""
    stats = gym.wrappers.RecordEpisodeStatistics
    if family == "classic":
        env = gym.make(name, **kwargs)
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"{name!r} has continuous actions ({env.action_space}); rlfocal's agents need Discrete")
        if env.observation_space.dtype != np.float32:  # our networks and replay expect float32 vectors
            env = gym.wrappers.DtypeObservation(env, np.float32)
        return stats(env)
    if family == "minatar":
        return stats(make_minatar(name, **kwargs))
    if family == "minigrid":
        return stats(make_minigrid(MINIGRID_ALIASES.get(name.lower(), name), **kwargs))
    if family == "atari":
        return make_atari(name, train=train, **kwargs)  # records raw game statistics inside its own stack
    if family == "deepsea":
        return stats(DeepSeaEnv(**kwargs))
    return stats(CliffwalkEnv(**kwargs))


def make_env(name: str, seed: int, *, train: bool = True, **kwargs: Any) -> gym.Env:
    """Make environment `name`, deterministic given `seed` (see the module docstring for names and options).

    Args:
      name: one of `ENV_NAMES`, or DeepSea-<N>, Cliffwalk-<n>, ALE/<Game>-v5.
      seed: seeds the first `reset()`, the action space and the observation space.
      train: Atari only: True adds episodic life and sign-clipped rewards; False (evaluation) gives raw games.
      **kwargs: passed to the family (e.g. `size=` for deepsea, `n=` for cliffwalk, `obs="image"` for MiniGrid,
        `max_episode_steps=` or `sticky_action_prob=` for MinAtar, `repeat_action_probability=` for Atari).

    Raises:
      ValueError: unknown name (the message lists the valid names and the closest match), or a keyword outside
        what the family allows (the message names it and what is allowed).
      rlfocal.extras.MissingExtra: the family's package is missing (the message says which extra to install).
    """
    family, kwargs = resolve_env(name, kwargs, prefix="")
    env = SeedOnFirstReset(_build(family, name, train, kwargs), seed)
    env.action_space.seed(seed)
    env.observation_space.seed(seed)
    return env
