"""Samplers: which stored slots a batch contains, their importance weights, and priority bookkeeping.

A sampler sees slots, never transition data. The storage tells it which slots were written or evicted, and
which window ``[start, start + size)`` (mod capacity) holds transitions. Callers pass raw TD errors to
``update_priorities``; the sampler alone turns them into priorities (ε, α and the running maximum live here,
applied in exactly one place).
"""

from __future__ import annotations

import numpy as np

from rlfocal.replay.sumtree import SumTree


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

    def stats(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PrioritizedSampler:
    """Proportional PER (Schaul et al. 2016, https://arxiv.org/abs/1511.05952, §3.3).

    ``P(i) = p_i^α / Σ_j p_j^α`` with ``p_i = |δ_i| + ε``; new slots get the largest ``p`` seen so far (1.0 at
    first). Sampling is stratified over ``batch_size`` equal segments of the total mass. Importance weights are
    ``w_i = (N P(i))^-β`` divided by their largest value, over the batch (``is_norm="batch"``) or over the
    whole buffer (``"buffer"``, via the tree's minimum priority). β moves linearly from ``beta`` to
    ``beta_final`` over ``beta_steps`` calls of ``sample`` (fixed when ``beta_steps`` is None), or set it directly.
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
    ) -> None:
        _check_range("alpha", alpha, 0.0, None)
        _check_range("beta", beta, 0.0, 1.0)
        _check_range("beta_final", beta_final, 0.0, 1.0)
        if not (isinstance(eps, (int, float)) and eps > 0 and np.isfinite(eps)):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        if beta_steps is not None and (isinstance(beta_steps, bool) or not isinstance(beta_steps, int)
                                       or beta_steps <= 0):  # fmt: skip
            raise ValueError(f"beta_steps must be a positive integer or None, got {beta_steps!r}")
        if is_norm not in ("batch", "buffer"):
            raise ValueError(f"is_norm must be 'batch' or 'buffer', got {is_norm!r}")
        self.capacity = capacity
        self.alpha = float(alpha)
        self.beta0 = float(beta)
        self.beta_final = float(beta_final)
        self.beta_steps = beta_steps
        self.eps = float(eps)
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

    # raw priority p_i = max(|δ_i| + _add, _floor) before the exponent: PER adds ε, LAP floors at m
    _add = property(lambda self: self.eps)
    _floor = 0.0

    def _weights(self, priorities: np.ndarray) -> np.ndarray:
        # (N P(i))^-β / max_j (N P(j))^-β = (p_i / p_min)^-β: N and the total cancel.
        p_min = priorities.min() if self.is_norm == "batch" else self.tree.min_nonzero
        return (priorities / p_min) ** -self._beta

    def on_write(self, slots: np.ndarray) -> None:
        self.tree.update(slots, np.full(slots.shape[0], self.max_priority**self.alpha), validate=False)
        self.refreshed[slots] = self.num_updates

    def on_evict(self, slots: np.ndarray) -> None:
        self.tree.update(slots, np.zeros(slots.shape[0]), validate=False)

    def sample(self, batch_size: int, start: int, size: int, rng: np.random.Generator):
        slots, priorities = self.tree.sample_stratified(rng.random(batch_size))
        weights = self._weights(priorities).astype(np.float32)
        self.num_samples += 1
        if self.beta_steps is not None:
            frac = min(1.0, self.num_samples / self.beta_steps)
            self._beta = self.beta0 + frac * (self.beta_final - self.beta0)
        return slots, weights

    def update_priorities(self, slots: np.ndarray, td_errors: np.ndarray) -> None:
        raw_max = self.tree.set_from_errors(slots, td_errors, self._add, self._floor, self.alpha)
        self.max_priority = max(self.max_priority, raw_max)
        self.num_updates += 1
        self.refreshed[slots] = self.num_updates

    def staleness(self, slots: np.ndarray) -> np.ndarray:
        """Priority updates since each slot's priority was last set (by its write or a refresh)."""
        return self.num_updates - self.refreshed[slots]

    def stats(self) -> dict[str, float]:
        return {"beta": self._beta, "priority_max": self.max_priority, "priority_total": self.tree.total}

    def state_dict(self) -> dict:
        return {
            "tree": self.tree.state_dict(),
            "max_priority": self.max_priority,
            "num_samples": self.num_samples,
            "num_updates": self.num_updates,
            "refreshed": self.refreshed,
            "beta": self._beta,
        }

    def load_state_dict(self, state: dict) -> None:
        self.tree.load_state_dict(state["tree"])
        self.max_priority = float(state["max_priority"])
        self.num_samples = int(state["num_samples"])
        self.num_updates = int(state["num_updates"])
        self.refreshed[:] = state["refreshed"]
        self._beta = float(state["beta"])


class LAPSampler(PrioritizedSampler):
    """Loss-adjusted prioritized sampling (Fujimoto, Meger & Precup 2020, https://arxiv.org/abs/2007.06049).

    ``p_i = max(|δ_i|, min_priority)^α``, new slots at the maximum priority, and no importance weights (the
    loss, Huber with threshold ``min_priority``, corrects the bias instead). Authors' code: github.com/sfujim/LAP-PAL.
    """

    def __init__(self, capacity: int, alpha: float = 0.6, min_priority: float = 1.0) -> None:
        if not (isinstance(min_priority, (int, float)) and min_priority > 0 and np.isfinite(min_priority)):
            raise ValueError(f"min_priority must be a finite number > 0, got {min_priority!r}")
        super().__init__(capacity, alpha=alpha, beta=0.0)
        self.min_priority = float(min_priority)
        self.max_priority = self.min_priority

    _add = 0.0
    _floor = property(lambda self: self.min_priority)

    def _weights(self, priorities: np.ndarray) -> np.ndarray:
        return np.ones_like(priorities)

    def stats(self) -> dict[str, float]:
        return {"priority_max": self.max_priority, "priority_total": self.tree.total}


def _check_range(name: str, value, low: float, high: float | None) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a finite number in {allowed}, got {value!r}")
