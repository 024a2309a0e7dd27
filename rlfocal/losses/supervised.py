"""Supervised focal losses (Lin et al. 2017), the other half of the study's square: per-sample values on logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rlfocal.losses.common import check_real, check_reduction, power, reduce


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
    alpha = check_real("alpha", alpha, minimum=-math.inf, strict=False)
    gamma = check_real("gamma", gamma, minimum=0.0, strict=False)
    check_reduction(reduction)
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    if gamma != 0.0:
        one_minus_p_t = torch.sigmoid(inputs) * (1 - targets) + torch.sigmoid(-inputs) * targets
        loss = loss * power(one_minus_p_t, gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return reduce(loss, reduction)


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
        check_real("alpha (per-class weight)", weight, minimum=0.0, strict=False)
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
    gamma = check_real("gamma", gamma, minimum=0.0, strict=False)
    check_reduction(reduction)
    weights = None if alpha is None else _class_weights(alpha, logits.shape[1], logits)

    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    log_p_t = F.log_softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -log_p_t
    if gamma != 0.0:
        # 1 − p_t = −expm1(log p_t) keeps its digits when p_t is close to 1.
        loss = power(-torch.expm1(log_p_t), gamma) * loss
    if weights is not None:
        alpha_t = weights[safe_target]
        loss = alpha_t * loss
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if reduction == "mean":
        normaliser = valid.sum() if weights is None else torch.where(valid, alpha_t, torch.zeros_like(alpha_t)).sum()
        return loss.sum() / normaliser
    return reduce(loss, reduction)
