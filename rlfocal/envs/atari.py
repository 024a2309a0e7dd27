"""Atari 2600 games through ale-py, with the standard DQN preprocessing.

Stack, from the emulator outwards:

1. `gymnasium.make("ALE/<Game>-v5", frameskip=1)`: v5 defaults, so sticky actions with
   `repeat_action_probability=0.25` (Machado et al. 2018), the minimal action set, and at most 108,000 frames
   (30 minutes) per game, after which ALE sets `truncated`.
2. `AtariPreprocessing(noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True, scale_obs=False,
   terminal_on_life_loss=False)`: up to 30 no-ops at reset, each action repeated 4 frames with the reward summed,
   the max of the last two frames (to undo sprite flicker), grey, resized to 84 x 84 uint8.
3. `RecordEpisodeStatistics`: at the real end of a game `info["episode"] = {"r", "l", "t"}` holds the raw,
   unclipped score and length in agent steps. This is what evaluation and logging should read in training mode,
   where the reward the agent sees is clipped and "episodes" are lives. (Its length also counts the one no-op
   step that `EpisodicLife` takes after each lost life.)
4. Training only (`train=True`):
   - `EpisodicLife`: losing a life returns `terminated=True`, so the replay memory stores the step with
     `terminated=True` and the TD target does not bootstrap through a life loss (the DQN treatment, Mnih et al.
     2015). The next `reset()` then does *not* restart the game: it takes one no-op step and carries on with the
     remaining lives; only at a real game over does it reset the emulator.
   - `TransformReward(sign_reward)`: reward -> sign(reward) in {-1, 0, 1} (Mnih et al. 2015).
5. `FrameStackObservation(4)`: observation uint8 of shape (4, 84, 84), oldest frame first. At reset gymnasium
   1.x pads with the reset frame repeated (`padding_type="reset"`), so the first stacked observation of an
   episode is four copies of one frame and, after a life loss in training, a fresh stack starts too.

Deviation from the brief's `AtariPreprocessing(terminal_on_life_loss=train)`: gymnasium's own life-loss option does
set `terminated=True` on a life loss, but its `reset()` always resets the emulator, so every life would restart
the whole game and the agent would never see the states that follow a lost life. `EpisodicLife` (the same as
baselines'/SB3's `EpisodicLifeEnv`) keeps the game going instead. Evaluation (`train=False`) sees raw rewards and
whole games, as in Machado et al.'s protocol.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from rlfocal.envs.checks import check_args, integer, number
from rlfocal.extras import require_extra

ATARI_ARGS = {
    "noop_max": integer(0),
    "frame_skip": integer(1),
    "frame_stack": integer(1),
    "repeat_action_probability": number(0.0, 1.0),
}
"""`make_atari`'s own keyword arguments and ALE's sticky-action probability; other keywords go to ALE unchecked."""


def _import_ale() -> Any:
    ale_py = require_extra("ale_py", "atari", "Atari")
    gym.register_envs(ale_py)
    return ale_py


def atari_game_ids() -> list[str]:
    """Every `ALE/<Game>-v5` id that the installed ale-py ships a ROM for (needs ale-py)."""
    _import_ale()
    return sorted(env_id for env_id, spec in gym.registry.items() if spec.namespace == "ALE" and spec.version == 5)


class EpisodicLife(gym.Wrapper):
    """A lost life ends the episode for the learner (`terminated=True`); `reset()` continues the same game.

    At a real game over (or truncation, or an explicit seed) `reset()` resets the emulator; otherwise it takes one
    no-op step (action 0) and returns that observation, so the remaining lives are played. `info["lives"]` comes
    from ale-py unchanged. Same logic as OpenAI baselines' `EpisodicLifeEnv`.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._lives = 0
        self._game_over = True

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step; report `terminated=True` if a life was lost (and lives remain)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the emulator after a game over; after a lost life, carry on with a no-op step."""
        if self._game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the no-op itself ended the game
                obs, info = self.env.reset(options=options)
        self._game_over = False
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info


def sign_reward(reward: float) -> float:
    """The reward clipped to its sign, {-1, 0, 1}, as a Python float: DQN's training reward (Mnih et al. 2015)."""
    return float(np.sign(reward))


def make_atari(
    env_id: str,
    *,
    train: bool = True,
    noop_max: int = 30,
    frame_skip: int = 4,
    frame_stack: int = 4,
    **ale_kwargs: Any,
) -> gym.Env:
    """Make `ALE/<Game>-v5` with the DQN preprocessing described in the module docstring.

    `train=True` adds episodic life and sign-clipped rewards; `train=False` gives raw rewards and whole games (for
    evaluation). Extra keyword arguments go to the ALE environment (for example `repeat_action_probability`).
    Observation: uint8, shape (frame_stack, 84, 84).
    """
    arguments = {"noop_max": noop_max, "frame_skip": frame_skip, "frame_stack": frame_stack, **ale_kwargs}
    check_args(env_id, arguments, ATARI_ARGS, open_ended=True)
    _import_ale()
    require_extra("cv2", "atari", "Atari preprocessing")  # AtariPreprocessing resizes with OpenCV
    if env_id not in gym.registry:
        raise ValueError(f"ale-py has no game {env_id!r}; valid: {', '.join(atari_game_ids())}")
    env = gym.make(env_id, frameskip=1, **ale_kwargs)
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=noop_max,
        frame_skip=frame_skip,
        screen_size=84,
        terminal_on_life_loss=False,  # see EpisodicLife and the module docstring
        grayscale_obs=True,
        scale_obs=False,
    )
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if train:
        env = EpisodicLife(env)
        env = gym.wrappers.TransformReward(env, sign_reward)
    return gym.wrappers.FrameStackObservation(env, stack_size=frame_stack)
