"""Atari environment stepping for the learner: rlfocal's serial and async vector envs against EnvPool (issue 13).

Eight ALE Pong environments under the standard DQN preprocessing (frame skip 4, max-pool, 84 x 84 grey, 4-frame
stack, up to 30 no-op starts, sticky actions 0.25, life loss as terminal, clipped rewards) step random actions:
``serial`` (``rlfocal.envs.vector.SerialVecEnv``: every emulator in the learner's thread), ``async``
(``AsyncVecEnv``: gymnasium's AsyncVectorEnv, one worker process each), ``envpool`` (EnvPool's C++ thread pool
alone, one synchronous ``send``/``recv`` of all environments) and ``envpool_rlfocal`` (``env.vector_mode=envpool``:
the same pool in async mode behind `rlfocal.envs.envpool_vec.EnvPoolVecEnv`, which receives one environment at a
time to reset each in the step its episode ends). The two EnvPool cells are optional (``pip install -e
".[envpool]"``). Per agent step: wall time, and the learner thread's CPU time (``time.thread_time``), which is what
stepping takes from a GPU run's one Python thread. Rounds interleave the backends; figures are the median over
rounds, with the range.

    python benchmarks/atari_envs.py                # 3 rounds x 4 backends, ~3 minutes on 2 cores
    python benchmarks/atari_envs.py --quick        # a few hundred steps
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rounds import cell, summarise, write  # noqa: E402
from rlfocal.envs.vector import make_vec_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RLFOCAL_MODES = {"serial": "serial", "async": "async", "envpool_rlfocal": "envpool"}  # backend: env.vector_mode


def rlfocal_stepper(mode: str, num_envs: int):
    """``step(actions)`` and ``close()`` of rlfocal's vector env in ``mode`` (serial, async or envpool)."""
    envs = make_vec_env("ALE/Pong-v5", 0, num_envs, mode=mode)
    envs.reset(seed=0)

    def step(actions: np.ndarray) -> None:
        envs.step_async(actions)
        envs.step_wait()

    return step, envs.close, int(envs.single_action_space.n)


def envpool_stepper(num_envs: int):
    """The same through EnvPool (C++ threads, one per core here), with rlfocal's Atari settings."""
    import envpool

    env = envpool.make(
        "Pong-v5", env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, num_threads=os.cpu_count() or 1,
        seed=0, episodic_life=True, reward_clip=True, repeat_action_probability=0.25, noop_max=30, stack_num=4,
        img_height=84, img_width=84, frame_skip=4, max_episode_steps=27_000,
    )  # fmt: skip
    env.reset()

    def step(actions: np.ndarray) -> None:
        env.send(actions.astype(np.int32))
        env.recv()

    return step, env.close, int(env.action_space.n)


def measure(backend: str, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    if backend == "envpool":
        step, close, num_actions = envpool_stepper(args.num_envs)
    else:
        step, close, num_actions = rlfocal_stepper(RLFOCAL_MODES[backend], args.num_envs)
    try:
        for _ in range(args.warmup):
            step(rng.integers(num_actions, size=args.num_envs))
        t0, cpu0 = time.perf_counter(), time.thread_time()
        for _ in range(args.iterations):
            step(rng.integers(num_actions, size=args.num_envs))
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    finally:
        close()
    agent_steps = args.iterations * args.num_envs
    return {"wall_us_per_step": 1e6 * wall / agent_steps, "learner_cpu_us_per_step": 1e6 * cpu / agent_steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=1_000, help="timed vector steps per round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "atari_envs.json")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.warmup, args.rounds = 50, 10, 1
    backends = ["serial", "async"] + (["envpool", "envpool_rlfocal"] if importlib.util.find_spec("envpool") else [])
    raw: dict[str, list[dict]] = {b: [] for b in backends}
    for r in range(args.rounds):
        for backend in backends if r % 2 == 0 else backends[::-1]:
            raw[backend].append(measure(backend, args, np.random.default_rng(r)))
            last = raw[backend][-1]
            print(f"round {r + 1}/{args.rounds} {backend:15s} wall {last['wall_us_per_step']:7.1f} µs/step, "
                  f"learner CPU {last['learner_cpu_us_per_step']:7.1f} µs/step", flush=True)  # fmt: skip
    results = {backend: summarise(cells) for backend, cells in raw.items()}
    lines = ["| backend | wall µs per agent step | learner-thread CPU µs per agent step |", "|---|---:|---:|"]
    for backend, r in results.items():
        lines.append(f"| {backend} | {cell(r['wall_us_per_step'])} | {cell(r['learner_cpu_us_per_step'])} |")
    skipped = {} if "envpool" in results else {
        "skipped": 'envpool and envpool_rlfocal: envpool is not installed (pip install -e ".[envpool]")'}  # fmt: skip
    write(args.out, "atari_envs", args, results, "\n".join(lines), **skipped)


if __name__ == "__main__":
    main()
