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
  `bad_episode` (bsuite's flag, see `deepsea_solved`) and `total_bad_episodes`.
- The stochastic ("windy") version, `deterministic=False`, draws from gymnasium's `self.np_random` (seeded by
  `reset(seed=...)`) instead of bsuite's `RandomState(seed)`; same probabilities, different random stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

# bsuite's experiment length (bsuite/experiments/deep_sea/sweep.py: NUM_EPISODES = 10000).
BSUITE_NUM_EPISODES = 10_000


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
        if size < 1:
            raise ValueError(f"DeepSea size must be >= 1, got {size}")
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


def _bsuite_log_episode(episode: int) -> bool:
    """bsuite's `_logarithmic_logging`: True at episodes {1, 1.2, 1.4, 1.7, 2, 2.5, 3, ..., 9, 10} x 10^k."""
    ratios = (1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
    exponent = np.floor(np.log10(max(1, episode)))
    return any(episode == 10**exponent * r for r in ratios)


def deepsea_first_solved_episode(
    bad_episodes: Sequence[bool],
    *,
    thresh: float = 0.8,
    num_episodes: int = BSUITE_NUM_EPISODES,
    bsuite_log_grid: bool = False,
) -> int | None:
    """First episode (1-based) at which the running fraction of bad episodes drops below `thresh`, else None.

    This is bsuite's `find_solution` (bsuite/experiments/deep_sea/analysis.py): with `total_bad_episodes` counted
    as in the environment, `avg_bad_episodes = total_bad_episodes / episode` and the solution episode is the first
    logged episode `<= num_episodes` with `avg_bad_episodes < thresh` (bsuite's default `thresh=0.8`).

    An episode is "bad" when the agent took a "left" while on the diagonal (row == column), i.e. when it left the
    only rewarding path. In the deterministic DeepSea that is exactly "the episode did not collect the +1".

    bsuite only evaluates this at the episodes its logger writes (a logarithmic grid: 1, 2, ..., 10, 12, 14, 17,
    20, 25, 30, 40, ...). We check every episode by default, which can report a solve slightly earlier;
    `bsuite_log_grid=True` checks only bsuite's grid.
    """
    bad = np.asarray(bad_episodes, dtype=bool)[:num_episodes]
    if bad.size == 0:
        return None
    episodes = np.arange(1, bad.size + 1)
    below = np.cumsum(bad) / episodes < thresh
    if bsuite_log_grid:
        below &= np.array([_bsuite_log_episode(int(e)) for e in episodes], dtype=bool)
    hits = np.flatnonzero(below)
    return int(episodes[hits[0]]) if hits.size else None


def deepsea_solved(
    episode_returns: Sequence[float],
    size: int,
    *,
    thresh: float = 0.8,
    forgiveness: float = 100.0,
    num_episodes: int = BSUITE_NUM_EPISODES,
    bsuite_log_grid: bool = False,
) -> bool:
    """bsuite's per-size "solved" test for deep_sea, from a run's per-episode returns (in order).

    bsuite's results notebook states it as: "Score is the percentage of N for which average regret < 0.9 faster
    than 2^N." Its code (bsuite/experiments/deep_sea/analysis.py, `score`) is:

        plt_df = find_solution(df)          # first episode with total_bad_episodes / episode < 0.8
        beat_dither = (plt_df.solved & (plt_df.episode < 2 ** plt_df['size'] + forgiveness))  # forgiveness=100

    so a size N counts as solved when the running fraction of bad episodes falls below 0.8 within the first
    10,000 episodes and before episode 2^N + 100. We follow the code (0.8; the notebook's text and plot label
    say 0.9). The bsuite score of an agent is the mean of this over the sizes it ran.

    Returns are turned into bad-episode flags by `return < 0.5`, which is exact for the deterministic DeepSea
    with the default cost (a good episode is N right moves and returns 0.99, a bad one returns <= 0). For the
    stochastic version pass the environment's `info["bad_episode"]` flags to `deepsea_first_solved_episode`.
    """
    bad = np.asarray(episode_returns, dtype=np.float64) < 0.5
    episode = deepsea_first_solved_episode(
        bad, thresh=thresh, num_episodes=num_episodes, bsuite_log_grid=bsuite_log_grid
    )
    return episode is not None and episode < 2**size + forgiveness
