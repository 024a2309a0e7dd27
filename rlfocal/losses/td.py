"""TD losses: pure functions of the TD error, each beside the config dataclass that registers it.

Every loss takes ``td`` = δ_t = y_t − Q(s_t, a_t) (target minus online estimate), shape ``[B]``, and returns the
per-sample loss, shape ``[B]``. The caller applies importance weights, reduces (usually a mean) and reprioritises from
|δ_t|; the only batch statistics used here are the detached batch means that mirror, PAL and normalised focal-TD are
defined with (over dim 0). The focal modulation, the IS weight and the priority signal stay three separate
quantities: this module only computes the first. Arguments are validated (ValueError naming the value); tensor
values never are, so nothing here synchronises with the device. Definitions: docs/design.md §2.

Longer than most files here by design: each loss sits beside its config, so adding one is one edit in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rlfocal.losses.common import BASES, batch_mean, check_max_weight, check_real, check_tau, check_td, power
from rlfocal.losses.registry import TDLossConfig, TDLossFn, register_td_loss
from rlfocal.params import check_value, fail, param


def huber(td: Tensor, kappa: float = 1.0) -> Tensor:
    """Per-sample Huber loss of the TD error: ½δ² if |δ| <= κ, else κ(|δ| − κ/2).

    Huber 1964, "Robust Estimation of a Location Parameter" (https://doi.org/10.1214/aoms/1177703732); the DQN
    "error clipping" of Mnih et al. 2015 (https://www.nature.com/articles/nature14236) is its gradient at κ = 1.

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].
        kappa: threshold κ > 0 between the quadratic and the linear piece.

    Returns:
        Per-sample loss, shape [B].
    """
    check_td(td)
    kappa = check_real("kappa", kappa, minimum=0.0, strict=True)
    # torch's fused kernel computes exactly this piecewise form, in one op instead of five
    return F.huber_loss(td, torch.zeros_like(td), reduction="none", delta=kappa)


@register_td_loss
@dataclass
class HuberLossConfig(TDLossConfig):
    """``loss=huber``: DQN's loss."""

    name: str = "huber"
    kappa: float = param(
        1.0, "Huber threshold κ between the quadratic and the linear piece", unit="TD error", low=0.0, strict=True
    )
    function = staticmethod(huber)


def mse(td: Tensor) -> Tensor:
    """Per-sample squared TD error ½δ², the unclipped DQN loss (Mnih et al. 2015, https://www.nature.com/articles/nature14236).

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].

    Returns:
        Per-sample loss, shape [B].
    """
    check_td(td)
    return 0.5 * td.square()


@register_td_loss
@dataclass
class MSELossConfig(TDLossConfig):
    """``loss=mse``: ½δ², unclipped."""

    name: str = "mse"
    function = staticmethod(mse)


def _base_loss(td: Tensor, base: str, kappa: float) -> Tensor:
    if base == "huber":
        return huber(td, kappa)
    if base == "mse":
        return mse(td)
    raise ValueError(f"base must be one of {BASES}, got {base!r}")


def focal_modulator(loss: Tensor, gamma: float, tau: float | Tensor) -> Tensor:
    """Focal-TD's modulator m = (1 − exp(−L/τ))^γ of a per-sample base loss L (γ > 0; the gauge reads it too)."""
    # 1 − exp(−x) loses all its digits to cancellation for small x; expm1 does not.
    return power(-torch.expm1(-loss / tau), gamma)


def focal_td(
    td: Tensor,
    gamma: float = 2.0,
    tau: float | Tensor = 1.0,
    base: str = "huber",
    kappa: float = 1.0,
    detach_modulator: bool = False,
    normalize: bool = False,
    max_weight: float | None = None,
) -> Tensor:
    """Focal-TD: the base TD loss modulated as focal loss modulates cross-entropy.

    With L = base(δ), the surprise-confidence c = exp(−L/τ) plays the part of focal's p_t = exp(−CE); the modulator
    is m = (1 − c)^γ and the loss m·L. γ = 0 returns L exactly. For small L with the MSE base, m·L ≈ L^(1+γ)/τ^γ,
    whose gradient ∝ |δ|^(2γ)·δ has the shape of PER's expected gradient with priority exponent α = 2γ.

    Lin, Goyal, Girshick, He & Dollár 2017, "Focal Loss for Dense Object Detection", eq. 4
    (https://arxiv.org/abs/1708.02002), carried over to TD errors; PER: Schaul, Quan, Antonoglou & Silver 2016
    (https://arxiv.org/abs/1511.05952).

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].
        gamma: focusing exponent γ >= 0.
        tau: temperature τ > 0 (τ = 1 is the literal analogy), a number or a 0-dim tensor. ``tau: auto`` is the
            caller's: keep a ``RunningMean`` of the detached base loss and pass its value.
        base: ``"huber"`` or ``"mse"``.
        kappa: Huber threshold κ > 0 (ignored for ``"mse"``).
        detach_modulator: if True no gradient flows through m (default False: it does, as in Lin et al.).
        normalize: divide m by its detached batch mean, so the weights average 1 over the batch.
        max_weight: None or a number > 0; clips the weight (m, or m / mean(m) with ``normalize``) at this value.
            Clipped entries get the constant weight ``max_weight`` (no gradient through m).

    Returns:
        Per-sample loss m·L, shape [B].
    """
    check_td(td)
    gamma = check_real("gamma", gamma, minimum=0.0, strict=False)
    check_tau(tau)
    check_max_weight(max_weight)
    loss = _base_loss(td, base, kappa)
    if gamma == 0.0:
        # m ≡ 1 (its batch mean is 1 too): return L itself so that γ = 0 is the base loss bit for bit.
        return loss if max_weight is None or max_weight >= 1.0 else loss * max_weight
    modulator = focal_modulator(loss, gamma, tau)
    if detach_modulator:
        modulator = modulator.detach()
    weight = modulator / batch_mean(modulator.detach()) if normalize else modulator
    if max_weight is not None:
        weight = weight.clamp(max=max_weight)
    return weight * loss


@register_td_loss
@dataclass
class FocalLossConfig(TDLossConfig):
    """``loss=focal``: focal-TD; ``tau: auto`` keeps a running mean of the base loss as τ (state owned by the
    callable ``build`` returns)."""

    name: str = "focal"
    gamma: float = param(2.0, "focusing exponent γ of (1 − exp(−L/τ))^γ", low=0.0)
    tau: Any = param(1.0, "temperature τ of c = exp(−L/τ): a number > 0, or auto (running mean of L)", unit="loss")
    tau_scale: float = param(
        1.0, "with tau=auto, τ = tau_scale × the running mean of L (≫ 1: α = 2γ regime)", low=0.0, strict=True
    )
    base: str = param("huber", "the loss L being modulated", choices=BASES)
    kappa: float = param(1.0, "Huber threshold when base = huber", unit="TD error", low=0.0, strict=True)
    detach_modulator: bool = param(False, "stop the gradient through the modulator")
    normalize: bool = param(False, "divide the modulator by its detached batch mean")
    max_weight: float | None = param(None, "clip of the weight (None: no clip)", low=0.0, strict=True, nullable=True)
    function = staticmethod(focal_td)
    arm_fields = ("gamma", "tau")

    def check(self) -> None:
        if self.tau != "auto":
            if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)):
                fail("loss.tau", self.tau, "a finite number > 0 or auto")
            check_value("loss.tau", self.tau, {"low": 0.0, "strict": True})
            if self.tau_scale != 1.0:
                fail("loss.tau_scale", self.tau_scale, "only with loss.tau=auto (a fixed τ is already set)")

    def kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in super().kwargs().items() if k != "tau_scale"}

    def build(self) -> TDLossFn:
        if self.tau != "auto":
            return super().build()
        kwargs, running = self.kwargs(), RunningMean()
        base = huber if self.base == "huber" else mse
        base_kwargs = {"kappa": self.kappa} if self.base == "huber" else {}

        def focal_auto(td: Tensor) -> Tensor:
            loss = base(td.detach(), **base_kwargs)
            if td.ndim == 1:
                tau = self.tau_scale * running.update(loss.mean())
            else:  # [S, B]: one running mean per seed lane
                tau = (self.tau_scale * running.update(loss.mean(dim=-1), lanes=True)).to(td.dtype)[:, None]
            return focal_td(td, **{**kwargs, "tau": tau})

        return focal_auto


class RunningMean:
    """Exponential moving average of a batch statistic: what callers use for focal-TD's ``tau: auto``.

    Feed it the detached per-sample base loss L each learn step and pass ``value`` as ``tau``; the running mean of L
    makes focal-TD scale-free across games. The first update sets the mean to that batch's mean; later ones blend
    with weight ``1 − momentum``. ``value`` is floored at ``floor`` so that it is always a valid τ. This class is the
    only stateful thing in ``rlfocal.losses``. The mean is a float64 tensor on the statistic's device, updated in
    place: no value is read on the host (no device sync), so a CUDA graph can hold every update after the first.
    """

    def __init__(self, momentum: float = 0.99, floor: float = 1e-8) -> None:
        momentum = check_real("momentum", momentum, minimum=0.0, strict=False)
        if momentum >= 1.0:
            raise ValueError(f"momentum must be a finite number in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.floor = check_real("floor", floor, minimum=0.0, strict=True)
        self._mean: Tensor | None = None

    def update(self, x: Tensor, lanes: bool = False) -> Tensor:
        """Blend in the mean of ``x`` (any shape) and return the new ``value`` (a 0-dim tensor); with ``lanes``
        blend each entry of the vector ``x`` ``[S]`` into its own seed lane's mean (``value`` then ``[S]``)."""
        batch_mean = x.detach().double() if lanes else x.detach().double().mean()
        if self._mean is None:
            self._mean = batch_mean.clone()
        else:  # in place, so that the memory a captured graph holds stays the mean's
            self._mean.copy_(self.momentum * self._mean + (1.0 - self.momentum) * batch_mean)
        return self.value

    @property
    def value(self) -> Tensor:
        """The running mean (>= ``floor``); RuntimeError before the first ``update``."""
        if self._mean is None:
            raise RuntimeError("RunningMean.value read before the first update()")
        return self._mean.clamp(min=self.floor)


def mirror(
    td: Tensor,
    alpha: float = 0.6,
    eps: float = 1e-6,
    base: str = "huber",
    kappa: float = 1.0,
    max_weight: float | None = None,
) -> Tensor:
    """PER's sampling distribution moved into the loss, for uniform sampling: L_i · p_i / mean_batch(p).

    p_i = (|δ_i| + ε)^α is detached. Fujimoto, Meger & Precup 2020, "An Equivalence between Loss Functions and
    Non-Uniform Sampling in Experience Replay", Theorem 1 (https://arxiv.org/abs/2007.06049): under uniform
    sampling this has the same expected gradient as the base loss under PER with exponent α and no IS correction
    (β = 0), up to the factor mean(p)/mean_batch(p), which is 1 when the batch is the buffer.

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].
        alpha: priority exponent α >= 0 (α = 0 gives the base loss).
        eps: ε >= 0 added to |δ| as in PER.
        base: ``"huber"`` or ``"mse"``.
        kappa: Huber threshold κ > 0 (ignored for ``"mse"``).
        max_weight: None or a number > 0; clips the detached weight p_i / mean_batch(p).

    Returns:
        Per-sample loss, shape [B].
    """
    check_td(td)
    alpha = check_real("alpha", alpha, minimum=0.0, strict=False)
    eps = check_real("eps", eps, minimum=0.0, strict=False)
    check_max_weight(max_weight)
    loss = _base_loss(td, base, kappa)
    priority = (td.detach().abs() + eps).pow(alpha)
    weight = priority / batch_mean(priority)
    if max_weight is not None:
        weight = weight.clamp(max=max_weight)
    return weight * loss


@register_td_loss
@dataclass
class MirrorLossConfig(TDLossConfig):
    """``loss=mirror``: PER's weights under uniform sampling."""

    name: str = "mirror"
    alpha: float = param(0.6, "weight exponent: L_i (|δ_i| + ε)^α / batch mean", low=0.0)
    eps: float = param(1e-6, "added to |δ| as in PER", unit="TD error", low=0.0, strict=True)
    base: str = param("huber", "the loss L being reweighted", choices=BASES)
    kappa: float = param(1.0, "Huber threshold when base = huber", unit="TD error", low=0.0, strict=True)
    max_weight: float | None = param(None, "clip of the weight (None: no clip)", low=0.0, strict=True, nullable=True)
    function = staticmethod(mirror)
    arm_fields = ("alpha",)


def lap(td: Tensor, min_priority: float = 1.0) -> Tensor:
    """The loss LAP trains on: Huber with threshold m = ``min_priority``, as the authors' code defines it.

    Fujimoto, Meger & Precup 2020 (https://arxiv.org/abs/2007.06049), Loss-Adjusted Prioritized replay. LAP samples
    with p_i = max(|δ_i|, m)^α (the sampler's business, see ``rlfocal.replay.LAPSampler``) and uses no IS weights.

    Note (deviation from DESIGN.md §2, which says ``huber(td, kappa=m)``): the authors' code
    (github.com/sfujim/LAP-PAL, ``LAP_DDQN.huber`` and ``LAP_TD3.huber``) computes ½δ² if |δ| < m else m·|δ|,
    without the −m²/2 of the textbook Huber loss. We follow the authors: the gradient is the same as
    ``huber(td, kappa=m)`` everywhere, the value is larger by m²/2 for |δ| >= m (and jumps from m²/2 to m² at
    |δ| = m). The authors do not divide by m.

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].
        min_priority: m > 0 (the authors' TD3 code uses 1, their Atari DDQN code 0.01).

    Returns:
        Per-sample loss, shape [B].
    """
    check_td(td)
    m = check_real("min_priority", min_priority, minimum=0.0, strict=True)
    abs_td = td.abs()
    return torch.where(abs_td < m, 0.5 * td.square(), m * abs_td)


@register_td_loss
@dataclass
class LAPLossConfig(TDLossConfig):
    """``loss=lap``: the loss LAP sampling pairs with (``replay=lap``, same ``min_priority``)."""

    name: str = "lap"
    min_priority: float = param(1.0, "m: the quadratic-to-linear threshold", unit="TD error", low=0.0, strict=True)
    function = staticmethod(lap)
    arm_fields = ("min_priority",)


def pal(td: Tensor, alpha: float = 0.4, min_priority: float = 1.0, max_weight: float | None = None) -> Tensor:
    """Prioritized Approximation Loss: LAP's expected gradient under uniform sampling.

    With m = ``min_priority``: m^α·½δ² if |δ| < m, else m·|δ|^(1+α)/(1+α), divided by the detached batch mean of
    max(|δ_j|, m)^α. Its gradient is max(|δ_i|, m)^α · ∇lap(δ_i) / mean_batch(max(|δ|, m)^α), so over a batch that is
    the whole buffer, its uniform-sampling mean gradient equals the expected ``lap`` gradient under LAP's sampling
    (Theorem 1 of the paper; for smaller batches the normaliser is the batch's estimate of the buffer mean).

    Fujimoto, Meger & Precup 2020, "An Equivalence between Loss Functions and Non-Uniform Sampling in Experience
    Replay" (https://arxiv.org/abs/2007.06049); the formula matches the authors' ``PAL`` and its normaliser in
    github.com/sfujim/LAP-PAL (``discrete/PAL_DDQN.py``, ``continuous/PAL_TD3.py``), written per sample here (their
    batch mean of these values is their loss). Their TD3 code normalises the sum of two critics' losses by
    max(|δ1|, |δ2|); with one Q-function, as here, it is the expression above.

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].
        alpha: priority exponent α >= 0 (paper's TD3 default 0.4; the authors' Atari code uses 0.6).
        min_priority: m > 0 (TD3 default 1; the authors' Atari code uses 0.01).
        max_weight: None or a number > 0. PAL's implicit weight relative to ``lap`` is
            w_i = max(|δ_i|, m)^α / mean_batch(max(|δ|, m)^α); with a clip the loss is scaled by the detached
            factor min(1, max_weight / w_i), so the gradient becomes min(w_i, max_weight) · ∇lap(δ_i).

    Returns:
        Per-sample loss, shape [B].
    """
    check_td(td)
    alpha = check_real("alpha", alpha, minimum=0.0, strict=False)
    m = check_real("min_priority", min_priority, minimum=0.0, strict=True)
    check_max_weight(max_weight)
    abs_td = td.abs()
    loss = torch.where(abs_td < m, m**alpha * 0.5 * td.square(), m * abs_td.pow(1.0 + alpha) / (1.0 + alpha))
    priority = abs_td.detach().clamp_min(m).pow(alpha)
    normaliser = priority.mean(dim=-1, keepdim=True)
    loss = loss / normaliser
    if max_weight is not None:
        weight = priority / normaliser
        loss = loss * (weight.clamp(max=max_weight) / weight)
    return loss


@register_td_loss
@dataclass
class PALLossConfig(TDLossConfig):
    """``loss=pal``: LAP's expected gradient under uniform sampling."""

    name: str = "pal"
    alpha: float = param(0.4, "PAL exponent α", low=0.0)
    min_priority: float = param(
        1.0, "m: the priority floor, on the TD error's scale", unit="TD error", low=0.0, strict=True
    )
    max_weight: float | None = param(None, "clip of the weight (None: no clip)", low=0.0, strict=True, nullable=True)
    function = staticmethod(pal)
    arm_fields = ("alpha", "min_priority")
