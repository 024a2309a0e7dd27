"""From validated config objects to the pieces of a run: replay buffer, TD loss, agent."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal.config import Config, ConfigError
from rlfocal.gauge import analogy_gauge
from rlfocal.losses import FocalLossConfig, arm_label
from rlfocal.replay import PERConfig, PrioritizedSampler, ReplayBuffer, TransitionStorage


def arm_name(cfg: Config) -> str:
    """The study arm as a short label, e.g. ``per+huber`` or ``uniform+focal(gamma=2,tau=auto)``."""
    return arm_label(cfg.replay.name, dataclasses.asdict(cfg.loss))


def make_replay(cfg: Config, obs_shape: tuple[int, ...], obs_dtype, total_updates: int) -> ReplayBuffer:
    """The sampler named by ``cfg.replay`` over storage shaped for the environment (frame dedup for stacks)."""
    frame_stack = obs_shape[0] if len(obs_shape) == 3 and obs_shape[1:] == (84, 84) else 1
    storage = TransitionStorage(
        cfg.replay.capacity,
        obs_shape,
        obs_dtype,
        n_step=cfg.agent.n_step,
        gamma=cfg.agent.gamma,
        frame_stack=frame_stack,
    )
    return ReplayBuffer(storage, cfg.replay.build(storage.capacity, total_updates), cfg.seed)


def make_gauge(cfg: Config, buffer: ReplayBuffer) -> Callable[[DQN], dict[str, float]]:
    """The analogy gauge for this run. Its PER side is the run's own prioritized sampler (α, ε, floor and the
    current β read from it), else a default ``replay=per`` sampler; focal's γ is ``gauge.focal_gamma``, else the run's
    focal γ, else α/2 (the α = 2γ prediction). Draws from its own RNG."""
    rng = np.random.default_rng(cfg.seed + 20_000)
    sampler = buffer.sampler
    per = sampler if isinstance(sampler, PrioritizedSampler) else PERConfig().build(1, 1)
    gamma = cfg.gauge.focal_gamma
    if gamma is None:
        gamma = cfg.loss.gamma if isinstance(cfg.loss, FocalLossConfig) else per.alpha / 2
    kappa = getattr(cfg.loss, "kappa", 1.0)

    def gauge(agent: DQN) -> dict[str, float]:
        return analogy_gauge(
            agent,
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} is not allowed: CUDA is not available here; use device=cpu or auto")
    return torch.device(device)


def make_agent(cfg: Config, obs_shape: tuple[int, ...], num_actions: int, device: torch.device) -> DQN:
    a = cfg.agent
    torch.manual_seed(cfg.seed)
    net = make_network(a.network, obs_shape, num_actions, dueling=a.dueling, hidden=tuple(a.hidden))
    return DQN(
        net,
        num_actions,
        cfg.loss.build(),
        lr=a.lr,
        adam_eps=a.adam_eps,
        double=a.double,
        max_grad_norm=a.max_grad_norm,
        device=device,
        seed=cfg.seed,
        compile=a.compile,
        amp=a.amp,
    )


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then ``end``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, t / duration)
