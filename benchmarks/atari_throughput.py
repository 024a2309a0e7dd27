"""Atari DQN throughput: env steps/s and updates/s of rlfocal (uniform and PER) and a CleanRL-style loop.

Every cell (contender x game x variant x environments) runs in its own subprocess, one after another, with one
torch thread. rlfocal runs its real training entry, ``rlfocal.train.run``, composed as ``python -m rlfocal.train``
would be: ``env=atari/<game>`` (configs/env/atari/*.yaml: Nature CNN, double-Q, Huber, gradient clip 10, Adam
lr 1e-4, target every 1,000 steps, 1M-transition replay with each frame stored once) with ``replay=uniform|per``.
Only the run length changes: ``--learning-starts`` random steps (2,000) fill the replay, then ``--steps`` learning
steps are measured. ε reaches its final 0.01 before learning starts, so the measured phase acts greedily, as 90%
of a real run does. The analogy gauge (a diagnostic, ``gauge.every``) and evaluation are off.

Variants keep the standard replay ratio of 8 sampled transitions per agent step in fewer, larger updates:
``b32`` (batch 32 every 4 steps, the DQN standard), ``b64`` (64 every 8), ``b256`` (256 every 32). ``--num-envs``
steps N environments per loop iteration (``env.num_envs``; batched acting). The figure is environment (agent)
steps per second over the learning phase, from the ``charts/SPS`` rows of the run's metrics.csv, less the first
log window (warm-up: allocator, cuDNN autotuning); updates/s = steps/s / train_freq; median of ``--repeats``.
Peak host RAM is the child's ``ru_maxrss``; on CUDA also ``torch.cuda.max_memory_allocated``.

The CleanRL-style contender is CleanRL's dqn_atari.py loop in one function: one environment
(``rlfocal.envs.make_env``, so preprocessing is identical), SB3's ``ReplayBuffer(optimize_memory_usage=True,
handle_timeout_termination=False)`` (uniform only: CleanRL has no PER), the Nature CNN, torch's Adam. Its update
does rlfocal's maths (double-Q, Huber, clip 10) rather than CleanRL's (max target, MSE, no clip), so the
difference measured is the machinery (replay, loop), not one more forward pass.

    python benchmarks/atari_throughput.py --repeats 1            # CPU: 15-20 minutes on 2 loaded cores
    python benchmarks/atari_throughput.py --device cuda          # one GPU (not yet timed: roughly 30 minutes)
    python benchmarks/atari_throughput.py --quick --contenders rlfocal-uniform,rlfocal-per   # CI smoke

``--gpu-path`` runs rlfocal with issue 13's options on (``GPU_PATH``): learning while the environments step, replay
storage on the learner's device, the priority write-back one update late, the update replayed as a CUDA graph;
with ``--vector-mode async`` (or ``envpool``) the environments step in parallel meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CONTENDERS = ("rlfocal-uniform", "rlfocal-per", "cleanrl-style")
GAMES = {"pong": "ALE/Pong-v5", "breakout": "ALE/Breakout-v5"}
VARIANTS = {"b32": (32, 4), "b64": (64, 8), "b256": (256, 32)}  # (batch size, env steps per update)
GPU_PATH = ("env.overlap=true", "replay.storage_device={device}", "replay.deferred=true", "agent.capture_update=true")
WINDOWS = 8  # log windows over the learning phase; the first is warm-up and not measured
AGENT_STEPS_10M_FRAMES = 2_500_000  # 10M frames at frame skip 4


def compose_config(overrides: list[str]):
    """The run config exactly as ``python -m rlfocal.train <overrides>`` composes it."""
    from hydra import compose, initialize_config_module

    from rlfocal.config import register_configs

    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        return compose("config", overrides=overrides)


def run_rlfocal(spec: dict, replay: str) -> dict:
    """One training run through ``rlfocal.train.run``; steps/s over the learning phase from its metrics.csv."""
    import csv
    import tempfile

    from omegaconf import OmegaConf

    from rlfocal.config import validate
    from rlfocal.train import run

    batch, freq = VARIANTS[spec["variant"]]
    start, total = spec["learning_starts"], spec["learning_starts"] + spec["steps"]
    overrides = [
        f"env=atari/{spec['game']}", f"replay={replay}", "logger=csv", "progress=false", "eval_every=0",
        "gauge.every=0", f"device={spec['device']}", f"seed={spec['seed']}", f"total_steps={total}",
        f"agent.learning_starts={start}", f"agent.batch_size={batch}", f"agent.train_freq={freq}",
        f"replay.capacity={spec['capacity']}", f"env.num_envs={spec['num_envs']}",
        f"env.vector_mode={spec['vector_mode']}", f"logger.log_every={max(1, spec['steps'] // WINDOWS)}",
        f"checkpoint_every={10 * total}", "eval_episodes=1",  # the run's closing evaluation is not measured
        *(o.format(device=spec["device"]) for o in spec.get("extra_overrides", ())),
    ]  # fmt: skip
    cfg = compose_config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run(validate(cfg), Path(tmp), OmegaConf.to_container(cfg, resolve=True))
        with (Path(tmp) / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    # (steps, seconds) of each log window that lies wholly in the learning phase
    windows, prev = [], 0
    for row in rows:
        step, sps = int(row["global_step"]), float(row["charts/SPS"])
        if prev >= start:
            windows.append((step - prev, (step - prev) / sps))
        prev = step
    measured = windows[1:] if len(windows) > 1 else windows
    steps, seconds = sum(w[0] for w in measured), sum(w[1] for w in measured)
    return {"sps": steps / seconds, "measured_steps": steps, "stored": int(rows[-1]["replay/size"]),
            "capacity": cfg.replay.capacity}  # fmt: skip


def run_cleanrl_style(spec: dict) -> dict:
    """CleanRL's dqn_atari.py loop (one env, SB3's ReplayBuffer of stacked frames) with rlfocal's settings."""
    import numpy as np
    import psutil
    import torch
    import torch.nn.functional as F
    from stable_baselines3.common.buffers import ReplayBuffer
    from torch import nn

    from rlfocal.envs import make_env

    cfg = compose_config([f"env=atari/{spec['game']}"])
    a = cfg.agent
    batch_size, train_freq = VARIANTS[spec["variant"]]
    start, total = spec["learning_starts"], spec["learning_starts"] + spec["steps"]
    device = torch.device(spec["device"])
    seed = spec["seed"]
    np.random.seed(seed)  # noqa: NPY002 (SB3's buffer samples with numpy's global generator)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = make_env(GAMES[spec["game"]], seed, train=True)
    n_actions = int(env.action_space.n)

    def q_network() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
            nn.Linear(512, n_actions),
        ).to(device)  # fmt: skip

    q, target = q_network(), q_network()
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=a.lr, eps=a.adam_eps)
    # SB3 stores a 4-frame stack per transition (28 KB; 26 GiB at 1M): cap the capacity at half the free memory
    # so the (lazily touched) array can be allocated at all
    stack_bytes = int(np.prod(env.observation_space.shape)) * env.observation_space.dtype.itemsize
    capacity = min(spec["capacity"], psutil.virtual_memory().available // 2 // stack_bytes)
    rb = ReplayBuffer(capacity, env.observation_space, env.action_space, device, optimize_memory_usage=True,
                      handle_timeout_termination=False)  # fmt: skip
    obs, _ = env.reset(seed=seed)
    eps_steps = a.eps_fraction * total
    loss = torch.zeros((), device=device)
    t_measure, s_measure = time.perf_counter(), start
    for step in range(1, total + 1):
        # ε = 1 until learning starts (as rlfocal), then CleanRL's linear schedule
        eps = 1.0 if step <= start else max(a.eps_end, 1 - (1 - a.eps_end) * step / eps_steps)
        if rng.random() < eps:
            action = int(rng.integers(n_actions))
        else:
            with torch.no_grad():
                action = int(q(torch.as_tensor(obs[None], device=device).float() / 255.0).argmax())
        next_obs, reward, term, trunc, _ = env.step(action)
        rb.add(obs[None], next_obs[None], np.array([action]), np.array([reward]), np.array([term]), [{}])
        obs = next_obs if not (term or trunc) else env.reset()[0]
        # ALGO LOGIC: the same update as rlfocal's learner
        if step > start and step % train_freq == 0:
            data = rb.sample(batch_size)
            x, x_next = data.observations.float() / 255.0, data.next_observations.float() / 255.0
            with torch.no_grad():
                next_q = target(x_next)
                next_a = (q(x_next) if a.double else next_q).argmax(dim=1, keepdim=True)
                y = data.rewards.flatten() + a.gamma * next_q.gather(1, next_a).squeeze(1) * (1 - data.dones.flatten())
            q_sa = q(x).gather(1, data.actions).squeeze(1)
            loss = F.smooth_l1_loss(q_sa, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(q.parameters(), a.max_grad_norm)
            opt.step()
        if step % a.target_update_period == 0:
            target.load_state_dict(q.state_dict())
        if step == start + max(1, spec["steps"] // WINDOWS):  # the first window is warm-up, as for rlfocal
            float(loss)  # finish queued CUDA work before timing starts
            t_measure = time.perf_counter()
            s_measure = step
    float(loss)  # wait for the last update (CUDA)
    steps = total - s_measure
    return {"sps": steps / (time.perf_counter() - t_measure), "measured_steps": steps, "stored": rb.size(),
            "capacity": capacity}  # fmt: skip


def child(spec: dict) -> None:
    """Run one cell and print its result as one JSON line."""
    import resource

    import torch

    torch.set_num_threads(1)
    cuda = spec["device"].startswith("cuda")
    if spec["contender"] == "cleanrl-style":
        out = run_cleanrl_style(spec)
    else:
        out = run_rlfocal(spec, spec["contender"].removeprefix("rlfocal-"))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    out["gpu"] = torch.cuda.get_device_name() if cuda else None
    print(json.dumps(out))


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages: how busy the machine was besides us."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Versions, CPU, memory and load: the context a throughput figure needs."""
    from importlib.metadata import PackageNotFoundError, version

    import psutil

    out = {"python": platform.python_version(), "cpus": os.cpu_count(), "cpu": platform.processor() or "?",
           "ram_gib": round(psutil.virtual_memory().total / 2**30, 1), "loadavg_start": loadavg()}  # fmt: skip
    try:
        with open("/proc/cpuinfo") as f:
            out["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for pkg in ("torch", "numpy", "numba", "gymnasium", "ale-py", "stable-baselines3", "rlfocal"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def cells(args: argparse.Namespace) -> list[dict]:
    """The grid, contenders side by side in each (game, environments, variant) so that they run back to back and
    share the machine's load: every variant at one environment, plus the standard b32 at each larger
    ``--num-envs`` (batch size and environment count act on different halves of the loop, so crossing them
    fully adds little). CleanRL's dqn_atari.py steps one environment only."""
    grid = []
    for game in args.games.split(","):
        for num_envs in [int(n) for n in args.num_envs.split(",")]:
            for variant in args.variants.split(",") if num_envs == 1 else ["b32"]:
                for contender in args.contenders.split(","):
                    if contender == "cleanrl-style" and num_envs > 1:
                        continue
                    grid.append({"contender": contender, "game": game, "variant": variant, "num_envs": num_envs})
    return grid


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    """The markdown table, with PER's cost over uniform and rlfocal against the CleanRL-style loop."""

    def sps(contender: str, r: dict) -> float | None:
        for o in results:
            same = all(o[k] == r[k] for k in ("game", "variant", "num_envs"))
            if same and o["contender"] == contender and "sps_median" in o:
                return o["sps_median"]
        return None

    path = f"; rlfocal with {' '.join(GPU_PATH)}".format(device=args.device) if args.gpu_path else ""
    print(f"\nAtari DQN, {args.steps:,} learning steps after {args.learning_starts:,} random ones, device "
          f"{args.device}, 1 torch thread, median of {args.repeats}; replay capacity {args.capacity:,}; "
          f"env.vector_mode={args.vector_mode}{path}")  # fmt: skip
    print(
        "| contender | game | variant | envs | device | env steps/s | updates/s | PER/uniform | vs CleanRL-style "
        "| peak RSS | peak GPU mem |\n|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|"
    )
    for r in results:
        head = f"| {r['contender']} | {r['game']} | {r['variant']} | {r['num_envs']} | {args.device} |"
        if "error" in r:
            print(f"{head} failed: {r['error']} | | | | | |")
            continue
        uniform, cleanrl = sps("rlfocal-uniform", r), sps("cleanrl-style", r)
        per = f"{uniform / r['sps_median']:.2f}x" if r["contender"] == "rlfocal-per" and uniform else ""
        vs = f"{r['sps_median'] / cleanrl:.2f}x" if r["contender"] != "cleanrl-style" and cleanrl else ""
        gpu = f"{r['peak_gpu_mib']:,.0f} MiB" if r["peak_gpu_mib"] is not None else "-"
        print(f"{head} {r['sps_median']:,.0f} | {r['updates_per_s']:,.1f} | {per} | {vs} | "
              f"{r['peak_rss_mib']:,.0f} MiB | {gpu} |")  # fmt: skip
    print("\nPER/uniform: time per step, PER over uniform (target <= 1.15). vs CleanRL-style: steps/s ratio.")
    for r in results:
        if r["contender"] == "rlfocal-per" and r["variant"] == "b32" and "sps_median" in r:
            hours = AGENT_STEPS_10M_FRAMES / r["sps_median"] / 3600
            print(f"PER b32 {r['game']} x{r['num_envs']}: 10M frames would take {hours:.1f} h (target < 1 h on "
                  "one H100-class GPU, i.e. >= 2,000 steps/s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="measured learning steps per cell (default 2,000 on CPU, "
                        "20,000 on CUDA, 300 with --quick)")  # fmt: skip
    parser.add_argument("--learning-starts", type=int, default=2_000, help="random steps that fill the replay first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--num-envs", default="1,8", help="environment counts; above 1 only b32 runs")
    parser.add_argument("--vector-mode", default="serial", choices=("serial", "async", "envpool"))
    parser.add_argument("--gpu-path", action="store_true", help="rlfocal with GPU_PATH's options on (see above)")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="replay capacity in transitions")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--quick", action="store_true", help="smoke: 300 steps, pong, b32, one env, one repeat")
    parser.add_argument("--out", type=Path, help="JSON path (default results/atari_throughput[_quick].json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if args.quick:
        args.games, args.variants, args.num_envs, args.repeats = "pong", "b32", "1", 1
        args.learning_starts = min(args.learning_starts, 1_000)
    if args.steps is None:
        args.steps = 300 if args.quick else 20_000 if args.device.startswith("cuda") else 2_000
    if args.out is None:
        args.out = RESULTS / ("atari_throughput_quick.json" if args.quick else "atari_throughput.json")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    info = machine()
    common = {"steps": args.steps, "learning_starts": args.learning_starts, "capacity": args.capacity,
              "device": args.device, "vector_mode": args.vector_mode,
              "extra_overrides": list(GPU_PATH) if args.gpu_path else []}  # fmt: skip
    grid = cells(args)
    runs: list[list[dict]] = [[] for _ in grid]
    errors: dict[int, str] = {}
    t0 = time.perf_counter()
    for rep in range(args.repeats):  # round robin: a drift in the machine's load spreads over every cell
        for i, cell in enumerate(grid):
            if i in errors:
                continue
            label = f"{cell['contender']:<16} {cell['game']:<8} {cell['variant']:<4} x{cell['num_envs']}"
            spec = {**common, **cell, "seed": args.seed + rep}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True, env=env)  # fmt: skip
            if out.returncode != 0:
                errors[i] = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"
                print(f"{label} failed: {errors[i]}", flush=True)
                continue
            runs[i].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{label} run {rep + 1}: {runs[i][-1]['sps']:8.1f} steps/s", flush=True)
    results: list[dict] = []
    for i, cell in enumerate(grid):
        if i in errors:
            results.append({**cell, "error": errors[i]})
            continue
        batch, freq = VARIANTS[cell["variant"]]
        median = statistics.median(r["sps"] for r in runs[i])
        peak_gpu = [r["peak_gpu_mib"] for r in runs[i] if r["peak_gpu_mib"] is not None]
        first = runs[i][0]
        results.append({
            **cell, "batch_size": batch, "train_freq": freq, "sps_median": median, "updates_per_s": median / freq,
            "sps_runs": [r["sps"] for r in runs[i]], "measured_steps": first["measured_steps"],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs[i]), "peak_gpu_mib": max(peak_gpu, default=None),
            "stored": first["stored"], "capacity": first["capacity"],
            "buffer_fill": first["stored"] / first["capacity"], "gpu": first["gpu"],
        })  # fmt: skip
    info["loadavg_end"] = loadavg()
    info["wall_s"] = round(time.perf_counter() - t0)

    print_table(results, args)
    notes = [
        "env steps/s = agent steps/s (frame skip 4: frames/s is 4x) over the learning phase, from rlfocal's "
        "charts/SPS log rows less the first learning window; the CleanRL-style loop times the same span itself.",
        "The replay holds only learning_starts + steps transitions (buffer_fill), so peak RSS is far below a full "
        "1M buffer's: rlfocal stores each 84x84 frame once (about 7 GiB at 1M), SB3 a 4-frame stack per "
        "transition (26 GiB at 1M, capped here at half the free memory).",
        "gauge.every=0 and eval_every=0: the analogy gauge and evaluation, which real runs do now and then, are off.",
    ]
    if not args.device.startswith("cuda"):
        load = f"load average {info['loadavg_start']} at the start, {info['loadavg_end']} at the end"
        notes.append(
            f"CPU figures on a shared machine ({info['cpus']} cores, {load}): other jobs took CPU time, so absolute "
            "figures are low and noisy; ratios between cells run minutes apart are rougher still."
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    variants = {k: {"batch_size": b, "train_freq": f} for k, (b, f) in VARIANTS.items()}
    settings = {**common, "repeats": args.repeats, "windows": WINDOWS, "games": GAMES, "variants": variants,
                "standard": "configs/env/atari/<game>.yaml, only the run length and replay ratio changed"}  # fmt: skip
    payload = {"settings": settings, "machine": info, "notes": notes, "results": results}
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
