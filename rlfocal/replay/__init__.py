"""Replay engine: a float64 sum tree, ring storage with n-step returns and frame dedup, and samplers."""

from rlfocal.replay.buffer import Batch, LAPReplay, PrioritizedReplay, ReplayBuffer, UniformReplay
from rlfocal.replay.samplers import (
    SAMPLER_CONFIGS,
    LAPConfig,
    LAPSampler,
    PERConfig,
    PrioritizedSampler,
    Sampler,
    SamplerConfig,
    UniformReplayConfig,
    UniformSampler,
    register_sampler,
)
from rlfocal.replay.storage import TransitionStorage
from rlfocal.replay.sumtree import SumTree

__all__ = [
    "SAMPLER_CONFIGS",
    "LAPConfig",
    "PERConfig",
    "Sampler",
    "SamplerConfig",
    "UniformReplayConfig",
    "register_sampler",
    "Batch",
    "LAPReplay",
    "LAPSampler",
    "PrioritizedReplay",
    "PrioritizedSampler",
    "ReplayBuffer",
    "SumTree",
    "TransitionStorage",
    "UniformReplay",
    "UniformSampler",
]
