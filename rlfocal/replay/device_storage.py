"""Replay storage on the learner's device (``replay.storage_device``): batches gathered where they are learned from.

``DeviceStorage`` keeps torch copies of the arrays ``TransitionStorage.gather`` reads (actions, rewards, discounts,
and obs/next_obs or the frame ring with each slot's frame positions). The host storage stays the truth: it keeps the
ring indices, n-step windows, frame ids and frame-chain checks, and checkpoints save its arrays, so the stored
observations take their memory twice, once on the host and once on the device.

An add only counts what it wrote; ``sync`` sends the rows written since the last one (a contiguous range of the slot
ring and of the frame ring per lane, wrapping) with one copy per array. It runs before every batch and at an add
once ``_SYNC_BYTES`` are pending. A batch then costs two small copies (slots and IS weights, drawn on the host as
before) and ``index_select`` on the device: no host gather, no staging arrays, no sync. Indices stay on the host.
"""

from __future__ import annotations

import numpy as np
import torch

from rlfocal.replay.storage import TransitionStorage

_SYNC_BYTES = 8 << 20  # pending rows sent at an add once this many bytes wait (bounds the pinned memory of a sync)
_RELOAD_BYTES = 64 << 20  # rows per blocking copy when a whole lane is copied again


class DeviceStorage:
    """Device copies of the gathered arrays of S storages: one buffer's, or every seed lane's stacked (row
    ``k * rows + i`` of each is row i of lane k; ``arrays`` are the host arrays in that layout)."""

    def __init__(self, storages: list[TransitionStorage], arrays: dict[str, np.ndarray], device) -> None:
        device = torch.device(device)
        if device.type not in ("cpu", "cuda", "meta"):  # meta: shapes only (benchmarks/host_side.py)
            raise ValueError(f"storage_device must be a cpu or cuda device, got {device}")
        self.device = device
        self.storages = storages
        self.host = arrays
        self.num_lanes = len(storages)
        self.capacity = storages[0].capacity
        self.frame_capacity = getattr(storages[0], "frame_capacity", 0)
        self._slot_arrays = tuple(name for name in arrays if name != "frames")
        self._slot_bytes = sum(arrays[name][0].nbytes for name in self._slot_arrays)
        self._frame_bytes = arrays["frames"][0].nbytes if "frames" in arrays else 0
        self._tensors: dict[str, torch.Tensor] | None = None  # made at the first sync (after lanes are stacked)
        self._unsynced = [0] * self.num_lanes  # slots each lane wrote since the last sync
        self._synced_frames = [_frames(st) for st in storages]  # frames_written at the last sync
        self._counted_frames = list(self._synced_frames)  # frames_written at the last count
        self._pending_bytes = 0
        self._stale = {k for k, st in enumerate(storages) if st.size or _frames(st)}  # lanes to copy whole

    @classmethod
    def of(cls, storage: TransitionStorage, device) -> DeviceStorage:
        """The device copy of one storage's gathered arrays."""
        return cls([storage], {name: getattr(storage, name) for name in storage.gathered_arrays()}, device)

    @property
    def nbytes(self) -> int:
        """Bytes of the device copies (the host arrays' shapes and dtypes)."""
        return sum(array.nbytes for array in self.host.values())

    def check_device(self, device) -> None:
        """Batches are gathered where the arrays are stored: raise unless ``device`` is that device."""
        if torch.device(device) != self.device:
            raise ValueError(f"this replay stores its transitions on {self.device}: sample them there, not on {device}")

    def note_written(self, lane: int, slots: int) -> None:
        """Count ``slots`` slots (and the frames) lane ``lane`` just wrote; send them once enough bytes wait."""
        frames = _frames(self.storages[lane])
        self._unsynced[lane] += slots
        self._pending_bytes += slots * self._slot_bytes + (frames - self._counted_frames[lane]) * self._frame_bytes
        self._counted_frames[lane] = frames
        if self._pending_bytes >= _SYNC_BYTES:
            self.sync()

    def reload(self, lane: int) -> None:
        """Copy all of lane ``lane`` at the next sync: its host arrays were overwritten (a checkpoint was loaded)."""
        self._stale.add(lane)

    def sync(self) -> None:
        """Send what the lanes wrote since the last sync: one copy per array (and one of the row positions unless they
        are one contiguous range); a lane marked stale is copied whole with blocking copies."""
        if self._tensors is None:
            self._tensors = {
                name: torch.zeros(array.shape, dtype=torch.from_numpy(array[:0]).dtype, device=self.device)
                for name, array in self.host.items()
            }
        slot_ranges: list[tuple[int, int]] = []
        frame_ranges: list[tuple[int, int]] = []
        for k, st in enumerate(self.storages):
            frames = _frames(st)
            if k in self._stale:
                self._copy_lane(k)
            else:
                head = (st.start + st.size) % self.capacity
                slot_ranges += _ring_ranges(k * self.capacity, self.capacity, head, self._unsynced[k])
                if self._frame_bytes:
                    fc = self.frame_capacity
                    frame_ranges += _ring_ranges(k * fc, fc, frames % fc, frames - self._synced_frames[k])
            self._unsynced[k] = 0
            self._synced_frames[k] = self._counted_frames[k] = frames
        self._stale.clear()
        self._pending_bytes = 0
        self._copy_rows(self._slot_arrays, slot_ranges)
        self._copy_rows(("frames",), frame_ranges)

    def batch(self, slots: np.ndarray, weights: np.ndarray, lane: int | None = None) -> dict[str, torch.Tensor]:
        """The fields of a ``Batch`` at ``slots`` (lane ``lane``'s ``[B]``, or with ``lane`` None every lane's
        ``[S, B]``), gathered on the device after a sync; ``indices`` are ``slots``, on the host."""
        self.sync()
        tensors, shape = self._tensors, slots.shape
        if lane is None and self.num_lanes > 1:
            rows = slots + np.arange(self.num_lanes)[:, None] * self.capacity
        else:
            rows = slots + lane * self.capacity if lane else slots
        index = self._send(rows.reshape(-1))
        data = {
            name: tensors[name].index_select(0, index).view(*shape, *tensors[name].shape[1:])
            for name in self._slot_arrays
            if name != "frame_ids"
        }
        if self._frame_bytes:
            ids = tensors["frame_ids"].index_select(0, index).long()  # [N, 2, k]: obs and next_obs frame positions
            if self.num_lanes > 1:
                ids += (index // self.capacity * self.frame_capacity).view(-1, 1, 1)
            frames = tensors["frames"]
            # one gather for both stacks, obs first: each half is contiguous, as the host gather's
            both = frames.index_select(0, ids.transpose(0, 1).reshape(-1))
            data["obs"], data["next_obs"] = both.view(2, *shape, ids.shape[2], *frames.shape[1:]).unbind()
        return dict(data, indices=torch.from_numpy(slots), weights=self._send(weights))

    def _copy_rows(self, names: tuple[str, ...], ranges: list[tuple[int, int]]) -> None:
        """Send rows ``[lo, hi)`` of each ``ranges`` entry of the named arrays: a slice write for a single range,
        else one gather on the host and one ``index_copy_`` on the device."""
        if not ranges:
            return
        if len(ranges) == 1:
            lo, hi = ranges[0]
            for name in names:
                self._tensors[name][lo:hi] = self._send(self.host[name][lo:hi])
            return
        rows = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
        index = self._send(rows)
        for name in names:
            self._tensors[name].index_copy_(0, index, self._send(np.take(self.host[name], rows, axis=0)))

    def _copy_lane(self, lane: int) -> None:
        """Copy every row of lane ``lane`` from the host, in blocking copies of at most ``_RELOAD_BYTES``."""
        for name, array in self.host.items():
            rows = array.shape[0] // self.num_lanes
            step = max(1, _RELOAD_BYTES // array[0].nbytes)
            for lo in range(lane * rows, (lane + 1) * rows, step):
                hi = min(lo + step, (lane + 1) * rows)
                self._tensors[name][lo:hi] = self._send(array[lo:hi], blocking=True)

    def _send(self, array: np.ndarray, blocking: bool = False) -> torch.Tensor:
        """``array`` as a tensor on the device. On CUDA a non-blocking copy out of freshly pinned memory: torch's
        caching host allocator keeps that memory until the copy has run (it records an event), so nothing waits and
        ``array`` may change at once. A copy straight out of pageable memory waits for the stream to drain
        (``non_blocking=False`` synchronises it): kept for ``blocking`` copies, too large to pin."""
        tensor = torch.from_numpy(array)
        if blocking or self.device.type != "cuda":
            return tensor.to(self.device)  # on CPU the array itself (the caller's write copies it at once)
        return tensor.pin_memory().to(self.device, non_blocking=True)


def _frames(storage: TransitionStorage) -> int:
    """Frames the storage has written (0 without frame stacks)."""
    return getattr(storage, "frames_written", 0)


def _ring_ranges(base: int, ring: int, end: int, count: int) -> list[tuple[int, int]]:
    """The last ``count`` positions of a ring of ``ring`` rows before ``end``, offset by ``base``: at most two
    ``[lo, hi)`` ranges (only the newest ``ring`` when ``count`` is larger)."""
    count = min(count, ring)
    if count == 0:
        return []
    begin = (end - count) % ring
    if begin + count <= ring:
        return [(base + begin, base + begin + count)]
    return [(base + begin, base + ring), (base, base + begin + count - ring)]
