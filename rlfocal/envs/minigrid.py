"""MiniGrid (Chevalier-Boisvert et al.) gridworlds, reduced to the agent's partial view.

MiniGrid observes a dict: a 7 x 7 x 3 egocentric view (object type, colour, door state per cell), the agent's
direction and a mission string. We keep the view only (MiniGrid's `ImgObsWrapper`, the usual choice for
DoorKey/Empty, whose mission never changes). The view is already rotated to the agent's heading, so the absolute
direction it drops matters little in these tasks.

Two encodings, chosen with `obs=`:
- `"flat"` (default): the view flattened (C order, 147 values) to float32 and divided per channel by that
  channel's largest code (object 10, colour 5, state 2, from `minigrid.core.constants`), so every entry is in
  [0, 1]. The codes are categorical; scaling them keeps an MLP's inputs in range without a one-hot 3x wider.
- `"image"`: channel-first uint8 (3, 7, 7) with the raw codes, for a small CNN.

Episodes end at the goal (`terminated`, reward 1 - 0.9 * steps / max_steps) or are cut at MiniGrid's own
`max_steps` (`truncated`; 250 for DoorKey-5x5, 100 for Empty-5x5).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlfocal.envs.checks import check_args, choice, integer
from rlfocal.envs.wrappers import ChannelFirstUint8
from rlfocal.extras import require_extra

MINIGRID_IDS = ("MiniGrid-DoorKey-5x5-v0", "MiniGrid-Empty-5x5-v0")
MINIGRID_ALIASES = {"minigrid/doorkey5x5": "MiniGrid-DoorKey-5x5-v0", "minigrid/empty5x5": "MiniGrid-Empty-5x5-v0"}
MINIGRID_ARGS = {"obs": choice("flat", "image"), "max_steps": integer(1), "max_episode_steps": integer(1)}
"""`make_minigrid`'s encoding and the two time limits (MiniGrid's own, gymnasium's); other keywords go to MiniGrid."""


def _channel_max() -> np.ndarray:
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

    return np.array(
        [max(OBJECT_TO_IDX.values()), max(COLOR_TO_IDX.values()), max(STATE_TO_IDX.values())], dtype=np.float32
    )


class FlatScaledView(gym.ObservationWrapper):
    """(7, 7, 3) uint8 view -> float32 vector (147,) in [0, 1], each channel divided by its largest code."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._scale = 1.0 / _channel_max()
        size = int(np.prod(env.observation_space.shape))
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(size,), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Scale each channel into [0, 1] and flatten."""
        return (observation.astype(np.float32) * self._scale).reshape(-1)


def make_minigrid(env_id: str, *, obs: str = "flat", **kwargs: Any) -> gym.Env:
    """Make a MiniGrid environment observing its partial view, `obs="flat"` (float32) or `"image"` (uint8)."""
    check_args(env_id, {"obs": obs, **kwargs}, MINIGRID_ARGS, open_ended=True)
    minigrid = require_extra("minigrid", "minigrid", "MiniGrid")
    from minigrid.wrappers import ImgObsWrapper

    gym.register_envs(minigrid)
    env = ImgObsWrapper(gym.make(env_id, **kwargs))
    return FlatScaledView(env) if obs == "flat" else ChannelFirstUint8(env, high=_channel_max())
