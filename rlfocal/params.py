"""Declared settings: each config field carries its meaning, unit and allowed range in one place.

``param(...)`` makes a dataclass field whose metadata says what the value means and which values are allowed;
``check_fields`` enforces it (every float must be finite, however it was set) and ``describe`` prints it for
``--help``. Config dataclasses anywhere in rlfocal (losses, samplers, the run) declare their fields this way.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any


class ConfigError(ValueError):
    """A configuration value outside its allowed range, or a key no config declares."""


def param(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    unit: str = "",
    low: float | None = None,
    high: float | None = None,
    strict: bool = False,
    choices: Sequence[Any] | None = None,
    nullable: bool = False,
    factory: Any = None,
) -> Any:
    """A dataclass field with its one-line meaning, unit and allowed range (``low``/``high`` inclusive unless
    ``strict``; ``choices`` for enumerations; ``nullable`` lets ``None`` through)."""
    integer = isinstance(default, int) and not isinstance(default, bool)
    meta = dict(
        doc=doc, unit=unit, low=low, high=high, strict=strict, choices=choices, nullable=nullable, integer=integer
    )
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _allowed(meta: dict) -> str:
    if meta.get("choices") is not None:
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    low, high, strict = meta.get("low"), meta.get("high"), meta.get("strict")
    kind = "an integer" if meta.get("integer") else "a finite number"
    if low is not None and high is not None:
        return f"{kind} in {'(' if strict else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{kind} {'>' if strict else '>='} {low:g}"
    if high is not None:
        return f"{kind} <= {high:g}"
    return "any value"


def check_value(key: str, value: Any, meta: dict) -> None:
    """Raise ``ConfigError`` naming ``key`` when ``value`` breaks the field's declared range."""
    if value is None:
        if not meta.get("nullable"):
            fail(key, value, "must be set (null is not allowed)")
        return
    if meta.get("choices") is not None:
        if value not in meta["choices"]:
            fail(key, value, "must be " + _allowed(meta))
        return
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            fail(key, value, "must be finite")
        low, high, strict = meta.get("low"), meta.get("high"), meta.get("strict")
        below = low is not None and (value < low or (strict and value == low))
        above = high is not None and value > high
        if below or above:
            fail(key, value, "must be " + _allowed(meta))


def check_fields(obj: Any, prefix: str) -> None:
    """Check every declared field of the dataclass ``obj``; keys are reported as ``prefix.field``."""
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        check_value(key, value, f.metadata)
        if isinstance(value, list):
            for v in value:
                check_value(key, v, f.metadata)


def describe(cls: type, prefix: str) -> Iterator[str]:
    """``key = default  meaning [unit] (allowed)`` lines for ``--help``."""
    for f in dataclasses.fields(cls):
        if not f.metadata.get("doc"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
        allowed = _allowed(f.metadata)
        rng = "" if allowed == "any value" else f" ({allowed})"
        yield f"{prefix}{f.name}={default!r}: {f.metadata['doc']}{unit}{rng}"
