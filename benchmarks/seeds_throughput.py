"""Seed lanes (issue 12): S seeds in one ``num_seeds=S`` run against the same S seeds run one after another.

Tasks: DeepSea N = 20 (its preset: MLP 64x64, batch 32, a gradient step every env step, 400 learning steps a
seed), CartPole (``train_throughput.py``'s settings: MLP 64x64, batch 128, a step every 4; 1,600 learning steps),
MiniGrid DoorKey-5x5 (its preset: MLP 128x128, batch 64, a step every 4, 3-step returns; 400 learning steps;
skipped without ``minigrid``); samplers uniform and PER. The untimed warm-up ``learning_starts`` is 100 on DeepSea
and 300 on the others (instead of 1k and 5k). Both sides train the same seeds 0..S-1 for the same steps with the
same settings, in this one process, through ``rlfocal.train.run`` exactly as ``python -m rlfocal.train`` does
(Hydra config composed, ``validate``, ``run``): logger none, no periodic evaluation (``eval_every=0``; the one final
evaluation has ``eval_episodes=1``), gauge off, no progress bar, one torch thread, CPU.

- **batched**: one run with ``num_seeds=S seed=0``.
- **sequential**: runs with ``num_seeds=1 seed=k``, k = 0..S-1; its time is the sum of theirs. Each round runs the
  single seeds 0..min(max S, 8)-1 once, so sequential S <= 8 is measured; for larger S it is extrapolated as
  ``S/8 x`` the 8 measured runs (a sequential run of S seeds is exactly S single runs), and marked ``*``.

**What is timed: the learning phase.** Each run is watched through two hooks on ``rlfocal.train``: the clock
starts at the first gradient step (``learn_step``, so set-up and the random-policy warm-up of ``learning_starts``
steps are excluded) and stops at the final evaluation (``evaluate_lanes``, so evaluation, the final checkpoint and
the summary are excluded). In between is everything a training step does: acting, env steps, replay adds, sampling,
the update, priority write-back, target updates. Seed-steps/s = S x (env steps in that window) / seconds, on wall
time (``perf_counter``) and on CPU time of the process (``process_time``, all threads). Peak RSS: the kernel's
high-water mark (VmHWM) reset before each run (``/proc/self/clear_refs``), so it is that run's peak, imports
included (``torch`` alone is ~300 MiB).

**Update cost against the floor.** During each run ``agent.learn_lanes`` is timed on its real batches (forward,
backward, per-lane clipping, Adam; no sampling). The floor is, at the same S, a bare hand-written batched update
of the same shapes: MLP layers as ``torch.baddbmm`` over ``[S, B, in]``, the passes a DQN update needs (online
forward with grad, target forward and, for double-Q, online forward on the next observations, without grad),
Huber loss, backward, one fused Adam step; no vmap, no replay, no env, no clipping. The report gives both per seed
(time per call / S) and their ratio. ``floor_fwd_bwd_adam`` in the JSON is the online pass + backward + Adam alone.

Targets (issue 12, this 2-core machine): >= 3x seed-steps/s at S = 32 on DeepSea N = 20 and on CartPole; per-seed
update cost within 1.5x of the floor.

Every round runs every cell (batched S, single seed k, floor S) once, in an order shuffled per round, so slow
drift of this shared machine spreads over all cells; figures are the median over rounds, with the range.

    python benchmarks/seeds_throughput.py            # default: 3 tasks x 2 samplers, S = 1..64, 3 rounds, ~13 min
    python benchmarks/seeds_throughput.py --quick    # seconds: DeepSea, S = 1, 4, 1 round, a few hundred steps
    python benchmarks/seeds_throughput.py --tasks cartpole --seeds 1,32 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.util
import io
import json
import os
import platform
import random
import re
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SAMPLERS = ("uniform", "per")
SEEDS = (1, 4, 8, 16, 32, 64)
MAX_MEASURED_SEQUENTIAL = 8  # sequential S above this: extrapolated from the 8 single-seed runs
TARGET_SPEEDUP, TARGET_S, TARGET_FLOOR = 3.0, 32, 1.5


def _train_throughput() -> Any:
    """``train_throughput.py`` as a module (its CartPole settings, so the two benchmarks cannot drift apart)."""
    spec = importlib.util.spec_from_file_location("train_throughput", HERE / "train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Task:
    """One environment with its training settings; ``steps`` is the learning-phase length per seed."""

    name: str
    overrides: tuple[str, ...]
    learning_starts: int
    steps: int  # env steps per seed after learning_starts
    hidden: tuple[int, ...]
    batch_size: int
    double: bool
    requires: str | None = None  # a module that must import, else the task is skipped

    def total_steps(self, scale: float) -> int:
        return self.learning_starts + max(1, int(self.steps * scale))


def make_tasks() -> dict[str, Task]:
    """DeepSea N = 20 (its preset), CartPole (train_throughput's settings), MiniGrid DoorKey-5x5 (its preset)."""
    throughput = _train_throughput()
    s = throughput.SETTINGS
    cartpole = ("env=cartpole", *throughput.rlfocal_overrides())
    return {
        # preset: MLP 64x64 over the 400-wide one-hot, batch 32, a gradient step every env step, double-Q
        "deepsea20": Task("deepsea20", ("env=deepsea", "env.kwargs.size=20"), 100, 400, (64, 64), 32, True),
        # train_throughput's settings but learning_starts 300 (the warm-up is not timed)
        "cartpole": Task("cartpole", cartpole, 300, 1_600, (s["hidden"],) * 2, s["batch_size"], False),
        # preset: MLP 128x128, batch 64, a step every 4, 3-step returns; learning_starts 300 (from 5k; not timed)
        "doorkey5x5": Task(
            "doorkey5x5", ("env=minigrid/doorkey5x5",), 300, 400, (128, 128), 64, True, requires="minigrid"
        ),
    }


# ----------------------------------------------------------------------------------------------------------------
# memory


def _status_kib(key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def reset_peak_rss() -> bool:
    """Give freed memory back to the OS, then reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def mib(kib: int) -> float:
    return kib / 1024


# ----------------------------------------------------------------------------------------------------------------
# one training run, timed over its learning phase


@dataclass
class PhaseClock:
    """Hooks on ``rlfocal.train``'s ``learn_step`` and ``evaluate_lanes`` that time a run's learning phase (from the
    first gradient step to the final evaluation) and every ``agent.learn_lanes`` call inside it; while it is on,
    ``runlog.plot_curve`` (run after the window) does nothing."""

    start: tuple[float, float] | None = None  # (wall, cpu) at the first gradient step
    end: tuple[float, float] | None = None  # (wall, cpu) at the final evaluation
    start_step: int = 0
    updates: int = 0
    learn_s: float = 0.0  # inside agent.learn_lanes
    learn_step_s: float = 0.0  # inside learn_step: sampling + learn_lanes + priority write-back
    _saved: dict[str, Any] = field(default_factory=dict)

    def __enter__(self) -> PhaseClock:
        import rlfocal.runlog as runlog_module
        import rlfocal.train as train_module

        self._modules = {"learn_step": train_module, "evaluate_lanes": train_module, "plot_curve": runlog_module}
        self._saved = {name: getattr(module, name) for name, module in self._modules.items()}
        train_module.learn_step, train_module.evaluate_lanes = self._learn_step, self._evaluate_lanes
        # each seed's curve.png comes after the timed window and costs ~0.1 s a seed: skipped to save the benchmark time
        runlog_module.plot_curve = lambda *args, **kwargs: None
        return self

    def __exit__(self, *exc: object) -> None:
        for name, fn in self._saved.items():
            setattr(self._modules[name], name, fn)

    def _learn_step(self, r: Any) -> Any:
        if self.start is None:
            self.start, self.start_step = (time.perf_counter(), time.process_time()), r.counters.global_step
            learn_lanes = r.agent.learn_lanes

            def timed_learn_lanes(batch: Any) -> Any:
                t = time.perf_counter()
                out = learn_lanes(batch)
                self.learn_s += time.perf_counter() - t
                return out

            r.agent.learn_lanes = timed_learn_lanes  # this run's agent only
        t = time.perf_counter()
        out = self._saved["learn_step"](r)
        self.learn_step_s += time.perf_counter() - t
        self.updates += 1
        return out

    def _evaluate_lanes(self, *args: Any, **kwargs: Any) -> Any:
        if self.end is None:  # eval_every=0: the only evaluation is the final one
            self.end = (time.perf_counter(), time.process_time())
        return self._saved["evaluate_lanes"](*args, **kwargs)


def train_once(task: Task, sampler: str, num_seeds: int, seed: int, scale: float) -> dict[str, Any]:
    """Train seeds ``seed .. seed + num_seeds - 1`` in one run; the learning phase's times, updates and peak RSS."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlfocal.config import register_configs, validate
    from rlfocal.train import run

    total = task.total_steps(scale)
    overrides = [
        *task.overrides,
        f"replay={sampler}",
        "logger=none",
        "device=cpu",
        "torch_threads=1",
        "progress=false",
        "eval_every=0",
        "eval_episodes=1",
        "gauge.every=0",
        f"total_steps={total}",
        f"seed={seed}",
        f"num_seeds={num_seeds}",
        f"checkpoint_every={10 * total}",
        f"logger.log_every={total}",
        f"agent.learning_starts={task.learning_starts}",
    ]
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    config, config_dict = validate(cfg), OmegaConf.to_container(cfg, resolve=True)
    peak_ok = reset_peak_rss()
    rss_start = _status_kib("VmRSS")
    quiet = contextlib.redirect_stdout(io.StringIO())
    with tempfile.TemporaryDirectory() as tmp, PhaseClock() as clock, quiet, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(config, Path(tmp), config_dict)
    if clock.start is None or clock.end is None:
        raise RuntimeError(f"{task.name}: the run made no gradient step or no final evaluation; nothing was timed")
    steps = total - clock.start_step
    return {
        "wall_s": clock.end[0] - clock.start[0],
        "cpu_s": clock.end[1] - clock.start[1],
        "seed_steps": num_seeds * steps,
        "updates": clock.updates,
        "learn_lanes_s": clock.learn_s,
        "learn_step_s": clock.learn_step_s,
        "peak_rss_mib": mib(_status_kib("VmHWM")) if peak_ok else None,
        "rss_start_mib": mib(rss_start),
    }


# ----------------------------------------------------------------------------------------------------------------
# the floor: a bare batched update of the same shapes


def floor_times(task: Task, obs_dim: int, num_actions: int, num_seeds: int, min_time: float) -> dict[str, float]:
    """Seconds per call of a bare batched DQN update (see the module docstring) and of the online pass + backward +
    Adam alone, for ``num_seeds`` lanes of ``task``'s MLP and batch, in plain torch (``baddbmm``)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    S, B, sizes = num_seeds, task.batch_size, [obs_dim, *task.hidden, num_actions]

    def layers(requires_grad: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            w = (torch.rand(S, fan_in, fan_out, generator=gen) * 2 - 1) / fan_in**0.5
            b = torch.zeros(S, 1, fan_out)
            out.append((w.requires_grad_(requires_grad), b.requires_grad_(requires_grad)))
        return out

    online, target = layers(True), layers(False)
    params = [p for layer in online for p in layer]
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)

    def mlp(x: torch.Tensor, net: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        for i, (w, b) in enumerate(net):
            x = torch.baddbmm(b, x, w)
            if i < len(net) - 1:
                x = torch.relu(x)
        return x

    if task.name.startswith("deepsea"):  # one-hot observations, as DeepSea's
        obs = F.one_hot(torch.randint(obs_dim, (S, B), generator=gen), obs_dim).float()
    else:
        obs = torch.randn(S, B, obs_dim, generator=gen)
    next_obs = obs.roll(1, dims=1)
    actions = torch.randint(num_actions, (S, B, 1), generator=gen)
    rewards, discounts = torch.rand(S, B, generator=gen), torch.full((S, B), 0.99)

    def dqn_update() -> None:
        q_sa = mlp(obs, online).gather(2, actions).squeeze(2)
        with torch.no_grad():
            next_q = mlp(next_obs, target)
            next_a = (mlp(next_obs, online) if task.double else next_q).argmax(dim=2, keepdim=True)
            y = rewards + discounts * next_q.gather(2, next_a).squeeze(2)
        loss = F.smooth_l1_loss(q_sa, y, reduction="none").mean(dim=1).sum()
        for p in params:
            p.grad = None
        loss.backward()
        opt.step()

    def fwd_bwd_adam() -> None:
        loss = mlp(obs, online).gather(2, actions).square().mean(dim=1).sum()
        for p in params:
            p.grad = None
        loss.backward()
        opt.step()

    def per_call(fn: Any) -> float:
        for _ in range(10):
            fn()
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < min_time or n < 20:
            fn()
            n += 1
        return elapsed / n

    return {"floor_s": per_call(dqn_update), "floor_fwd_bwd_adam_s": per_call(fwd_bwd_adam)}


def task_shapes(task: Task) -> tuple[int, int]:
    """(flattened observation size, number of actions) of the task's environment."""
    import math

    from hydra import compose, initialize_config_module

    from rlfocal.config import register_configs, validate
    from rlfocal.envs import make_env

    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        cfg = validate(compose("config", overrides=[*task.overrides, "logger=none"]))
    env = make_env(cfg.env.name, 0, train=False, **cfg.env.kwargs)
    shape = (math.prod(env.observation_space.shape), int(env.action_space.n))
    env.close()
    return shape


# ----------------------------------------------------------------------------------------------------------------
# summary and report


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def sequential_round(singles: list[dict], S: int) -> tuple[dict[str, float], bool]:
    """Sequential S seeds in one round from its single-seed runs: summed for S <= their number, else scaled."""
    extrapolated = S > len(singles)
    used = singles if extrapolated else singles[:S]
    factor = S / len(used)
    keys = ("wall_s", "cpu_s", "seed_steps", "learn_lanes_s", "updates")
    totals = {k: factor * sum(run[k] for run in used) for k in keys}
    return totals, extrapolated


def cell_summary(batched: list[dict], singles: list[list[dict]], floors: list[dict], S: int) -> dict[str, Any]:
    """Per-round rates, paired speedups and update costs for one (task, sampler, S), summarised over rounds."""
    rows: dict[str, list[float]] = {k: [] for k in ("b_wall", "b_cpu", "s_wall", "s_cpu", "x_wall", "x_cpu")}
    rows |= {"update_us": [], "floor_us": [], "floor_min_us": [], "x_floor": [], "seq_update_us": []}
    extrapolated = False
    for b, round_singles, fl in zip(batched, singles, floors, strict=True):
        seq, extrapolated = sequential_round(round_singles, S)
        rows["b_wall"].append(b["seed_steps"] / b["wall_s"])
        rows["b_cpu"].append(b["seed_steps"] / b["cpu_s"])
        rows["s_wall"].append(seq["seed_steps"] / seq["wall_s"])
        rows["s_cpu"].append(seq["seed_steps"] / seq["cpu_s"])
        rows["x_wall"].append(rows["b_wall"][-1] / rows["s_wall"][-1])
        rows["x_cpu"].append(rows["b_cpu"][-1] / rows["s_cpu"][-1])
        per_seed_update = b["learn_lanes_s"] / b["updates"] / S
        rows["update_us"].append(1e6 * per_seed_update)
        rows["seq_update_us"].append(1e6 * seq["learn_lanes_s"] / seq["updates"])
        rows["floor_us"].append(1e6 * fl["floor_s"] / S)
        rows["floor_min_us"].append(1e6 * fl["floor_fwd_bwd_adam_s"] / S)
        rows["x_floor"].append(per_seed_update / (fl["floor_s"] / S))
    names = {
        "b_wall": "batched_seed_steps_per_s_wall",
        "b_cpu": "batched_seed_steps_per_s_cpu",
        "s_wall": "sequential_seed_steps_per_s_wall",
        "s_cpu": "sequential_seed_steps_per_s_cpu",
        "x_wall": "speedup_wall",
        "x_cpu": "speedup_cpu",
        "update_us": "update_us_per_seed",
        "seq_update_us": "sequential_update_us_per_seed",
        "floor_us": "floor_us_per_seed",
        "floor_min_us": "floor_fwd_bwd_adam_us_per_seed",
        "x_floor": "update_over_floor",
    }
    out: dict[str, Any] = {names[k]: summarize(v) for k, v in rows.items()}
    peaks = [b["peak_rss_mib"] for b in batched if b["peak_rss_mib"] is not None]
    seq_peaks = [run["peak_rss_mib"] for rs in singles for run in rs if run["peak_rss_mib"] is not None]
    out["batched_peak_rss_mib"] = max(peaks) if peaks else None
    out["sequential_peak_rss_mib"] = max(seq_peaks) if seq_peaks else None
    out["sequential_extrapolated"] = extrapolated
    out["updates_per_lane"] = batched[0]["updates"]
    out["seed_steps"] = batched[0]["seed_steps"]
    return out


def fmt(summary: dict[str, float], spec: str = ",.0f", suffix: str = "") -> str:
    return f"{summary['median']:{spec}}{suffix} ({summary['min']:{spec}}–{summary['max']:{spec}})"


def table(results: dict[str, Any]) -> str:
    """The markdown table: one row per (task, sampler, S); ``*`` marks extrapolated sequential cells."""
    head = (
        "| task | sampler | S | batched seed-steps/s wall | sequential wall | speedup wall | batched seed-steps/s CPU "
        "| sequential CPU | speedup CPU | update µs/seed | floor µs/seed | update/floor | peak RSS MiB batched / seq |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, by_sampler in results.items():
        if "skipped" in by_sampler:
            lines.append(f"| {task} | — | — | skipped: {by_sampler['skipped']} | | | | | | | | | |")
            continue
        for sampler, by_s in by_sampler.items():
            for S, c in by_s.items():
                star = "*" if c["sequential_extrapolated"] else ""
                rss = f"{c['batched_peak_rss_mib'] or 0:,.0f} / {c['sequential_peak_rss_mib'] or 0:,.0f}"
                lines.append(
                    f"| {task} | {sampler} | {S} | {fmt(c['batched_seed_steps_per_s_wall'])} "
                    f"| {fmt(c['sequential_seed_steps_per_s_wall'])}{star} "
                    f"| {fmt(c['speedup_wall'], '.2f', 'x')}{star} | {fmt(c['batched_seed_steps_per_s_cpu'])} "
                    f"| {fmt(c['sequential_seed_steps_per_s_cpu'])}{star} | {fmt(c['speedup_cpu'], '.2f', 'x')}{star} "
                    f"| {c['update_us_per_seed']['median']:,.1f} | {c['floor_us_per_seed']['median']:,.1f} "
                    f"| {fmt(c['update_over_floor'], '.2f', 'x')} | {rss} |"
                )
    return "\n".join(lines)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 12's targets, read off the medians: speedup at S = 32 on DeepSea and CartPole; update cost vs floor."""
    out: dict[str, Any] = {}
    for task in ("deepsea20", "cartpole"):
        for sampler, by_s in results.get(task, {}).items():
            if isinstance(by_s, dict) and TARGET_S in by_s:
                x = by_s[TARGET_S]["speedup_wall"]["median"]
                out[f"speedup_wall_S{TARGET_S}_{task}_{sampler}"] = {"value": x, "met": x >= TARGET_SPEEDUP}
    for task, by_sampler in results.items():
        for sampler, by_s in by_sampler.items():
            if not isinstance(by_s, dict):
                continue
            for S, c in by_s.items():
                x = c["update_over_floor"]["median"]
                out[f"update_over_floor_{task}_{sampler}_S{S}"] = {"value": x, "met": x <= TARGET_FLOOR}
    return out


def machine() -> dict[str, Any]:
    """CPU model, cores, threads and versions."""
    import numpy as np
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return {
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=HERE).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds: deepsea20, S = 1, 4, 1 round, short runs")
    parser.add_argument("--tasks", default="deepsea20,cartpole,doorkey5x5")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="values of S")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="factor on every task's learning-phase steps")
    parser.add_argument("--floor-time", type=float, default=0.25, help="seconds per floor measurement")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default results/seeds_throughput.json; --quick: the temp dir)",
    )
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seeds, args.rounds, args.scale, args.floor_time = "deepsea20", "1,4", 1, 0.2, 0.05
    quick_out = Path(tempfile.gettempdir()) / "seeds_throughput-quick.json"  # a smoke: results/ keeps the real run
    out_path = args.out or (quick_out if args.quick else RESULTS / "seeds_throughput.json")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")

    all_tasks = make_tasks()
    seeds_list = sorted({int(s) for s in args.seeds.split(",")})
    samplers = args.samplers.split(",")
    n_singles = min(max(seeds_list), MAX_MEASURED_SEQUENTIAL)
    tasks, results = [], {}
    for name in args.tasks.split(","):
        task = all_tasks[name]
        if task.requires and importlib.util.find_spec(task.requires) is None:
            results[name] = {"skipped": f"{task.requires} is not installed"}
            print(f"{name}: skipped ({task.requires} is not installed)")
            continue
        tasks.append(task)
    shapes = {task.name: task_shapes(task) for task in tasks}

    # every cell of a round: ("batched", task, sampler, S), ("single", task, sampler, seed), ("floor", task, S)
    cells = [("batched", t.name, sp, S) for t in tasks for sp in samplers for S in seeds_list]
    cells += [("single", t.name, sp, k) for t in tasks for sp in samplers for k in range(n_singles)]
    cells += [("floor", t.name, "", S) for t in tasks for S in seeds_list]
    raw: dict[tuple, list[dict]] = {cell: [] for cell in cells}
    t_begin = time.perf_counter()
    info = machine()
    for rnd in range(args.rounds):
        order = cells[:]
        random.Random(rnd).shuffle(order)
        for i, cell in enumerate(order):
            kind, name, sampler, n = cell
            task = all_tasks[name]
            if kind == "floor":
                raw[cell].append(floor_times(task, *shapes[name], n, args.floor_time))
                continue
            S, seed = (n, 0) if kind == "batched" else (1, n)
            res = train_once(task, sampler, S, seed, args.scale)
            raw[cell].append(res)
            rate = res["seed_steps"] / res["wall_s"]
            print(
                f"round {rnd + 1}/{args.rounds} [{i + 1:3}/{len(order)}] {name:<10} {sampler:<7} {kind:<7} "
                f"{'S' if kind == 'batched' else 'seed'}={n:<3} {rate:9,.0f} seed-steps/s wall, "
                f"{res['seed_steps'] / res['cpu_s']:9,.0f} CPU  ({time.perf_counter() - t_begin:5.0f} s)",
                flush=True,
            )

    for task in tasks:
        results[task.name] = {}
        for sampler in samplers:
            singles_by_round = [
                [raw[("single", task.name, sampler, k)][rnd] for k in range(n_singles)] for rnd in range(args.rounds)
            ]
            results[task.name][sampler] = {
                S: cell_summary(
                    raw[("batched", task.name, sampler, S)], singles_by_round, raw[("floor", task.name, "", S)], S
                )
                for S in seeds_list
            }

    info["loadavg_at_end"] = os.getloadavg()
    report = table(results)
    checks = targets(results)
    print(f"\n{report}")
    if max(seeds_list) > n_singles:
        print(f"\n* sequential extrapolated from {n_singles} single-seed runs (S/{n_singles} x their time)")
    for key, check in checks.items():
        if key.startswith("speedup") or not check["met"]:
            print(f"{key}: {check['value']:.2f}x {'met' if check['met'] else 'NOT met'}")
    doc = {
        "benchmark": "seeds_throughput",
        "commit": git_commit(),
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tasks": {
            t.name: {**vars(t), "total_steps": t.total_steps(args.scale), "obs_actions": shapes[t.name]} for t in tasks
        },  # fmt: skip
        "method": __doc__,
        "total_wall_s": time.perf_counter() - t_begin,
        "results": results,
        "targets": checks,
        "raw": [{"cell": list(cell), "rounds": runs} for cell, runs in raw.items()],
        "table_markdown": report,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2, default=str))
    print(f"wrote {out_path} ({doc['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
