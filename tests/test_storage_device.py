"""``replay.storage_device``: batches gathered from the device copy of a storage equal the host's bit for bit (flat
observations, n-step returns, frame stacks with a wrapping frame ring and evictions, ring wraps, resume, seed
lanes); on the stand-in CUDA device of test_device_path a batch costs only non-blocking copies out of pinned memory,
with no device-to-host copy and no sync; a run with its storage on the CPU logs what the host run logs; bad settings
fail in one line."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from dataclasses import fields
from typing import ClassVar

import numpy as np
import pytest
import torch
from test_device_path import FakeCuda, FakeCudaTensor, FakeEvent, fake_cuda  # noqa: F401 (a fixture)
from test_train import composed, rows, train
from torch.utils import _pytree as pytree

from rlfocal.arms import arm_label
from rlfocal.builders import make_replay
from rlfocal.checkpoint import config_differences
from rlfocal.config import ConfigError, validate
from rlfocal.replay import LAPReplay, PrioritizedReplay, UniformReplay, device_storage
from rlfocal.replay.buffer import Batch
from rlfocal.replay.device_storage import DeviceStorage
from rlfocal.replay.lanes import LaneReplay

FIELDS = tuple(f.name for f in fields(Batch))
FRAMES = (4, 6, 6)  # Atari-shaped: 4 stacked uint8 frames, small


def make(kind: str, storage_device=None, seed: int = 3):
    """Small buffers that wrap within a test: flat 1-step (the vectorised write path), flat 3-step PER, LAP, and
    frame-stacked 3-step PER whose frame ring (40 + 12 frames) wraps and evicts."""
    if kind == "uniform":
        return UniformReplay(48, (3,), seed=seed, storage_device=storage_device)
    if kind == "per-nstep":
        return PrioritizedReplay(48, (3,), seed=seed, n_step=3, gamma=0.9, beta_steps=20, storage_device=storage_device)
    if kind == "lap":
        return LAPReplay(48, (3,), seed=seed, storage_device=storage_device)
    frames = dict(frame_stack=4, n_step=3, frame_margin=12)
    return PrioritizedReplay(40, FRAMES, np.uint8, seed=seed, storage_device=storage_device, **frames)


KINDS = ("uniform", "per-nstep", "lap", "atari")


class Envs:
    """``lanes`` x ``envs`` chained environments: obs is the previous next_obs unless that step ended the episode;
    frame stacks roll one new frame in, and a reset repeats its first frame (stored once)."""

    def __init__(self, kind: str, lanes: int, envs: int, seed: int = 0) -> None:
        self.frames = kind == "atari"
        self.rng = np.random.default_rng(seed)
        self.shape = (lanes, envs)
        self.obs = self._reset(self.shape)

    def _reset(self, shape: tuple[int, ...]) -> np.ndarray:
        if not self.frames:
            return self.rng.standard_normal((*shape, 3)).astype(np.float32)
        first = self.rng.integers(0, 255, (*shape, 1, *FRAMES[1:]), dtype=np.uint8)
        return np.repeat(first, FRAMES[0], axis=-3)

    def step(self) -> tuple[np.ndarray, ...]:
        """``[lanes, envs, ...]`` arrays of one step of every environment."""
        if self.frames:
            frame = self.rng.integers(0, 255, (*self.shape, 1, *FRAMES[1:]), dtype=np.uint8)
            next_obs = np.concatenate([self.obs[..., 1:, :, :], frame], axis=-3)
        else:
            next_obs = self._reset(self.shape)
        actions = self.rng.integers(0, 3, self.shape)
        rewards = self.rng.standard_normal(self.shape).astype(np.float32)
        terminated = self.rng.random(self.shape) < 0.08
        truncated = ~terminated & (self.rng.random(self.shape) < 0.03)
        obs, ended = self.obs, terminated | truncated
        self.obs = np.where(ended.reshape(*self.shape, *[1] * (obs.ndim - 2)), self._reset(self.shape), next_obs)
        return obs, actions, rewards, next_obs, terminated, truncated


def add_step(buffers, envs: Envs) -> None:
    """The same step of one lane's environments into every buffer."""
    step = [x[0] for x in envs.step()]
    for buffer in buffers:
        buffer.add_batch(*step, env_ids=np.arange(envs.shape[1]))


def assert_batches_equal(expected, got, device: torch.device | None = None) -> None:
    """Field by field: dtype, shape and every bit; ``indices`` on the host, the rest on ``device`` when given."""
    for name in FIELDS:
        e, g = getattr(expected, name), getattr(got, name)
        assert (g.dtype, g.shape) == (e.dtype, e.shape), name
        if device is not None:
            assert g.device == (torch.device("cpu") if name == "indices" else device), name
        assert torch.equal(g.as_subclass(torch.Tensor), e), name


def sample_both(host, dev, rng: np.random.Generator, size: int, device="cpu"):
    """A batch of each buffer, then the same TD errors fed back to both at the host batch's indices."""
    expected, got = host.sample_torch(size), dev.sample_torch(size, device)
    td = torch.from_numpy(rng.standard_normal(expected.indices.shape))
    host.update_priorities(expected.indices, td)
    dev.update_priorities(expected.indices, td)
    return expected, got


# ---------------------------------------------------------------------------------------------- storage on the CPU
@pytest.mark.parametrize("sync_every_add", [False, True], ids=["sync-at-sample", "sync-at-every-add"])
@pytest.mark.parametrize("kind", KINDS)
def test_device_batches_equal_host_batches_through_ring_and_frame_ring_wraps(kind, sync_every_add, monkeypatch):
    """Two environments for 150 steps into a 48-slot ring (a 52-frame ring for frame stacks): the ring wraps several
    times, frames are evicted, and every batch from the CPU copy equals the host's, with batch sizes interleaved and
    a gap without batches in which both rings wrap (the copy then sends only the newest ring's worth)."""
    if sync_every_add:
        monkeypatch.setattr(device_storage, "_SYNC_BYTES", 1)
    host, dev = make(kind), make(kind, "cpu")
    envs, rng = Envs(kind, 1, 2), np.random.default_rng(1)
    for t in range(150):
        add_step([host, dev], envs)
        if len(host) >= 8 and t % 2 and not 60 <= t < 100:
            assert_batches_equal(*sample_both(host, dev, rng, (8, 5)[t % 4 == 1]), torch.device("cpu"))
    st = host.storage
    assert st.start != 0 and len(host) > 0
    if kind == "atari":
        assert st.frames_written > 4 * st.frame_capacity
    assert dev.device_nbytes == sum(getattr(st, name).nbytes for name in st.gathered_arrays())


@pytest.mark.parametrize("kind", KINDS)
def test_a_resumed_device_copy_is_rebuilt_from_the_host_arrays(kind):
    """A buffer that already holds other transitions on its device loads a host buffer's state (with pending n-step
    windows) and continues, through ``truncate_streams``, exactly as the host buffer does; ``state_dict`` is the host
    arrays, so the device buffer's own checkpoint resumes a plain buffer too."""
    host, dev = make(kind), make(kind, "cpu", seed=9)
    envs, rng = Envs(kind, 1, 2), np.random.default_rng(2)
    other = Envs(kind, 1, 2, seed=5)
    for _ in range(30):
        add_step([host], envs)
        add_step([dev], other)
    dev.sample_torch(8)  # its device copy now holds the other transitions
    dev.load_state_dict(copy.deepcopy(host.state_dict()))
    host.truncate_streams()
    dev.truncate_streams()
    for t in range(60):
        add_step([host, dev], envs)
        if t % 3 == 0:
            assert_batches_equal(*sample_both(host, dev, rng, 8))
    plain = make(kind, seed=0)
    plain.load_state_dict(copy.deepcopy(dev.state_dict()))
    again = make(kind, "cpu", seed=0)
    again.load_state_dict(copy.deepcopy(dev.state_dict()))
    assert_batches_equal(*sample_both(plain, again, rng, 8))


@pytest.mark.parametrize("num_seeds", [1, 3])
@pytest.mark.parametrize("kind", ["uniform", "per-nstep", "atari"])
def test_seed_lanes_gather_on_the_device_as_on_the_host(kind, num_seeds):
    """S lanes stacked on the device (lane k's rows at k * rows, frames through each lane's own frame positions)
    sample what the host lanes sample; after a state round trip both continue alike."""
    build = lambda device: LaneReplay([make(kind, device, seed=s) for s in range(num_seeds)])
    host, dev = build(None), build("cpu")
    envs, rng = Envs(kind, num_seeds, 2), np.random.default_rng(3)
    for t in range(120):
        step = envs.step()
        for lanes in (host, dev):
            lanes.add_batch(*step, env_ids=np.arange(2))
        if len(host) >= 8 and t % 2:
            assert_batches_equal(*sample_both(host, dev, rng, 8))
        if t == 70:
            state = copy.deepcopy(host.state_dict())
            dev = build("cpu")
            dev.load_state_dict(state)
    assert dev.device_nbytes == num_seeds * dev.lanes[0].device_nbytes > 0


def test_filled_buffers_stacked_into_lanes_send_what_they_hold():
    """Buffers that already hold transitions (and made their own device copies) are stacked into lanes: the shared
    device copy starts from what the host arrays hold."""
    host = [make("atari", seed=s) for s in range(2)]
    dev = [make("atari", "cpu", seed=s) for s in range(2)]
    for k in range(2):
        envs = Envs("atari", 1, 2, seed=k)
        for _ in range(30):
            add_step([host[k], dev[k]], envs)
        host[k].sample_torch(4), dev[k].sample_torch(4)
    host, dev = LaneReplay(host), LaneReplay(dev)
    assert_batches_equal(*sample_both(host, dev, np.random.default_rng(0), 8))


def test_wrong_device_or_mixed_lanes_fail_naming_them():
    buffer = make("per-nstep", "cpu")
    buffer.add(np.zeros(3, np.float32), 0, 0.0, np.zeros(3, np.float32), True, False)
    with pytest.raises(ValueError, match="stores its transitions on cpu: sample them there, not on meta"):
        buffer.sample_torch(1, "meta")
    with pytest.raises(ValueError, match="storage_device must be a cpu or cuda device, got xpu"):
        DeviceStorage.of(buffer.storage, "xpu")
    with pytest.raises(ValueError, match="lanes need one storage device: got None, cpu"):
        LaneReplay([make("uniform"), make("uniform", "cpu")])


# ---------------------------------------------------------------------------------------------- stand-in CUDA device
_READS_ON_HOST = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__"}
_METADATA = {"__get__", "untyped_storage", "as_subclass", "data_ptr", "dim", "size", "stride", "numel", "__len__"}


class DeviceTensor(FakeCudaTensor):
    """A stand-in device tensor that computes on its device as CUDA does: an operation runs after the copies queued
    on its stream, its results are device tensors, and mixing in host memory or reading a value on the host fails
    (on CUDA either is a hidden copy, and a sync)."""

    fake: ClassVar[FakeCuda]

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READS_ON_HOST:
            raise AssertionError(f"{name}() reads a device tensor on the host: a hidden device-to-host copy and sync")
        with torch._C.DisableTorchFunctionSubclass():
            if name in _METADATA:
                return func(*args, **kwargs)
            tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            where = {cls.fake.device_of(t) for t in tensors if isinstance(t, DeviceTensor) or t.dim() > 0}
            if len(where) > 1:
                raise AssertionError(f"{name} mixes memory of {where} (None: the host): on CUDA a hidden copy")
            (index,) = where
            cls.fake.run(index)  # stream order: what was queued before this operation has run
            out = func(*args, **kwargs)
        return pytree.tree_map(lambda x: cls.on_device(x, index) if isinstance(x, torch.Tensor) else x, out)

    @classmethod
    def on_device(cls, tensor: torch.Tensor, index: int) -> DeviceTensor:
        """``tensor``'s memory as device memory of cuda:``index``."""
        cls.fake.device_memory[tensor.untyped_storage().data_ptr()] = (index, tensor)
        if not isinstance(tensor, DeviceTensor):
            tensor = tensor.as_subclass(DeviceTensor)
        tensor.fake_device = torch.device("cuda", index)
        return tensor


@pytest.fixture
def device_cuda(request, monkeypatch) -> FakeCuda:
    """``fake_cuda`` whose device memory computes (``DeviceTensor``), is allocated by ``torch.zeros(device=...)``,
    and whose host waits (``torch.cuda.synchronize``, an event's ``synchronize``) are listed in ``syncs``."""
    fake = request.getfixturevalue("fake_cuda")
    monkeypatch.setattr(DeviceTensor, "fake", fake, raising=False)
    monkeypatch.setattr(fake, "syncs", [], raising=False)
    to_device, zeros = fake._host_to_device, torch.zeros

    def host_to_device(src, index, non_blocking):
        return DeviceTensor.on_device(to_device(src, index, non_blocking).as_subclass(torch.Tensor), index)

    def device_zeros(*size, device=None, **kwargs):
        if device is None or torch.device(device).type != "cuda":
            return zeros(*size, device=device, **kwargs)
        return DeviceTensor.on_device(zeros(*size, **kwargs), fake.index(device))

    def synchronize(device=None):
        fake.syncs.append(("synchronize", device))
        fake.synchronize(device)

    def event_synchronize(event, wait=FakeEvent.synchronize):
        fake.syncs.append(("event", event.device_index))
        wait(event)

    monkeypatch.setattr(fake, "_host_to_device", host_to_device)
    monkeypatch.setattr(torch, "zeros", device_zeros)
    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    monkeypatch.setattr(FakeEvent, "synchronize", event_synchronize)
    return fake


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
@pytest.mark.parametrize(("kind", "num_seeds"), [("per-nstep", 1), ("atari", 1), ("atari", 2)])
def test_a_device_batch_issues_no_device_to_host_copy_and_no_sync(device_cuda, kind, num_seeds, device, monkeypatch):
    """Under the stand-in, adds (sent at every add here) and batches of a storage on cuda or cuda:1 issue only
    non-blocking host-to-device copies out of pinned memory on that device's stream: no device-to-host copy, no
    wait on the device. Once the stand-in runs its queues, every batch equals the host's, field by field, on the
    device; ``indices`` stay on the host. After a resume the first sync copies the lanes whole (blocking), once."""
    monkeypatch.setattr(device_storage, "_SYNC_BYTES", 1)
    index = device_cuda.index(device)
    build = lambda dev: LaneReplay([make(kind, dev, seed=s) for s in range(num_seeds)])
    host, dev = build(None), build(device)
    envs, rng = Envs(kind, num_seeds, 2), np.random.default_rng(4)
    pairs = []
    for t in range(90):
        step = envs.step()
        for lanes in (host, dev):
            lanes.add_batch(*step, env_ids=np.arange(2))
        if len(host) >= 8 and t % 2:
            pairs.append(sample_both(host, dev, rng, 8, device))
        if t == 60:
            dev.load_state_dict(copy.deepcopy(host.state_dict()))
            loaded = len(device_cuda.copies)
    device_cuda.synchronize()
    copies = device_cuda.copies
    assert set(copies) == {("h2d", index, True), ("h2d", index, False)} and device_cuda.syncs == []
    # the blocking ones: one per gathered array and lane, together, at the first sync after the load
    blocking = [i for i, (_, _, non_blocking) in enumerate(copies) if not non_blocking]
    arrays = len(dev.lanes[0].storage.gathered_arrays())
    assert blocking == list(range(blocking[0], blocking[0] + arrays * num_seeds)) and blocking[0] >= loaded
    for expected, got in pairs:
        expected = getattr(expected, "single", expected)
        got = getattr(got, "single", got)
        assert_batches_equal(expected, got, torch.device("cuda", index))
        assert all(isinstance(getattr(got, name), DeviceTensor) for name in FIELDS if name != "indices")


def test_the_stand_in_catches_host_memory_in_a_device_gather(device_cuda, monkeypatch):
    """The device stand-in has teeth: host memory handed to a device operation fails (on CUDA: a hidden copy)."""
    monkeypatch.setattr(DeviceStorage, "_send", lambda self, array, blocking=False: torch.from_numpy(array))
    buffer = make("uniform", "cuda")
    buffer.add(np.zeros(3, np.float32), 0, 0.0, np.zeros(3, np.float32), True, False)
    with pytest.raises(AssertionError, match="mixes memory"):
        buffer.sample_torch(1, "cuda")


# ---------------------------------------------------------------------------------------------- settings and runs
def replay_cfg(*overrides: str):
    return validate(composed(["replay=per", *overrides]))


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CPU"])
def test_a_bad_storage_device_names_the_value_and_the_choices(value):
    with pytest.raises(ConfigError) as err:
        replay_cfg(f"replay.storage_device={value}")
    assert (
        str(err.value)
        == f"replay.storage_device={value!r} is not allowed: one of null (host memory), cpu, cuda, cuda:N"
    )


def test_a_bad_storage_device_fails_the_entry_point_in_one_line(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlfocal.train",
            "replay.storage_device=gpu",
            f"hydra.run.dir={tmp_path}",
            "logger=none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "config error: replay.storage_device='gpu' is not allowed: one of null (host memory), cpu, cuda, cuda:N"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_storage_without_cuda_fails_at_build(tmp_path):
    with pytest.raises(ConfigError, match=r"replay.storage_device='cuda' is not allowed: CUDA is not available here"):
        make_replay(replay_cfg("replay.storage_device=cuda", "device=cpu"), (4,), np.float32, 10)
    cmd = [sys.executable, "-m", "rlfocal.train", "replay.storage_device=cuda", "device=cpu", "logger=none",
           f"hydra.run.dir={tmp_path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("config error: replay.storage_device='cuda' is not allowed: CUDA is not")


@pytest.mark.parametrize(
    ("device", "storage", "message"),
    [
        ("cuda", "cuda", None),
        ("cuda:1", "cuda", None),
        ("cuda:1", "cuda:1", None),
        ("cpu", "cpu", None),
        ("cuda", "cpu", "it must be the learner's device cuda (device=cuda); use replay.storage_device=null or cuda"),
        ("cuda", "cuda:1", "it must be the learner's device cuda (device=cuda)"),
        ("cpu", "cuda", "it must be the learner's device cpu (device=cpu)"),
    ],
)
@pytest.mark.usefixtures("fake_cuda")
def test_the_storage_device_is_the_learners(device, storage, message):
    """Batches are gathered where they are stored, so the storage device is the learner's (``cuda`` matches any)."""
    cfg = replay_cfg(f"replay.storage_device={storage}", f"device={device}")
    if message is not None:
        with pytest.raises(
            ConfigError, match=f"replay.storage_device='{storage}' is not allowed: .*{re.escape(message)}"
        ):
            make_replay(cfg, (4,), np.float32, 10)
        return
    assert make_replay(cfg, (4,), np.float32, 10).device_storage.device == torch.device(device)


def test_the_storage_device_is_no_part_of_an_arm_and_may_change_on_resume():
    saved = {"replay": {"name": "per", "storage_device": None}, "loss": {"name": "huber"}}
    moved = {"replay": {"name": "per", "storage_device": "cuda"}, "loss": {"name": "huber"}}
    assert arm_label(moved["replay"], moved["loss"]) == arm_label(saved["replay"], saved["loss"]) == "per+huber"
    assert config_differences(saved, moved) == []
    assert config_differences({**saved, "replay": {"name": "per"}}, moved) == []  # a checkpoint older than the setting


@pytest.mark.parametrize("extra", [[], ["num_seeds=2"]], ids=["one-seed", "two-seeds"])
def test_a_run_with_its_storage_on_the_cpu_logs_what_the_host_run_logs(tmp_path, extra):
    """Same seed, same config but ``replay.storage_device=cpu``: every logged number but wall-clock speed, in order."""
    logs = {}
    for name, opts in (("host", []), ("device", ["replay.storage_device=cpu"])):
        train(tmp_path / name, ["replay=per", "loss=focal", *extra, *opts])
        seeds = ["."] if not extra else ["seed_0", "seed_1"]
        logs[name] = [
            [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows(tmp_path / name / s / "metrics.csv")]
            for s in seeds
        ]
    assert logs["device"] == logs["host"] and all(len(seed) >= 5 for seed in logs["host"])
