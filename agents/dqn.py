"""DQN learner (Mnih et al. 2015) with double-Q (van Hasselt et al. 2016), dueling nets and n-step targets.

The learner is sampler- and loss-agnostic: it takes a batch whose ``discounts`` already hold ``γ^m`` (0 where the
episode terminated), a per-sample ``td_loss`` of the TD error, and importance weights, and it returns the
per-sample TD errors so the caller can reprioritise. Every arm of the study is a (sampler, loss) pair chosen by
configuration; nothing here knows which one it runs. Adam replaces Nature DQN's RMSProp, as in Dopamine and SB3.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn


@dataclass
class LearnOutput:
    """What one gradient step reports; tensors stay on the device (no host sync in the update)."""

    loss: torch.Tensor  # scalar: mean of weights * per-sample loss
    td_errors: torch.Tensor  # [B] δ = y − Q(s, a), detached: the caller's priority signal
    q_mean: torch.Tensor  # scalar: mean Q(s, a) of the batch


class DQN:
    """Online and target Q-networks, Adam, and ε-greedy action selection."""

    def __init__(
        self,
        q_net: nn.Module,
        num_actions: int,
        td_loss: Callable[[torch.Tensor], torch.Tensor],
        *,
        lr: float = 1e-4,
        adam_eps: float = 1e-8,
        double: bool = True,
        max_grad_norm: float | None = 10.0,
        device: str | torch.device = "cpu",
        seed: int = 0,
        compile: bool = False,
        amp: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.q_net = q_net.to(self.device)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.num_actions = num_actions
        self.td_loss = td_loss
        self.double = double
        self.max_grad_norm = max_grad_norm
        self.params = list(self.q_net.parameters())
        # the update's forward passes, optionally through torch.compile (fuses the small ops whose launch overhead
        # dominates on GPU); acting keeps the eager nets, whose batch shape varies
        self._online = torch.compile(self.q_net) if compile else self.q_net
        self._target = torch.compile(self.target_net) if compile else self.target_net
        # amp: bfloat16 autocast for the update's forward passes; TD errors and losses stay float32
        self._autocast = partial(torch.autocast, self.device.type, dtype=torch.bfloat16) if amp else nullcontext
        # fused: one kernel for the whole update instead of a Python loop over parameters (2-3x faster on CPU too)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=adam_eps, fused=True)
        self.rng = np.random.default_rng(seed)
        numpy_forward = getattr(self.q_net, "numpy_forward", None)
        self._numpy_q = numpy_forward() if numpy_forward and self.device.type == "cpu" else None
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)  # sticky: a loss was NaN/inf

    def act(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator | None = None) -> int:
        """ε-greedy action for one observation (the network is skipped for random actions). ``rng`` defaults to
        the agent's exploration generator; evaluation passes its own so that it never shifts training's draws."""
        rng = self.rng if rng is None else rng
        if rng.random() < epsilon:
            return int(rng.integers(self.num_actions))
        if self._numpy_q is not None:  # small CPU nets: numpy's per-op cost is a fifth of torch's
            return int(self._numpy_q(obs).argmax())
        with torch.inference_mode():
            return int(self.q_net(torch.as_tensor(obs[None], device=self.device)).argmax())

    def act_batch(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """ε-greedy actions for a batch of observations ``[N, ...]``, with one network call for the greedy ones
        (and one device-to-host copy). N = 1 takes ``act``'s path, draw for draw."""
        rng = self.rng if rng is None else rng
        if len(obs) == 1:
            return np.array([self.act(obs[0], epsilon, rng)])
        actions = rng.integers(self.num_actions, size=len(obs))
        greedy = rng.random(len(obs)) >= epsilon
        if greedy.any():
            with torch.inference_mode():
                q = self.q_net(torch.as_tensor(obs[greedy], device=self.device))
            actions[greedy] = q.argmax(dim=1).cpu().numpy()
        return actions

    def td_errors(self, batch, *, eager: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``δ_i = r_i + d_i · Q_target(s'_i, a*_i) − Q(s_i, a_i)`` (differentiable in the online net) and Q(s, a).

        ``batch`` has torch fields obs, actions, rewards, next_obs, discounts (see ``rlfocal.replay.Batch``).
        ``eager`` bypasses ``compile`` (for callers that take several gradients of one graph, like the gauge).
        """
        online, target_net = (self.q_net, self.target_net) if eager else (self._online, self._target)
        with self._autocast():
            q_sa = online(batch.obs).gather(1, batch.actions.long().unsqueeze(1)).squeeze(1).float()  # [B]
            with torch.no_grad():
                next_q = target_net(batch.next_obs)  # [B, A]
                # double-Q: the online net picks a*, the target net evaluates it
                next_a = (online(batch.next_obs) if self.double else next_q).argmax(dim=1, keepdim=True)
                target = batch.rewards + batch.discounts * next_q.gather(1, next_a).squeeze(1).float()
        return target - q_sa, q_sa

    def learn(self, batch) -> LearnOutput:
        """One gradient step on ``mean_i w_i · td_loss(δ_i)``; ``batch`` also carries the IS ``weights``."""
        td, q_sa = self.td_errors(batch)
        loss = (batch.weights * self.td_loss(td)).mean()
        for p in self.params:  # zero_grad(set_to_none=True) without the optimizer's profiling wrapper
            p.grad = None
        loss.backward()
        if self.max_grad_norm is not None:
            # clip_grad_norm_'s arithmetic without its per-call checks (half its ~50 µs on small nets)
            grads = [p.grad for p in self.params]
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            torch._foreach_mul_(grads, (self.max_grad_norm / (total + 1e-6)).clamp_(max=1.0))
        self.optimizer.step()
        self.nonfinite |= ~torch.isfinite(loss.detach())
        return LearnOutput(loss=loss.detach(), td_errors=td.detach(), q_mean=q_sa.detach().mean())

    @torch.no_grad()
    def update_target(self, tau: float = 1.0) -> None:
        """Polyak update ``θ' ← τ θ + (1 − τ) θ'``; ``tau = 1`` is the hard copy of Mnih et al."""
        if tau == 1.0:
            self.target_net.load_state_dict(self.q_net.state_dict())
            return
        for target, online in zip(self.target_net.parameters(), self.params, strict=True):
            target.lerp_(online, tau)

    def state_dict(self) -> dict:
        return {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
