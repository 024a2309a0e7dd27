"""Arm labels: ``<sampler>+<loss>`` with every setting that makes the arm differ from its defaults.

A label is computed from plain values, so a resolved ``config.yaml`` names its arm exactly as the run did
(``rlfocal.builders.arm_name``, the report). E.g. ``per+huber``, ``per(beta=0,beta_final=0)+huber``,
``uniform+focal(gamma=0.3,tau=auto)``, ``uniform+huber@lr×2`` (a step-size control).
"""

from __future__ import annotations

from typing import Any

from rlfocal.losses.registry import loss_label, option_label
from rlfocal.replay.samplers import SAMPLER_CONFIGS

# how the run is executed, not what the sampler does: never part of an arm's name
SAMPLER_EXECUTION = ("capacity", "deferred", "storage_device")


def sampler_label(sampler: dict[str, Any] | str) -> str:
    if isinstance(sampler, str):
        return sampler
    values = {k: v for k, v in sampler.items() if k not in ("name", "kind", *SAMPLER_EXECUTION)}
    name = sampler.get("name") or sampler["kind"]  # "kind" in runs made before 2026-12
    return option_label(name, SAMPLER_CONFIGS.get(name), values)


def arm_label(sampler: dict[str, Any] | str, loss: dict[str, Any], agent: dict[str, Any] | None = None) -> str:
    """``<sampler>+<loss>`` (and ``@lr×k`` when ``agent.lr_scale`` is k ≠ 1) from plain config values."""
    label = f"{sampler_label(sampler)}+{loss_label(loss)}"
    lr_scale = (agent or {}).get("lr_scale", 1.0)
    return label + (f"@lr×{lr_scale:g}" if lr_scale != 1.0 else "")
