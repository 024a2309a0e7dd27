"""Priority write-back one update late, so that a training step never blocks on its own TD errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlfocal.replay.buffer import ReplayBuffer
from rlfocal.replay.lanes import LaneReplay


@dataclass
class _Pending:
    """One update's write-back, waiting for its TD errors to reach the host."""

    slots: np.ndarray  # [S, B] int64, a host copy of the sampled indices
    starts: np.ndarray  # [S] each lane's oldest slot then
    lanes: list[int] | None  # the seed lanes to write back (None: all)
    td: torch.Tensor  # host tensor; being written until ``done`` has fired
    done: torch.cuda.Event | None  # recorded after the device-to-host copy (None: the copy was synchronous)


class DeferredPriorities:
    """Feeds TD errors back to ``buffer.update_priorities`` one update late, with no blocking sync per update.

    ``push(indices, td_errors)`` for update k starts a non-blocking device-to-host copy of the TD errors (into
    pinned memory, with an event recorded on the stream that computed them), then applies update k-1, whose copy
    has had a whole update's worth of GPU time to land. The cost is **one update of staleness**: the batch of update
    k+1 is drawn from priorities that do not yet include update k's TD errors (PER tolerates far more: its stored
    priorities are typically hundreds of updates old). CPU tensors take the same one-update-late path, so CPU and
    CUDA runs sample alike. Call ``flush()`` before saving, loading or reading the priorities.

    A slot that left the buffer between sampling and write-back (the ring moved past it) keeps its new occupant's
    priority: that TD error is dropped. This assumes fewer than ``capacity`` transitions are evicted between two
    pushes. Errors that ``update_priorities`` raises (a non-finite TD error) surface one update late.

    ``buffer`` is one ``ReplayBuffer`` (indices ``[B]``) or the S seed lanes of a ``LaneReplay`` (indices and TD
    errors ``[S, B]``); with several lanes a lane whose TD errors are not finite is skipped and returned, as
    ``LaneReplay.update_priorities`` does, one update late.
    """

    def __init__(self, buffer: ReplayBuffer | LaneReplay) -> None:
        self._ndim = 2 if isinstance(buffer, LaneReplay) else 1
        self.buffer = buffer if isinstance(buffer, LaneReplay) else LaneReplay([buffer])
        self._pending: _Pending | None = None

    def push(self, indices, td_errors: torch.Tensor, lanes: list[int] | None = None) -> list[int]:
        """Start the write-back of one update (``indices`` on the host, as ``sample_torch`` returns them;
        ``td_errors`` a tensor on any device; ``lanes`` the seed lanes to write), then apply the previous update's.
        Returns the lanes whose previous TD errors were not finite (several lanes only)."""
        slots = _host_slots(indices, self._ndim).reshape(self.buffer.num_seeds, -1)
        if not isinstance(td_errors, torch.Tensor):
            raise ValueError(f"td_errors must be a torch.Tensor, got {type(td_errors).__name__}")
        if td_errors.numel() != slots.size:
            raise ValueError(f"td_errors has {td_errors.numel()} values for {slots.size} indices")
        pending = _Pending(slots, self._starts(), lanes, *_start_copy(td_errors))
        previous, self._pending = self._pending, pending
        return [] if previous is None else self._apply(previous)

    def flush(self) -> list[int]:
        """Apply the pending update, if any (waits for its copy to land); returns its non-finite lanes."""
        pending, self._pending = self._pending, None
        return [] if pending is None else self._apply(pending)

    def _starts(self) -> np.ndarray:
        """Each lane's oldest slot now."""
        return np.array([lane.storage.start for lane in self.buffer.lanes])

    def _apply(self, pending: _Pending) -> list[int]:
        if pending.done is not None:
            pending.done.synchronize()
        lanes, capacity = self.buffer.lanes, self.buffer.lanes[0].capacity
        evicted = (self._starts() - pending.starts) % capacity  # [S] slots gone from each lane's oldest end
        td = pending.td.numpy().reshape(pending.slots.shape)
        # a slot left its lane iff its position in the stored window when sampled (0: oldest) is below that count
        keep = None if not evicted.any() else (pending.slots - pending.starts[:, None]) % capacity >= evicted[:, None]
        if keep is None or keep.all():  # the usual case: every lane's whole batch, in one write-back
            return self.buffer.update_priorities(pending.slots, td, lanes=pending.lanes)
        live = range(len(lanes)) if pending.lanes is None else pending.lanes
        nonfinite = [k for k in live if len(lanes) > 1 and not np.isfinite(td[k]).all()]
        for k in live:
            if k not in nonfinite:  # one buffer raises on a non-finite error, as it does when written at once
                lanes[k].update_priorities(pending.slots[k][keep[k]], td[k][keep[k]])
        return nonfinite


def _host_slots(indices, ndim: int) -> np.ndarray:
    """An int64 host copy of ``indices`` (the caller may reuse its array before the write-back)."""
    if isinstance(indices, torch.Tensor):
        if indices.device.type != "cpu":
            raise ValueError(
                f"indices must stay on the host (a numpy array or CPU tensor, as sample_torch returns them), "
                f"got a tensor on {indices.device}"
            )
        indices = indices.numpy()
    slots = np.array(indices)
    if slots.ndim != ndim or slots.dtype.kind not in "iu":
        raise ValueError(f"indices must be a {ndim}-D integer array, got shape {slots.shape}, dtype {slots.dtype}")
    return slots.astype(np.int64, copy=False)


def _start_copy(td_errors: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """A host copy of ``td_errors`` and, on CUDA, the event after which it holds them."""
    if td_errors.device.type != "cuda":
        return td_errors.detach().clone(), None
    # a non-blocking device-to-host copy lands in pinned memory, queued on the device's current stream
    host = td_errors.detach().to("cpu", non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(td_errors.device))
    return host, done
