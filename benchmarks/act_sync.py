"""What acting's sync costs an Atari PER step on the GPU (issue 13: "acting without a full sync ..., or measured as
cheap enough").

Acting reads its greedy actions back to the host (``DQN.act_batch``: one forward of the 8 observations, then
``.cpu()``), so it waits for every kernel queued before it: the iteration's gradient steps. With ``env.overlap=true``
those run on the GPU while the environments step, and acting waits only for what is left of them. This measures,
for the Nature CNN at batch 32 with replay storage on the device, deferred write-back and the captured (and the
eager) update:

- ``act_idle_us``: acting with nothing queued (wall per call);
- ``act_after_updates_us``: acting right after queueing the iteration's 2 updates (8 envs, one update per 4 agent
  steps), so its wall time includes the wait for them: the worst case, an env step that takes no time;
- ``update_gpu_us``: one update's GPU time (CUDA events around 50 back-to-back updates);
- ``queue_updates_us``, ``queue_updates_wall_us``: the learner thread's CPU time and wall time to sample and queue
  the 2 updates. The wall time includes the deferred write-back's own wait: pushing update k applies update k-1,
  whose TD errors must have reached the host (one update late), so the host waits for every update but the last.

The sync costs nothing on top of the env step when ``2 x update_gpu_us`` is below the env step's wall time
(``benchmarks/atari_envs.py``), since the updates then finish while the environments step; acting one step late
would buy nothing. On CPU (``--device cpu``; CI) everything runs synchronously and the figures say nothing about a
GPU. Median and range over ``--rounds`` rounds.

    python benchmarks/act_sync.py --device cuda --out OUT.json     # ~20 s on a GPU
    python benchmarks/act_sync.py --quick                          # CPU smoke
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.dqn import DQN  # noqa: E402
from agents.networks import make_network  # noqa: E402
from benchmarks.rounds import cell, summarise, write  # noqa: E402
from rlfocal import losses  # noqa: E402
from rlfocal.replay import PrioritizedReplay  # noqa: E402
from rlfocal.replay.deferred import DeferredPriorities  # noqa: E402

OBS, ACTIONS, BATCH, NUM_ENVS, UPDATES_PER_ITERATION = (4, 84, 84), 6, 32, 8, 2


def filled_buffer(capacity: int, device: torch.device) -> PrioritizedReplay:
    """PER storage of random frame stacks (Atari layout, each frame stored once), kept on ``device``."""
    buf = PrioritizedReplay(capacity, OBS, obs_dtype=np.uint8, frame_stack=4, seed=0, storage_device=device)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (NUM_ENVS, *OBS), dtype=np.uint8)
    for _ in range(capacity // NUM_ENVS):
        nxt = np.concatenate([frames[:, 1:], rng.integers(0, 255, (NUM_ENVS, 1, 84, 84), dtype=np.uint8)], axis=1)
        buf.add_batch(frames, rng.integers(ACTIONS, size=NUM_ENVS), np.zeros(NUM_ENVS, np.float32), nxt,
                      np.zeros(NUM_ENVS, bool), np.zeros(NUM_ENVS, bool), np.arange(NUM_ENVS))  # fmt: skip
        frames = nxt
    return buf


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, capture: bool, buf: PrioritizedReplay, iterations: int) -> dict:
    torch.manual_seed(0)
    agent = DQN(make_network("nature", OBS, ACTIONS), ACTIONS, losses.huber, device=device, capture=capture)
    deferred = DeferredPriorities(buf)
    obs = np.random.default_rng(1).integers(0, 255, (NUM_ENVS, *OBS), dtype=np.uint8)

    def update() -> None:
        batch = buf.sample_torch(BATCH, device)
        deferred.push(batch.indices, agent.learn(batch).td_errors)

    for _ in range(10):  # warm-up: allocator, cuDNN autotuning, the graph's recording
        update()
        agent.act_batch(obs, 0.0)
    sync(device)
    idle, busy, queue, queue_wall = [], [], [], []
    for _ in range(iterations):
        sync(device)
        t0 = time.perf_counter()
        agent.act_batch(obs, 0.0)
        idle.append(time.perf_counter() - t0)
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(UPDATES_PER_ITERATION):
            update()
        queue.append(time.thread_time() - c0)
        queue_wall.append(time.perf_counter() - w0)
        t0 = time.perf_counter()
        agent.act_batch(obs, 0.0)  # waits for the queued updates
        busy.append(time.perf_counter() - t0)
    gpu_us = None
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(50):
            update()
        end.record()
        end.synchronize()
        gpu_us = 1e3 * start.elapsed_time(end) / 50
    deferred.flush()
    return {
        "act_idle_us": 1e6 * statistics.median(idle),
        "act_after_updates_us": 1e6 * statistics.median(busy),
        "queue_updates_us": 1e6 * statistics.median(queue),
        "queue_updates_wall_us": 1e6 * statistics.median(queue_wall),
        "update_gpu_us": gpu_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--capacity", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="CPU smoke: tiny, figures mean nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "act_sync.json")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.rounds, args.capacity = 3, 1, 512
    torch.set_num_threads(1)
    device = torch.device(args.device)
    buf = filled_buffer(args.capacity, device)
    raw: dict[str, list[dict]] = {"captured": [], "eager": []}
    for r in range(args.rounds):
        for name in raw if r % 2 == 0 else list(raw)[::-1]:
            raw[name].append(measure(device, name == "captured", buf, args.iterations))
            print(f"round {r + 1}/{args.rounds} {name:8s} " + ", ".join(
                f"{k} {v:,.1f}" for k, v in raw[name][-1].items() if v is not None), flush=True)  # fmt: skip
    results = {name: summarise(runs) for name, runs in raw.items()}
    keys = list(results["eager"])
    lines = ["| update | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(cell(r[k]) for k in keys) + " |" for name, r in results.items()]
    gpu = {"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}
    write(args.out, "act_sync", args, results, "\n".join(lines), device=str(device), **gpu)


if __name__ == "__main__":
    main()
