"""Agreement check: rlfocal's own DQN (uniform replay, Huber, ``agent.double=false``) against stock SB3 DQN at
identical hyper-parameters on CartPole-v1, 10 seeds; Welch's t-test on the final greedy evaluation returns.

    python experiments/sb3/agreement.py [--steps 50000] [--seeds 0 ... 9] [--episodes 20] [--quick]

Both sides read one composed rlfocal config (``env=cartpole replay=uniform loss=huber agent.double=false``);
``run.sb3_kwargs`` translates it to SB3 arguments one for one (the table is in README.md). rlfocal trains in-process
through ``rlfocal.train.run``; SB3 trains on the same ``rlfocal.envs.make_env`` environment. Final return: mean of
``--episodes`` greedy episodes on a separate env seeded ``seed + 10_000``, for both. Writes ``agreement.csv``,
``agreement.png`` (training return, mean ± s.e.), ``agreement.txt`` (the test) and ``agreement_command.txt``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import shutil
import time
from pathlib import Path

import numpy as np
from run import binned, rlfocal_config, train_sb3, write_command
from scipy import stats

from rlfocal.runlog import read_metrics
from rlfocal.train import run as rlfocal_run

IMPLS = ("rlfocal", "sb3")


def overrides(seed: int, steps: int, episodes: int) -> list[str]:
    return [
        "env=cartpole",
        "replay=uniform",
        "loss=huber",
        "agent.double=false",
        f"total_steps={steps}",
        f"seed={seed}",
        f"eval_every={steps}",
        f"eval_episodes={episodes}",
        "logger=csv",
        "logger.log_every=1000",
        "gauge.every=0",
        f"checkpoint_every={steps}",
        "progress=false",
        "device=cpu",
        "torch_threads=1",
    ]


def train_rlfocal(seed: int, steps: int, episodes: int, runs: Path) -> dict:
    cfg = rlfocal_config(overrides(seed, steps, episodes))
    run_dir = runs / f"seed{seed}"
    start = time.perf_counter()
    summary = rlfocal_run(cfg, run_dir, dataclasses.asdict(cfg))
    wall = time.perf_counter() - start
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # keep the results folder small
    m = read_metrics(run_dir / "metrics.csv")
    curve = np.array([r for r, s in zip(m["charts/episodic_return"], m["global_step"], strict=True) if s % 1000 == 0])
    return {"final_eval": summary["final_eval_return"], "curve": curve, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--episodes", type=int, default=20, help="greedy evaluation episodes per final return")
    parser.add_argument("--quick", action="store_true", help="2 seeds of 2k steps, for CI")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.seeds, args.episodes, args.out = 2_000, args.seeds[:2], 2, args.out / "quick"
    args.out.mkdir(parents=True, exist_ok=True)

    rows, curves = [], {impl: [] for impl in IMPLS}
    for seed in args.seeds:
        rl = train_rlfocal(seed, args.steps, args.episodes, args.out / "agreement_runs")
        cfg = rlfocal_config(overrides(seed, args.steps, args.episodes))
        sb = train_sb3(cfg, cfg.env.name, seed, args.steps, args.episodes)
        sb["curve"] = binned(sb["episodes"], args.steps, 1000)
        for impl, result in zip(IMPLS, (rl, sb), strict=True):
            curves[impl].append(result["curve"])
            last = result["curve"][-2:]
            rows.append(
                {
                    "seed": seed,
                    "impl": impl,
                    "final_eval_return": result["final_eval"],
                    "last_train_return": float(np.nanmean(last)) if np.isfinite(last).any() else math.nan,
                    "wall_s": round(result["wall_s"], 1),
                }
            )
            print(rows[-1], flush=True)

    with (args.out / "agreement.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    finals = {impl: np.array([r["final_eval_return"] for r in rows if r["impl"] == impl]) for impl in IMPLS}
    test = stats.ttest_ind(finals["rlfocal"], finals["sb3"], equal_var=False)
    lines = [
        f"CartPole-v1, {args.steps:,} env steps, {len(args.seeds)} seeds, final return = mean of "
        f"{args.episodes} greedy episodes"
    ]
    for impl in IMPLS:
        v = finals[impl]
        lines.append(
            f"{impl:8s} mean {v.mean():7.2f}  sd {v.std(ddof=1):7.2f}  median {np.median(v):7.2f}  "
            f"values {np.round(v, 1).tolist()}"
        )
    lines.append(f"Welch t-test (rlfocal vs sb3): t = {test.statistic:.3f}, p = {test.pvalue:.3f}")
    (args.out / "agreement.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for impl in IMPLS:
        c = np.array(curves[impl])  # [seeds, bins]
        x = np.arange(1, c.shape[1] + 1) * 1000
        mean = np.nanmean(c, axis=0)
        se = np.nanstd(c, axis=0) / np.sqrt(np.sum(~np.isnan(c), axis=0).clip(min=1))
        ax.plot(x, mean, label=f"{impl} (final eval {finals[impl].mean():.0f} ± {finals[impl].std(ddof=1):.0f})")
        ax.fill_between(x, mean - se, mean + se, alpha=0.25)
    ax.set_title(f"CartPole-v1: rlfocal DQN (double=false) vs SB3 DQN, {len(args.seeds)} seeds; p = {test.pvalue:.2f}")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return (mean ± s.e.)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "agreement.png", dpi=120)
    write_command(args.out / "agreement_command.txt")


if __name__ == "__main__":
    main()
