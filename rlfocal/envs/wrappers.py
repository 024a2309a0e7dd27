"""Small wrappers shared by every environment family.

`SeedOnFirstReset` is how `make_env` makes an environment deterministic without resetting it early: the first
`reset()` that the caller makes without a seed is given `seed`, so `make_env(name, s).reset()` is exactly
`gymnasium.make(...).reset(seed=s)`. Later resets without a seed continue the environment's own RNG, as gymnasium
intends (re-seeding every episode would replay the same episode). `make_env` also seeds `action_space` and
`observation_space`, so `action_space.sample()` is reproducible too.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class SeedOnFirstReset(gym.Wrapper):
    """Pass `seed` to the first `reset()` that is called without one (an explicit seed always wins)."""

    def __init__(self, env: gym.Env, seed: int) -> None:
        super().__init__(env)
        self._pending_seed: int | None = int(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset, using the stored seed if this is the first reset and the caller gave none."""
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


class ChannelFirstUint8(gym.ObservationWrapper):
    """(H, W, C) grid of small integer codes -> C-contiguous uint8 (C, H, W), ready for a CNN and compact in replay.

    ``high`` bounds the codes: one number for every channel (MinAtar's 0/1 maps) or one per channel (MiniGrid's).
    """

    def __init__(self, env: gym.Env, high: float | np.ndarray) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        high = np.broadcast_to(np.asarray(high).astype(np.uint8).reshape(-1, 1, 1), (channels, height, width))
        self.observation_space = gym.spaces.Box(0, high.copy(), dtype=np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Move channels first and store one byte per cell."""
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.uint8)
