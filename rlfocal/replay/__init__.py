"""Replay engine: a float64 sum tree, ring storage with n-step returns and frame dedup, and samplers."""

from rlfocal.replay.buffer import Batch, LAPReplay, PrioritizedReplay, ReplayBuffer, UniformReplay
from rlfocal.replay.samplers import LAPSampler, PrioritizedSampler, UniformSampler
from rlfocal.replay.storage import TransitionStorage
from rlfocal.replay.sumtree import SumTree

__all__ = [
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
