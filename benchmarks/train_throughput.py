"""DQN training throughput on CartPole: rlfocal (uniform and PER) against Stable-Baselines3 and a CleanRL-style loop.

Every contender runs in its own subprocess, one after another, with one torch thread and the same settings:
CartPole-v1, 50k environment steps, learning starts 1k, buffer 50k, batch 128, one gradient step every 4 steps,
target update every 500 steps, MLP 64x64, Huber loss, gradient-norm clip 10 (as SB3 does), Adam lr 2.5e-4, CPU,
no evaluation. The figure is environment steps per second over the whole run (wall clock from the first step to
the last, set-up excluded), median and range of ``--repeats`` rounds; contenders take turns within each round
(interleaved, so a noisy stretch of a shared machine hits all of them), and each run's CPU time (the child's
``time.process_time`` over set-up and run) is recorded beside it.

    python benchmarks/train_throughput.py                 # about 5 minutes on 2 cores
    python benchmarks/train_throughput.py --steps 5000 --repeats 1   # smoke
    python benchmarks/train_throughput.py --contenders rlfocal-uniform,rlfocal-per --baseline ../old-checkout
        # adds baseline-uniform and baseline-per: the same runs with the rlfocal of another checkout, side by side
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
CONTENDERS = ("rlfocal-uniform", "rlfocal-per", "sb3", "cleanrl-style")
SETTINGS = {
    "learning_starts": 1_000,
    "buffer_size": 50_000,
    "batch_size": 128,
    "train_freq": 4,
    "target_update": 500,
    "hidden": 64,
    "lr": 2.5e-4,
    "gamma": 0.99,
    "max_grad_norm": 10.0,
    "eps_end": 0.05,
    "eps_fraction": 0.1,
}


def rlfocal_overrides(s: dict = SETTINGS) -> list[str]:
    """``SETTINGS`` as rlfocal's Hydra overrides (buffer, network, update; not the budget or learning_starts)."""
    return [
        f"replay.capacity={s['buffer_size']}",
        f"agent.batch_size={s['batch_size']}",
        f"agent.train_freq={s['train_freq']}",
        f"agent.target_update_period={s['target_update']}",
        f"agent.hidden=[{s['hidden']},{s['hidden']}]",
        f"agent.lr={s['lr']}",
        f"agent.gamma={s['gamma']}",
        f"agent.max_grad_norm={s['max_grad_norm']}",
        f"agent.eps_end={s['eps_end']}",
        f"agent.eps_fraction={s['eps_fraction']}",
        "agent.double=false",
    ]


def run_rlfocal(steps: int, replay: str, seed: int) -> float:
    import tempfile

    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlfocal.config import register_configs, validate
    from rlfocal.train import run

    overrides = [
        f"replay={replay}",
        "loss=huber",
        "logger=none",
        "device=cpu",
        "progress=false",
        "eval_every=0",
        f"total_steps={steps}",
        f"seed={seed}",
        f"checkpoint_every={10 * steps}",
        f"agent.learning_starts={SETTINGS['learning_starts']}",
        *rlfocal_overrides(),
        f"logger.log_every={steps}",
    ]
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(validate(cfg), Path(tmp), OmegaConf.to_container(cfg, resolve=True))
    return summary["sps"]


def run_sb3(steps: int, seed: int) -> float:
    import gymnasium as gym
    from stable_baselines3 import DQN

    s = SETTINGS
    model = DQN(
        "MlpPolicy",
        gym.make("CartPole-v1"),
        learning_rate=s["lr"],
        buffer_size=s["buffer_size"],
        learning_starts=s["learning_starts"],
        batch_size=s["batch_size"],
        gamma=s["gamma"],
        train_freq=s["train_freq"],
        gradient_steps=1,
        target_update_interval=s["target_update"],
        exploration_fraction=s["eps_fraction"],
        exploration_final_eps=s["eps_end"],
        max_grad_norm=s["max_grad_norm"],
        policy_kwargs={"net_arch": [s["hidden"], s["hidden"]]},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def run_cleanrl_style(steps: int, seed: int) -> float:
    """CleanRL's dqn.py loop (single env, SB3's ReplayBuffer, Huber and grad clip as SB3) in a few lines."""
    import gymnasium as gym
    import numpy as np
    import torch
    import torch.nn.functional as F
    from stable_baselines3.common.buffers import ReplayBuffer
    from torch import nn

    s = SETTINGS
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("CartPole-v1")
    n_obs, n_act = env.observation_space.shape[0], env.action_space.n
    h = s["hidden"]
    q = nn.Sequential(nn.Linear(n_obs, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, n_act))
    target = nn.Sequential(nn.Linear(n_obs, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, n_act))
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=s["lr"])
    rb = ReplayBuffer(
        s["buffer_size"], env.observation_space, env.action_space, "cpu", handle_timeout_termination=False
    )
    obs, _ = env.reset(seed=seed)
    start = time.perf_counter()
    for step in range(steps):
        eps = max(s["eps_end"], 1 - (1 - s["eps_end"]) * step / (s["eps_fraction"] * steps))
        if rng.random() < eps:
            action = env.action_space.sample()
        else:
            action = int(q(torch.as_tensor(obs)).argmax().item())
        next_obs, reward, term, trunc, _ = env.step(action)
        rb.add(obs, next_obs, np.array(action), reward, term, [{}])
        obs = next_obs if not (term or trunc) else env.reset()[0]
        if step > s["learning_starts"] and step % s["train_freq"] == 0:
            data = rb.sample(s["batch_size"])
            with torch.no_grad():
                y = data.rewards.flatten() + s["gamma"] * target(data.next_observations).max(1).values * (
                    1 - data.dones.flatten()
                )
            q_sa = q(data.observations).gather(1, data.actions).squeeze()
            loss = F.smooth_l1_loss(q_sa, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(q.parameters(), s["max_grad_norm"])
            opt.step()
        if step % s["target_update"] == 0:
            target.load_state_dict(q.state_dict())
    return steps / (time.perf_counter() - start)


def child(name: str, steps: int, seed: int) -> None:
    import torch

    torch.set_num_threads(1)
    cpu0 = time.process_time()
    name = name.replace("baseline-", "rlfocal-")  # the baseline is this code path run on another checkout
    if name == "rlfocal-uniform":
        sps = run_rlfocal(steps, "uniform", seed)
    elif name == "rlfocal-per":
        sps = run_rlfocal(steps, "per", seed)
    elif name == "sb3":
        sps = run_sb3(steps, seed)
    else:
        sps = run_cleanrl_style(steps, seed)
    print(json.dumps({"sps": sps, "cpu_s": time.process_time() - cpu0}))


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for pkg in ("torch", "numpy", "gymnasium", "stable-baselines3", "rlfocal"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", type=Path, help="another checkout: adds its rlfocal-* runs as baseline-*")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, args.seed)
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    names = args.contenders.split(",")
    if args.baseline:
        names += [n.replace("rlfocal-", "baseline-") for n in names if n.startswith("rlfocal-")]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # each round starts one further on
            if name in failed:
                continue
            cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--seed", str(args.seed)]
            child_env = env
            if name.startswith("baseline-"):  # the other checkout's rlfocal and agents come first on the path
                paths = [str(args.baseline.resolve()), env.get("PYTHONPATH", "")]
                child_env = {**env, "PYTHONPATH": os.pathsep.join(paths)}
            out = subprocess.run(cmd, capture_output=True, text=True, env=child_env)
            if out.returncode != 0:
                failed[name] = out.stderr.strip().splitlines()[-1] if out.stderr else "failed"
                continue
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{name:<16} round {rep + 1}: {runs[name][-1]['sps']:8.0f} steps/s", flush=True)
    results: dict[str, dict] = {}
    for name in names:
        if name in failed:
            results[name] = {"error": failed[name]}
            continue
        sps_runs = [r["sps"] for r in runs[name]]
        cpu_sps = [args.steps / r["cpu_s"] for r in runs[name]]
        results[name] = {
            "sps_median": statistics.median(sps_runs), "sps_runs": sps_runs,
            "cpu_sps_median": statistics.median(cpu_sps), "cpu_sps_runs": cpu_sps,
        }  # fmt: skip

    def sps(name: str) -> float | None:
        return results.get(name, {}).get("sps_median")

    print(f"\nCartPole DQN, {args.steps:,} env steps, 1 torch thread, median (range) of {args.repeats} rounds")
    print("| contender | env steps/s (wall) | steps per CPU-s | vs SB3 | vs CleanRL-style |\n|---|---:|---:|---:|---:|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | |")
            continue
        rel = [f"{r['sps_median'] / sps(p):.2f}x" if sps(p) else "-" for p in ("sb3", "cleanrl-style")]
        wall = f"{r['sps_median']:,.0f} ({min(r['sps_runs']):,.0f}–{max(r['sps_runs']):,.0f})"
        cpu = f"{r['cpu_sps_median']:,.0f} ({min(r['cpu_sps_runs']):,.0f}–{max(r['cpu_sps_runs']):,.0f})"
        print(f"| {name} | {wall} | {cpu} | {rel[0]} | {rel[1]} |")
    for kind in ("uniform", "per"):
        new, old = sps(f"rlfocal-{kind}"), sps(f"baseline-{kind}")
        if new and old:
            print(f"rlfocal-{kind} vs baseline-{kind}: {new / old - 1:+.1%} wall steps/s")
    if sps("rlfocal-per") and sps("rlfocal-uniform"):
        ratio = sps("rlfocal-uniform") / sps("rlfocal-per")
        print(f"\nPER cost: time per step, PER / uniform = {ratio:.2f}x (target <= 1.3x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "settings": SETTINGS,
                "steps": args.steps,
                "baseline": str(args.baseline or ""),
                "machine": versions(),
                "results": results,
            },
            indent=2,
        )  # fmt: skip
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
