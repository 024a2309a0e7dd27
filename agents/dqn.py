"""DQN learner (Mnih et al. 2015) with double-Q (van Hasselt et al. 2016), dueling nets and n-step targets.

The learner is sampler- and loss-agnostic: it takes a batch whose ``discounts`` already hold ``γ^m`` (0 where the
episode terminated), a per-sample ``td_loss`` of the TD error, and importance weights, and it returns the
per-sample TD errors so the caller can reprioritise. Every arm of the study is a (sampler, loss) pair chosen by
configuration; nothing here knows which one it runs. Adam replaces Nature DQN's RMSProp, as in Dopamine and SB3.

Given a list of S networks and S seeds, one DQN trains S independent seeds ("lanes") in lockstep: stacked
parameters (``agents.lanes``), one TD computation for all lanes (the MLP batches its layers itself, ``lanes_native``;
the CNNs go through ``torch.vmap``), per-lane clipping, one fused Adam, per-lane RNGs. The ``*_lanes`` methods take
and return a leading lane axis for every S; S = 1 runs today's single-network code.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from agents.captured import CapturedStep
from agents.lanes import clip_grad_norm_, lane_state, stack_modules


class LearnOutput(NamedTuple):
    """What one gradient step reports; tensors stay on the device (no host sync in the update). ``learn_lanes``
    gives every field a leading lane axis: loss and q_mean ``[S]``, td_errors ``[S, B]``."""

    loss: torch.Tensor  # scalar: mean of weights * per-sample loss
    td_errors: torch.Tensor  # [B] δ = y − Q(s, a), detached: the caller's priority signal
    q_mean: torch.Tensor  # scalar: mean Q(s, a) of the batch


class LaneBatch(NamedTuple):
    """The fields an update reads (see ``rlfocal.replay.Batch``), as a pytree that vmap slices into lanes."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    discounts: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def of(cls, batch, lane: int | None = None) -> LaneBatch:
        """The fields of any batch object, or of its lane ``lane`` (a view)."""
        return cls(*(getattr(batch, f) if lane is None else getattr(batch, f)[lane] for f in cls._fields))


def td_error(online: Callable, target_net: Callable, batch, double: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``δ_i = r_i + d_i · Q_target(s'_i, a*_i) − Q(s_i, a_i)`` (differentiable in ``online``) and Q(s, a):
    ``online`` and ``target_net`` map observations ``[..., B, *obs_shape]`` to Q-values ``[..., B, A]`` (one lane,
    or all lanes of a ``lanes_native`` network at once)."""
    q_sa = online(batch.obs).gather(-1, batch.actions.long().unsqueeze(-1)).squeeze(-1).float()  # [..., B]
    with torch.no_grad():
        next_q = target_net(batch.next_obs)  # [..., B, A]
        # double-Q: the online net picks a*, the target net evaluates it
        next_a = (online(batch.next_obs) if double else next_q).argmax(dim=-1, keepdim=True)
        target = batch.rewards + batch.discounts * next_q.gather(-1, next_a).squeeze(-1).float()
    return target - q_sa, q_sa


class DQN:
    """Online and target Q-networks, Adam, and ε-greedy action selection, for one seed or S lanes of seeds."""

    def __init__(
        self,
        q_net: nn.Module | Sequence[nn.Module],
        num_actions: int,
        td_loss: Callable[[torch.Tensor], torch.Tensor],
        *,
        lr: float = 1e-4,
        adam_eps: float = 1e-8,
        double: bool = True,
        max_grad_norm: float | None = 10.0,
        device: str | torch.device = "cpu",
        seed: int | Sequence[int] = 0,
        compile: bool = False,
        amp: bool = False,
        capture: bool = False,
    ) -> None:
        nets = list(q_net) if isinstance(q_net, Sequence) else [q_net]
        seeds = [int(s) for s in seed] if isinstance(seed, Sequence | np.ndarray) else [seed]
        if len(nets) != len(seeds):
            raise ValueError(f"got {len(nets)} networks but {len(seeds)} seeds; give one network per seed")
        self.num_seeds = len(nets)
        lanes = self.num_seeds > 1
        self.device = torch.device(device)
        # S > 1: one module holding every lane's parameters [S, ...]; only the lane methods call it (a lanes_native
        # network on inputs with a lane axis, any other through vmap)
        self.q_net = (stack_modules(nets) if lanes else nets[0]).to(self.device)
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
        if lanes and getattr(self.q_net, "lanes_native", False):  # the MLP batches stacked lanes itself
            self._td_lanes = partial(td_error, self._online, self._target, double=double)
            self._q_lanes = self.q_net
        elif lanes:  # lane k's TD errors on lane k's slices of the stacked parameters, all lanes in one vmapped call
            online_state, target_state = lane_state(self.q_net), lane_state(self.target_net)
            td_lanes = torch.vmap(self._lane_td_error)
            td_lanes = torch.compile(td_lanes) if compile else td_lanes
            self._td_lanes = lambda batch: td_lanes(online_state, target_state, batch)
            self._q_lanes = partial(torch.vmap(partial(functional_call, self.q_net)), online_state)
        # amp: bfloat16 autocast for the update's forward passes; TD errors and losses stay float32 (a graph
        # cannot hold autocast's weight cache)
        autocast = partial(torch.autocast, self.device.type, dtype=torch.bfloat16, cache_enabled=not capture)
        self._autocast = autocast if amp else nullcontext
        # fused: one kernel for the whole update instead of a Python loop over parameters (2-3x faster on CPU too);
        # Adam is elementwise, so over stacked parameters the lanes stay independent. capturable: its step count
        # lives on the device, as a graph needs (same numbers)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=adam_eps, fused=True, capturable=capture)
        # capture: every gradient step replayed as one CUDA graph (agents.captured; a CPU stand-in off CUDA)
        if capture and compile:
            raise ValueError("capture and compile cannot both be on: pick one way to cut the update's launch overhead")
        self._captured = CapturedStep(self._learn, self.device) if capture else None
        self.rngs = [np.random.default_rng(s) for s in seeds]  # lane k explores exactly as a run of seeds[k]
        if not lanes:
            self.rng = self.rngs[0]
        numpy_forward = getattr(self.q_net, "numpy_forward", None)
        self._numpy_q = numpy_forward(lanes=lanes) if numpy_forward and self.device.type == "cpu" else None
        # each lane's losses summed in float64 (float32 losses cannot overflow it): the sum is finite exactly while
        # every loss so far was, which an update checks with one kernel and no sync (isfinite and |= take five)
        self._loss_sums = torch.zeros(self.num_seeds, dtype=torch.float64, device=self.device)

    @property
    def nonfinite_lanes(self) -> torch.Tensor:
        """``[S]`` bool, sticky: lane k's loss was NaN/inf at some update since this agent was made (on the device)."""
        return ~torch.isfinite(self._loss_sums)

    def act(
        self, obs: np.ndarray, epsilon: float, rng: np.random.Generator | None = None, q: np.ndarray | None = None
    ) -> int:
        """ε-greedy action for one observation (the network is skipped for random actions). ``rng`` defaults to
        the agent's exploration generator; evaluation passes its own so that it never shifts training's draws.
        ``q``: the observation's Q-values when already computed (``act_lanes``)."""
        rng = self.rng if rng is None else rng
        if rng.random() < epsilon:
            return int(rng.integers(self.num_actions))
        if q is not None:
            return int(q.argmax())
        if self._numpy_q is not None:  # small CPU nets: numpy's per-op cost is a fifth of torch's
            return int(self._numpy_q(obs).argmax())
        with torch.inference_mode():
            return int(self.q_net(torch.as_tensor(obs[None], device=self.device)).argmax())

    def act_batch(
        self, obs: np.ndarray, epsilon: float, rng: np.random.Generator | None = None, q: np.ndarray | None = None
    ) -> np.ndarray:
        """ε-greedy actions for a batch of observations ``[N, ...]``, with one network call for the greedy ones
        (and one device-to-host copy). N = 1 takes ``act``'s path, draw for draw. ``q``: Q-values ``[N, A]`` when
        already computed (``act_lanes``)."""
        rng = self.rng if rng is None else rng
        if len(obs) == 1:
            return np.array([self.act(obs[0], epsilon, rng, None if q is None else q[0])])
        actions = rng.integers(self.num_actions, size=len(obs))
        greedy = rng.random(len(obs)) >= epsilon
        if greedy.any():
            if q is None:
                with torch.inference_mode():
                    q_greedy = self.q_net(torch.as_tensor(obs[greedy], device=self.device)).cpu().numpy()
            else:
                q_greedy = q[greedy]
            actions[greedy] = q_greedy.argmax(axis=1)
        return actions

    def act_lanes(
        self, obs: np.ndarray, epsilon: float | np.ndarray, rngs: Sequence[np.random.Generator] | None = None
    ) -> np.ndarray:
        """ε-greedy actions ``[S, E]`` for observations ``[S, E, ...]``; ``epsilon`` a float or one per lane. Lane k
        draws from its own generator (``rngs`` overrides them, as ``rng`` does for ``act``) exactly as
        ``act_batch(obs[k], epsilon[k])`` in a run of that seed; S > 1 computes every Q-value in one forward."""
        rngs = self.rngs if rngs is None else rngs
        if self.num_seeds == 1:  # the single-seed run: today's act_batch, with no per-step array work
            return self.act_batch(obs[0], float(np.asarray(epsilon).reshape(-1)[0]), rngs[0])[None]
        epsilon = np.broadcast_to(np.asarray(epsilon, dtype=np.float64), (self.num_seeds,))
        if self._numpy_q is not None:
            q = self._numpy_q(obs)
        else:
            with torch.inference_mode():
                q = self._q_lanes(torch.as_tensor(obs, device=self.device)).cpu().numpy()
        lanes = zip(obs, epsilon, rngs, q, strict=True)
        return np.stack([self.act_batch(o, float(e), rng, q_k) for o, e, rng, q_k in lanes])

    def td_errors(self, batch, *, eager: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``td_error`` of the online and target nets, each ``[B]``.

        ``batch`` has torch fields obs, actions, rewards, next_obs, discounts (see ``rlfocal.replay.Batch``).
        ``eager`` bypasses ``compile`` (for callers that take several gradients of one graph, like the gauge).
        """
        online, target_net = (self.q_net, self.target_net) if eager else (self._online, self._target)
        with self._autocast():
            return td_error(online, target_net, batch, self.double)

    def _lane_td_error(self, online_state: tuple, target_state: tuple, batch: LaneBatch):
        """One lane's ``td_error`` through its slice of the stacked parameters (``td_errors_lanes`` vmaps this)."""
        online = partial(functional_call, self.q_net, online_state)
        return td_error(online, partial(functional_call, self.target_net, target_state), batch, self.double)

    def td_errors_lanes(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``td_errors`` of every lane: batch fields ``[S, B, ...]`` give δ and Q(s, a), each ``[S, B]``."""
        if self.num_seeds == 1:
            return tuple(t[None] for t in self.td_errors(LaneBatch.of(batch, 0)))
        with self._autocast():
            return self._td_lanes(LaneBatch.of(batch))

    def _step(self, loss: torch.Tensor, lanes: bool) -> None:
        """Backward, gradient-norm clipping (per lane with ``lanes``), and one Adam step."""
        for p in self.params:  # zero_grad(set_to_none=True) without the optimizer's profiling wrapper
            p.grad = None
        loss.backward()
        if self.max_grad_norm is not None:
            clip_grad_norm_([p.grad for p in self.params], self.max_grad_norm, lanes)
        self.optimizer.step()

    def _learn(self, batch: LaneBatch) -> LearnOutput:
        """One gradient step on ``mean_i w_i · td_loss(δ_i)`` (per lane when the fields carry a lane axis)."""
        lanes = self.num_seeds > 1
        td, q_sa = self.td_errors_lanes(batch) if lanes else self.td_errors(batch)
        loss = (batch.weights * self.td_loss(td)).mean(dim=-1)  # [S] with lanes, else a scalar
        self._step(loss.sum() if lanes else loss, lanes=lanes)
        self._loss_sums += loss.detach()
        return LearnOutput(loss=loss.detach(), td_errors=td.detach(), q_mean=q_sa.detach().mean(dim=-1))

    def learn(self, batch) -> LearnOutput:
        """One gradient step on ``mean_i w_i · td_loss(δ_i)``; ``batch`` also carries the IS ``weights``. With
        ``capture`` the output tensors are the graph's, overwritten by the next step."""
        batch = LaneBatch.of(batch)
        return self._learn(batch) if self._captured is None else self._captured(batch)

    def learn_lanes(self, batch) -> LearnOutput:
        """One gradient step in every lane; batch fields ``[S, B, ...]``. ``td_loss`` sees all TD errors ``[S, B]``
        at once; the objective is the sum of the lanes' weighted means, so each lane gets its own gradient."""
        if self.num_seeds == 1:  # a batch may carry ``single``, its one lane unstacked: no reshaping then
            single = getattr(batch, "single", None)
            out = self.learn(single if single is not None else LaneBatch.of(batch, 0))
            return LearnOutput(loss=out.loss[None], td_errors=out.td_errors[None], q_mean=out.q_mean[None])
        return self.learn(batch)

    @torch.no_grad()
    def update_target(self, tau: float = 1.0) -> None:
        """Polyak update ``θ' ← τ θ + (1 − τ) θ'`` (of every lane); ``tau = 1`` is the hard copy of Mnih et al."""
        if tau == 1.0:
            self.target_net.load_state_dict(self.q_net.state_dict())
            return
        for target, online in zip(self.target_net.parameters(), self.params, strict=True):
            target.lerp_(online, tau)

    def state_dict(self) -> dict:
        """Networks (stacked for S > 1), optimizer and exploration RNG state (a list of S states for S > 1)."""
        rng_states = [rng.bit_generator.state for rng in self.rngs]
        return {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_states if self.num_seeds > 1 else rng_states[0],
        }

    def load_state_dict(self, state: dict) -> None:
        if self._captured is not None:  # the optimizer's state tensors are replaced: record the graph again
            self._captured.reset()
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        for p in self.params:  # Adam's state in its parameter's memory layout (see ``_match_layout``)
            for key, value in self.optimizer.state.get(p, {}).items():
                self.optimizer.state[p][key] = _match_layout(value, p)
        rng_states = state["rng"] if self.num_seeds > 1 else [state["rng"]]
        for rng, rng_state in zip(self.rngs, rng_states, strict=True):
            rng.bit_generator.state = rng_state


def _match_layout(value, param: torch.Tensor):
    """``value`` with ``param``'s strides when it is a tensor of its shape. The fused Adam kernel walks a parameter
    and its state in memory order, so a state tensor laid out otherwise (a checkpoint's contiguous copy of a one-hot
    lane table that is stored transposed) would pair the wrong elements, silently."""
    if not isinstance(value, torch.Tensor) or value.shape != param.shape or value.stride() == param.stride():
        return value
    return torch.empty_like(param).copy_(value)
