"""Acceptance check for the DQN: uniform replay + Huber must reach a mean greedy evaluation return >= 475 on
CartPole-v1 within 100k environment steps in at least 4 of 5 seeds.

    python experiments/cartpole_check/run.py [--seeds 0 1 2 3 4] [--jobs 2] [--out experiments/cartpole_check/results]

Runs ``python -m rlfocal.train env=cartpole replay=uniform loss=huber seed=S`` for each seed (the preset's
defaults, nothing tuned here), then writes ``curves.png`` (greedy evaluation return of every seed against
environment steps), ``summary.csv`` (best and final evaluation per seed) and ``command.txt`` (what made them).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rlfocal.runlog import read_metrics

THRESHOLD = 475.0


def train(seed: int, runs: Path) -> Path:
    run_dir = runs / f"seed{seed}"
    cmd = [
        sys.executable,
        "-m",
        "rlfocal.train",
        "env=cartpole",
        "replay=uniform",
        "loss=huber",
        f"seed={seed}",
        "logger=csv",
        "progress=false",
        "device=cpu",
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / "runs"
    with ThreadPoolExecutor(args.jobs) as pool:
        run_dirs = dict(zip(args.seeds, pool.map(lambda s: train(s, runs), args.seeds), strict=True))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    rows = []
    for seed, run_dir in run_dirs.items():
        m = read_metrics(run_dir / "metrics.csv")
        pts = [(s, v) for s, v in zip(m["global_step"], m["eval/return"], strict=True) if v == v]
        steps, evals = zip(*pts, strict=True)
        ax.plot(steps, evals, "o-", ms=3, label=f"seed {seed}")
        first = next((s for s, v in pts if v >= THRESHOLD), None)
        rows.append(
            {
                "seed": seed,
                "best_eval": max(evals),
                "final_eval": evals[-1],
                "first_step_at_475": first if first is not None else "",
            }
        )
    ax.axhline(THRESHOLD, color="k", ls="--", lw=1, label="475")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return (10 episodes)")
    ax.set_title("CartPole-v1, DQN (double-Q), uniform replay + Huber")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)
    with (args.out / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = " ".join(["python", *sys.argv])
    (args.out / "command.txt").write_text(f"{command}\ngit commit {commit}\n")
    passed = sum(r["best_eval"] >= THRESHOLD for r in rows)
    for r in rows:
        print(r)
    print(f"{passed} of {len(rows)} seeds reached a mean evaluation return >= {THRESHOLD:g} within 100k steps")


if __name__ == "__main__":
    main()
