"""Argument checks and numerics shared by the TD and the supervised losses (values checked, tensors never read)."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

BASES = ("huber", "mse")
REDUCTIONS = ("none", "mean", "sum")


def check_real(name: str, value: object, *, minimum: float, strict: bool) -> float:
    """``value`` as a float, if it is a finite real number > ``minimum`` (strict) or >= ``minimum``."""
    allowed = f"a finite number {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def check_max_weight(max_weight: float | None) -> None:
    if max_weight is not None:
        check_real("max_weight", max_weight, minimum=0.0, strict=True)


def check_td(td: object) -> None:
    if not isinstance(td, Tensor) or not td.is_floating_point():
        raise ValueError(f"td must be a floating-point tensor of shape [B] or [S, B], got {type(td).__name__}")


def check_tau(tau: float | Tensor) -> None:
    if isinstance(tau, Tensor):
        # A tensor tau (e.g. a running mean kept on the device) is checked for shape only: reading its value would
        # synchronise with the device on every learn step. [S, 1] is one τ per seed lane.
        if not (tau.ndim == 0 or (tau.ndim == 2 and tau.shape[1] == 1)):
            raise ValueError(f"tau must be a number > 0, a 0-dim tensor or [S, 1], got shape {tuple(tau.shape)}")
    else:
        check_real("tau", tau, minimum=0.0, strict=True)


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def power(base: Tensor, gamma: float) -> Tensor:
    """``base ** gamma`` for ``base`` in [0, 1], with a finite gradient at ``base = 0``."""
    # d/dx x^γ = γ·x^(γ−1) is infinite at x = 0 for γ < 1, and the chain rule then multiplies it by 0 (the base loss
    # is 0 there): NaN. Flooring the base at the smallest normal float keeps every factor finite (clamp's backward
    # zeroes the floored entries), and moves the value by at most tiny^γ, which then multiplies a loss of ~0.
    return base.clamp_min(torch.finfo(base.dtype).tiny).pow(gamma)


def batch_mean(x: Tensor) -> Tensor:
    """Mean over the batch (the last dim, so per seed lane for [S, B]), kept broadcastable and floored so an
    all-zero batch divides to 0, not NaN."""
    return x.mean(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
