"""TD losses and supervised focal losses: pure functions of tensors that return per-sample values.

``rlfocal.losses.td`` holds each TD loss beside its registered config (``TD_LOSS_CONFIGS``: what ``loss=NAME``,
``rlfocal.sb3``'s ``td_loss=NAME`` and the report read); ``rlfocal.losses.supervised`` the focal losses on logits.
"""

from rlfocal.losses.registry import (
    TD_LOSS_CONFIGS,
    TDLossConfig,
    TDLossFn,
    loss_label,
    option_label,
    register_td_loss,
    td_loss_config,
)
from rlfocal.losses.supervised import sigmoid_focal_loss, softmax_focal_loss
from rlfocal.losses.td import (
    FocalLossConfig,
    HuberLossConfig,
    LAPLossConfig,
    MirrorLossConfig,
    MSELossConfig,
    PALLossConfig,
    RunningMean,
    focal_modulator,
    focal_td,
    huber,
    lap,
    mirror,
    mse,
    pal,
)

TD_LOSSES = {name: cls.function for name, cls in TD_LOSS_CONFIGS.items()}  # name → pure function, for tests/tools

__all__ = [
    "TD_LOSSES",
    "TD_LOSS_CONFIGS",
    "FocalLossConfig",
    "HuberLossConfig",
    "LAPLossConfig",
    "MSELossConfig",
    "MirrorLossConfig",
    "PALLossConfig",
    "RunningMean",
    "TDLossConfig",
    "TDLossFn",
    "loss_label",
    "option_label",
    "focal_modulator",
    "focal_td",
    "huber",
    "lap",
    "mirror",
    "mse",
    "pal",
    "register_td_loss",
    "sigmoid_focal_loss",
    "softmax_focal_loss",
    "td_loss_config",
]
