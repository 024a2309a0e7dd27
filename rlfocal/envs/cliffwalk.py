"""Blind Cliffwalk (Schaul et al. 2016, "Prioritized Experience Replay", §3.1, Appendix B.1, Fig. 1).

A chain of n states 0..n-1 and two actions. In state s one action is "right" and the other "wrong"; which index
is right alternates along the chain: `right_action(s) = s % 2` (0 in state 0, 1 in state 1, 0 in state 2, ...).
"Wrong" ends the episode with reward 0. "Right" moves to s + 1 with reward 0, except from the last state, where it
ends the episode with reward 1. So the only reward sits at the end of a path that a random policy completes with
probability 2^-n: the rare, informative transition that prioritised replay should find quickly.

For the replay experiment (DESIGN.md §4.1) the memory is filled with every transition of all 2^n action sequences
run to termination (`all_transitions`), and learning is measured against the true action values (`true_q`).

Terminal transitions have no next state. We use the state the episode ended in as a placeholder (in
`all_transitions` as `next_state`, and in the environment as the final observation), so that `Q[next_state]` is
always a valid lookup; it must be, and is, masked by `terminated` in any target.
"""

from __future__ import annotations

import itertools
from typing import Any

import gymnasium as gym
import numpy as np

from rlfocal.envs.checks import check_args, integer

CLIFFWALK_ARGS = {"n": integer(1)}
"""CliffwalkEnv's keyword arguments and the values each takes (checked by the constructor and by `make_env`)."""


def right_action(state: int) -> int:
    """The action index that is "right" in `state`: 0, 1, 0, 1, ... along the chain."""
    return state % 2


class CliffwalkEnv(gym.Env):
    """Blind Cliffwalk with n states; observation: float32 one-hot of the state, shape (n,)."""

    metadata = {"render_modes": []}

    def __init__(self, n: int = 8) -> None:
        """Build a chain of `n` >= 1 states. The environment is deterministic; seeds change nothing."""
        check_args("Cliffwalk", {"n": n}, CLIFFWALK_ARGS)
        self.n = int(n)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(self.n,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self._state = 0
        self._done = False

    @property
    def state(self) -> int:
        """The current state index (after termination: the state the episode ended in)."""
        return self._state

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.n, dtype=np.float32)
        obs[self._state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start at state 0."""
        super().reset(seed=seed)
        self._state = 0
        self._done = False
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Right: move on (reward 1 and the end from the last state). Wrong: the end, reward 0."""
        if self._done:
            raise RuntimeError("Cliffwalk episode is over: call reset()")
        if not self.action_space.contains(int(action)):
            raise ValueError(f"Cliffwalk action must be 0 or 1, got {action}")
        if int(action) != right_action(self._state):
            self._done = True
            return self._observation(), 0.0, True, False, {}
        if self._state == self.n - 1:
            self._done = True
            return self._observation(), 1.0, True, False, {}
        self._state += 1
        return self._observation(), 0.0, False, False, {}


class CliffwalkVector:
    """`num_envs` Cliffwalks of n states stepped as numpy arrays (issue 12), each reset in the step its episode ends.

    `make_vec_env("cliffwalk", seed, K, n=n)` step for step (observations, rewards, terminations, final observations
    and finished episodes; `tests/test_vector_envs.py` checks it), with `vector.SerialVecEnv`'s interface. The
    environment is deterministic, so seeds change nothing.
    """

    def __init__(self, num_envs: int, n: int = 8) -> None:
        check_args("CliffwalkVector", {"num_envs": num_envs, "n": n}, {"num_envs": integer(1), **CLIFFWALK_ARGS})
        self.num_envs, self.n = int(num_envs), int(n)
        single = CliffwalkEnv(self.n)
        self.single_observation_space = single.observation_space
        self.single_action_space = single.action_space
        self._envs = np.arange(self.num_envs)
        self._state = np.zeros(self.num_envs, dtype=np.int64)
        self._length = np.zeros(self.num_envs, dtype=np.int64)  # the only return is 1, on the last step: no sums

    def _observation(self) -> np.ndarray:
        """[K, n] float32 one-hot of each state."""
        obs = np.zeros((self.num_envs, self.n), dtype=np.float32)
        obs[self._envs, self._state] = 1.0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Every chain back at state 0; `seed` is taken for the vector interface and changes nothing."""
        self._state[:] = self._length[:] = 0
        return self._observation()

    def step(self, actions: np.ndarray):
        """`CliffwalkEnv.step` for every chain; finished episodes restart in the same step."""
        from rlfocal.envs.vector import VecStep  # not at the top: vector imports the registry, which imports us

        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not ((actions == 0) | (actions == 1)).all():
            raise ValueError(f"CliffwalkVector needs {self.num_envs} actions, each 0 or 1, got {actions!r}")
        right = actions == right_action(self._state)
        treasure = right & (self._state == self.n - 1)
        terminated = ~right | treasure
        rewards = treasure.astype(np.float32)
        self._state += right & ~treasure  # a wrong move or the treasure ends where it stands
        self._length += 1
        next_obs = self._observation()

        done = np.flatnonzero(terminated)
        episodes = [(int(i), float(rewards[i]), int(self._length[i])) for i in done]
        self._state[done] = self._length[done] = 0
        truncated = np.zeros(self.num_envs, dtype=bool)
        return VecStep(self._observation(), next_obs, rewards, terminated, truncated, episodes)

    def close(self) -> None:
        """Nothing to release (the vector interface's `close`)."""


def all_transitions(n: int) -> dict[str, np.ndarray]:
    """Every transition of all 2^n action sequences of length n, each run until the episode ends.

    Sequences are taken in lexicographic order (`itertools.product([0, 1], repeat=n)`) and the actions after the
    end of an episode are ignored, so the same transition appears many times: there are 2^(n+1) - 2 rows, and
    exactly one of them (the last step of the all-right sequence) has reward 1. This is the replay memory of
    Schaul et al.'s Blind Cliffwalk experiment.

    Returns a dict of 1-D arrays, one row per transition: `state` (int64), `action` (int64), `reward` (float32),
    `next_state` (int64; for terminal rows the placeholder described in the module docstring) and `terminated`
    (bool).
    """
    check_args("Cliffwalk", {"n": n}, CLIFFWALK_ARGS)
    rows: list[tuple[int, int, float, int, bool]] = []
    for actions in itertools.product((0, 1), repeat=n):
        for state, action in enumerate(actions):
            if action != right_action(state):
                rows.append((state, action, 0.0, state, True))
                break
            if state == n - 1:
                rows.append((state, action, 1.0, state, True))
            else:
                rows.append((state, action, 0.0, state + 1, False))
    state, action, reward, next_state, terminated = zip(*rows, strict=True)
    return {
        "state": np.array(state, dtype=np.int64),
        "action": np.array(action, dtype=np.int64),
        "reward": np.array(reward, dtype=np.float32),
        "next_state": np.array(next_state, dtype=np.int64),
        "terminated": np.array(terminated, dtype=bool),
    }


def true_q(n: int, gamma: float) -> np.ndarray:
    """The true action values, shape (n, 2): Q(s, right) = gamma^(n-1-s), Q(s, wrong) = 0.

    From state s, n - s right moves reach the reward 1, which arrives on the last of them, so it is discounted
    n - 1 - s times. Schaul et al. use gamma = 1 - 1/n.
    """
    check_args("Cliffwalk", {"n": n}, CLIFFWALK_ARGS)
    q = np.zeros((n, 2), dtype=np.float64)
    for s in range(n):
        q[s, right_action(s)] = gamma ** (n - 1 - s)
    return q
