"""Environments for rlfocal: `make_env(name, seed, train=...)` and our own small environments.

`make_env` (in `registry.py`) covers classic control, MinAtar, Atari, MiniGrid, DeepSea and Blind Cliffwalk;
`ENV_NAMES` lists the names it accepts and `check_env` checks a name and its keywords without building anything.
`deepsea.py` and `cliffwalk.py` hold the two environments written here, with the helpers their experiments need
(the Cliffwalk memory and true Q-values); `DeepSeaVector` steps K DeepSeas as numpy arrays. Nothing here imports
agents or training code.
"""

from rlfocal.envs.checks import EnvArgumentError
from rlfocal.envs.cliffwalk import CliffwalkEnv, all_transitions, right_action, true_q
from rlfocal.envs.deepsea import DeepSeaEnv
from rlfocal.envs.deepsea_vector import DeepSeaVector
from rlfocal.envs.registry import ENV_NAMES, check_env, make_env

__all__ = [
    "ENV_NAMES",
    "CliffwalkEnv",
    "DeepSeaEnv",
    "DeepSeaVector",
    "EnvArgumentError",
    "all_transitions",
    "check_env",
    "make_env",
    "right_action",
    "true_q",
]
