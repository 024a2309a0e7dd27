"""From validated config objects to the pieces of a run: replay buffer, TD loss, agent."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal import losses
from rlfocal.config import Config, FocalLossConfig, LAPConfig, LossConfig, PERConfig, arm_label
from rlfocal.gauge import analogy_gauge
from rlfocal.replay import LAPReplay, PrioritizedReplay, ReplayBuffer, UniformReplay


def arm_name(cfg: Config) -> str:
    """The study arm as a short label, e.g. ``per+huber`` or ``uniform+focal(gamma=2,tau=auto)``."""
    return arm_label(cfg.replay.kind, dataclasses.asdict(cfg.loss))


def make_replay(cfg: Config, obs_shape: tuple[int, ...], obs_dtype, total_updates: int) -> ReplayBuffer:
    """The sampler named by ``cfg.replay`` over storage shaped for the environment (frame dedup for stacks)."""
    r = cfg.replay
    frame_stack = obs_shape[0] if len(obs_shape) == 3 and obs_shape[1:] == (84, 84) else 1
    storage = dict(n_step=cfg.agent.n_step, gamma=cfg.agent.gamma, frame_stack=frame_stack)
    if isinstance(r, PERConfig):
        return PrioritizedReplay(
            r.capacity, obs_shape, obs_dtype, r.alpha, r.beta, r.eps, cfg.seed,
            beta_final=r.beta_final, beta_steps=max(1, total_updates) if r.anneal_beta else None,
            is_norm=r.is_norm, **storage,
        )  # fmt: skip
    if isinstance(r, LAPConfig):
        return LAPReplay(r.capacity, obs_shape, obs_dtype, r.alpha, r.min_priority, cfg.seed, **storage)
    return UniformReplay(r.capacity, obs_shape, obs_dtype, cfg.seed, **storage)


def make_td_loss(loss: LossConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample TD loss of δ from a validated loss config; ``tau: auto`` tracks a running mean of the base loss."""
    kwargs = dataclasses.asdict(loss)
    fn = losses.TD_LOSSES[kwargs.pop("name")]
    if kwargs.get("tau") == "auto":
        running = losses.RunningMean()
        base = losses.TD_LOSSES[kwargs["base"]]
        base_kwargs = {"kappa": kwargs["kappa"]} if kwargs["base"] == "huber" else {}

        def focal_auto(td: torch.Tensor) -> torch.Tensor:
            tau = running.update(base(td.detach(), **base_kwargs).mean())
            return fn(td, **{**kwargs, "tau": tau})

        return focal_auto
    return lambda td: fn(td, **kwargs)


def make_gauge(cfg: Config, buffer: ReplayBuffer) -> Callable[[DQN], dict[str, float]]:
    """The analogy gauge for this run: PER's α and ε from the replay config (0.6 and 1e-6 otherwise), β as the
    run's sampler has it now (LAP: 0, it has no IS weights; uniform: PER's β0 = 0.4), focal γ from the gauge config,
    else the run's focal γ, else α/2 (DESIGN.md §2's prediction). Draws from its own RNG."""
    rng = np.random.default_rng(cfg.seed + 20_000)
    alpha = getattr(cfg.replay, "alpha", 0.6)
    eps = getattr(cfg.replay, "eps", 1e-6)
    gamma = cfg.gauge.focal_gamma
    if gamma is None:
        gamma = cfg.loss.gamma if isinstance(cfg.loss, FocalLossConfig) else alpha / 2
    kappa = getattr(cfg.loss, "kappa", 1.0)

    def gauge(agent: DQN) -> dict[str, float]:
        beta = buffer.beta if cfg.replay.kind == "per" else 0.0 if cfg.replay.kind == "lap" else 0.4
        return analogy_gauge(agent, buffer, rng, sample_size=cfg.gauge.sample_size, focal_gamma=gamma,
                             alpha=alpha, beta=beta, eps=eps, kappa=kappa)  # fmt: skip

    return gauge


def set_determinism(deterministic: bool) -> None:
    """CPU runs are deterministic anyway. On CUDA, ``deterministic`` picks deterministic cuDNN/cuBLAS kernels
    (``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts, so this sets it when absent) and disables cuDNN's
    autotuner; otherwise the autotuner may pick the fastest kernels, and reruns differ in the last bits."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use device=cpu or auto")
    return torch.device(device)


def make_agent(cfg: Config, obs_shape: tuple[int, ...], num_actions: int, device: torch.device) -> DQN:
    a = cfg.agent
    torch.manual_seed(cfg.seed)
    net = make_network(a.network, obs_shape, num_actions, dueling=a.dueling, hidden=tuple(a.hidden))
    return DQN(
        net, num_actions, make_td_loss(cfg.loss), lr=a.lr, adam_eps=a.adam_eps, double=a.double,
        max_grad_norm=a.max_grad_norm, device=device, seed=cfg.seed, compile=a.compile,
        amp=a.amp,
    )  # fmt: skip


def linear_schedule(start: float, end: float, duration: int, t: int) -> float:
    """Linear interpolation from ``start`` to ``end`` over ``duration`` steps, then ``end``."""
    if duration <= 0:
        return end
    return start + (end - start) * min(1.0, t / duration)
