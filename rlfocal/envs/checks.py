"""Environment keyword arguments, checked before anything is built.

Each environment family declares its arguments as a table `{key: Arg}`; `check_args` holds a call's keywords
against it, so a bad value is one line naming the key and what is allowed (`size=0 is not allowed: must be an
integer >= 1`) and an unknown key names the allowed ones. Families whose other keywords go on to `gymnasium.make`
(classic control, Atari, MiniGrid) are *open*: only their declared keys are checked there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlfocal.params import ConfigError


class EnvArgumentError(ConfigError):
    """A bad environment name or keyword argument (a `ValueError`, and a `ConfigError` so the CLI exits 2)."""


@dataclass(frozen=True)
class Arg:
    """What values one keyword argument takes: in words (`allowed`) and as a test (`ok`)."""

    allowed: str
    ok: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, (float, np.floating))) and math.isfinite(value)


def integer(low: int, high: int | None = None) -> Arg:
    """An integer in [low, high] (no upper bound if `high` is None)."""
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return Arg(allowed, lambda v: _is_int(v) and low <= v and (high is None or v <= high))


def number(low: float, high: float | None = None) -> Arg:
    """A finite number in [low, high] (no upper bound if `high` is None)."""
    allowed = f"a finite number >= {low:g}" if high is None else f"a finite number in [{low:g}, {high:g}]"
    return Arg(allowed, lambda v: _is_real(v) and low <= v and (high is None or v <= high))


def choice(*options: str) -> Arg:
    """One of the given strings."""
    return Arg("one of " + ", ".join(repr(o) for o in options), lambda v: v in options)


def optional(arg: Arg) -> Arg:
    """`arg`, or None (null in a config)."""
    return Arg(f"{arg.allowed}, or null", lambda v: v is None or arg.ok(v))


FLAG = Arg("true or false", lambda v: isinstance(v, (bool, np.bool_)))


def check_args(
    where: str, kwargs: Mapping[str, Any], spec: Mapping[str, Arg], *, open_ended: bool = False, prefix: str = ""
) -> None:
    """Raise `EnvArgumentError` for the first keyword outside `spec` (keys reported as `prefix + key`).

    `where` names the environment in the message for an unknown key; `open_ended` lets unknown keys through (they
    go on to `gymnasium.make`, which reports its own errors).
    """
    for key, value in kwargs.items():
        if key in spec:
            if not spec[key].ok(value):
                raise EnvArgumentError(f"{prefix}{key}={value!r} is not allowed: must be {spec[key].allowed}")
        elif not open_ended:
            allowed = ", ".join(prefix + k for k in spec) or "none"
            raise EnvArgumentError(f"{prefix}{key} is not an argument of {where}; allowed: {allowed}")
