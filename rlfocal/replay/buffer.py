"""Replay buffers: a ``TransitionStorage`` and a sampler behind one interface.

``UniformReplay``, ``PrioritizedReplay`` and ``LAPReplay`` differ only in the sampler they plug in, so
switching the sampling rule of an experiment is one config choice (as TorchRL and Dopamine split it).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from rlfocal.replay.samplers import LAPSampler, PrioritizedSampler, UniformSampler, uniform_slots
from rlfocal.replay.storage import TransitionStorage

if TYPE_CHECKING:
    import torch

    from rlfocal.replay.device_storage import DeviceStorage


@dataclass
class Batch:
    """A sampled batch. Targets are ``rewards + discounts * max_a Q(next_obs, a)``; ``discounts`` already holds
    ``gamma^m`` for an m-step return, or 0 where the episode terminated."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    discounts: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    def to_torch(self, device="cpu", non_blocking: bool = True) -> Batch:
        """The same batch as torch tensors on ``device``: zero-copy on CPU, one host-to-device copy per field on
        CUDA (asynchronous when the arrays are pinned, as ``ReplayBuffer.sample_torch`` makes them). ``indices``
        stay on the host, where priorities are written back: no host-to-device-to-host round trip."""
        import torch

        device = torch.device(device)
        tensors = {f.name: torch.from_numpy(getattr(self, f.name)) for f in fields(self)}
        return Batch(**{
            name: t if name == "indices" else t.to(device, non_blocking=non_blocking) for name, t in tensors.items()
        })  # fmt: skip


class ReplayBuffer:
    """Storage + sampler. ``update_priorities`` takes raw TD errors (or any per-sample surprise signal).

    ``storage_device`` (a torch device) keeps a copy of the gathered arrays there (``DeviceStorage``), from which
    ``sample_torch`` gathers its batches on that device; None keeps everything in host memory."""

    def __init__(self, storage: TransitionStorage, sampler, seed: int | None = 0, storage_device=None) -> None:
        self.storage = storage
        self.sampler = sampler
        self.rng = np.random.default_rng(seed)
        self.device_storage: DeviceStorage | None = None
        self.device_lane = 0  # this buffer's lane in ``device_storage`` (seed lanes share one, see LaneReplay)
        if storage_device is not None:
            from rlfocal.replay.device_storage import DeviceStorage

            self.device_storage = DeviceStorage.of(storage, storage_device)
        self._pinned: dict[int, dict[str, np.ndarray]] = {}
        # per CUDA device index, an event recorded after the last transfer out of the pinned staging arrays
        self._copy_done: dict[int, torch.cuda.Event] = {}

    def __len__(self) -> int:
        return self.storage.size

    @property
    def capacity(self) -> int:
        return self.storage.capacity

    @property
    def nbytes(self) -> int:
        """Bytes of allocated storage (transition arrays, frames and, for prioritized sampling, the trees)."""
        tree = getattr(self.sampler, "tree", None)
        return self.storage.nbytes + (tree.nbytes if tree is not None else 0)

    @property
    def device_nbytes(self) -> int:
        """Bytes of this buffer's device copy of its storage (0 without ``storage_device``)."""
        ds = self.device_storage
        return 0 if ds is None else ds.nbytes // ds.num_lanes

    def add(self, obs, action, reward, next_obs, terminated, truncated, env_id: int = 0) -> None:
        """Add one environment step of stream ``env_id``."""
        self._notify(*self.storage.add(obs, action, reward, next_obs, terminated, truncated, env_id))

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated, env_ids=None) -> None:
        """Add steps along a leading batch dimension, in order; ``env_ids[i]`` names row i's stream (default:
        all rows are consecutive steps of stream 0; a vectorised env step passes ``np.arange(num_envs)``)."""
        self._notify(*self.storage.add_batch(obs, action, reward, next_obs, terminated, truncated, env_ids))

    def truncate_streams(self) -> None:
        """End every environment stream as truncated (see ``TransitionStorage.truncate_streams``)."""
        self._notify(*self.storage.truncate_streams())

    def _notify(self, written: np.ndarray, evicted: np.ndarray) -> None:
        """Tell the sampler which slots changed. One batch can write a slot and evict it again (or the reverse),
        so what counts is each slot's state at the end: valid slots were written, the others are empty."""
        if self.device_storage is not None:
            self.device_storage.note_written(self.device_lane, written.size)
        if evicted.size:
            self.sampler.on_evict(evicted[~self.storage.valid(evicted)])
            written = written[self.storage.valid(written)]
        if written.size:
            self.sampler.on_write(written)

    def sample(self, batch_size: int) -> Batch:
        """Draw ``batch_size`` transitions (with replacement) as numpy arrays."""
        return self._sample(batch_size)

    def sample_torch(self, batch_size: int, device="cpu") -> Batch:
        """Draw a batch as tensors on ``device`` (``indices`` stay on the host). With a ``storage_device`` (which
        ``device`` must be) the fields are gathered there (``DeviceStorage.batch``). Otherwise, on CPU the tensors
        share the freshly gathered arrays; on CUDA the fields are gathered straight into pinned staging arrays and
        copied with one non-blocking transfer each on ``device``'s current stream. The staging arrays are rewritten
        only once the previous transfer out of them has finished (an event recorded on the stream the copies ran
        on)."""
        import torch

        device = torch.device(device)
        if self.device_storage is not None:
            self.device_storage.check_device(device)
            return Batch(**self.device_storage.batch(*self._draw(batch_size), self.device_lane))
        if device.type != "cuda":
            return self._sample(batch_size).to_torch(device)
        slots, weights = self._draw(batch_size)  # host work that overlaps the previous batch's transfer
        with torch.cuda.device(device):
            staging = self._staging(len(slots))
            self.storage.gather(slots, staging)
            np.copyto(staging["weights"], weights)
            batch = Batch(indices=slots, **staging).to_torch(device, non_blocking=True)
            stream = torch.cuda.current_stream(device)
            event = self._copy_done.get(stream.device_index)
            if event is None:
                event = self._copy_done[stream.device_index] = torch.cuda.Event()
            event.record(stream)
        return batch

    def stored_slots(self) -> np.ndarray:
        """Every slot that holds a transition, oldest first."""
        st = self.storage
        return (st.start + np.arange(st.size)) % st.capacity

    def peek(self, batch_size: int, rng: np.random.Generator) -> Batch:
        """A uniform batch (with replacement, weights 1) drawn with the caller's ``rng``: for diagnostics, which
        must leave the buffer's own RNG and the sampler's state (β schedule, counters) untouched."""
        st = self.storage
        if st.size == 0:
            raise ValueError("cannot sample from an empty buffer: add transitions first")
        slots = uniform_slots(batch_size, st.start, st.size, st.capacity, rng)
        return Batch(indices=slots, weights=np.ones(batch_size, np.float32), **self.storage.gather(slots))

    def _draw(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Slots and importance weights of a batch (the sampler's fresh arrays)."""
        self.check_batch_size(batch_size)
        return self.sampler.sample(int(batch_size), self.storage.start, self.storage.size, self.rng)

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ``ValueError`` unless ``batch_size`` is a positive integer no larger than the transitions stored."""
        size = self.storage.size
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if size == 0:
            raise ValueError("cannot sample from an empty buffer: add transitions first")
        if batch_size > size:
            raise ValueError(f"batch_size {batch_size} is larger than the {size} transitions stored")

    def _sample(self, batch_size: int) -> Batch:
        slots, weights = self._draw(batch_size)
        return Batch(indices=slots, weights=weights, **self.storage.gather(slots))

    def _staging(self, batch_size: int) -> dict[str, np.ndarray]:
        """Pinned host arrays for the fields of one batch size, except ``indices`` (which stay the sampler's
        own); returned once every transfer out of the staging memory has finished."""
        import torch

        for event in self._copy_done.values():
            event.synchronize()
        if batch_size not in self._pinned:
            probe = self.storage.gather(np.zeros(batch_size, dtype=np.int64))
            probe["weights"] = np.zeros(batch_size, np.float32)
            self._pinned[batch_size] = {name: torch.from_numpy(a).pin_memory().numpy() for name, a in probe.items()}
        return self._pinned[batch_size]

    def update_priorities(self, indices, td_errors) -> None:
        """Feed back the TD errors of a sampled batch (numpy arrays or torch tensors on any device). Validated
        even for uniform sampling, where it changes nothing: a NaN there is still a bug worth stopping on."""
        slots, td = to_host(indices), to_host(td_errors).reshape(-1)
        if slots.ndim != 1 or slots.dtype.kind not in "iu":
            raise ValueError(f"indices must be a 1-D integer array, got shape {slots.shape}, dtype {slots.dtype}")
        if td.shape != slots.shape:
            raise ValueError(f"td_errors has {td.size} values for {slots.size} indices")
        if td.dtype.kind != "f":
            td = td.astype(np.float64)
        slots = slots.astype(np.int64, copy=False)
        bad = self.storage.first_invalid(slots)
        if bad >= 0:
            raise ValueError(
                f"index {slots[bad]} does not hold a transition (buffer holds {len(self)} of {self.capacity})"
            )
        self.sampler.update_priorities(slots, td)

    def stats(self) -> dict[str, float]:
        """Sampler statistics for logging (``beta``, ``priority_max``, ...)."""
        return self.sampler.stats()

    def state_dict(self) -> dict:
        return {
            "storage": self.storage.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.storage.load_state_dict(state["storage"])
        if self.device_storage is not None:
            self.device_storage.reload(self.device_lane)
        self.sampler.load_state_dict(state["sampler"])
        self.rng.bit_generator.state = state["rng"]


def to_host(x) -> np.ndarray:
    """A numpy view of a numpy array, sequence or torch tensor (copied to the host if it lives on a device)."""
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)


class UniformReplay(ReplayBuffer):
    """Uniform experience replay (Mnih et al. 2015): weights are all 1."""

    def __init__(
        self,
        capacity: int,
        obs_shape,
        obs_dtype=np.float32,
        seed: int | None = 0,
        *,
        storage_device=None,
        **storage_kwargs,
    ) -> None:
        storage = TransitionStorage(capacity, obs_shape, obs_dtype, **storage_kwargs)
        super().__init__(storage, UniformSampler(storage.capacity), seed, storage_device)


class PrioritizedReplay(ReplayBuffer):
    """Proportional prioritized replay on a sum tree; see ``PrioritizedSampler`` for α, β, ε and ``is_norm``.

    ``storage_kwargs`` (``n_step``, ``gamma``, ``frame_stack``, ``action_shape``, ...) go to ``TransitionStorage``;
    ``storage_device``: see ``ReplayBuffer``.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape,
        obs_dtype=np.float32,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
        seed: int | None = 0,
        *,
        beta_final: float = 1.0,
        beta_steps: int | None = None,
        is_norm: str = "batch",
        storage_device=None,
        **storage_kwargs,
    ) -> None:
        storage = TransitionStorage(capacity, obs_shape, obs_dtype, **storage_kwargs)
        sampler = PrioritizedSampler(
            storage.capacity, alpha, beta, eps, beta_final=beta_final, beta_steps=beta_steps, is_norm=is_norm
        )
        super().__init__(storage, sampler, seed, storage_device)

    @property
    def beta(self) -> float:
        return self.sampler.beta

    @beta.setter
    def beta(self, value: float) -> None:
        self.sampler.beta = value


class LAPReplay(ReplayBuffer):
    """LAP sampling (``max(|δ|, min_priority)^α``, no IS weights); see ``LAPSampler``."""

    def __init__(
        self,
        capacity: int,
        obs_shape,
        obs_dtype=np.float32,
        alpha: float = 0.6,
        min_priority: float = 1.0,
        seed: int | None = 0,
        *,
        storage_device=None,
        **storage_kwargs,
    ) -> None:
        storage = TransitionStorage(capacity, obs_shape, obs_dtype, **storage_kwargs)
        super().__init__(storage, LAPSampler(storage.capacity, alpha, min_priority), seed, storage_device)
