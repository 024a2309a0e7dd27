"""K deterministic DeepSeas stepped as numpy arrays (issue 12): no Python loop per environment in the dynamics.

`DeepSeaVector(K, N, ...)` is `make_vec_env("deepsea", seed, K, size=N, ...)` step for step (the same observations,
rewards, terminations and finished episodes; `tests/test_vector_envs.py` checks it), with the same interface and
same-step resets as `vector.SerialVecEnv`. Only the deterministic DeepSea, the one the study runs, is vectorised:
the stochastic one draws from each environment's own generator, which cannot be batched without changing its
random stream. `envs.lanes` steps S seeds' environments as one `DeepSeaVector` of all S·E: the deterministic
dynamics ignore seeds, so every lane is the single-seed run of its seed.
"""

from __future__ import annotations

import numpy as np

from rlfocal.envs.checks import check_args, integer
from rlfocal.envs.deepsea import DeepSeaEnv
from rlfocal.envs.vector import VecStep


class DeepSeaVector:
    """`num_envs` deterministic N x N DeepSeas, each reset in the step its episode ends (all episodes last N)."""

    def __init__(
        self,
        num_envs: int,
        size: int = 10,
        *,
        unscaled_move_cost: float = 0.01,
        randomize_actions: bool = True,
        mapping_seed: int | None = 42,
    ) -> None:
        """Build K DeepSeas; the arguments are `DeepSeaEnv`'s (`mapping_seed` defaults to 42 as in `make_env`)."""
        check_args("DeepSeaVector", {"num_envs": num_envs}, {"num_envs": integer(1)})
        envs = [
            DeepSeaEnv(
                size,
                unscaled_move_cost=unscaled_move_cost,
                randomize_actions=randomize_actions,
                mapping_seed=mapping_seed,
            )
            for _ in range(num_envs)
        ]  # each mapping drawn exactly as a single environment draws its own (a fresh one each if mapping_seed=None)
        self.num_envs, self.size = int(num_envs), int(size)
        self.single_observation_space = envs[0].observation_space
        self.single_action_space = envs[0].action_space
        self.action_mappings = np.stack([env.action_mapping for env in envs])  # [K, N, N]: the index moving right
        self._move_cost = envs[0].unscaled_move_cost / self.size
        self._envs = np.arange(self.num_envs)
        self._row = np.zeros(self.num_envs, dtype=np.int64)
        self._column = np.zeros(self.num_envs, dtype=np.int64)
        self._bad_episode = np.zeros(self.num_envs, dtype=bool)
        self._return = np.zeros(self.num_envs, dtype=np.float64)  # as RecordEpisodeStatistics sums them
        self._length = np.zeros(self.num_envs, dtype=np.int64)
        self.total_bad_episodes = np.zeros(self.num_envs, dtype=np.int64)

    def _observation(self) -> np.ndarray:
        """[K, N*N] one-hot float32 of each block; all zeros where the episode is over (bsuite's null observation)."""
        obs = np.zeros((self.num_envs, self.size * self.size), dtype=np.float32)
        live = self._row < self.size
        obs[self._envs[live], self._row[live] * self.size + self._column[live]] = 1.0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Put every block top-left. `seed` is taken for the vector interface; the deterministic DeepSea ignores it."""
        self._row[:] = self._column[:] = self._length[:] = 0
        self._bad_episode[:] = False
        self._return[:] = 0.0
        return self._observation()

    def step(self, actions: np.ndarray) -> VecStep:
        """Every block one row down and one column left or right; finished episodes restart in the same step."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not ((actions == 0) | (actions == 1)).all():
            raise ValueError(f"DeepSeaVector needs {self.num_envs} actions, each 0 or 1, got {actions!r}")
        n, row, column = self.size, self._row, self._column
        right = actions == self.action_mappings[self._envs, row, column]
        # DeepSeaEnv.step's arithmetic, in its order: +1 for the treasure, then minus the move cost if moving right
        rewards = np.where(right & (column == n - 1), 1.0, 0.0) - np.where(right, self._move_cost, 0.0)
        self._bad_episode |= ~right & (row == column)  # left the only rewarding path
        self._column = np.where(right, np.minimum(column + 1, n - 1), np.maximum(column - 1, 0))
        self._row = row + 1
        self._return += rewards
        self._length += 1
        terminated = self._row == n
        next_obs = self._observation()

        done = np.flatnonzero(terminated)
        episodes = [(int(i), float(self._return[i]), int(self._length[i])) for i in done]
        self.total_bad_episodes[done] += self._bad_episode[done]
        self._row[done] = self._column[done] = self._length[done] = 0
        self._bad_episode[done] = False
        self._return[done] = 0.0
        truncated = np.zeros(self.num_envs, dtype=bool)
        return VecStep(self._observation(), next_obs, rewards.astype(np.float32), terminated, truncated, episodes)

    def close(self) -> None:
        """Nothing to release (the vector interface's `close`)."""
