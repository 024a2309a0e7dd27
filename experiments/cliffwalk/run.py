"""Blind Cliffwalk (Schaul et al. 2016, Fig. 1/2): updates until tabular Q is learned, per arm, against memory size.

    python experiments/cliffwalk/run.py [--quick] [--seeds 20] [--n-max 16] [--workers 2] [--out DIR]

For every arm (sampler + loss), chain length n and seed, tabular Q-learning replays one transition of the full
Blind Cliffwalk memory per update until the MSE of Q against the true values is below 1e-3 (DESIGN.md §4.1).
Writes ``updates.csv`` (one row per run), ``summary.csv`` (median and quartiles per arm and n), ``cliffwalk.png``
(log–log, median and interquartile band) and ``command.txt`` (the command, wall time and git commit) to ``--out``.
The settings and their reasons are in README.md next to this file.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import kernels  # experiments/cliffwalk/kernels.py: this script's directory is on sys.path
import numpy as np

from rlfocal.envs.cliffwalk import all_transitions, true_q
from rlfocal.replay.sumtree import SumTree

ETA = 0.25  # tabular step size (Schaul et al., Appendix B.1)
THRESHOLD = 1e-3  # MSE of Q against the true values that counts as learned
Q0_STD = 0.1  # Q initialised from N(0, 0.1), read as a standard deviation
ALPHA = 0.6  # PER exponent (proportional, Atari setting), and mirror's
EPS = 1e-6  # PER's ε in p = |δ| + ε
MIRROR_CLIP = 1.0 / ETA  # largest weight whose step η·w does not overshoot a fixed target


@dataclass(frozen=True)
class Arm:
    """A sampler and a per-sample loss; ``tau=None`` is focal-TD's ``tau: auto``; ``max_weight`` inf: no clip."""

    sampler: str
    loss: str = "mse"
    gamma: float = 0.0
    tau: float | None = 1.0
    max_weight: float = math.inf
    init_from_td: bool = False


ARMS: dict[str, Arm] = {
    "uniform": Arm("uniform"),
    "greedy": Arm("greedy"),
    "per": Arm("proportional"),
    "oracle": Arm("oracle"),
    "greedy_td0": Arm("greedy", init_from_td=True),
    "per_td0": Arm("proportional", init_from_td=True),
    "focal_g0.3_auto": Arm("uniform", "focal", gamma=ALPHA / 2, tau=None),
    "focal_g0.3_tau1": Arm("uniform", "focal", gamma=ALPHA / 2, tau=1.0),
    "focal_g1_auto": Arm("uniform", "focal", gamma=1.0, tau=None),
    "focal_g2_auto": Arm("uniform", "focal", gamma=2.0, tau=None),
    "mirror": Arm("uniform", "mirror"),
    "mirror_clip4": Arm("uniform", "mirror", max_weight=MIRROR_CLIP),
}
_SAMPLERS = {"uniform": kernels.UNIFORM, "greedy": kernels.GREEDY, "proportional": kernels.PROPORTIONAL,
             "oracle": kernels.ORACLE}  # fmt: skip
_LOSSES = {"mse": kernels.MSE, "focal": kernels.FOCAL, "mirror": kernels.MIRROR}


def transitions(n: int) -> int:
    """Rows in the Blind Cliffwalk memory of chain length n: 2^(n+1) − 2."""
    return 2 ** (n + 1) - 2


@functools.lru_cache(maxsize=4)
def _memory(n: int) -> dict[str, np.ndarray]:
    """The Blind Cliffwalk memory, built once per n and process (building it in Python is the slow part at n = 16)."""
    memory = all_transitions(n)
    return {"pair": 2 * memory["state"] + memory["action"], "reward": memory["reward"].astype(np.float64),
            "next_state": memory["next_state"], "terminated": memory["terminated"]}  # fmt: skip


def run_one(arm: str, n: int, seed: int, max_updates: int = 10**8, threshold: float = THRESHOLD) -> dict:
    """One run: updates until MSE(Q, true Q) < ``threshold`` for ``arm`` on a chain of ``n`` states.

    Q's initial values and the memory's row order (which breaks greedy's ties) depend on (seed, n) only, so arms
    start from the same point; the sampling stream depends on (seed, n, arm).
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known arms: {', '.join(ARMS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n (chain length) must be an integer >= 2, got {n!r}")
    if max_updates < 1:
        raise ValueError(f"max_updates must be >= 1, got {max_updates!r}")
    spec = ARMS[arm]
    memory = _memory(n)
    rng = np.random.default_rng([seed, n])
    order = rng.permutation(transitions(n))
    q0 = rng.normal(0.0, Q0_STD, size=2 * n)
    tree = SumTree(transitions(n), track_min=False)
    rng_seed = int(np.random.SeedSequence([seed, n, zlib.crc32(arm.encode())]).generate_state(1)[0])
    updates, converged, diverged, final_mse = kernels.run_tabular(
        memory["pair"][order], memory["reward"][order], memory["next_state"][order], memory["terminated"][order],
        q0, true_q(n, 1.0 - 1.0 / n).ravel(), _SAMPLERS[spec.sampler], _LOSSES[spec.loss], ALPHA, EPS, spec.gamma,
        -1.0 if spec.tau is None else spec.tau, spec.max_weight, ETA, 1.0 - 1.0 / n, threshold, int(max_updates),
        rng_seed, spec.init_from_td, tree._nodes, tree._leaf0,
    )  # fmt: skip
    return {"arm": arm, "n": n, "transitions": transitions(n), "seed": seed, "updates": int(updates),
            "converged": bool(converged), "diverged": bool(diverged), "final_mse": float(final_mse)}  # fmt: skip


def _run_task(task: tuple[str, int, int, int]) -> dict:
    return run_one(*task)


def summarise(rows: list[dict], max_updates: int) -> list[dict]:
    """Median and quartiles of updates per (arm, n); a run that did not converge counts as ``max_updates``.

    Those values are lower bounds, so ``median_censored`` marks a median that depends on one of them.
    """
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["arm"], row["n"]), []).append(row)
    summary = []
    for (arm, n), runs in groups.items():
        values = np.array([r["updates"] if r["converged"] else max_updates for r in runs], dtype=np.float64)
        censored = sum(not r["converged"] for r in runs)
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        summary.append({"arm": arm, "n": n, "transitions": transitions(n), "seeds": len(runs),
                        "converged": len(runs) - censored, "diverged": sum(r["diverged"] for r in runs),
                        "median": median, "q25": q25, "q75": q75,
                        "median_censored": censored >= len(runs) - len(runs) // 2})  # fmt: skip
    order = {name: i for i, name in enumerate(ARMS)}
    return sorted(summary, key=lambda s: (order[s["arm"]], s["n"]))


_STYLE = {"uniform": ("k", "-"), "greedy": ("tab:orange", "-"), "per": ("tab:blue", "-"), "oracle": ("tab:green", "-"),
          "greedy_td0": ("tab:orange", "--"), "per_td0": ("tab:blue", "--"),
          "mirror": ("tab:red", ":"), "mirror_clip4": ("tab:red", "--"), "focal_g0.3_auto": ("tab:purple", "-"),
          "focal_g0.3_tau1": ("tab:purple", "--"), "focal_g1_auto": ("tab:brown", "-"),
          "focal_g2_auto": ("tab:pink", "-")}  # fmt: skip
_PANELS = (
    ("paper arms + mirror", ("uniform", "greedy", "greedy_td0", "per", "per_td0", "oracle", "mirror", "mirror_clip4")),
    ("focal-TD (uniform sampling)", ("uniform", "per", "oracle", "focal_g0.3_auto", "focal_g0.3_tau1", "focal_g1_auto",
                                     "focal_g2_auto")),
)  # fmt: skip


def plot(summary: list[dict], max_updates: int, path: Path) -> None:
    """Log–log median updates against memory size with the interquartile band; censored medians hollow, at the cap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for ax, (title, arms) in zip(axes, _PANELS, strict=True):
        for arm in arms:
            rows = [s for s in summary if s["arm"] == arm]
            if not rows:
                continue
            color, ls = _STYLE[arm]
            x = np.array([s["transitions"] for s in rows], dtype=np.float64)
            med = np.array([s["median"] for s in rows])
            cens = np.array([s["median_censored"] for s in rows])
            ax.fill_between(x, [s["q25"] for s in rows], [s["q75"] for s in rows], color=color, alpha=0.12, lw=0)
            ax.plot(x[~cens], med[~cens], ls=ls, color=color, marker="o", ms=3, label=arm)
            if cens.any():
                ax.plot(x[cens], med[cens], ls="none", color=color, marker="^", ms=7, mfc="none")
        ax.axhline(max_updates, color="grey", lw=0.8, ls=":")
        sizes = np.array(sorted({s["transitions"] for s in summary}), dtype=np.float64)
        ax.plot(sizes, sizes, color="grey", lw=0.8, ls="--", label="updates = transitions")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("transitions in replay memory (2^(n+1) − 2)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("updates until MSE < 1e-3 (median, IQR)")
    seeds = max(s["seeds"] for s in summary)
    fig.suptitle(f"Blind Cliffwalk, tabular Q, {seeds} seeds; hollow ▲ at the cap (grey): median not converged",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CI version: n = 2..5, 3 seeds, cap 1e5 updates")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (0, 1, ...)")
    parser.add_argument("--n-min", type=int, default=2)
    parser.add_argument("--n-max", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--max-updates", type=int, default=10**8, help="per-run cap; runs past it are censored")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help=f"subset of: {' '.join(ARMS)}")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n_max, args.max_updates = 3, min(args.n_max, 5), 10**5
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; known arms: {', '.join(ARMS)}")
    if args.n_min < 2 or args.n_max < args.n_min:
        raise ValueError(f"need 2 <= n-min <= n-max, got n-min {args.n_min} and n-max {args.n_max}")
    if args.seeds < 1 or args.workers < 1:
        raise ValueError(f"seeds and workers must be >= 1, got {args.seeds} and {args.workers}")

    start = time.perf_counter()
    run_one("uniform", 2, 0, 10)  # compile (or load the cache) once, before any fork
    # largest n first, so the long runs do not straggle at the end
    ns = range(args.n_max, args.n_min - 1, -1)
    tasks = [(arm, n, seed, args.max_updates) for n in ns for arm in args.arms for seed in range(args.seeds)]
    if args.workers == 1:
        rows = [_run_task(t) for t in tasks]
    else:
        with Pool(args.workers) as pool:
            rows = list(pool.imap_unordered(_run_task, tasks))
    rows.sort(key=lambda r: (list(ARMS).index(r["arm"]), r["n"], r["seed"]))
    summary = summarise(rows, args.max_updates)
    args.out.mkdir(parents=True, exist_ok=True)
    _write_csv(args.out / "updates.csv", rows)
    _write_csv(args.out / "summary.csv", summary)
    plot(summary, args.max_updates, args.out / "cliffwalk.png")
    wall = time.perf_counter() - start

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python", __file__, *argv])
    (args.out / "command.txt").write_text(
        f"{command}\nwall time {wall:.1f} s, {args.workers} worker(s)\ngit commit {commit}"
        f"{' (working tree had uncommitted changes)' if dirty else ''}\n"
    )
    for s in summary:
        flag = " (censored)" if s["median_censored"] else ""
        print(f"{s['arm']:>16} n={s['n']:2d} median {s['median']:11.0f}{flag} converged {s['converged']}/{s['seeds']}")
    print(f"wall time {wall:.1f} s -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
