"""Optional dependencies: import one, or fail with the single pip command that installs its extra.

Only the main job's packages are base dependencies (pyproject.toml); the other environment families, sweep
launchers, SB3 and the supervised study each live in an extra (`[atari]`, `[minatar]`, `[minigrid]`, `[sweep]`,
`[sb3]`, `[supervised]`, `[wandb]`), and `require_extra` is how code asks for one.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message is one line naming the extra that installs it."""


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import and return `module`; if it is not installed, raise `MissingExtra` saying how to install `extra`.

    `what` names the feature that needs it ("MinAtar environments"). Only a missing `module` (or a missing parent
    package of it) becomes `MissingExtra`: an installed package that fails on import raises its own error.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not (module == err.name or module.startswith(err.name + ".")):
            raise
        raise MissingExtra(
            f'{what} needs {module}: pip install -e ".[{extra}]" (or pip install "rlfocal[{extra}]")'
        ) from err
