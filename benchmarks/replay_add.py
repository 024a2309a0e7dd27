"""Replay adds of a vector env's Atari step: the vectorised path against the row-by-row one (issue 13).

``ReplayBuffer.add_batch`` of 8 environments' step mid-episode (uint8 84 x 84 frames, 4-frame stacks, each frame
stored once, 1-step returns, PER) takes ``TransitionStorage``'s vectorised path; ``rows`` is the same call with that
path switched off (every row through the per-row code, as before it existed). The ring is filled once before timing,
so no first-touch page faults are timed. Per add_batch call: the thread's CPU time and wall time, median (range) over
interleaved rounds.

    python benchmarks/replay_add.py            # 3 rounds, ~30 s
    python benchmarks/replay_add.py --quick    # CI smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rounds import cell, summarise, write  # noqa: E402
from rlfocal.replay import PrioritizedReplay  # noqa: E402

NUM_ENVS, FRAME = 8, (84, 84)


def chain(steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Observations [N, 4, 84, 84] of ``steps + 1`` consecutive vector-env steps, mid-episode throughout."""
    frames = rng.integers(0, 255, (32, NUM_ENVS, *FRAME), dtype=np.uint8)
    obs = [rng.integers(0, 255, (NUM_ENVS, 4, *FRAME), dtype=np.uint8)]
    for t in range(steps):
        nxt = np.empty_like(obs[-1])
        nxt[:, :3], nxt[:, 3] = obs[-1][:, 1:], frames[t % 32]
        obs.append(nxt)
    return obs


def measure(path: str, args: argparse.Namespace, observations: list[np.ndarray]) -> dict:
    buf = PrioritizedReplay(args.capacity, (4, *FRAME), obs_dtype=np.uint8, frame_stack=4, seed=0)
    if path == "rows":
        buf.storage._chained_refs = lambda env_ids: None  # the vectorised path switched off
    zeros = np.zeros(NUM_ENVS)
    actions, ended, env_ids = zeros.astype(np.int64), zeros.astype(bool), np.arange(NUM_ENVS)

    def add(t: int) -> None:
        buf.add_batch(observations[t], actions, zeros, observations[t + 1], ended, ended, env_ids)

    fill = args.capacity // NUM_ENVS + 1  # the ring and the frame ring written once: no first-touch faults timed
    for t in range(fill):
        add(t)
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for t in range(fill, fill + args.calls):
        add(t)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_us_per_call": 1e6 * cpu / args.calls, "wall_us_per_call": 1e6 * wall / args.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=5_000, help="timed add_batch calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "replay_add.json")
    args = parser.parse_args()
    if args.quick:
        args.capacity, args.calls, args.rounds = 400, 100, 1
    observations = chain(args.capacity // NUM_ENVS + 1 + args.calls, np.random.default_rng(0))
    paths = ["vectorised", "rows"]
    raw: dict[str, list[dict]] = {p: [] for p in paths}
    for r in range(args.rounds):
        for path in paths if r % 2 == 0 else paths[::-1]:
            raw[path].append(measure(path, args, observations))
            last = raw[path][-1]
            print(f"round {r + 1}/{args.rounds} {path:10s} cpu {last['cpu_us_per_call']:6.1f} µs, "
                  f"wall {last['wall_us_per_call']:6.1f} µs per add_batch of {NUM_ENVS} rows", flush=True)  # fmt: skip
    results = {path: summarise(cells) for path, cells in raw.items()}
    lines = [f"| path | CPU µs per add_batch of {NUM_ENVS} rows | wall µs |", "|---|---:|---:|"]
    lines += [f"| {p} | {cell(r['cpu_us_per_call'])} | {cell(r['wall_us_per_call'])} |" for p, r in results.items()]
    write(args.out, "replay_add", args, results, "\n".join(lines))


if __name__ == "__main__":
    main()
