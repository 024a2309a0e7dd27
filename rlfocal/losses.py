"""TD losses and supervised focal losses: pure functions of tensors that return per-sample values.

TD losses take the TD error of a batch, ``td`` = δ_t = y_t − Q(s_t, a_t) (target minus online estimate), shape
``[B]``, and return the per-sample loss, shape ``[B]``. The caller applies importance weights, reduces (usually a
mean) and reprioritises from |δ_t|; the only batch statistics used here are the detached batch means that mirror,
PAL and normalised focal-TD are defined with (taken over dim 0). The focal modulation, the IS weight and the priority
signal stay three separate quantities: this module only computes the first.

Arguments are validated (ValueError naming the value and what is allowed); tensor values never are, so nothing here
synchronises with the device. Definitions: the study design (DESIGN.md §2 TD losses, §3 supervised focal losses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TD_LOSSES",
    "RunningMean",
    "focal_td",
    "huber",
    "lap",
    "mirror",
    "mse",
    "pal",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
]

_BASES = ("huber", "mse")
_REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------------------------------- validation


def _check_real(name: str, value: object, *, minimum: float, strict: bool) -> float:
    """``value`` as a float, if it is a finite real number > ``minimum`` (strict) or >= ``minimum``."""
    allowed = f"a finite number {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def _check_max_weight(max_weight: float | None) -> None:
    if max_weight is not None:
        _check_real("max_weight", max_weight, minimum=0.0, strict=True)


def _check_td(td: object) -> None:
    if not isinstance(td, Tensor) or not td.is_floating_point():
        raise ValueError(f"td must be a floating-point tensor of shape [B], got {type(td).__name__}")


def _check_tau(tau: float | Tensor) -> None:
    if isinstance(tau, Tensor):
        # A tensor tau (e.g. a running mean kept on the device) is checked for shape only: reading its value would
        # synchronise with the device on every learn step.
        if tau.ndim != 0:
            raise ValueError(f"tau must be a number > 0 or a 0-dim tensor, got a tensor of shape {tuple(tau.shape)}")
    else:
        _check_real("tau", tau, minimum=0.0, strict=True)


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _power(base: Tensor, gamma: float) -> Tensor:
    """``base ** gamma`` for ``base`` in [0, 1], with a finite gradient at ``base = 0``."""
    # d/dx x^γ = γ·x^(γ−1) is infinite at x = 0 for γ < 1, and the chain rule then multiplies it by 0 (the base loss
    # is 0 there): NaN. Flooring the base at the smallest normal float keeps every factor finite (clamp's backward
    # zeroes the floored entries), and moves the value by at most tiny^γ, which then multiplies a loss of ~0.
    return base.clamp_min(torch.finfo(base.dtype).tiny).pow(gamma)


def _batch_mean(x: Tensor) -> Tensor:
    """Mean over the batch (dim 0), kept broadcastable and floored so an all-zero batch divides to 0, not NaN."""
    return x.mean(dim=0, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


# ------------------------------------------------------------------------------------------------ TD losses


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
    _check_td(td)
    kappa = _check_real("kappa", kappa, minimum=0.0, strict=True)
    # torch's fused kernel computes exactly this piecewise form, in one op instead of five
    return F.huber_loss(td, torch.zeros_like(td), reduction="none", delta=kappa)


def mse(td: Tensor) -> Tensor:
    """Per-sample squared TD error ½δ², the unclipped DQN loss (Mnih et al. 2015, https://www.nature.com/articles/nature14236).

    Args:
        td: TD error δ_t = y_t − Q(s_t, a_t), shape [B].

    Returns:
        Per-sample loss, shape [B].
    """
    _check_td(td)
    return 0.5 * td.square()


def _base_loss(td: Tensor, base: str, kappa: float) -> Tensor:
    if base == "huber":
        return huber(td, kappa)
    if base == "mse":
        return mse(td)
    raise ValueError(f"base must be one of {_BASES}, got {base!r}")


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
    _check_td(td)
    gamma = _check_real("gamma", gamma, minimum=0.0, strict=False)
    _check_tau(tau)
    _check_max_weight(max_weight)
    loss = _base_loss(td, base, kappa)
    if gamma == 0.0:
        # m ≡ 1 (its batch mean is 1 too): return L itself so that γ = 0 is the base loss bit for bit.
        return loss if max_weight is None or max_weight >= 1.0 else loss * max_weight
    # 1 − exp(−x) loses all its digits to cancellation for small x; expm1 does not.
    surprise = -torch.expm1(-loss / tau)
    modulator = _power(surprise, gamma)
    if detach_modulator:
        modulator = modulator.detach()
    weight = modulator / _batch_mean(modulator.detach()) if normalize else modulator
    if max_weight is not None:
        weight = weight.clamp(max=max_weight)
    return weight * loss


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
    _check_td(td)
    alpha = _check_real("alpha", alpha, minimum=0.0, strict=False)
    eps = _check_real("eps", eps, minimum=0.0, strict=False)
    _check_max_weight(max_weight)
    loss = _base_loss(td, base, kappa)
    priority = (td.detach().abs() + eps).pow(alpha)
    weight = priority / _batch_mean(priority)
    if max_weight is not None:
        weight = weight.clamp(max=max_weight)
    return weight * loss


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
    _check_td(td)
    m = _check_real("min_priority", min_priority, minimum=0.0, strict=True)
    abs_td = td.abs()
    return torch.where(abs_td < m, 0.5 * td.square(), m * abs_td)


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
    _check_td(td)
    alpha = _check_real("alpha", alpha, minimum=0.0, strict=False)
    m = _check_real("min_priority", min_priority, minimum=0.0, strict=True)
    _check_max_weight(max_weight)
    abs_td = td.abs()
    loss = torch.where(abs_td < m, m**alpha * 0.5 * td.square(), m * abs_td.pow(1.0 + alpha) / (1.0 + alpha))
    priority = abs_td.detach().clamp_min(m).pow(alpha)
    normaliser = priority.mean(dim=0, keepdim=True)
    loss = loss / normaliser
    if max_weight is not None:
        weight = priority / normaliser
        loss = loss * (weight.clamp(max=max_weight) / weight)
    return loss


class RunningMean:
    """Exponential moving average of a batch statistic: what callers use for focal-TD's ``tau: auto``.

    Feed it the detached per-sample base loss L each learn step and pass ``value`` as ``tau``; the running mean of L
    makes focal-TD scale-free across games. The first update sets the mean to that batch's mean; later ones blend
    with weight ``1 − momentum``. ``value`` is floored at ``floor`` so that it is always a valid τ. This class is the
    only stateful thing in ``rlfocal.losses``; ``update`` reads a tensor value (a device sync on GPU).
    """

    def __init__(self, momentum: float = 0.99, floor: float = 1e-8) -> None:
        momentum = _check_real("momentum", momentum, minimum=0.0, strict=False)
        if momentum >= 1.0:
            raise ValueError(f"momentum must be a finite number in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.floor = _check_real("floor", floor, minimum=0.0, strict=True)
        self._mean: float | None = None

    def update(self, x: Tensor) -> float:
        """Blend in the mean of ``x`` (any shape) and return the new ``value``."""
        batch_mean = float(x.detach().double().mean())
        if self._mean is None:
            self._mean = batch_mean
        else:
            self._mean = self.momentum * self._mean + (1.0 - self.momentum) * batch_mean
        return self.value

    @property
    def value(self) -> float:
        """The running mean (>= ``floor``); RuntimeError before the first ``update``."""
        if self._mean is None:
            raise RuntimeError("RunningMean.value read before the first update()")
        return max(self._mean, self.floor)


TD_LOSSES: dict[str, Callable[..., Tensor]] = {
    "huber": huber,
    "mse": mse,
    "focal": focal_td,
    "mirror": mirror,
    "pal": pal,
    "lap": lap,
}


# ------------------------------------------------------------------------------------ supervised focal losses


def sigmoid_focal_loss(
    inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Binary focal loss on logits, the same formula as ``torchvision.ops.sigmoid_focal_loss``.

    p = σ(x), ce = BCE-with-logits(x, y), p_t = p·y + (1 − p)(1 − y), loss = ce·(1 − p_t)^γ, times
    α_t = α·y + (1 − α)(1 − y) when α >= 0 (α < 0 disables it). Lin et al. 2017, eq. 5
    (https://arxiv.org/abs/1708.02002); torchvision's version:
    https://github.com/pytorch/vision/blob/main/torchvision/ops/focal_loss.py. Unlike a literal transcription,
    1 − p_t is computed as σ(x)(1 − y) + σ(−x)·y, which does not round to 0 for large |x|, and the gradient is
    finite for every γ >= 0 at |x| up to 100 and beyond.

    Args:
        inputs: logits, any shape (e.g. [B] or [B, K]).
        targets: float targets in [0, 1], the shape of ``inputs``.
        alpha: class-balance weight of the positives; < 0 disables it.
        gamma: focusing exponent γ >= 0.
        reduction: ``"none"`` (the shape of ``inputs``), ``"mean"`` or ``"sum"``.
    """
    if inputs.shape != targets.shape:
        raise ValueError(
            f"inputs and targets must have the same shape, got {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    alpha = _check_real("alpha", alpha, minimum=-math.inf, strict=False)
    gamma = _check_real("gamma", gamma, minimum=0.0, strict=False)
    _check_reduction(reduction)
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    if gamma != 0.0:
        one_minus_p_t = torch.sigmoid(inputs) * (1 - targets) + torch.sigmoid(-inputs) * targets
        loss = loss * _power(one_minus_p_t, gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return _reduce(loss, reduction)


def _class_weights(alpha: Sequence[float] | Tensor, num_classes: int, like: Tensor) -> Tensor:
    if isinstance(alpha, Tensor):
        if alpha.shape != (num_classes,):
            raise ValueError(
                f"alpha must hold one weight per class ({num_classes}), got a tensor of shape {tuple(alpha.shape)}"
            )
        return alpha.to(dtype=like.dtype, device=like.device)
    if isinstance(alpha, (str, bytes)) or not isinstance(alpha, Sequence):
        raise ValueError(f"alpha must be None or a sequence/tensor of {num_classes} per-class weights, got {alpha!r}")
    if len(alpha) != num_classes:
        raise ValueError(f"alpha must hold one weight per class ({num_classes}), got {len(alpha)}: {alpha!r}")
    for weight in alpha:
        _check_real("alpha (per-class weight)", weight, minimum=0.0, strict=False)
    return torch.as_tensor(alpha, dtype=like.dtype, device=like.device)


def softmax_focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 2.0,
    alpha: Sequence[float] | Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Multi-class focal loss via log-softmax: −α_t·(1 − p_t)^γ·log p_t.

    Lin et al. 2017, eq. 5 with the softmax in place of the sigmoid (https://arxiv.org/abs/1708.02002). γ = 0 and
    ``alpha=None`` is ``F.cross_entropy`` (every reduction, ``ignore_index`` included); with a per-class ``alpha``
    and γ = 0 it is ``F.cross_entropy(weight=alpha)``. Like torch's weighted cross-entropy, ``"mean"`` divides the
    sum by the sum of α_t over the non-ignored targets (their count when ``alpha`` is None); a batch whose targets are
    all ignored gives 0/0 = NaN, as in torch. Ignored samples contribute 0 (and are 0 with ``"none"``).

    Args:
        logits: shape [B, C].
        target: class indices, int64, shape [B]; entries equal to ``ignore_index`` are ignored.
        gamma: focusing exponent γ >= 0.
        alpha: None or C per-class weights >= 0 (a sequence, or a tensor of shape [C], which is checked for shape
            only so as not to read device values).
        ignore_index: target value to ignore.
        reduction: ``"none"`` ([B]), ``"mean"`` or ``"sum"``.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape [B, C], got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape [B] = ({logits.shape[0]},), got {tuple(target.shape)}")
    if target.dtype != torch.int64:
        raise ValueError(f"target must hold int64 class indices, got dtype {target.dtype}")
    gamma = _check_real("gamma", gamma, minimum=0.0, strict=False)
    _check_reduction(reduction)
    weights = None if alpha is None else _class_weights(alpha, logits.shape[1], logits)

    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p_t = F.log_softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -log_p_t
    if gamma != 0.0:
        # 1 − p_t = −expm1(log p_t) keeps its digits when p_t is close to 1.
        loss = _power(-torch.expm1(log_p_t), gamma) * loss
    if weights is not None:
        alpha_t = weights[safe_target]
        loss = alpha_t * loss
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "mean":
        normaliser = valid.sum() if weights is None else torch.where(valid, alpha_t, torch.zeros_like(alpha_t)).sum()
        return loss.sum() / normaliser
    return _reduce(loss, reduction)
