"""From validated config objects to the pieces of a run: replay buffer, TD loss, agent."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal.arms import arm_label
from rlfocal.config import Config, ConfigError
from rlfocal.gauge import LaneView, analogy_gauge
from rlfocal.losses import FocalLossConfig
from rlfocal.replay import PERConfig, PrioritizedSampler, ReplayBuffer, TransitionStorage
from rlfocal.replay.lanes import LaneReplay


def arm_name(cfg: Config) -> str:
    """The study arm as a short label, e.g. ``per+huber`` or ``uniform+focal(gamma=2,tau=auto)``."""
    return arm_label(dataclasses.asdict(cfg.replay), dataclasses.asdict(cfg.loss), dataclasses.asdict(cfg.agent))


def make_lane_replay(cfg: Config, seeds: list[int], obs_shape: tuple[int, ...], obs_dtype, total_updates: int):
    """One replay buffer per seed lane (each its own storage, sampler and generator), behind ``LaneReplay``."""
    return LaneReplay([make_replay(cfg, obs_shape, obs_dtype, total_updates, seed) for seed in seeds])


def make_replay(
    cfg: Config, obs_shape: tuple[int, ...], obs_dtype, total_updates: int, seed: int | None = None
) -> ReplayBuffer:
    """The sampler named by ``cfg.replay`` over storage shaped for the environment (frame dedup for stacks),
    drawing from a generator seeded ``seed`` (default ``cfg.seed``); with ``replay.storage_device``, a copy of the
    arrays batches are gathered from on the learner's device (``cuda`` names whichever CUDA device that is)."""
    frame_stack = obs_shape[0] if len(obs_shape) == 3 and obs_shape[1:] == (84, 84) else 1
    storage = TransitionStorage(
        cfg.replay.capacity,
        obs_shape,
        obs_dtype,
        n_step=cfg.agent.n_step,
        gamma=cfg.agent.gamma,
        frame_stack=frame_stack,
    )
    name, storage_device = cfg.replay.storage_device, None
    if name is not None:
        wanted = resolve_device(name, "replay.storage_device", "null or cpu")
        storage_device = resolve_device(cfg.device)
        if wanted.type != storage_device.type or wanted.index not in (None, storage_device.index):
            msg = (
                f"batches are gathered where they are stored, so it must be the learner's device {storage_device} "
                f"(device={cfg.device}); use replay.storage_device=null or {storage_device}"
            )
            raise ConfigError(f"replay.storage_device={name!r} is not allowed: {msg}")
    sampler = cfg.replay.build(storage.capacity, total_updates)
    return ReplayBuffer(storage, sampler, cfg.seed if seed is None else seed, storage_device)


def make_gauge(cfg: Config, buffer: ReplayBuffer, lane: int = 0) -> Callable[[DQN], dict[str, float]]:
    """The analogy gauge of seed lane ``lane`` (seed ``cfg.seed + lane``, ``buffer`` its replay), reading exactly
    what a run of that seed alone reads. Its PER side is the lane's own prioritized sampler (α, ε, floor and the
    current β read from it), else a default ``replay=per`` sampler; focal's γ is ``gauge.focal_gamma``, else the run's
    focal γ, else α/2 (the α = 2γ prediction). Draws from its own RNG, seeded as that seed's run alone seeds it."""
    rng = np.random.default_rng(cfg.seed + lane + 20_000)
    sampler = buffer.sampler
    per = sampler if isinstance(sampler, PrioritizedSampler) else PERConfig().build(1, 1)
    gamma = cfg.gauge.focal_gamma
    if gamma is None:
        gamma = cfg.loss.gamma if isinstance(cfg.loss, FocalLossConfig) else per.alpha / 2
    kappa = getattr(cfg.loss, "kappa", 1.0)

    def gauge(agent: DQN) -> dict[str, float]:
        return analogy_gauge(
            agent if agent.num_seeds == 1 else LaneView(agent, lane),
            buffer,
            rng,
            sample_size=cfg.gauge.sample_size,
            focal_gamma=gamma,
            priority=per.priority,
            beta=per.beta,
            kappa=kappa,
        )

    return gauge


def set_determinism(deterministic: bool) -> None:
    """CPU runs are deterministic anyway. On CUDA, ``deterministic`` picks deterministic cuDNN/cuBLAS kernels
    (``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts, so this sets it when absent) and disables cuDNN's
    autotuner; otherwise the autotuner may pick the fastest kernels, and reruns differ in the last bits."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=False)  # slow first call: imports inductor
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def resolve_device(device: str, key: str = "device", instead: str = "cpu or auto") -> torch.device:
    """The torch device a setting names (``auto``: CUDA when available); a CUDA device without CUDA fails naming
    the setting ``key`` and what to use ``instead``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{key}={device!r} is not allowed: CUDA is not available here; use {key}={instead}")
    return torch.device(device)


def make_agent(cfg: Config, obs_shape: tuple[int, ...], num_actions: int, device: torch.device) -> DQN:
    """The learner; with ``num_seeds`` S > 1, S lanes whose networks are initialised as each seed's own run."""
    a = cfg.agent
    seeds = [cfg.seed + k for k in range(cfg.num_seeds)]
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        net = make_network(
            a.network, obs_shape, num_actions, dueling=a.dueling, hidden=tuple(a.hidden), one_hot=a.one_hot_input
        )
        nets.append(net)
    return DQN(
        nets[0] if len(nets) == 1 else nets,
        num_actions,
        cfg.loss.build(),
        lr=a.lr * a.lr_scale,
        adam_eps=a.adam_eps,
        double=a.double,
        max_grad_norm=a.max_grad_norm,
        device=device,
        seed=seeds[0] if len(seeds) == 1 else seeds,
        compile=a.compile,
        amp=a.amp,
        capture=a.capture_update,
    )


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then ``end``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, t / duration)
