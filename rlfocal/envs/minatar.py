"""MinAtar (Young & Tian 2019): five miniature Atari games on a 10 x 10 grid.

We use MinAtar's own gymnasium registration (`minatar.gym.register_envs()`, ids `MinAtar/<Game>-v1`, the minimal
action set) with MinAtar's defaults: sticky actions with probability 0.1 and difficulty ramping. Keyword arguments
`sticky_action_prob` and `difficulty_ramping` pass through to `minatar.Environment`.

MinAtar returns a boolean (10, 10, C) array. `ChannelFirstUint8` turns it into a C-contiguous uint8 (C, 10, 10)
array of 0/1: what a PyTorch CNN takes directly, and one byte per cell in replay.

Quirks of minatar 1.0.15 worth knowing: its gym env seeds the game's RNG only when `reset` gets a seed (an
unseeded game draws from OS entropy, so `make_env`'s first seeded reset matters); one RNG drives both the game and
the sticky actions; the sticky "last action" is not cleared between episodes; and there is no time limit, so an
agent that never loses can play forever (pass `max_episode_steps` to `make_env` to add one).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from rlfocal.envs.checks import FLAG, check_args, integer, number
from rlfocal.envs.wrappers import ChannelFirstUint8
from rlfocal.extras import require_extra

MINATAR_IDS = (
    "MinAtar/Asterix-v1",
    "MinAtar/Breakout-v1",
    "MinAtar/Freeway-v1",
    "MinAtar/Seaquest-v1",
    "MinAtar/SpaceInvaders-v1",
)
MINATAR_ARGS = {"sticky_action_prob": number(0.0, 1.0), "difficulty_ramping": FLAG, "max_episode_steps": integer(1)}
"""Every keyword `make_minatar` takes: `minatar.Environment`'s two options and gymnasium's time limit."""


def make_minatar(env_id: str, **kwargs: Any) -> gym.Env:
    """Make `MinAtar/<Game>-v1` with a channel-first uint8 observation (C, 10, 10)."""
    check_args(env_id, kwargs, MINATAR_ARGS)
    require_extra("minatar", "minatar", "MinAtar")
    import minatar.gym

    if env_id not in gym.registry:  # registering twice would make gymnasium warn about overriding
        minatar.gym.register_envs()
    return ChannelFirstUint8(gym.make(env_id, **kwargs), high=1)
