"""Supervised focal square: class reweighting (focal, inverse-frequency CE) vs loss-prioritized resampling (PER, OHEM)
on long-tailed training sets, judged on balanced test sets.

    python experiments/supervised/run.py [--seeds 0 1 ... 9] [--jobs 2] [--out experiments/supervised/results]
    python experiments/supervised/run.py --quick --out /tmp/sq    # the seconds-long CI version

Trains every (dataset, arm, seed) of ``focal_square`` (an MLP, the same steps and batch size for all arms) and
writes ``runs.csv`` (one row per run: all metrics and per-class recalls), ``summary.csv`` and ``summary.md``
(mean ± 95% t-interval over seeds, and the paired difference to plain CE), ``metrics.png``, ``recall_by_rank.png``
and ``command.txt`` (the command, wall time and git commit that made them). See README.md beside this file.
"""

from __future__ import annotations

import argparse
import csv
import functools
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import focal_square as fs  # noqa: E402

METRICS = ["balanced_accuracy", "macro_f1", "minority_recall"]
LABELS = {"balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1", "minority_recall": "minority recall"}
QUICK_STEPS, QUICK_SEEDS = 30, [0, 1]


@functools.cache
def _split(dataset: str, seed: int) -> fs.Split:
    spec = fs.get_dataset(dataset)
    x, y = _pool(spec.source)
    return fs.make_split(x, y, spec.ratio, spec.n_max, spec.test_per_class, seed)


@functools.cache
def _pool(source: str) -> tuple[np.ndarray, np.ndarray]:
    return fs.load_pool(source)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker; intra-op threads only slow an MLP this small


def run_one(task: tuple[str, str, int, fs.TrainConfig]) -> dict:
    """One training run -> one CSV row (per-class recall by label and by tail rank, 0 = most frequent)."""
    dataset, arm, seed, cfg = task
    split = _split(dataset, seed)
    m = fs.train_and_evaluate(fs.get_arm(arm), split, cfg, seed)
    row = {"dataset": dataset, "arm": arm, "seed": seed, **{k: m[k] for k in METRICS}}
    row.update(
        train_ce=m["train_ce"],
        train_balanced_accuracy=m["train_balanced_accuracy"],
        train_seconds=round(m["train_seconds"], 3),
        n_train=int(split.counts.sum()),
        class_order=" ".join(map(str, split.class_order)),
        counts_by_rank=" ".join(map(str, split.counts[split.class_order])),
    )
    row.update({f"recall_rank{r}": m["recall"][label] for r, label in enumerate(split.class_order)})
    row.update({f"recall_label{c}": m["recall"][c] for c in range(len(split.counts))})
    return row


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95% Student-t interval over seeds (NaN half-width for one seed)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def summarise(rows: list[dict], datasets: list[str], arms: list[str]) -> list[dict]:
    """Mean ± CI per (dataset, arm), plus the paired (same seed, same split) difference to CE where CE ran."""
    out = []
    for ds in datasets:
        by_arm = {
            a: sorted((r for r in rows if r["dataset"] == ds and r["arm"] == a), key=lambda r: r["seed"]) for a in arms
        }
        for arm in arms:
            runs = by_arm[arm]
            row = {"dataset": ds, "arm": arm, "n_seeds": len(runs)}
            for key in [*METRICS, "train_ce"]:
                row[f"{key}_mean"], row[f"{key}_ci95"] = t_interval([r[key] for r in runs])
            if "ce" in by_arm and [r["seed"] for r in by_arm["ce"]] == [r["seed"] for r in runs]:
                for key in METRICS:
                    diff = [r[key] - c[key] for r, c in zip(runs, by_arm["ce"], strict=True)]
                    row[f"{key}_vs_ce_mean"], row[f"{key}_vs_ce_ci95"] = t_interval(diff)
            ranks = sorted(k for k in runs[0] if k.startswith("recall_rank"))
            row.update({f"{k}_mean": float(np.mean([r[k] for r in runs])) for k in ranks})
            out.append(row)
    return out


# resampling without IS weights vs the focal reweighting it matches in expectation (α = γ; see focal_square.ARMS)
PAIRS = [("per_a1_beta0", "focal_g1_no_alpha"), ("per_a2_beta0", "focal_g2_no_alpha")]


def pair_rows(rows: list[dict], datasets: list[str], arms: list[str]) -> list[dict]:
    """Paired (same seed, same split) differences resampling − reweighting for each of ``PAIRS`` that ran."""
    out = []
    for ds in datasets:
        for resample, reweight in PAIRS:
            if resample not in arms or reweight not in arms:
                continue
            a = {r["seed"]: r for r in rows if r["dataset"] == ds and r["arm"] == resample}
            b = {r["seed"]: r for r in rows if r["dataset"] == ds and r["arm"] == reweight}
            seeds = sorted(set(a) & set(b))
            row = {"dataset": ds, "resample": resample, "reweight": reweight, "n_seeds": len(seeds)}
            for key in [*METRICS, "train_ce"]:
                row[f"{key}_diff_mean"], row[f"{key}_diff_ci95"] = t_interval([a[s][key] - b[s][key] for s in seeds])
            out.append(row)
    return out


def pairs_table(pairs: list[dict]) -> str:
    lines = [
        "| data set | resample (β = 0) − reweight | seeds | Δ balanced acc. | Δ macro-F1 | Δ minority recall "
        "| Δ train CE |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in pairs:
        cells = [_pm(r[f"{k}_diff_mean"], r[f"{k}_diff_ci95"], signed=True) for k in [*METRICS, "train_ce"]]
        head = f"| {r['dataset']} | {r['resample']} − {r['reweight']} | {r['n_seeds']} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(mean: float, half: float, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return fmt.format(mean) + ("" if half != half else f" ± {half:.3f}")


def _delta(row: dict, key: str) -> str:
    return _pm(row[f"{key}_vs_ce_mean"], row[f"{key}_vs_ce_ci95"], signed=True) if f"{key}_vs_ce_mean" in row else ""


def markdown_table(summary: list[dict], datasets: list[str]) -> str:
    lines = []
    for ds in datasets:
        spec = fs.get_dataset(ds)
        rows = [r for r in summary if r["dataset"] == ds]
        lines += [
            f"**{ds}** ({spec.source}, ρ = {spec.ratio:g}, {rows[0]['n_seeds']} seeds; "
            "Δ = paired difference to CE, same seed and split)",
            "",
            "| arm | balanced acc. | Δ vs CE | macro-F1 | minority recall | Δ vs CE | train CE |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            d = functools.partial(_delta, r)
            lines.append(
                f"| {r['arm']} | {_pm(r['balanced_accuracy_mean'], r['balanced_accuracy_ci95'])} | "
                f"{d('balanced_accuracy')} | {_pm(r['macro_f1_mean'], r['macro_f1_ci95'])} | "
                f"{_pm(r['minority_recall_mean'], r['minority_recall_ci95'])} | {d('minority_recall')} | "
                f"{r['train_ce_mean']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def _colour(arm: str):
    import matplotlib.pyplot as plt

    if arm.startswith("focal_g") and "no_alpha" not in arm:
        gammas = [0.5, 1.0, 2.0, 5.0]
        g = fs.ARMS[arm].gamma
        return plt.cm.Oranges(0.4 + 0.6 * gammas.index(g) / 3) if g in gammas else "tab:orange"
    return {
        "ce": "0.3",
        "inv_freq_ce": "tab:blue",
        "focal_g2_no_alpha": "tab:brown",
        "per_a0.6": "tab:olive",
        "per_a1": "tab:green",
        "ohem": "tab:purple",
    }.get(arm, "tab:red")


def plot(summary: list[dict], datasets: list[str], arms: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(METRICS), len(datasets), figsize=(4.2 * len(datasets), 9), squeeze=False)
    for j, ds in enumerate(datasets):
        rows = {r["arm"]: r for r in summary if r["dataset"] == ds}
        for i, key in enumerate(METRICS):
            ax = axes[i, j]
            for k, arm in enumerate(arms):
                r = rows[arm]
                ax.errorbar(
                    r[f"{key}_mean"], k, xerr=np.nan_to_num(r[f"{key}_ci95"]), fmt="o", color=_colour(arm), capsize=3
                )
            if "ce" in rows:
                ax.axvline(rows["ce"][f"{key}_mean"], color="0.6", lw=0.8, ls="--")
            ax.set_yticks(range(len(arms)), arms if j == 0 else [""] * len(arms), fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel(LABELS[key])
            if i == 0:
                ax.set_title(f"{ds} ({rows[arms[0]]['n_seeds']} seeds)", fontsize=10)
    fig.suptitle("test metrics, mean ± 95% t-interval over seeds (dashed: CE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6), squeeze=False)
    for j, ds in enumerate(datasets):
        ax = axes[0, j]
        for r in (r for r in summary if r["dataset"] == ds):
            recall = [v for k, v in r.items() if k.startswith("recall_rank")]
            ax.plot(range(len(recall)), recall, "o-", ms=3, lw=1, color=_colour(r["arm"]), label=r["arm"])
        ax.set_xlabel("class rank in training (0 = most frequent)")
        ax.set_title(ds, fontsize=10)
    axes[0, 0].set_ylabel("test recall (mean over seeds)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(out / "recall_by_rank.png", dpi=110)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0..9 (0 1 with --quick)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default 2; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--arms", nargs="+", default=list(fs.ARMS), help="default: all of " + ", ".join(fs.ARMS))
    parser.add_argument("--datasets", nargs="+", default=list(fs.DATASETS), help="default: all")
    parser.add_argument("--steps", type=int, default=None, help="gradient steps per run (default 2000; 30 --quick)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke version (CI)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    seeds = args.seeds or (QUICK_SEEDS if args.quick else list(range(10)))
    jobs = args.jobs or (1 if args.quick else 2)
    steps = args.steps or (QUICK_STEPS if args.quick else fs.TrainConfig.steps)
    for name in args.arms:
        fs.get_arm(name)
    for name in args.datasets:
        fs.get_dataset(name)
    if steps < 1 or jobs < 1 or min(seeds) < 0:
        raise ValueError(f"steps and jobs must be >= 1 and seeds >= 0, got {steps}, {jobs}, {seeds}")
    cfg = fs.TrainConfig(steps=steps)
    tasks = [(ds, arm, seed, cfg) for seed in seeds for ds in args.datasets for arm in args.arms]
    if jobs == 1:
        _init_worker()
        rows = [run_one(t) for t in tasks]
    else:
        ctx = multiprocessing.get_context("spawn")  # no forked torch/numba state
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker) as pool:
            rows = list(pool.map(run_one, tasks, chunksize=4))

    args.out.mkdir(parents=True, exist_ok=True)
    rows.sort(key=lambda r: (args.datasets.index(r["dataset"]), args.arms.index(r["arm"]), r["seed"]))
    write_csv(args.out / "runs.csv", rows)
    summary = summarise(rows, args.datasets, args.arms)
    write_csv(args.out / "summary.csv", summary)
    table = markdown_table(summary, args.datasets)
    pairs = pair_rows(rows, args.datasets, args.arms)
    if pairs:
        write_csv(args.out / "pairs.csv", pairs)
        table += "\n**Resampling without IS weights vs the focal reweighting it matches (`pairs.csv`)**\n\n"
        table += pairs_table(pairs)
    (args.out / "summary.md").write_text(table)
    plot(summary, args.datasets, args.arms, args.out)
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).parent).stdout
    dirty = " (working tree had uncommitted changes)" if git("status", "--porcelain").strip() else ""
    wall = time.perf_counter() - start
    cpu = sum(resource.getrusage(who).ru_utime for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    command = " ".join(["python", *(sys.argv if argv is None else [sys.argv[0], *argv])])
    (args.out / "command.txt").write_text(
        f"{command}\ngit commit {git('rev-parse', 'HEAD').strip()}{dirty}\n"
        f"wall time {wall:.1f} s, CPU time {cpu:.1f} s, for {len(tasks)} runs (jobs={jobs}, {steps} gradient steps "
        f"each; {os.cpu_count()} cores, 1-minute load average at the end {os.getloadavg()[0]:.1f})\n"
    )
    print(table)
    print(f"{len(tasks)} runs in {wall:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
