"""Stable-Baselines3 interop: rlfocal's prioritized replay and TD losses behind SB3's own DQN interface.
(One file for SB3's buffer and learner, ~400 lines: both follow SB3's class layout, which keeps them together.)

    from rlfocal.sb3 import DQN, PrioritizedReplayBuffer

    model = DQN("MlpPolicy", "CartPole-v1", replay_buffer_class=PrioritizedReplayBuffer,
                replay_buffer_kwargs=dict(alpha=0.6, beta=0.4), td_loss="focal", td_loss_kwargs=dict(gamma=2.0))
    model.learn(50_000, progress_bar=True)

``PrioritizedReplayBuffer`` keeps SB3's storage (``[buffer_size, n_envs]`` arrays, so ``save_replay_buffer``,
``VecNormalize`` and ``optimize_memory_usage`` behave as in SB3) and puts rlfocal's ``PrioritizedSampler`` in front
of it: one definition of PER in the repo (DESIGN.md §1). Slot ``row * n_envs + env`` of the sum tree is the
transition of environment ``env`` stored at ``row``. With ``prioritized=False`` it samples exactly as SB3's
``ReplayBuffer`` (same draws from ``np.random``) and returns unit weights.

``DQN`` is SB3's DQN with one ``train()`` changed: the per-sample loss is any rlfocal TD loss of δ = y − Q(s, a)
(``td_loss="huber"`` is SB3's ``smooth_l1_loss``, bit for bit), importance weights multiply it, and |δ| goes back
to the buffer as the new priorities. The target stays SB3's ``max_a Q_target(s', a)`` (not double-Q).
"""

from __future__ import annotations

import io
import pathlib
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces

from rlfocal.checkpoint import CheckpointError, load_plain, save_plain
from rlfocal.extras import require_extra
from rlfocal.losses import TD_LOSS_CONFIGS, td_loss_config
from rlfocal.replay.samplers import PrioritizedSampler, check_finite

try:
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.save_util import open_path
    from stable_baselines3.common.type_aliases import ReplayBufferSamples
    from stable_baselines3.common.vec_env import VecNormalize
    from stable_baselines3.dqn import DQN as SB3DQN
except ModuleNotFoundError:
    require_extra("stable_baselines3", "sb3", "rlfocal.sb3")  # one line naming the extra when SB3 is missing
    raise

__all__ = ["DQN", "PrioritizedReplayBuffer", "PrioritizedReplayBufferSamples", "TD_LOSS_NAMES"]

TD_LOSS_NAMES: tuple[str, ...] = tuple(TD_LOSS_CONFIGS)  # the registry's names, as loss=NAME takes them
"""Names ``DQN(td_loss=...)`` accepts: the losses of ``configs/loss/`` (huber, mse, focal, mirror, pal)."""


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` fields, in the same order, plus the IS ``weights`` and the tree ``indices``.

    Each batch carries its own weights and indices, so several gradient steps per ``train()`` call each weight and
    reprioritise exactly the transitions they drew.
    """

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor  # [B] float32 on the buffer's device, max 1 (all 1 when prioritized=False)
    indices: np.ndarray  # [B] int64 slots, row * n_envs + env


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional PER (Schaul et al. 2016, https://arxiv.org/abs/1511.05952) for SB3's off-policy algorithms.

    The first seven arguments are SB3's (the algorithm fills them in). ``alpha``, ``beta``, ``eps``, ``is_norm``
    mean what they mean in ``rlfocal.replay.PrioritizedSampler``. β moves linearly from ``beta`` to ``beta_final``
    as ``set_progress`` is told the fraction of the run done (rlfocal's ``DQN`` does it each ``train()``, over
    the env steps after ``learning_starts``); ``anneal_beta=False`` keeps it at ``beta``. ``n_steps > 1`` gives
    n-step returns computed at sample time per environment column, as SB3's ``NStepReplayBuffer`` computes them
    (``gamma`` is the discount; rlfocal's ``DQN`` passes its own). ``seed`` seeds the sampler's generator; None
    draws it from ``np.random``, which SB3 seeds from the algorithm's ``seed``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        beta_final: float = 1.0,
        anneal_beta: bool = True,
        eps: float = 1e-6,
        is_norm: str = "batch",
        n_steps: int = 1,
        gamma: float = 0.99,
        prioritized: bool = True,
        seed: int | None = None,
    ) -> None:
        if isinstance(observation_space, spaces.Dict):
            raise ValueError("PrioritizedReplayBuffer does not support Dict observation spaces (no DictReplayBuffer)")
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        if not (isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must be a number in [0, 1], got {gamma!r}")
        if n_steps > 1 and optimize_memory_usage:
            raise ValueError("n_steps > 1 does not support optimize_memory_usage=True (as SB3's NStepReplayBuffer)")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs,
            optimize_memory_usage,
            handle_timeout_termination,
        )
        self.n_steps = int(n_steps)
        self.gamma = float(gamma)
        self.prioritized = bool(prioritized)
        self.anneal_beta = bool(anneal_beta)
        self._sampler_args = dict(alpha=alpha, beta=beta, eps=eps, beta_final=beta_final, is_norm=is_norm)
        self.sampler = self._new_sampler()  # validates alpha, beta, eps, is_norm (ValueError)
        self.beta0 = self.sampler.beta0
        self.beta_final = self.sampler.beta_final
        if self.prioritized and seed is None:
            # SB3 seeds np.random from the algorithm's seed; draw only here (uniform mode leaves it as SB3 does)
            seed = int(np.random.randint(2**31 - 1))  # noqa: NPY002
        self.rng = np.random.default_rng(seed)
        self._row_slots = np.arange(self.n_envs, dtype=np.int64)

    def _new_sampler(self) -> PrioritizedSampler:
        return PrioritizedSampler(self.buffer_size * self.n_envs, **self._sampler_args)

    @property
    def beta(self) -> float:
        """Current IS exponent."""
        return self.sampler.beta

    def set_progress(self, fraction: float) -> None:
        """Anneal β linearly: ``beta`` at ``fraction = 0``, ``beta_final`` at 1 (clipped to [0, 1])."""
        if self.anneal_beta:
            fraction = min(1.0, max(0.0, float(fraction)))
            self.sampler.beta = self.beta0 + fraction * (self.beta_final - self.beta0)

    def add(self, obs, next_obs, action, reward, done, infos) -> None:
        """SB3's ``add``; the new row's ``n_envs`` slots enter the tree at the largest priority seen so far."""
        row = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        if self.prioritized:
            self.sampler.on_write(row * self.n_envs + self._row_slots)
            if self.optimize_memory_usage:
                # next_obs was written into observations[self.pos]: the old transition there is no longer valid
                self.sampler.on_evict(self.pos * self.n_envs + self._row_slots)

    def reset(self) -> None:
        super().reset()
        self.sampler = self._new_sampler()

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:
        """``batch_size`` transitions with replacement: stratified over the priorities, or as SB3 does."""
        if self.size() == 0:
            raise ValueError("cannot sample from an empty buffer: add transitions first")
        if not self.prioritized:
            return super().sample(batch_size, env)  # SB3's draws from np.random, then our _get_samples
        slots, weights = self.sampler.sample(int(batch_size), 0, self.size() * self.n_envs, self.rng)
        rows, env_indices = np.divmod(slots, self.n_envs)
        return self._gather(rows, env_indices, env, slots, weights)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:
        # uniform mode: pick the env column as SB3's ReplayBuffer._get_samples does (same np.random draw)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))  # noqa: NPY002
        slots = batch_inds.astype(np.int64) * self.n_envs + env_indices
        return self._gather(batch_inds, env_indices, env, slots, np.ones(len(batch_inds), dtype=np.float32))

    def _gather(self, rows, env_indices, env, slots, weights) -> PrioritizedReplayBufferSamples:
        if self.n_steps > 1:
            data = self._n_step_data(rows, env_indices, env)
        else:
            if self.optimize_memory_usage:
                next_obs = self.observations[(rows + 1) % self.buffer_size, env_indices, :]
            else:
                next_obs = self.next_observations[rows, env_indices, :]
            data = ReplayBufferSamples(
                *map(
                    self.to_torch,
                    (
                        self._normalize_obs(self.observations[rows, env_indices, :], env),
                        self.actions[rows, env_indices, :],
                        self._normalize_obs(next_obs, env),
                        # only dones that are not time-limit truncations end the bootstrap
                        (self.dones[rows, env_indices] * (1 - self.timeouts[rows, env_indices])).reshape(-1, 1),
                        self._normalize_reward(self.rewards[rows, env_indices].reshape(-1, 1), env),
                    ),
                )
            )
        return PrioritizedReplayBufferSamples(*data, weights=self.to_torch(weights), indices=slots)

    def _n_step_data(self, rows: np.ndarray, env_indices: np.ndarray, env) -> ReplayBufferSamples:
        """SB3's ``NStepReplayBuffer._get_samples`` for given (row, env) pairs: the return runs down one env's
        column until a done, a truncation or the newest row, whichever comes first, and bootstraps there."""
        n = self.n_steps
        newest = self.pos - 1  # its successor is not stored yet: treat it as truncated while gathering
        saved = self.timeouts[newest].copy()
        self.timeouts[newest] = np.logical_or(saved, np.logical_not(self.dones[newest]))
        try:
            seq = (rows[:, None] + np.arange(n)) % self.buffer_size  # [B, n]
            col = env_indices[:, None]
            rewards = self._normalize_reward(self.rewards[seq, col], env)  # [B, n]
            ends = np.logical_or(self.dones[seq, col], self.timeouts[seq, col])  # [B, n]
            last = np.where(ends.any(axis=1), ends.argmax(axis=1), n - 1)  # [B] steps 0..last are summed
            mask = np.arange(n) <= last[:, None]
            bootstrap_discounts = self.gamma ** mask.sum(axis=1, keepdims=True).astype(np.float32)  # [B, 1]
            returns = (rewards * self.gamma ** np.arange(n, dtype=np.float32) * mask).sum(axis=1, keepdims=True)
            last_rows = (rows + last) % self.buffer_size
            dones = self.dones[last_rows, env_indices] * (1.0 - self.timeouts[last_rows, env_indices])
            next_obs = self.next_observations[last_rows, env_indices]
        finally:
            self.timeouts[newest] = saved
        return ReplayBufferSamples(
            observations=self.to_torch(self._normalize_obs(self.observations[rows, env_indices], env)),
            actions=self.to_torch(self.actions[rows, env_indices]),
            next_observations=self.to_torch(self._normalize_obs(next_obs, env)),
            dones=self.to_torch(dones[:, None].astype(np.float32)),
            rewards=self.to_torch(returns),
            discounts=self.to_torch(bootstrap_discounts),
        )

    def update_priorities(self, indices: np.ndarray, td_errors: th.Tensor | np.ndarray) -> None:
        """Feed back the raw TD errors of a sampled batch (the sampler applies ε and α). Checked for NaN/inf even
        in uniform mode, where nothing changes: a non-finite TD error is a bug worth stopping on."""
        td = np.asarray(td_errors.detach().cpu() if isinstance(td_errors, th.Tensor) else td_errors, np.float64)
        indices = np.asarray(indices)
        if td.shape != indices.shape or indices.ndim != 1:
            raise ValueError(f"indices and td_errors must be 1-D of the same length, got {indices.shape}, {td.shape}")
        if not self.prioritized:
            check_finite(td)
            return
        self.sampler.update_priorities(indices.astype(np.int64, copy=False), td)

    def priorities(self) -> np.ndarray:
        """Tree priorities ``p_i^α`` as ``[buffer_size, n_envs]`` (0 for empty slots)."""
        return self.sampler.tree.get(np.arange(self.buffer_size * self.n_envs)).reshape(self.buffer_size, self.n_envs)

    def stats(self) -> dict[str, float]:
        """Sampler statistics (``beta``, ``priority_max``, ``priority_total``) for the logger."""
        return self.sampler.stats() if self.prioritized else {}

    _ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")

    def state_dict(self) -> dict:
        """SB3's arrays (views, no copy), the write position, the sampler and its generator: plain data only."""
        return {
            "arrays": {name: getattr(self, name) for name in self._ARRAYS if getattr(self, name) is not None},
            "pos": self.pos,
            "full": self.full,
            "sampler": self.sampler.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``; arrays of another shape or dtype raise ``ValueError`` before any is written."""
        arrays = state["arrays"]
        expected = [name for name in self._ARRAYS if getattr(self, name) is not None]
        if sorted(arrays) != sorted(expected):
            raise ValueError(f"saved buffer holds arrays {sorted(arrays)}, this buffer needs {sorted(expected)}")
        for name in expected:
            src, dst = arrays[name], getattr(self, name)
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(
                    f"saved {name} has shape {src.shape} and dtype {src.dtype}, this buffer needs {dst.shape} and "
                    f"{dst.dtype} (build it with the same buffer_size, n_envs and spaces)"
                )
        self.sampler.load_state_dict(state["sampler"])
        for name in expected:
            np.copyto(getattr(self, name), arrays[name])
        self.pos, self.full = int(state["pos"]), bool(state["full"])
        self.rng.bit_generator.state = state["rng"]


def _make_td_loss(name: str, kwargs: dict[str, Any] | None) -> Callable[[th.Tensor], th.Tensor]:
    """The per-sample TD loss of δ that ``loss=<name>`` would give, from the same registry and range checks."""
    if name not in TD_LOSS_CONFIGS:
        raise ValueError(f"unknown td_loss {name!r}; valid names: {', '.join(TD_LOSS_NAMES)}")
    try:
        return td_loss_config(name, **(kwargs or {})).build()
    except ValueError as err:  # ConfigError is a ValueError: keep the one-line message
        raise ValueError(f"td_loss_kwargs: {err}") from None


class DQN(SB3DQN):
    """SB3's DQN whose loss is an rlfocal TD loss, weighted by PER's IS weights, with priorities written back.

    Takes every argument of ``stable_baselines3.DQN`` plus ``td_loss`` (one of ``TD_LOSS_NAMES``) and
    ``td_loss_kwargs`` (that loss's options, as ``loss.<option>`` takes them, e.g. ``{"gamma": 2, "tau": "auto"}``
    for focal). Any replay buffer works; with a ``PrioritizedReplayBuffer`` the IS weights apply, |δ| goes back as
    priorities after every gradient step, β anneals over the run, and ``n_steps`` (if > 1) is handed to it. With
    focal ``tau="auto"`` the running mean of the loss restarts after ``load``.
    """

    def __init__(
        self, *args: Any, td_loss: str = "huber", td_loss_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self.td_loss = td_loss
        self.td_loss_kwargs = dict(td_loss_kwargs or {})
        self._td_loss_fn = _make_td_loss(self.td_loss, self.td_loss_kwargs)  # bad input fails before env setup
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        self._td_loss_fn = _make_td_loss(self.td_loss, self.td_loss_kwargs)  # also rebuilds it after load()
        rb_class = self.replay_buffer_class
        if rb_class is not None and issubclass(rb_class, PrioritizedReplayBuffer):
            self.replay_buffer_kwargs = dict(self.replay_buffer_kwargs)  # SB3 keeps the caller's dict: copy it
            if self.n_steps > 1:
                self.replay_buffer_kwargs.setdefault("n_steps", self.n_steps)
            if self.replay_buffer_kwargs.get("n_steps", 1) > 1:
                self.replay_buffer_kwargs.setdefault("gamma", self.gamma)
        with warnings.catch_warnings():
            # SB3 warns that n_steps is ignored with a custom buffer class; ours has just been given it
            warnings.filterwarnings("ignore", message=r"`n_steps=\d+` is ignored", category=UserWarning)
            super()._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_td_loss_fn"]

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """A ``PrioritizedReplayBuffer`` is written as plain data (``.pkl`` added as SB3 does), which
        ``load_replay_buffer`` reads without running code; any other buffer is pickled as SB3 does."""
        if not isinstance(self.replay_buffer, PrioritizedReplayBuffer):
            return super().save_replay_buffer(path)
        file = open_path(path, "w", verbose=self.verbose, suffix="pkl")
        save_plain(self.replay_buffer.state_dict(), file)
        if isinstance(path, (str, pathlib.Path)):
            file.close()

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase, truncate_last_traj: bool = True) -> None:
        """Into a ``PrioritizedReplayBuffer``: restore what ``save_replay_buffer`` wrote, with
        ``torch.load(weights_only=True)``, so a file carrying pickled code (a stock SB3 pickle included) raises
        ``CheckpointError`` unrun. Other buffers load as in SB3 (an unpickle: only for trusted files)."""
        if not isinstance(self.replay_buffer, PrioritizedReplayBuffer):
            return super().load_replay_buffer(path, truncate_last_traj)
        file = open_path(path, "r", verbose=self.verbose, suffix="pkl")
        try:
            state = load_plain(file)
        except CheckpointError as error:
            raise CheckpointError(
                f"{error}; rlfocal.sb3.DQN reads only files its own save_replay_buffer wrote (a pickle runs code)"
            ) from None
        finally:
            if isinstance(path, (str, pathlib.Path)):
                file.close()
        self.replay_buffer.load_state_dict(state)

    def _beta_progress(self) -> float:
        """Fraction of the run's env steps after ``learning_starts`` that are done."""
        span = self._total_timesteps - self.learning_starts
        return 1.0 if span <= 0 else (self.num_timesteps - self.learning_starts) / span

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer = self.replay_buffer
        prioritized = isinstance(buffer, PrioritizedReplayBuffer)
        if prioritized:
            buffer.set_progress(self._beta_progress())

        losses, weight_min = [], 1.0
        for _ in range(gradient_steps):
            replay_data = buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            # For n-step replay, discount factor is gamma**n_steps (when no early termination)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma

            # SB3's target, unchanged: max over the target network (not double-Q)
            with th.no_grad():
                next_q_values, _ = self.q_net_target(replay_data.next_observations).max(dim=1)
                next_q_values = next_q_values.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
            current_q_values = th.gather(self.q_net(replay_data.observations), dim=1, index=replay_data.actions.long())

            # ALGO LOGIC: per-sample TD loss of δ = y − Q(s, a), IS-weighted, then |δ| back to the sampler
            td_errors = (target_q_values - current_q_values).squeeze(1)  # [B]
            per_sample = self._td_loss_fn(td_errors)  # [B]
            if prioritized:
                per_sample = replay_data.weights * per_sample
                weight_min = min(weight_min, float(replay_data.weights.min()))
            loss = per_sample.mean()
            losses.append(loss.item())

            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            if prioritized:
                buffer.update_priorities(replay_data.indices, td_errors.detach())

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))
        if prioritized and buffer.prioritized:
            for key, value in buffer.stats().items():
                self.logger.record(f"replay/{key}", value)
            self.logger.record("replay/is_weight_min", weight_min)
