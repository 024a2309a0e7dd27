"""DeepSea (Osband et al.), following bsuite's `bsuite/environments/deep_sea.py` step for step.

The agent is a block falling down an N x N grid, starting top-left (row 0, column 0). Every step it moves down one
row and, by its action, one column left or right (clipped at the walls), so an episode lasts exactly N steps. Which
action index means "right" is drawn per cell: `action_mapping[row, col]` is the index that moves right there, drawn
as bsuite does, `np.random.RandomState(mapping_seed).binomial(1, 0.5, [N, N])`, so a given `mapping_seed` gives
bsuite's own mapping. Moving right costs `unscaled_move_cost / N` (0.01 / N by default); choosing right in the last
column gives +1. The only rewarding policy is "right" N times in a row, with return 1 - 0.01 = 0.99 (every one of
the N right moves pays the cost, the last one included); every other policy gets a return <= 0. An agent that
dithers (epsilon-greedy) needs about 2^N episodes to find it, which is what makes DeepSea a test of deep
exploration.

Differences from bsuite, all in the interface, none in the dynamics:
- The observation is the one-hot N x N grid *flattened* to float32 of shape (N*N,), so an MLP takes it directly.
  After the last step it is all zeros, bsuite's "end of episode null observation".
- It is a gymnasium.Env: `terminated=True` after N steps, never `truncated`. On the last step `info` carries
  `bad_episode` (bsuite's flag: the agent left the diagonal, the only rewarding path) and `total_bad_episodes`.
- The stochastic ("windy") version, `deterministic=False`, draws from gymnasium's `self.np_random` (seeded by
  `reset(seed=...)`) instead of bsuite's `RandomState(seed)`; same probabilities, different random stream.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlfocal.envs.checks import FLAG, check_args, integer, number, optional

DEEPSEA_ARGS = {
    "size": integer(1),
    "deterministic": FLAG,
    "unscaled_move_cost": number(0.0),
    "randomize_actions": FLAG,
    "mapping_seed": optional(integer(0, 2**32 - 1)),  # np.random.RandomState's seed range
}
"""DeepSeaEnv's keyword arguments and the values each takes (checked by the constructor and by `make_env`)."""


class DeepSeaEnv(gym.Env):
    """bsuite's DeepSea as a gymnasium environment, with a flat one-hot float32 observation of shape (N*N,)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        size: int = 10,
        *,
        deterministic: bool = True,
        unscaled_move_cost: float = 0.01,
        randomize_actions: bool = True,
        mapping_seed: int | None = None,
    ) -> None:
        """Build an N x N DeepSea.

        Args:
          size: N, the grid side and the episode length (bsuite sweeps N = 10, 12, ..., 50).
          deterministic: if False, "right" only succeeds with probability 1 - 1/N and the two bottom corners add
            N(0, 1) reward noise (bsuite's deep_sea_stochastic).
          unscaled_move_cost: cost of moving right times N (default 0.01: the optimal return is 0.99).
          randomize_actions: draw the per-cell action mapping (the real DeepSea). False makes action 1 "right"
            everywhere, bsuite's debug mode.
          mapping_seed: seed of the action mapping; None draws a fresh one (as bsuite does). bsuite's sweep uses 42.
        """
        arguments = {
            "size": size,
            "deterministic": deterministic,
            "unscaled_move_cost": unscaled_move_cost,
            "randomize_actions": randomize_actions,
            "mapping_seed": mapping_seed,
        }
        check_args("DeepSea", arguments, DEEPSEA_ARGS)
        self.size = int(size)
        self.deterministic = deterministic
        self.unscaled_move_cost = float(unscaled_move_cost)
        if randomize_actions:
            mapping = np.random.RandomState(mapping_seed).binomial(1, 0.5, [self.size, self.size])
        else:
            mapping = np.ones([self.size, self.size])
        self._action_mapping = mapping.astype(np.int64)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.size * self.size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._row = 0
        self._column = 0
        self._bad_episode = False
        self.total_bad_episodes = 0

    @property
    def action_mapping(self) -> np.ndarray:
        """A copy of the (N, N) array whose entry [row, col] is the action index that moves right there."""
        return self._action_mapping.copy()

    @property
    def position(self) -> tuple[int, int]:
        """The current (row, column); row == N once the episode is over."""
        return self._row, self._column

    def optimal_return(self) -> float:
        """Expected return of always moving right (bsuite's `_optimal_return`)."""
        reach = 1.0 if self.deterministic else (1.0 - 1.0 / self.size) ** (self.size - 1)
        return reach - self.unscaled_move_cost

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.size * self.size, dtype=np.float32)
        if self._row < self.size:  # after the last step: bsuite's all-zero null observation
            obs[self._row * self.size + self._column] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Put the block back in the top-left corner. `seed` only matters for the stochastic version."""
        super().reset(seed=seed)
        self._row = 0
        self._column = 0
        self._bad_episode = False
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One row down and one column left or right; the reward and dynamics are bsuite's `_step`."""
        if self._row >= self.size:
            raise RuntimeError("DeepSea episode is over: call reset()")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"DeepSea action must be 0 or 1, got {action}")
        n = self.size
        reward = 0.0
        action_right = int(action) == self._action_mapping[self._row, self._column]

        if self._column == n - 1 and action_right:  # the treasure
            reward += 1.0
        if not self.deterministic and self._row == n - 1 and self._column in (0, n - 1):
            reward += float(self.np_random.standard_normal())

        if action_right:
            if self.deterministic or self.np_random.random() > 1.0 / n:
                self._column = min(self._column + 1, n - 1)
            reward -= self.unscaled_move_cost / n
        else:
            if self._row == self._column:  # was on the only rewarding path and left it
                self._bad_episode = True
            self._column = max(self._column - 1, 0)
        self._row += 1

        terminated = self._row == n
        info: dict[str, Any] = {}
        if terminated:
            self.total_bad_episodes += int(self._bad_episode)
            info = {"bad_episode": self._bad_episode, "total_bad_episodes": self.total_bad_episodes}
        return self._observation(), reward, terminated, False, info
