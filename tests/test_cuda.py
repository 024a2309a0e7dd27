"""The CUDA path against the CPU path: the same seed and the same batches give the same losses and TD errors for
the first 1,000 updates, within float tolerance (skipped where there is no GPU). Uniform sampling keeps the batches
identical by construction; under PER a last-bit difference in a TD error can move a stratified draw to a
neighbouring leaf, after which the runs are different runs, not the same one measured on two devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal import losses
from rlfocal.builders import set_determinism
from rlfocal.replay import UniformReplay

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
