"""Expert policies, for runs that place demonstrations in replay (``demonstrations=K``, issue 14).

On DeepSea, ε-greedy needs about 2^N episodes to find the treasure, so a replay comparison there measures
exploration. Playing the optimal policy for the first K episodes of every environment puts the rewarding chain in
the buffer at the start; what is left to measure is how fast replay propagates that one reward back along the chain
(the PER paper's motivating case). An expert is a pure function of the observation, so it works behind every
vector and lane wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlfocal.envs.checks import EnvArgumentError
from rlfocal.envs.cliffwalk import right_action
from rlfocal.envs.deepsea import DeepSeaEnv
from rlfocal.envs.registry import resolve_env

ExpertPolicy = Callable[[np.ndarray], np.ndarray]
EXPERT_ENVS = ("deepsea", "cliffwalk")


def expert_policy(name: str, kwargs: Mapping[str, Any]) -> ExpertPolicy:
    """The optimal policy of environment ``name`` (with ``kwargs``) as ``obs [..., D] -> actions [...]`` (int64).

    DeepSea (deterministic): "right" in every cell, read from the action mapping its ``mapping_seed`` draws.
    Blind Cliffwalk: the right action of each state. Raises ``EnvArgumentError`` naming the environment otherwise.
    """
    family, resolved = resolve_env(name, dict(kwargs), prefix="env.kwargs.")
    if family == "deepsea":
        if not resolved.get("deterministic", True):
            raise EnvArgumentError("demonstrations need the deterministic DeepSea (got env.kwargs.deterministic=false)")
        if resolved.get("mapping_seed") is None:
            raise EnvArgumentError("demonstrations need a fixed DeepSea mapping (got env.kwargs.mapping_seed=null)")
        right = DeepSeaEnv(**resolved).action_mapping.reshape(-1)  # [N*N]: the index moving right, by cell
        return lambda obs: right[np.argmax(obs, axis=-1)]
    if family == "cliffwalk":
        return lambda obs: right_action(np.argmax(obs, axis=-1))  # state % 2 works on arrays of states
    raise EnvArgumentError(f"demonstrations need an expert policy; {name!r} has none (those with one: {EXPERT_ENVS})")


class Demonstrator:
    """Plays the expert in each of ``[S, E]`` environments for its first ``episodes`` episodes, then hands over
    (``episodes=0``: never plays, so the training loop needs no special case).

    ``done`` counts each environment's finished demonstration episodes; a checkpoint keeps it, so a resumed run
    does not demonstrate again.
    """

    def __init__(self, policy: ExpertPolicy | None, episodes: int, done: np.ndarray) -> None:
        self.policy, self.episodes, self.done = policy, int(episodes), np.array(done, dtype=np.int64)
        self.active = bool((self.done < self.episodes).any())

    def actions(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """The expert's actions where an environment still owes demonstration episodes, ``actions`` elsewhere."""
        if not self.active:
            return actions
        return np.where(self.done < self.episodes, self.policy(obs), actions)

    def record(self, ended: np.ndarray) -> None:
        """Count the episodes that ended this step (``ended``: ``[S, E]`` bool)."""
        if self.active:
            self.done += ended & (self.done < self.episodes)
            self.active = bool((self.done < self.episodes).any())
