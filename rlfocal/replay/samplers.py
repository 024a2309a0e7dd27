"""Samplers: which stored slots a batch contains, their importance weights, and priority bookkeeping.

A sampler sees slots, never transition data. The storage tells it which slots were written or evicted, and which
window ``[start, start + size)`` (mod capacity) holds transitions. Callers pass raw TD errors to
``update_priorities``; the sampler alone turns them into priorities (``priority``: ε, the floor and α live here,
applied in exactly one place). Each sampler sits beside the config dataclass that registers it as ``replay=NAME``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from rlfocal.params import check_fields, fail, param
from rlfocal.replay.sumtree import SumTree


class Sampler(Protocol):
    """What a replay buffer needs of a sampling rule: slots in, indices + IS weights out, TD errors back."""

    def on_write(self, slots: np.ndarray) -> None: ...
    def on_evict(self, slots: np.ndarray) -> None: ...
    def sample(
        self, batch_size: int, start: int, size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None: ...
    def priority(self, td_errors: np.ndarray) -> np.ndarray: ...
    def stats(self) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def check_finite(errors: np.ndarray) -> None:
    if not np.isfinite(errors).all():
        bad = int(np.flatnonzero(~np.isfinite(errors))[0])
        raise ValueError(f"td_errors must be finite, got {errors[bad]} at position {bad}")


def uniform_slots(batch_size: int, start: int, size: int, capacity: int, rng: np.random.Generator) -> np.ndarray:
    """``batch_size`` slots drawn uniformly, with replacement, from the stored window ``[start, start + size)``."""
    slots = rng.integers(0, size, batch_size)
    return (slots + start) % capacity if start else slots


class UniformSampler:
    """Every stored transition equally likely (with replacement); weights are all 1."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def on_write(self, slots: np.ndarray) -> None:
        pass

    def on_evict(self, slots: np.ndarray) -> None:
        pass

    def sample(self, batch_size: int, start: int, size: int, rng: np.random.Generator):
        return uniform_slots(batch_size, start, size, self.capacity, rng), np.ones(batch_size, dtype=np.float32)

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        check_finite(td_errors)  # nothing to update, but a NaN is still a bug worth stopping on

    def priority(self, td_errors: np.ndarray) -> np.ndarray:
        """Every transition has the same sampling mass."""
        return np.ones_like(td_errors)

    def stats(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def is_weights(priorities: np.ndarray, p_min, beta: float) -> np.ndarray:
    """PER's normalised IS weights from sampled priorities: (N P(i))^-β / max_j (N P(j))^-β = (p_i / p_min)^-β,
    since N and the total cancel (``p_min``: the batch's or the buffer's smallest priority)."""
    return (priorities / p_min) ** -beta


class PrioritizedSampler:
    """Proportional PER (Schaul et al. 2016, https://arxiv.org/abs/1511.05952, §3.3), with an optional floor.

    ``P(i) = p_i^α / Σ_j p_j^α`` with ``p_i = max(|δ_i| + ε, min_priority)``; new slots get the largest ``p`` seen so
    far (at first 1, or ``min_priority`` if larger). Sampling is stratified over ``batch_size`` equal segments of the
    total mass. Importance weights are ``w_i = (N P(i))^-β`` divided by their largest value, over the batch
    (``is_norm="batch"``) or over the whole buffer (``"buffer"``, via the tree's minimum priority); β = 0 gives
    weights of exactly 1. β moves linearly from ``beta`` to ``beta_final`` over ``beta_steps`` calls of ``sample``
    (fixed when ``beta_steps`` is None), or set it directly. LAP is this sampler with ε = 0, a floor and β = 0.
    """

    def __init__(
        self,
        capacity: int,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        *,
        beta_final: float = 1.0,
        beta_steps: int | None = None,
        is_norm: str = "batch",
        min_priority: float = 0.0,
    ) -> None:
        _check_range("alpha", alpha, 0.0, None)
        _check_range("beta", beta, 0.0, 1.0)
        _check_range("beta_final", beta_final, 0.0, 1.0)
        _check_range("eps", eps, 0.0, None)
        _check_range("min_priority", min_priority, 0.0, None)
        if eps <= 0 and min_priority <= 0:
            raise ValueError(f"eps must be > 0 when min_priority is 0 (so no transition starves), got {eps!r}")
        if beta_steps is not None and (
            isinstance(beta_steps, bool) or not isinstance(beta_steps, int) or beta_steps <= 0
        ):
            raise ValueError(f"beta_steps must be a positive integer or None, got {beta_steps!r}")
        if is_norm not in ("batch", "buffer"):
            raise ValueError(f"is_norm must be 'batch' or 'buffer', got {is_norm!r}")
        self.capacity = capacity
        self.alpha = float(alpha)
        self.beta0 = float(beta)
        self.beta_final = float(beta_final)
        self.beta_steps = beta_steps
        self.eps = float(eps)
        self.min_priority = float(min_priority)
        self.is_norm = is_norm
        self.tree = SumTree(capacity, track_min=is_norm == "buffer")
        self.max_priority = 1.0  # raw, before the exponent
        self.num_samples = 0
        self.num_updates = 0  # calls of update_priorities
        self.refreshed = np.zeros(capacity, dtype=np.int64)  # num_updates when each slot's priority was last set
        self._beta = self.beta0

    @property
    def beta(self) -> float:
        """Current IS exponent."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        _check_range("beta", value, 0.0, 1.0)
        self._beta = float(value)

    def priority(self, td_errors: np.ndarray) -> np.ndarray:
        """The sampling mass ``max(|δ| + ε, min_priority)^α`` this sampler would store for these TD errors."""
        return np.maximum(np.abs(td_errors) + self.eps, self.min_priority) ** self.alpha

    def _weights(self, priorities: np.ndarray) -> np.ndarray:
        p_min = priorities.min() if self.is_norm == "batch" else self.tree.min_nonzero
        return is_weights(priorities, p_min, self._beta)

    def step_beta(self) -> None:
        """Count one ``sample`` call and move β along its schedule (shared with the many-seeds sampler)."""
        self.num_samples += 1
        if self.beta_steps is not None:
            frac = min(1.0, self.num_samples / self.beta_steps)
            self._beta = self.beta0 + frac * (self.beta_final - self.beta0)

    def record_update(self, slots: np.ndarray, raw_max: float) -> None:
        """Bookkeeping after the tree took new priorities at ``slots``: max priority, update count, freshness."""
        self.max_priority = max(self.max_priority, raw_max)
        self.num_updates += 1
        self.refreshed[slots] = self.num_updates

    def on_write(self, slots: np.ndarray) -> None:
        self.tree.update(slots, np.full(slots.shape[0], self.max_priority**self.alpha), validate=False)
        self.refreshed[slots] = self.num_updates

    def on_evict(self, slots: np.ndarray) -> None:
        self.tree.update(slots, np.zeros(slots.shape[0]), validate=False)

    def sample(self, batch_size: int, start: int, size: int, rng: np.random.Generator):
        slots, priorities = self.tree.sample_stratified(rng.random(batch_size))
        weights = self._weights(priorities).astype(np.float32)
        self.step_beta()
        return slots, weights

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        raw_max = self.tree.set_from_errors(slots, td_errors, self.eps, self.min_priority, self.alpha)
        self.record_update(slots, raw_max)

    def staleness(self, slots: np.ndarray) -> np.ndarray:
        """Priority updates since each slot's priority was last set (by its write or a refresh)."""
        return self.num_updates - self.refreshed[slots]

    def stats(self) -> dict[str, float]:
        return {"beta": self._beta, "priority_max": self.max_priority, "priority_total": self.tree.total}

    def state_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "eps": self.eps,
            "min_priority": self.min_priority,
            "tree": self.tree.state_dict(),
            "max_priority": self.max_priority,
            "num_samples": self.num_samples,
            "num_updates": self.num_updates,
            "refreshed": self.refreshed,
            "beta": self._beta,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("alpha", "eps", "min_priority"):
            if key in state and float(state[key]) != getattr(self, key):
                raise ValueError(
                    f"the saved sampler has {key}={state[key]!r}, this one {key}={getattr(self, key)!r}: "
                    "priorities stored under one cannot be read under the other"
                )
        self.tree.load_state_dict(state["tree"])
        self.max_priority = float(state["max_priority"])
        self.num_samples = int(state["num_samples"])
        self.num_updates = int(state["num_updates"])
        self.refreshed[:] = state["refreshed"]
        self._beta = float(state["beta"])


class LAPSampler(PrioritizedSampler):
    """Loss-adjusted prioritized sampling (Fujimoto, Meger & Precup 2020, https://arxiv.org/abs/2007.06049).

    PER's sampler with the priority transform ``p_i = max(|δ_i|, min_priority)`` (ε = 0), new slots at the maximum
    priority, and β = 0: no importance weights (the loss, ``loss=lap``, corrects the bias instead). Authors' code:
    github.com/sfujim/LAP-PAL.
    """

    def __init__(self, capacity: int, alpha: float = 0.6, min_priority: float = 1.0) -> None:
        if not (isinstance(min_priority, (int, float)) and min_priority > 0 and np.isfinite(min_priority)):
            raise ValueError(f"min_priority must be a finite number > 0, got {min_priority!r}")
        super().__init__(capacity, alpha=alpha, beta=0.0, eps=0.0, min_priority=min_priority)
        self.max_priority = self.min_priority


def _check_range(name: str, value, low: float, high: float | None) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value!r}")


# ------------------------------------------------------------------------------------- configs (replay=NAME)
@dataclass
class SamplerConfig:
    """A sampling rule's settings and the sampler they build; subclasses register as ``replay=<name>``."""

    name: str = param("", "the sampling rule; pick it with replay=NAME")
    capacity: int = param(50_000, "transitions the buffer holds", unit="transitions", low=1)
    deferred: Any = param(
        "auto",
        "write TD errors back one update late, with no device sync per update: true, false, auto (on CUDA)",
        choices=(False, True, "auto"),
    )
    storage_device: str | None = param(
        None,
        "where the arrays a batch is gathered from live: null (host memory), or the learner's device (cpu, cuda, "
        "cuda:N), which then holds a second copy of them",
        nullable=True,
    )
    prioritized: ClassVar[bool] = False  # whether TD errors go back to the sampler

    def __post_init__(self) -> None:
        expected = type(self).__dataclass_fields__["name"].default
        if self.name != expected:
            fail("replay.name", self.name, f"{expected!r} for this sampler: choose another with replay=NAME")
        check_fields(self, "replay")
        device = self.storage_device
        if device is not None and not (device in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", str(device))):
            fail("replay.storage_device", device, "one of null (host memory), cpu, cuda, cuda:N")

    def build(self, capacity: int, total_updates: int) -> Sampler:
        """The sampler over ``capacity`` slots for a run of ``total_updates`` gradient steps."""
        raise NotImplementedError


SAMPLER_CONFIGS: dict[str, type[SamplerConfig]] = {}


def register_sampler(cls: type[SamplerConfig]) -> type[SamplerConfig]:
    """Class decorator: make ``cls`` the sampler called ``cls.name`` (its default) for ``replay=NAME``."""
    SAMPLER_CONFIGS[cls.__dataclass_fields__["name"].default] = cls
    return cls


@register_sampler
@dataclass
class UniformReplayConfig(SamplerConfig):
    """``replay=uniform``: DQN's replay."""

    name: str = "uniform"

    def build(self, capacity: int, total_updates: int) -> Sampler:
        return UniformSampler(capacity)


@register_sampler
@dataclass
class PERConfig(SamplerConfig):
    """``replay=per``: proportional prioritized replay."""

    name: str = "per"
    alpha: float = param(0.6, "priority exponent: P(i) ∝ (|δ_i| + eps)^alpha", low=0.0)
    beta: float = param(0.4, "initial IS exponent (0: no correction)", low=0.0, high=1.0)
    beta_final: float = param(1.0, "IS exponent at the end of the run", low=0.0, high=1.0)
    anneal_beta: bool = param(True, "β moves linearly from beta to beta_final over the run's gradient steps")
    eps: float = param(1e-6, "added to |δ| so no transition starves", unit="TD error", low=0.0, strict=True)
    is_norm: str = param(
        "batch", "normalise IS weights by the batch max or the buffer max", choices=("batch", "buffer")
    )
    prioritized = True

    def build(self, capacity: int, total_updates: int) -> Sampler:
        steps = max(1, total_updates) if self.anneal_beta else None
        return PrioritizedSampler(
            capacity,
            self.alpha,
            self.beta,
            self.eps,
            beta_final=self.beta_final,
            beta_steps=steps,
            is_norm=self.is_norm,
        )


@register_sampler
@dataclass
class LAPConfig(SamplerConfig):
    """``replay=lap``: loss-adjusted prioritized sampling (pair with ``loss=lap``, same ``min_priority``)."""

    name: str = "lap"
    alpha: float = param(0.6, "priority exponent: P(i) ∝ max(|δ_i|, min_priority)^alpha", low=0.0)
    min_priority: float = param(
        1.0, "m: the priority floor, on the TD error's scale", unit="TD error", low=0.0, strict=True
    )
    prioritized = True

    def build(self, capacity: int, total_updates: int) -> Sampler:
        return LAPSampler(capacity, self.alpha, self.min_priority)
