"""The CUDA path against the CPU path on a real GPU (skipped where there is none; tests/test_device_path.py checks
the same contracts on CPU under a stand-in device).

The same seed and the same batches give the same losses and TD errors for the first 1,000 updates, within float
tolerance. Uniform sampling keeps the batches identical by construction; under PER a last-bit difference in a TD
error can move a stratified draw to a neighbouring leaf, after which the runs are different runs, not the same one
measured on two devices. Batches copied through the reused pinned staging memory equal numpy batches on every
visible device, and deferred priority write-back ends with the same tree as immediate write-back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal import losses
from rlfocal.builders import set_determinism
from rlfocal.replay import PrioritizedReplay, UniformReplay
from rlfocal.replay.deferred import DeferredPriorities

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _filled_buffer(seed: int) -> UniformReplay:
    buf = UniformReplay(5000, (8,), seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(5000):
        buf.add(rng.normal(size=8).astype(np.float32), int(rng.integers(3)), float(rng.normal()),
                rng.normal(size=8).astype(np.float32), bool(rng.random() < 0.05), False)  # fmt: skip
    return buf


@pytest.mark.parametrize("loss", ["huber", "focal"])
def test_first_1000_losses_match_on_cpu_and_cuda(loss):
    set_determinism(True)
    try:
        td_loss = losses.TD_LOSSES[loss]
        runs = {}
        for device in ("cpu", "cuda"):
            torch.manual_seed(0)
            agent = DQN(make_network("mlp", (8,), 3, hidden=(64, 64)), 3, td_loss, lr=1e-4, device=device, seed=0)
            buf = _filled_buffer(0)
            out = []
            for step in range(1000):
                batch = buf.sample_torch(64, device)
                learned = agent.learn(batch)
                if step % 100 == 99:
                    agent.update_target()
                out.append(float(learned.loss))
            runs[device] = np.array(out)
        np.testing.assert_allclose(runs["cuda"], runs["cpu"], rtol=1e-3, atol=1e-5)
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


@pytest.mark.parametrize("index", range(torch.cuda.device_count()) if torch.cuda.is_available() else [0])
def test_pinned_staging_reuse_gives_numpy_batches_on_every_device(index):
    """200 batches of two sizes through the reused pinned staging arrays, on cuda:N with cuda:0 current (the
    copy-done event must be recorded on cuda:N's stream), each equal to the numpy batch of a twin buffer."""
    ref, buf = _atari_buffer(1), _atari_buffer(1)
    device = torch.device("cuda", index)
    pairs = []
    for k in range(200):
        size = (256, 32)[k % 2]
        pairs.append((ref.sample(size), buf.sample_torch(size, device)))
    torch.cuda.synchronize(device)
    for expected, got in pairs:
        assert got.obs.device == device and got.indices.device.type == "cpu"
        for name in ("obs", "actions", "rewards", "next_obs", "dones", "discounts", "indices", "weights"):
            np.testing.assert_array_equal(getattr(got, name).cpu().numpy(), getattr(expected, name), err_msg=name)


def test_deferred_priorities_on_cuda_end_as_immediate_ones():
    """TD errors computed on the GPU, written back one update late through non-blocking copies: after ``flush``
    the sum tree equals the one immediate (blocking) write-back builds from the same indices and errors."""
    immediate, buf = _atari_buffer(2), _atari_buffer(2)
    deferred = DeferredPriorities(buf)
    for k in range(100):
        batch = buf.sample_torch(64, "cuda")
        td = torch.randn(64, device="cuda", generator=torch.Generator("cuda").manual_seed(k)) * batch.weights
        deferred.push(batch.indices, td)
        immediate.update_priorities(batch.indices, td)  # blocking: indices on the host, td copied back now
    deferred.flush()
    np.testing.assert_array_equal(buf.sampler.tree.get(np.arange(4096)), immediate.sampler.tree.get(np.arange(4096)))
