"""The CUDA code paths, run on CPU under a stand-in device that enforces CUDA's contracts.

``FakeCuda`` replaces ``torch.cuda``'s events, streams and device guard, ``Tensor.pin_memory`` and host<->device
``Tensor.to``. Device tensors are real CPU copies of a subclass that reports a CUDA device. A non-blocking copy
out of (or into) pinned memory is queued on the current stream of its device and runs only when an event recorded
after it is synchronised (or the device is); when it runs it asserts that its source still holds what it held when
the copy was issued. So host code that rewrites pinned staging memory before waiting on the right copy-done event
fails here, where on a GPU it would silently corrupt a batch; and a device-to-host copy read too early reads 0xFF
bytes (NaN, -1). The real-GPU tests stay in tests/test_cuda.py.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
import torch

from rlfocal.replay import PrioritizedReplay, ReplayBuffer, UniformReplay
from rlfocal.replay.deferred import DeferredPriorities

FIELDS = ("obs", "actions", "rewards", "next_obs", "discounts", "indices", "weights")


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports a CUDA device (operations on it return plain tensors)."""

    __torch_function__ = torch._C._disabled_torch_function_impl
    fake_device: torch.device

    @property
    def device(self) -> torch.device:
        return self.fake_device

    @property
    def is_cuda(self) -> bool:
        return True


class FakeStream:
    def __init__(self, device_index: int) -> None:
        self.device_index = device_index


class FakeEvent:
    """Marks a point in one stream's queue; ``synchronize`` runs that stream up to it."""

    def __init__(self, fake: FakeCuda) -> None:
        self.fake = fake
        self.device_index: int | None = None
        self.marker: Callable[[], None] | None = None

    def record(self, stream: FakeStream | None = None) -> None:
        stream = stream or self.fake.current_stream()
        if self.device_index not in (None, stream.device_index):  # as CUDA: an event belongs to one device
            raise RuntimeError(f"event of cuda:{self.device_index} recorded on a stream of cuda:{stream.device_index}")
        self.device_index = stream.device_index
        self.marker = lambda: None
        self.fake.queues[stream.device_index].append(self.marker)
        self.fake.records.append(stream.device_index)

    def synchronize(self) -> None:
        if self.marker in self.fake.queues[self.device_index]:
            self.fake.run(self.device_index, until=self.marker)


class FakeCuda:
    """One stream per device, each a FIFO queue of pending operations; device 0 is current.

    Device memory and pinned memory are known by storage address (so views and ``detach()`` of a device tensor
    are device memory too), and kept alive so that no address is reused by a later host allocation.
    """

    def __init__(self) -> None:
        self.current = 0
        self.queues: defaultdict[int, list[Callable[[], None]]] = defaultdict(list)
        self.device_memory: dict[int, tuple[int, torch.Tensor]] = {}  # address -> (device index, tensor)
        self.pinned: dict[int, torch.Tensor] = {}  # address -> pinned host tensor
        self.copies: list[tuple[str, int, bool]] = []  # (direction, device index, asynchronous) of every copy
        self.records: list[int] = []  # device index of every event record
        self._to, self._numpy = torch.Tensor.to, torch.Tensor.numpy

    def index(self, device=None) -> int:
        if device is None or isinstance(device, int):
            return self.current if device is None else device
        device = torch.device(device)
        assert device.type == "cuda", device
        return self.current if device.index is None else device.index

    def device_of(self, tensor: torch.Tensor) -> int | None:
        """The fake device index ``tensor``'s memory is on (None: host memory)."""
        entry = self.device_memory.get(tensor.untyped_storage().data_ptr())
        return None if entry is None else entry[0]

    def run(self, device_index: int, until: Callable[[], None] | None = None) -> None:
        queue = self.queues[device_index]
        while queue:
            op = queue.pop(0)
            op()
            if op is until:
                return

    def pending(self, device_index: int) -> int:
        return len(self.queues[device_index])

    # ---------------------------------------------------------------- the torch.cuda surface
    def event(self, *args, **kwargs) -> FakeEvent:
        return FakeEvent(self)

    def current_stream(self, device=None) -> FakeStream:
        return FakeStream(self.index(device))

    @contextlib.contextmanager
    def device_guard(self, device):
        previous, self.current = self.current, self.index(device)
        try:
            yield
        finally:
            self.current = previous

    def synchronize(self, device=None) -> None:
        for index in list(self.queues) if device is None else [self.index(device)]:
            self.run(index)

    # ---------------------------------------------------------------- the Tensor surface
    def pin_memory(self, tensor: torch.Tensor) -> torch.Tensor:
        pinned = tensor.clone()  # pin_memory returns a copy in page-locked memory
        self.pinned[pinned.untyped_storage().data_ptr()] = pinned
        return pinned

    def to(self, tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        target = kwargs.get("device", args[0] if args else None)
        if not isinstance(target, (str, torch.device)):
            return self._to(tensor, *args, **kwargs)
        target = torch.device(target)
        on_device = self.device_of(tensor) is not None
        if target.type == "cuda" or on_device:
            assert len(args) <= 1 and set(kwargs) <= {"device", "non_blocking"}, "only device and non_blocking"
            assert not (on_device and target.type == "cuda"), "device-to-device copies are not modelled"
        if target.type == "cuda":
            return self._host_to_device(tensor, self.index(target), kwargs.get("non_blocking", False))
        if on_device:
            return self._device_to_host(tensor, kwargs.get("non_blocking", False))
        return self._to(tensor, *args, **kwargs)

    def cpu(self, tensor: torch.Tensor) -> torch.Tensor:
        """A blocking copy to the host for device memory (it waits for the device's queued work), else ``tensor``."""
        return tensor if self.device_of(tensor) is None else self._device_to_host(tensor, non_blocking=False)

    def numpy(self, tensor: torch.Tensor, *args, **kwargs) -> np.ndarray:
        if self.device_of(tensor) is not None:
            raise TypeError("can't convert a cuda tensor to numpy: copy it to the host first")
        return self._numpy(tensor, *args, **kwargs)

    # ---------------------------------------------------------------- copies
    def _host_to_device(self, src: torch.Tensor, index: int, non_blocking: bool) -> FakeCudaTensor:
        data = _garbage_like(src)
        self.device_memory[data.untyped_storage().data_ptr()] = (index, data)
        dst = torch.Tensor._make_subclass(FakeCudaTensor, data)
        dst.fake_device = torch.device("cuda", index)
        is_async = non_blocking and src.untyped_storage().data_ptr() in self.pinned
        self._issue(index, _checked_copy(data, src, f"host-to-cuda:{index}"), is_async)
        self.copies.append(("h2d", index, is_async))
        return dst

    def _device_to_host(self, src: torch.Tensor, non_blocking: bool) -> torch.Tensor:
        index, src = self.device_of(src), src.as_subclass(torch.Tensor)
        dst = _garbage_like(src)
        if non_blocking:  # as torch: a non-blocking device-to-host copy lands in pinned memory
            self.pinned[dst.untyped_storage().data_ptr()] = dst
        self._issue(index, lambda: dst.copy_(src), non_blocking)  # device memory changes only in stream order
        self.copies.append(("d2h", index, non_blocking))
        return dst

    def _issue(self, index: int, op: Callable[[], None], is_async: bool) -> None:
        """Queue ``op`` on the device's stream; a synchronous copy waits for the stream, then runs."""
        self.queues[index].append(op)
        if not is_async:
            self.run(index, until=op)


def _garbage_like(t: torch.Tensor) -> torch.Tensor:
    """Uninitialised memory made loud: every byte 0xFF (NaN for floats, -1 for signed ints)."""
    out = torch.empty_like(t, memory_format=torch.contiguous_format)
    out.untyped_storage().fill_(0xFF)
    return out


def _checked_copy(dst: torch.Tensor, src: torch.Tensor, what: str) -> Callable[[], None]:
    """A copy out of host memory as issued: it fails if the host rewrote ``src`` before the copy ran."""
    issued = src.clone()

    def copy() -> None:
        if not torch.equal(src, issued):
            raise AssertionError(
                f"the source of a {what} copy ({tuple(src.shape)} {src.dtype}) was rewritten before the copy ran: "
                "the host did not wait for the copy-done event on the stream the copy was queued on"
            )
        dst.copy_(src)

    return copy


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeCuda:
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", fake.event)
    monkeypatch.setattr(torch.cuda, "current_stream", fake.current_stream)
    monkeypatch.setattr(torch.cuda, "device", fake.device_guard)
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronize)
    # plain functions, so that they bind to the tensor as methods do
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *args, **kwargs: fake.pin_memory(t))
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *args, **kwargs: fake.to(t, *args, **kwargs))
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *args, **kwargs: fake.cpu(t))
    monkeypatch.setattr(torch.Tensor, "numpy", lambda t, *args, **kwargs: fake.numpy(t, *args, **kwargs))
    return fake


# ---------------------------------------------------------------------------------------------- buffers
def _vector_buffer(kind: str, seed: int = 3) -> ReplayBuffer:
    """64 one-step transitions (a few terminal) in a buffer of capacity 48, so the ring has wrapped."""
    cls = PrioritizedReplay if kind == "per" else UniformReplay
    buf = cls(48, (3,), seed=seed)
    rng = np.random.default_rng(0)
    for t in range(64):
        obs, next_obs = rng.normal(size=(2, 3)).astype(np.float32)
        buf.add(obs, t % 4, float(rng.normal()), next_obs, t % 9 == 8, False)
    return buf


def _atari_buffer(seed: int = 3) -> ReplayBuffer:
    """Frame-stacked uint8 storage (stacks rebuilt at gather time), 3-step returns, two env streams."""
    buf = PrioritizedReplay(40, (4, 6, 6), obs_dtype=np.uint8, frame_stack=4, n_step=3, seed=seed)
    rng = np.random.default_rng(1)
    stacks = [rng.integers(0, 255, (4, 6, 6), dtype=np.uint8) for _ in range(2)]
    for t in range(60):
        for env in range(2):
            frame = rng.integers(0, 255, (1, 6, 6), dtype=np.uint8)
            nxt = np.concatenate([stacks[env][1:], frame])
            buf.add(stacks[env], t % 3, 1.0, nxt, t % 17 == 16, False, env_id=env)
            stacks[env] = nxt if t % 17 != 16 else rng.integers(0, 255, (4, 6, 6), dtype=np.uint8)
    return buf


BUFFERS = {
    "uniform": lambda: _vector_buffer("uniform"),
    "per": lambda: _vector_buffer("per"),
    "atari-per": _atari_buffer,
}


def to_host(t: torch.Tensor) -> torch.Tensor:
    """The memory behind a (fake) device tensor, read directly: only meaningful once its stream has run."""
    return t.as_subclass(torch.Tensor)


@pytest.mark.parametrize("kind", BUFFERS)
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_device_batches_equal_cpu_batches(fake_cuda, kind, device):
    """Batches copied to the (fake) device equal CPU ``sample_torch`` batches drawn from the same RNG state, field by
    field (dtype, shape, values), with two batch sizes interleaved so both staging sets are reused, and PER
    priorities fed back in between; every pinned staging array is rewritten only after its copy ran."""
    cpu_buf, dev_buf = BUFFERS[kind](), BUFFERS[kind]()
    rng = np.random.default_rng(0)
    pairs = []
    for k in range(8):
        size = (8, 5)[k % 2]
        expected, got = cpu_buf.sample_torch(size), dev_buf.sample_torch(size, device)
        pairs.append((expected, got))
        td = rng.normal(size=size)
        # the CPU batch's indices for both: reading the device batch now would sync and hide ordering bugs
        cpu_buf.update_priorities(expected.indices, td)
        dev_buf.update_priorities(expected.indices, td)
    fake_cuda.synchronize()
    want_device = torch.device("cuda", fake_cuda.index(device))
    for expected, got in pairs:
        for name in FIELDS:
            e, g = getattr(expected, name), getattr(got, name)
            assert (g.dtype, g.shape) == (e.dtype, e.shape), name
            if name == "indices":
                assert type(g) is torch.Tensor and g.device.type == "cpu"
            else:
                assert isinstance(g, FakeCudaTensor) and g.device == want_device, name
            assert torch.equal(to_host(g), e), name


@pytest.mark.parametrize("device", ["cuda:1", "cuda:2"])
def test_copy_done_event_is_recorded_on_the_stream_the_copies_ran_on(fake_cuda, device):
    """With cuda:0 current, a buffer sampling for cuda:N copies on cuda:N's stream and records its copy-done event
    there (on cuda:0's stream the event would not order the reuse of the staging memory)."""
    buf = _vector_buffer("per")
    for _ in range(4):
        buf.sample_torch(8, device)
    index = torch.device(device).index
    assert fake_cuda.current == 0
    assert fake_cuda.records == [index] * 4
    # one asynchronous copy out of pinned memory per field but indices, all on cuda:N
    assert fake_cuda.copies == [("h2d", index, True)] * (len(FIELDS) - 1) * 4


def test_the_stand_in_catches_staging_rewritten_before_its_copy_ran(fake_cuda, monkeypatch):
    """The contract has teeth: a host that does not wait on the copy-done event fails under the stand-in."""
    monkeypatch.setattr(FakeEvent, "synchronize", lambda self: None)
    buf = _vector_buffer("uniform")
    buf.sample_torch(8, "cuda")
    buf.sample_torch(8, "cuda")  # rewrites the staging arrays while the first batch's copies are queued
    with pytest.raises(AssertionError, match="rewritten before the copy ran"):
        fake_cuda.synchronize()


# ---------------------------------------------------------------------------------------------- deferred priorities
def _td_stream(n_updates: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=size) for _ in range(n_updates)]


def test_deferred_priorities_equal_immediate_ones_once_flushed():
    """Updates applied one late, in order: after ``flush`` the tree equals immediate write-back, including slots
    that several updates touched (the last one wins), and each ``push`` applies exactly the previous update."""
    immediate, deferred_buf = _vector_buffer("per"), _vector_buffer("per")
    deferred = DeferredPriorities(deferred_buf)
    slots = [np.array([0, 5, 7, 5]), np.array([5, 9, 0, 1]), np.array([7, 7, 2, 9])]
    tds = _td_stream(len(slots), 4)
    for k, (s, td) in enumerate(zip(slots, tds, strict=True)):
        deferred.push(s, torch.from_numpy(td))
        if k:  # the tree now holds updates 0..k-1
            np.testing.assert_array_equal(deferred_buf.sampler.tree.get(np.arange(48)),
                                          immediate.sampler.tree.get(np.arange(48)))  # fmt: skip
        immediate.update_priorities(s, td)
    deferred.flush()
    deferred.flush()  # nothing pending: a no-op
    np.testing.assert_array_equal(
        deferred_buf.sampler.tree.get(np.arange(48)), immediate.sampler.tree.get(np.arange(48))
    )
    assert deferred_buf.sampler.num_updates == immediate.sampler.num_updates == len(slots)


def test_deferred_priorities_drop_slots_the_ring_moved_past():
    """A slot evicted and rewritten between sampling and write-back keeps its new transition's (maximum) priority."""
    buf = _vector_buffer("per")  # full: every add evicts the oldest slot
    deferred = DeferredPriorities(buf)
    oldest, newer = buf.storage.start, (buf.storage.start + 10) % buf.capacity
    deferred.push(np.array([oldest, newer]), torch.tensor([5.0, 5.0]))
    buf.add(np.zeros(3, np.float32), 0, 0.0, np.zeros(3, np.float32), False, False)  # overwrites `oldest`
    fresh = buf.sampler.tree.get(np.array([oldest]))
    deferred.flush()
    np.testing.assert_array_equal(buf.sampler.tree.get(np.array([oldest])), fresh)
    np.testing.assert_allclose(buf.sampler.tree.get(np.array([newer])), (5.0 + 1e-6) ** 0.6)


def test_deferred_priorities_on_the_device_wait_for_their_copy_and_only_then(fake_cuda):
    """Under the stand-in on cuda:1: ``push`` leaves its own copy in flight (no blocking sync per update), records
    the event on cuda:1's stream, and the write-back one update later reads landed values (an early read would
    see 0xFF bytes, NaN, and fail validation)."""
    immediate, buf = _vector_buffer("per"), _vector_buffer("per")
    deferred = DeferredPriorities(buf)
    for k in range(5):
        batch = buf.sample_torch(8, "cuda:1")
        td = np.random.default_rng(k).normal(size=8)
        deferred.push(batch.indices, torch.from_numpy(td).to("cuda:1", non_blocking=True))
        assert fake_cuda.copies[-1] == ("d2h", 1, True) and fake_cuda.records[-1] == 1
        assert fake_cuda.pending(1) > 0  # this update's copy has not been waited on
        immediate.update_priorities(batch.indices, td)
    deferred.flush()
    np.testing.assert_array_equal(buf.sampler.tree.get(np.arange(48)), immediate.sampler.tree.get(np.arange(48)))


def test_deferred_priorities_over_seed_lanes_equal_each_lane_written_alone():
    """Several seed lanes: after ``flush`` every lane's tree equals its own immediate write-back; a lane whose TD
    errors are not finite is skipped and named one update late, and ``lanes=`` leaves the other lanes alone."""
    from rlfocal.replay.lanes import LaneReplay

    lanes = LaneReplay([_vector_buffer("per", seed=s) for s in range(3)])
    alone = [_vector_buffer("per", seed=s) for s in range(3)]
    deferred = DeferredPriorities(lanes)
    rng = np.random.default_rng(1)
    for _ in range(4):
        slots = rng.integers(0, 48, size=(3, 5))
        td = rng.normal(size=(3, 5))
        assert deferred.push(slots, torch.from_numpy(td)) == []
        for buf, s_k, td_k in zip(alone, slots, td, strict=True):
            buf.update_priorities(s_k, td_k)
    assert deferred.flush() == []
    for lane, buf in zip(lanes.lanes, alone, strict=True):
        np.testing.assert_array_equal(lane.sampler.tree.get(np.arange(48)), buf.sampler.tree.get(np.arange(48)))
    poisoned = rng.normal(size=(3, 5))
    poisoned[1, 2] = np.nan
    before = [lane.sampler.tree.get(np.arange(48)).copy() for lane in lanes.lanes]
    assert deferred.push(rng.integers(0, 48, size=(3, 5)), torch.from_numpy(poisoned), lanes=[0, 1]) == []
    assert deferred.flush() == [1]  # named when it lands, one update late
    trees = [lane.sampler.tree.get(np.arange(48)) for lane in lanes.lanes]
    assert not np.array_equal(trees[0], before[0])  # lane 0 took its errors
    np.testing.assert_array_equal(trees[1], before[1])  # lane 1's non-finite errors were dropped
    np.testing.assert_array_equal(trees[2], before[2])  # lane 2 was not in lanes=


@pytest.mark.parametrize(
    ("indices", "td", "match"),
    [
        pytest.param(np.array([[0, 1]]), torch.zeros(2), r"1-D integer array, got shape \(1, 2\)", id="2d"),
        pytest.param(np.array([0.0, 1.0]), torch.zeros(2), r"dtype float64", id="float-indices"),
        pytest.param(np.array([0, 1]), np.zeros(2), r"torch.Tensor, got ndarray", id="numpy-td"),
        pytest.param(np.array([0, 1, 2]), torch.zeros(2), r"2 values for 3 indices", id="sizes"),
    ],
)
def test_deferred_priorities_reject_bad_input_at_push(indices, td, match):
    with pytest.raises(ValueError, match=match):
        DeferredPriorities(_vector_buffer("per")).push(indices, td)


def test_deferred_priorities_reject_device_indices(fake_cuda):
    on_device = torch.arange(2).to("cuda:1", non_blocking=True)
    with pytest.raises(ValueError, match=r"indices must stay on the host .* got a tensor on cuda:1"):
        DeferredPriorities(_vector_buffer("per")).push(on_device, torch.zeros(2))
