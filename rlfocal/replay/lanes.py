"""S independent replay buffers ("lanes", one per seed) behind one interface, for seeds trained in lockstep.

Every lane is a whole ``ReplayBuffer`` with its own storage ring, sampler (sum tree, β schedule, max priority) and
RNG, and lane k gets exactly the calls a single-seed run of seed k makes, so lane k samples what that run samples
(issue 12: per-seed independence). Arrays carry a leading lane axis ``[S, ...]``; with S = 1 the lane axis is a
view, so a single-seed run pays a few attribute look-ups and no copies.

With S > 1 the lanes' gathered storage arrays and sum trees live in arrays stacked over lanes (each lane keeps
views of its rows), so a batch of all lanes is a few numpy takes and one compiled descent, not S Python round
trips; each lane still draws from its own generator, in lane order, exactly the numbers it draws alone. With a
storage device the lanes share one ``DeviceStorage`` over those stacked arrays, and a batch is gathered there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rlfocal.replay.buffer import Batch, ReplayBuffer, to_host
from rlfocal.replay.samplers import PrioritizedSampler, UniformSampler, is_weights, uniform_slots
from rlfocal.replay.sumtree import descend_stratified_lanes, set_priorities_from_errors_lanes

if TYPE_CHECKING:
    from rlfocal.replay.device_storage import DeviceStorage

_STEP_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")


class OneLaneBatch:
    """One seed's batch seen with a lane axis: fields ``[1, B, ...]`` made on first read, and ``single``, the batch
    itself, which a learner of one seed uses directly (the single-seed run pays for no reshaping)."""

    def __init__(self, single: Batch) -> None:
        self.single = single

    def __getattr__(self, name: str):
        value = getattr(self.single, name)
        return value[None] if isinstance(value, np.ndarray) else value.unsqueeze(0)


class LaneReplay:
    """``buffers[k]`` is lane k's replay; every call takes and returns arrays with a leading lane axis. Lanes must
    share one layout (storage shapes, sampler type, tree size): they are one config built once per seed."""

    def __init__(self, buffers: list[ReplayBuffer]) -> None:
        if not buffers:
            raise ValueError("LaneReplay needs at least one buffer (one per seed), got none")
        self.lanes = list(buffers)
        self.num_seeds = len(self.lanes)
        self.device_storage: DeviceStorage | None = None  # S > 1 with a storage device: every lane's, stacked
        if self.num_seeds > 1:
            self._stack_lanes()

    def _stack_lanes(self) -> None:
        """Move the lanes' gathered arrays and sum trees into arrays stacked over lanes (lane k keeps row k)."""
        storages = [buffer.storage for buffer in self.lanes]
        self._samplers = [buffer.sampler for buffer in self.lanes]
        kinds = {type(sampler) for sampler in self._samplers}
        if len(kinds) > 1 or not issubclass(kinds.pop(), (UniformSampler, PrioritizedSampler)):
            names = sorted({type(sampler).__name__ for sampler in self._samplers})
            raise ValueError(f"lanes need one sampler type, uniform or prioritized: got {', '.join(names)}")
        names = storages[0].gathered_arrays()
        if any(st.gathered_arrays() != names for st in storages):
            raise ValueError("lanes need one storage layout: some store frame stacks, some flat observations")
        stacked = {name: _stack([getattr(st, name) for st in storages], name) for name in names}
        for k, storage in enumerate(storages):
            storage.move_arrays({name: array[k] for name, array in stacked.items()})
        s, c = self.num_seeds, storages[0].capacity
        self._rows = {name: array.reshape(-1, *array.shape[2:]) for name, array in stacked.items()}  # [S * rows, ...]
        self._slot_offset = np.arange(s)[:, None] * c  # lane k's slot i is row k * capacity + i of the stacks
        if storages[0].frame_stack > 1:
            self._frame_offset = np.arange(s)[:, None, None, None] * storages[0].frame_capacity
        devices = {None if b.device_storage is None else b.device_storage.device for b in self.lanes}
        if len(devices) > 1:
            raise ValueError(f"lanes need one storage device: got {', '.join(sorted(map(str, devices)))}")
        device = devices.pop()
        if device is not None:  # replaces the lanes' own copies: what they hold is sent from the host at the first sync
            from rlfocal.replay.device_storage import DeviceStorage

            self.device_storage = DeviceStorage(storages, self._rows, device)
            for k, buffer in enumerate(self.lanes):
                buffer.device_storage, buffer.device_lane = self.device_storage, k
        if isinstance(self._samplers[0], PrioritizedSampler):
            trees = [sampler.tree for sampler in self._samplers]
            self._nodes = _stack([tree._nodes for tree in trees], "sum tree")
            for k, tree in enumerate(trees):
                tree.move_nodes(self._nodes[k])
            self._leaf0 = trees[0]._leaf0
            self._eps, self._floor, self._alpha = (
                np.array([getattr(sampler, name) for sampler in self._samplers])
                for name in ("eps", "min_priority", "alpha")
            )

    def __len__(self) -> int:
        """Transitions in the smallest lane: every lane can sample a batch this large."""
        return min(len(buffer) for buffer in self.lanes)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all lanes together."""
        return sum(buffer.nbytes for buffer in self.lanes)

    @property
    def device_nbytes(self) -> int:
        """Bytes of all lanes' device copies of their storage (0 without a storage device)."""
        return sum(buffer.device_nbytes for buffer in self.lanes)

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
        if self.num_seeds == 1:
            # one lane: the buffer's own path (pinned, non-blocking transfers on CUDA), seen with a lane axis
            return OneLaneBatch(self.lanes[0].sample_torch(batch_size, device))
        if self.device_storage is not None:
            self.device_storage.check_device(device)
        smallest = min(self.lanes, key=len)
        smallest.check_batch_size(batch_size)  # the smallest lane fails first if any does
        slots, weights = self._draw(int(batch_size))
        if self.device_storage is not None:
            return Batch(**self.device_storage.batch(slots, weights))
        return Batch(indices=slots, weights=weights, **self._gather(slots)).to_torch(device)

    def _draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Every lane's slots and IS weights ``[S, B]``: what each lane's sampler would draw with its generator."""
        s = self.num_seeds
        if isinstance(self._samplers[0], UniformSampler):
            slots = np.stack(
                [uniform_slots(batch_size, b.storage.start, b.storage.size, b.capacity, b.rng) for b in self.lanes]
            )
            return slots, np.ones((s, batch_size), dtype=np.float32)
        # PrioritizedSampler.sample for every lane: its uniforms, one stratified descent per tree, weights, β step
        totals = self._nodes[:, 1, 0]
        usable = (totals > 0.0) & (totals < np.inf)
        if not usable.all():
            self._samplers[int(np.argmin(usable))].tree._checked_total()  # raises, naming the total
        uniforms = np.empty((s, batch_size))
        for k, buffer in enumerate(self.lanes):
            buffer.rng.random(out=uniforms[k])
        slots = np.empty((s, batch_size), dtype=np.int64)
        priorities = np.empty((s, batch_size))
        descend_stratified_lanes(self._nodes, self._leaf0, uniforms, slots, priorities)
        # one power per distinct β (usually one for all lanes) keeps the sampler's scalar exponent, bit for bit
        p_min = (
            priorities.min(axis=1, keepdims=True) if self._samplers[0].is_norm == "batch" else self._nodes[:, 1:2, 1]
        )
        betas = np.array([sampler.beta for sampler in self._samplers])
        weights = np.empty((s, batch_size), dtype=np.float32)
        for beta in set(betas.tolist()):
            rows = betas == beta
            weights[rows] = is_weights(priorities[rows], p_min[rows], beta)
        for sampler in self._samplers:
            sampler.step_beta()
        return slots, weights

    def _gather(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Every lane's transitions at ``slots`` ``[S, B]``, fields ``[S, B, ...]``: one take per stacked array."""
        s, b = slots.shape
        rows = (slots + self._slot_offset).reshape(-1)
        data = {
            name: np.take(self._rows[name], rows, axis=0).reshape(s, b, *self._rows[name].shape[1:])
            for name in ("actions", "rewards", "discounts")
        }
        if "obs" in self._rows:
            # one allocation for both (see TransitionStorage.gather: two would be trimmed and faulted back in);
            # mode="clip" skips numpy's defensive copy for `out`, and every row is a valid slot
            both = np.empty((2, s * b, *self._rows["obs"].shape[1:]), dtype=self._rows["obs"].dtype)
            np.take(self._rows["obs"], rows, axis=0, out=both[0], mode="clip")
            np.take(self._rows["next_obs"], rows, axis=0, out=both[1], mode="clip")
        else:
            frame_ids = np.take(self._rows["frame_ids"], rows, axis=0).reshape(s, b, 2, -1) + self._frame_offset
            both = np.take(self._rows["frames"], frame_ids.reshape(s * b, 2, -1).swapaxes(0, 1), axis=0)
        data["obs"], data["next_obs"] = both.reshape(2, s, b, *both.shape[2:])
        return data

    def update_priorities(self, indices, td_errors, lanes: list[int] | None = None) -> list[int]:
        """Feed back the TD errors ``[S, B]`` of a sampled batch (one device-to-host copy for all lanes); lane k's
        sampler gets row k. ``lanes`` limits the write-back to those lanes (the loop skips seeds stopped by a NaN).
        With several lanes, a lane whose errors are not finite is skipped and returned; one lane raises. Invalid
        indices raise the lane's own error before any lane changes."""
        slots, td = to_host(indices), to_host(td_errors)
        if slots.ndim != 2 or slots.shape[0] != self.num_seeds:
            raise ValueError(f"indices has shape {slots.shape}, expected ({self.num_seeds}, batch_size)")
        if td.shape != slots.shape:
            raise ValueError(f"td_errors has shape {td.shape}, expected the shape of indices {slots.shape}")
        if self.num_seeds == 1:
            self.lanes[0].update_priorities(slots[0], td[0])  # a non-finite error raises, as for one buffer
            return []
        finite = np.isfinite(td).all(axis=1)
        live = list(range(self.num_seeds)) if lanes is None else list(lanes)
        nonfinite = [k for k in live if not finite[k]]  # their priorities stay as they were; the caller stops them
        rows = np.array([k for k in live if finite[k]], dtype=np.int64)
        if rows.size == 0:
            return nonfinite
        integer = slots.dtype.kind in "iu"
        valid = self._valid(slots[rows], rows).all(axis=1) if integer else np.zeros(rows.size, dtype=bool)
        if not valid.all():
            bad = rows[np.argmin(valid)]
            self.lanes[bad].update_priorities(slots[bad], td[bad])  # raises the lane's own message
        if not isinstance(self._samplers[0], PrioritizedSampler):
            return nonfinite
        slots = slots.astype(np.int64, copy=False)
        td = td if td.dtype.kind == "f" else td.astype(np.float64)
        raw_max = np.empty(rows.size)
        set_priorities_from_errors_lanes(
            self._nodes, self._leaf0, rows, slots, td, self._eps, self._floor, self._alpha, raw_max
        )
        for k, raw in zip(rows.tolist(), raw_max.tolist(), strict=True):
            self._samplers[k].record_update(slots[k], raw)
        return nonfinite

    def _valid(self, slots: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Which of ``slots[j]`` hold a transition of lane ``rows[j]``."""
        starts = np.array([self.lanes[k].storage.start for k in rows.tolist()])[:, None]
        sizes = np.array([self.lanes[k].storage.size for k in rows.tolist()])[:, None]
        capacity = self.lanes[0].capacity
        return (slots >= 0) & (slots < capacity) & ((slots - starts) % capacity < sizes)

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


def _stack(arrays: list[np.ndarray], name: str) -> np.ndarray:
    """Zeros shaped ``[S, *shape]`` for S arrays of one shape and dtype (new zeros touch no memory until written)."""
    first = arrays[0]
    for k, array in enumerate(arrays):
        if array.shape != first.shape or array.dtype != first.dtype:
            raise ValueError(f"lane {k}'s {name} has shape {array.shape} and dtype {array.dtype}, lane 0's "
                             f"{first.shape} and {first.dtype}: lanes need one layout")  # fmt: skip
    return np.zeros((len(arrays), *first.shape), dtype=first.dtype)
