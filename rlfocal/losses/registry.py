"""The TD-loss registry: each loss is one pure function plus one config dataclass, registered by name.

The registry is what ``loss=NAME`` (Hydra), ``td_loss=NAME`` (``rlfocal.sb3``), the arm label and the report all
read, so a loss added with ``@register_td_loss`` is usable everywhere at once (README: "Adding a TD loss").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from rlfocal.params import ConfigError, check_fields, fail, param

TDLossFn = Callable[[Tensor], Tensor]


@dataclasses.dataclass
class TDLossConfig:
    """A TD loss's hyper-parameters (declared with ``param``) and the per-sample callable of δ they build.

    Subclasses set ``name``'s default to their registry name, point ``function`` at the pure loss, list in
    ``arm_fields`` the fields that always appear in the arm label, and override ``build`` only to keep state.
    """

    name: str = param("", "the registered loss; pick it with loss=NAME")
    function: ClassVar[Callable[..., Tensor]]
    arm_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        expected = type(self).__dataclass_fields__["name"].default
        if self.name != expected:
            fail("loss.name", self.name, f"{expected!r} for this loss: choose another loss with loss=NAME")
        check_fields(self, "loss")
        self.check()

    def check(self) -> None:
        """Cross-field checks beyond the declared ranges (none by default)."""

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``function``: every field but ``name``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}

    def build(self) -> TDLossFn:
        """The per-sample loss of δ, shape [B] → [B]."""
        fn, kwargs = type(self).function, self.kwargs()
        return lambda td: fn(td, **kwargs)


TD_LOSS_CONFIGS: dict[str, type[TDLossConfig]] = {}


def register_td_loss(cls: type[TDLossConfig]) -> type[TDLossConfig]:
    """Class decorator: make ``cls`` the loss called ``cls.name`` (its default) for Hydra, SB3 and the report."""
    name = cls.__dataclass_fields__["name"].default
    if not name or name in TD_LOSS_CONFIGS:
        raise ValueError(f"a TD loss needs a new, non-empty name; got {name!r} (taken: {sorted(TD_LOSS_CONFIGS)})")
    if not hasattr(cls, "function"):
        raise ValueError(f"TD loss {name!r} must set `function` to its pure loss function")
    TD_LOSS_CONFIGS[name] = cls
    return cls


def td_loss_config(name: str, **kwargs: Any) -> TDLossConfig:
    """The validated config of loss ``name`` with the given options (``ConfigError`` on a bad name or option)."""
    if name not in TD_LOSS_CONFIGS:
        raise ConfigError(f"unknown TD loss {name!r}; registered: {', '.join(sorted(TD_LOSS_CONFIGS))}")
    cls = TD_LOSS_CONFIGS[name]
    allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name"]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"{unknown} are not options of TD loss {name!r}; its options: {allowed}")
    return cls(**kwargs)


def option_label(name: str, cls: type | None, values: dict[str, Any], always: tuple[str, ...] = ()) -> str:
    """``name(k=v,...)``: the ``always`` fields, then every other field of the dataclass ``cls`` whose value differs
    from its default (skipping ``name``), so two variants never share a label."""
    shown = [k for k in always if k in values]
    if cls is not None:
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "name"}
        shown += [k for k, v in values.items() if k not in shown and k in defaults and v != defaults[k]]
    params = ",".join(f"{k}={_fmt(values[k])}" for k in shown)
    return name + (f"({params})" if params else "")


def loss_label(loss: dict[str, Any]) -> str:
    """A loss's part of an arm label, e.g. ``focal(gamma=0.3,tau=auto)``: its ``arm_fields``, then any option that
    differs from its default."""
    loss = dict(loss)
    name = loss.pop("name")
    cls = TD_LOSS_CONFIGS.get(name)
    return option_label(name, cls, loss, cls.arm_fields if cls else ())


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
