"""The CUDA path against the CPU path on a real GPU (skipped where there is none; tests/test_device_path.py checks
the same contracts on CPU under a stand-in device).

The same seed and the same batches give the same losses and TD errors for the first 1,000 updates, within float
tolerance. Uniform sampling keeps the batches identical by construction; under PER a last-bit difference in a TD
error can move a stratified draw to a neighbouring leaf, after which the runs are different runs, not the same one
measured on two devices. Batches copied through the reused pinned staging memory equal numpy batches on every
visible device, deferred priority write-back ends with the same tree as immediate write-back, and the update replayed
as a CUDA graph (``agent.capture_update``) computes what the eager update does.

Each test also runs with ``device="cpu"`` in place of CUDA, always: that proves nothing about the GPU, but the
test's own code runs in CI (a field name that a batch does not have once hid in a GPU-only test here)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal import losses
from rlfocal.builders import set_determinism
from rlfocal.replay import PrioritizedReplay, UniformReplay
from rlfocal.replay.buffer import Batch
from rlfocal.replay.deferred import DeferredPriorities

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = [pytest.param("cpu", id="cpu-in-place-of-cuda"), pytest.param("cuda", id="cuda", marks=NEEDS_CUDA)]


def _filled_buffer(seed: int) -> UniformReplay:
    buf = UniformReplay(5000, (8,), seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(5000):
        buf.add(rng.normal(size=8).astype(np.float32), int(rng.integers(3)), float(rng.normal()),
                rng.normal(size=8).astype(np.float32), bool(rng.random() < 0.05), False)  # fmt: skip
    return buf


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("loss", ["huber", "focal"])
def test_first_1000_losses_match_on_cpu_and_cuda(loss, device):
    set_determinism(True)
    updates = 1000 if device == "cuda" else 100
    try:
        td_loss = losses.TD_LOSSES[loss]
        runs = {}
        for run in ("cpu", device):
            torch.manual_seed(0)
            agent = DQN(make_network("mlp", (8,), 3, hidden=(64, 64)), 3, td_loss, lr=1e-4, device=run, seed=0)
            buf = _filled_buffer(0)
            out = []
            for step in range(updates):
                batch = buf.sample_torch(64, run)
                learned = agent.learn(batch)
                if step % 100 == 99:
                    agent.update_target()
                out.append(float(learned.loss))
            runs[run] = np.array(out)
        np.testing.assert_allclose(runs[device], runs["cpu"], rtol=1e-3, atol=1e-5)
    finally:
        set_determinism(False)


def _atari_buffer(seed: int) -> PrioritizedReplay:
    """Frame-stacked uint8 PER storage, two env streams (the Atari layout, at a small size)."""
    buf = PrioritizedReplay(4096, (4, 84, 84), obs_dtype=np.uint8, frame_stack=4, n_step=3, seed=seed)
    rng = np.random.default_rng(seed)
    stacks = [rng.integers(0, 255, (4, 84, 84), dtype=np.uint8) for _ in range(2)]
    for t in range(2100):
        for env in range(2):
            nxt = np.concatenate([stacks[env][1:], rng.integers(0, 255, (1, 84, 84), dtype=np.uint8)])
            buf.add(stacks[env], t % 6, 1.0, nxt, t % 97 == 96, False, env_id=env)
            stacks[env] = nxt
    return buf


CUDA_INDICES = [pytest.param(i, id=f"cuda:{i}", marks=NEEDS_CUDA) for i in range(max(1, torch.cuda.device_count()))]


@pytest.mark.parametrize("index", [pytest.param(None, id="cpu-in-place-of-cuda"), *CUDA_INDICES])
def test_pinned_staging_reuse_gives_numpy_batches_on_every_device(index):
    """200 batches of two sizes through the reused pinned staging arrays, on cuda:N with cuda:0 current (the
    copy-done event must be recorded on cuda:N's stream), each equal to the numpy batch of a twin buffer."""
    ref, buf = _atari_buffer(1), _atari_buffer(1)
    device = torch.device("cpu") if index is None else torch.device("cuda", index)
    pairs = []
    for k in range(200):
        size = (256, 32)[k % 2]
        pairs.append((ref.sample(size), buf.sample_torch(size, device)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for expected, got in pairs:
        assert got.obs.device == device and got.indices.device.type == "cpu"
        for name in (f.name for f in fields(Batch)):
            np.testing.assert_array_equal(getattr(got, name).cpu().numpy(), getattr(expected, name), err_msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_priorities_on_cuda_end_as_immediate_ones(device):
    """TD errors computed on the GPU, written back one update late through non-blocking copies: after ``flush``
    the sum tree equals the one immediate (blocking) write-back builds from the same indices and errors."""
    immediate, buf = _atari_buffer(2), _atari_buffer(2)
    deferred = DeferredPriorities(buf)
    for k in range(100):
        batch = buf.sample_torch(64, device)
        td = torch.randn(64, device=device, generator=torch.Generator(device).manual_seed(k)) * batch.weights
        deferred.push(batch.indices, td)
        immediate.update_priorities(batch.indices, td)  # blocking: indices on the host, td copied back now
    deferred.flush()
    np.testing.assert_array_equal(buf.sampler.tree.get(np.arange(4096)), immediate.sampler.tree.get(np.arange(4096)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("network", ["nature", "minatar"])
def test_captured_update_on_cuda_matches_eager(device, network):
    """``agent.capture_update``: 12 updates of an Atari- or MinAtar-shaped net from the same init on the same batches
    (3 eager warm-up steps on a side stream, then one recorded CUDA graph replayed 9 times), with device storage:
    the same losses, TD errors and parameters as the eager update, to float tolerance (cuDNN may pick other
    kernels for a graph)."""
    obs_shape = (4, 84, 84) if network == "nature" else (4, 10, 10)
    buf = PrioritizedReplay(2048, obs_shape, obs_dtype=np.uint8, seed=3, storage_device=device)
    rng = np.random.default_rng(3)
    for _ in range(2048):
        buf.add(rng.integers(0, 255, obs_shape, dtype=np.uint8), int(rng.integers(6)), float(rng.normal()),
                rng.integers(0, 255, obs_shape, dtype=np.uint8), bool(rng.random() < 0.05), False)  # fmt: skip
    batches = [buf.sample_torch(32, device) for _ in range(12)]
    set_determinism(True)
    try:
        runs = []
        for capture in (False, True):
            torch.manual_seed(0)
            agent = DQN(make_network(network, obs_shape, 6), 6, losses.huber, device=device, capture=capture)
            out = [tuple(t.clone() for t in agent.learn(b)) for b in batches]
            runs.append((out, [p.detach().clone() for p in agent.params]))
    finally:
        set_determinism(False)
    (eager, eager_params), (captured, captured_params) = runs
    for a, b in zip(eager, captured, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5)
    for x, y in zip(eager_params, captured_params, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-6)
