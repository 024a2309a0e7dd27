"""S independent replay buffers ("lanes", one per seed) behind one interface, for seeds trained in lockstep.

Every lane is a whole ``ReplayBuffer`` with its own storage ring, sampler (sum tree, β schedule, max priority) and
RNG, and lane k gets exactly the calls a single-seed run of seed k makes, so lane k samples what that run samples
(issue 12: per-seed independence). Arrays carry a leading lane axis ``[S, ...]``; with S = 1 the lane axis is a
view, so a single-seed run pays a few attribute look-ups and no copies.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from rlfocal.replay.buffer import Batch, ReplayBuffer, to_host

_STEP_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")
_BATCH_FIELDS = tuple(f.name for f in fields(Batch))


class OneLaneBatch:
    """One seed's batch seen with a lane axis: fields ``[1, B, ...]`` made on first read, and ``single``, the batch
    itself, which a learner of one seed uses directly (the single-seed run pays for no reshaping)."""

    def __init__(self, single: Batch) -> None:
        self.single = single

    def __getattr__(self, name: str):
        value = getattr(self.single, name)
        return value[None] if isinstance(value, np.ndarray) else value.unsqueeze(0)


class LaneReplay:
    """``buffers[k]`` is lane k's replay; every call takes and returns arrays with a leading lane axis."""

    def __init__(self, buffers: list[ReplayBuffer]) -> None:
        if not buffers:
            raise ValueError("LaneReplay needs at least one buffer (one per seed), got none")
        self.lanes = list(buffers)
        self.num_seeds = len(self.lanes)

    def __len__(self) -> int:
        """Transitions in the smallest lane: every lane can sample a batch this large."""
        return min(len(buffer) for buffer in self.lanes)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all lanes together."""
        return sum(buffer.nbytes for buffer in self.lanes)

    def _check_lanes(self, arrays: tuple, names: tuple[str, ...]) -> None:
        """Every array's leading axis is the lane axis (each lane checks the rest itself)."""
        for name, x in zip(names, arrays, strict=True):
            if np.ndim(x) == 0 or len(x) != self.num_seeds:
                raise ValueError(f"{name} has shape {np.shape(x)}: its leading axis must be the {self.num_seeds} lanes")

    def add_batch(self, obs, actions, rewards, next_obs, terminated, truncated, env_ids=None) -> None:
        """One vectorised step of every lane: arrays ``[S, E, ...]``, ``env_ids`` ``[E]`` shared by the lanes.
        Lane k gets ``add_batch(obs[k], ...)`` (for E = 1 the buffer's one-row fast path)."""
        if self.num_seeds == 1 and len(obs) == 1:  # the single-seed run: the buffer checks the rest, at no extra cost
            self.lanes[0].add_batch(obs[0], actions[0], rewards[0], next_obs[0], terminated[0], truncated[0], env_ids)
            return
        self._check_lanes((obs, actions, rewards, next_obs, terminated, truncated), _STEP_FIELDS)
        for k, buffer in enumerate(self.lanes):
            buffer.add_batch(obs[k], actions[k], rewards[k], next_obs[k], terminated[k], truncated[k], env_ids)

    def truncate_streams(self) -> None:
        """End every lane's environment streams as truncated (a resumed run's fresh environments)."""
        for buffer in self.lanes:
            buffer.truncate_streams()

    def sample_torch(self, batch_size: int, device="cpu") -> Batch | OneLaneBatch:
        """A batch of ``batch_size`` per lane, fields stacked ``[S, B, ...]`` on ``device``, ``indices`` ``[S, B]``
        on the host. Lane k's rows are ``lanes[k].sample_torch(batch_size, device)``, drawn from lane k's RNG."""
        if self.num_seeds > 1:
            batches = [buffer.sample(batch_size) for buffer in self.lanes]
            stacked = {name: np.stack([getattr(b, name) for b in batches]) for name in _BATCH_FIELDS}
            return Batch(**stacked).to_torch(device)
        # one lane: the buffer's own path (pinned, non-blocking transfers on CUDA), seen with a lane axis
        return OneLaneBatch(self.lanes[0].sample_torch(batch_size, device))

    def update_priorities(self, indices, td_errors, lanes: list[int] | None = None) -> list[int]:
        """Feed back the TD errors ``[S, B]`` of a sampled batch (one device-to-host copy for all lanes); lane k's
        sampler gets row k. ``lanes`` limits the write-back to those lanes (the loop skips seeds stopped by a NaN).
        With several lanes, a lane whose errors are not finite is skipped and returned; one lane raises."""
        slots, td = to_host(indices), to_host(td_errors)
        if slots.ndim != 2 or slots.shape[0] != self.num_seeds:
            raise ValueError(f"indices has shape {slots.shape}, expected ({self.num_seeds}, batch_size)")
        if td.shape != slots.shape:
            raise ValueError(f"td_errors has shape {td.shape}, expected the shape of indices {slots.shape}")
        if self.num_seeds == 1:
            self.lanes[0].update_priorities(slots[0], td[0])  # a non-finite error raises, as for one buffer
            return []
        nonfinite = []
        for k in range(self.num_seeds) if lanes is None else lanes:
            if not np.isfinite(td[k]).all():
                nonfinite.append(k)  # that lane's priorities stay as they were; the caller stops the lane
                continue
            self.lanes[k].update_priorities(slots[k], td[k])
        return nonfinite

    def stats(self) -> list[dict[str, float]]:
        """Each lane's sampler statistics (``beta``, ``priority_max``, ...), lane by lane."""
        return [buffer.stats() for buffer in self.lanes]

    def state_dict(self) -> list[dict]:
        """Each lane's ``ReplayBuffer.state_dict`` (views of its arrays: save before adding more)."""
        return [buffer.state_dict() for buffer in self.lanes]

    def load_state_dict(self, state: list[dict]) -> None:
        if not isinstance(state, (list, tuple)) or len(state) != self.num_seeds:
            got = f"{len(state)} lane states" if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(f"the saved replay holds {got}, this one has {self.num_seeds} lanes")
        for buffer, lane_state in zip(self.lanes, state, strict=True):
            buffer.load_state_dict(lane_state)
