"""The study's statistics (issue 14 §6) from its run folders: per-arm IQM with stratified bootstrap CIs, the
pre-registered paired comparisons (mean difference with a bootstrap CI, probability of improvement, sign-flip
p-value, Holm's correction over the whole family, minimum detectable effect) and the TOST equivalence tests of the
analogy (focal-matched ≈ PER β = 0, margin half the PER(β = 0) − DQN gap).

    python experiments/study/analyse.py experiments/study/results/runs --out experiments/study/results

Writes ``scores.csv`` (one row per seed run), ``arms.csv``, ``comparisons.csv``, ``equivalence.csv``, ``study.png``
and ``report.md`` (the same tables, readable). Scores are ``scores.py``'s, normalised by fixed references.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scores.py, as when run as a script
from scores import TASKS, SeedScore, by_task_arm, load_scores  # noqa: E402

from rlfocal import stats  # noqa: E402

# The comparisons fixed before the main sweep ran: (arm a, arm b, what a - b > 0 would say). Holm's correction
# runs over all of them within a task.
COMPARISONS = [
    ("per_beta0", "dqn", "PER without IS weights beats DQN (the task can tell the analogy from nothing)"),
    ("per", "dqn", "PER as practised (β annealed to 1) beats DQN"),
    ("per_lr_quarter", "per", "PER at a quarter of the learning rate (Schaul et al.'s Atari setting) differs from PER"),
    ("focal_matched", "dqn", "focal-TD in the α = 2γ regime beats DQN"),
    ("focal_matched", "per_beta0", "matched focal-TD differs from its counterpart PER(β = 0)"),
    ("focal", "dqn", "literal focal-TD (τ = running mean of L) beats DQN"),
    ("focal_matched", "focal", "moving focal into the α = 2γ regime changes it"),
    ("mirror", "dqn", "the uniform mirror of PER beats DQN"),
    ("mirror", "per_beta0", "the mirror differs from PER(β = 0), whose expected gradient it matches"),
    ("lap", "dqn", "LAP beats DQN"),
    ("pal", "lap", "PAL (LAP's uniform mirror) differs from LAP"),
    ("dqn_lr2", "dqn", "step-size control: twice the learning rate beats DQN"),
    ("dqn_lr4", "dqn", "step-size control: four times the learning rate beats DQN"),
    ("per_beta0", "dqn_lr2", "resampling beats stepping twice as far"),
    ("per_beta0", "dqn_lr4", "resampling beats stepping four times as far"),
    ("mirror", "dqn_lr4", "the mirror's reweighting beats stepping four times as far"),
    ("focal_matched", "dqn_lr4", "matched focal's reweighting beats stepping four times as far"),
]
EQUIVALENCES = [  # (arm, its counterpart): equivalent within half the counterpart's gain over DQN?
    ("focal_matched", "per_beta0"),
    ("mirror", "per_beta0"),
    ("pal", "lap"),
]
ALPHA = 0.05
REPS = 5000


def _fmt(x: float, digits: int = 3) -> str:
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}" if isinstance(x, float) and not math.isnan(x) else ("" if x is None else str(x))


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _fmt(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in rows)


def paired(arms: dict[str, dict[int, SeedScore]], a: str, b: str) -> np.ndarray:
    """Per-seed differences a - b over the seeds both arms ran (common random numbers pair them)."""
    seeds = sorted(set(arms[a]) & set(arms[b]))
    return np.array([arms[a][s].score - arms[b][s].score for s in seeds])


def arm_rows(table) -> list[dict]:
    rows = []
    for task, arms in table.items():
        for arm, seeds in sorted(arms.items()):
            x = np.array([s.score for s in seeds.values()])
            point, lo, hi = stats.stratified_bootstrap_ci({arm: [x]}, stats.iqm, reps=REPS)[arm]
            updates = np.array([s.updates_to_solve for s in seeds.values()])
            row = {"task": task, "arm": arm, "seeds": len(x), "iqm": point, "iqm_low": lo, "iqm_high": hi}
            row["mean"] = float(x.mean())
            if TASKS[task].kind == "solve":
                row["solved_fraction"] = float(np.isfinite(updates).mean())
                row["median_updates_to_solve"] = float(np.median(updates))  # inf when fewer than half solved
            rows.append(row)
    return rows


def comparison_rows(table) -> list[dict]:
    rows = []
    for task, arms in table.items():
        family = []
        for a, b, question in COMPARISONS:
            if a not in arms or b not in arms:
                continue
            d = paired(arms, a, b)
            if d.size < 2:
                continue
            _, lo, hi = stats.stratified_bootstrap_ci({"d": [d]}, np.mean, reps=REPS)["d"]
            xa = [arms[a][s].score for s in sorted(arms[a])]
            xb = [arms[b][s].score for s in sorted(arms[b])]
            poi, poi_lo, poi_hi = stats.probability_of_improvement_ci(xa, xb, reps=1000)
            row = {"task": task, "a": a, "b": b, "question": question, "seeds": int(d.size)}
            row |= {"mean_diff": float(d.mean()), "diff_low": lo, "diff_high": hi, "sd_diff": float(d.std(ddof=1))}
            row |= {"p_improvement": poi, "p_improvement_low": poi_lo, "p_improvement_high": poi_hi}
            row["p_value"] = stats.sign_flip_pvalue(d, reps=REPS)
            row["mde"] = stats.minimum_detectable_effect(row["sd_diff"], d.size) if d.size > 1 else math.nan
            family.append(row)
        for row, p_holm in zip(family, stats.holm([r["p_value"] for r in family]), strict=True):
            row["p_holm"] = p_holm
            if p_holm < ALPHA:
                row["verdict"] = f"{row['a']} > {row['b']}" if row["mean_diff"] > 0 else f"{row['a']} < {row['b']}"
            else:
                row["verdict"] = f"no difference detected (MDE {row['mde']:.3f})"
        rows += family
    return rows


def equivalence_rows(table) -> list[dict]:
    rows = []
    for task, arms in table.items():
        if "dqn" not in arms:
            continue
        for arm, counterpart in EQUIVALENCES:
            if arm not in arms or counterpart not in arms:
                continue
            gain = float(paired(arms, counterpart, "dqn").mean())
            margin = max(gain, 0.0) / 2  # no gain over DQN: nothing for the arm to be equivalent to
            d = paired(arms, arm, counterpart)
            row = {"task": task, "arm": arm, "counterpart": counterpart, "seeds": int(d.size)}
            row |= {"counterpart_gain_over_dqn": gain, "margin": margin, "mean_diff": float(d.mean())}
            if margin > 0 and d.size > 1:
                row["p_tost"] = stats.tost_pvalue(d, margin, reps=REPS)
                row["verdict"] = (
                    f"equivalent within ±{margin:.3f}" if row["p_tost"] < ALPHA else "equivalence not shown"
                )
            else:
                row["p_tost"], row["verdict"] = math.nan, "not testable (the counterpart does not beat DQN)"
            rows.append(row)
    return rows


def plot(table, arms_csv: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(table)
    solve_tasks = [t for t in tasks if TASKS[t].kind == "solve"]
    fig, axes = plt.subplots(1, len(tasks) + len(solve_tasks), figsize=(5.5 * (len(tasks) + len(solve_tasks)), 4.2))
    axes = np.atleast_1d(axes)
    for ax, task in zip(axes, tasks, strict=False):
        rows = sorted((r for r in arms_csv if r["task"] == task), key=lambda r: r["iqm"])
        y = np.arange(len(rows))
        ax.errorbar(
            [r["iqm"] for r in rows], y,
            xerr=[[r["iqm"] - r["iqm_low"] for r in rows], [r["iqm_high"] - r["iqm"] for r in rows]],
            fmt="o", capsize=3,
        )  # fmt: skip
        ax.set_yticks(y, [r["arm"] for r in rows])
        ax.set_xlabel("IQM of the normalised score (95% stratified bootstrap CI)")
        ax.set_title(f"{task}: {rows[0]['seeds']} seeds per arm")
        ax.grid(alpha=0.3)
    for ax, task in zip(axes[len(tasks) :], solve_tasks, strict=True):
        arms = sorted(table[task].items())
        colours = plt.cm.tab20(np.linspace(0, 1, len(arms)))
        for (arm, seeds), colour in zip(arms, colours, strict=True):
            updates = np.sort([s.updates_to_solve for s in seeds.values()])
            budget = next(iter(seeds.values())).budget_updates
            grid = np.linspace(0, budget, 200)
            ax.plot(grid, [(updates <= g).mean() for g in grid], label=arm, color=colour)
        ax.set_xlabel("gradient updates")
        ax.set_ylabel("fraction of seeds with an optimal greedy policy")
        ax.set_title(f"{task}: greedy policy first optimal")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder of <task>/<arm>/seed_<k>/ runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    scores = load_scores(args.runs)
    table = by_task_arm(scores)
    args.out.mkdir(parents=True, exist_ok=True)
    score_rows = [
        {"task": s.task, "arm": s.arm, "seed": s.seed, "score": s.score, "updates_to_solve": s.updates_to_solve,
         "budget_updates": s.budget_updates}
        for s in scores
    ]  # fmt: skip
    write_csv(args.out / "scores.csv", score_rows)
    arms_csv, comparisons, equivalences = arm_rows(table), comparison_rows(table), equivalence_rows(table)
    write_csv(args.out / "arms.csv", arms_csv)
    if comparisons:
        write_csv(args.out / "comparisons.csv", comparisons)
    if equivalences:
        write_csv(args.out / "equivalence.csv", equivalences)
    plot(table, arms_csv, args.out / "study.png")
    lines = ["# Study results", "", "Made by `experiments/study/analyse.py`; every number is in the CSV named.", ""]
    lines += ["## Arms (`arms.csv`)", ""]
    cols = ["task", "arm", "seeds", "iqm", "iqm_low", "iqm_high", "mean", "solved_fraction", "median_updates_to_solve"]
    lines += [*markdown(arms_csv, cols), "", "## Paired comparisons (`comparisons.csv`)", ""]
    cols = ["task", "a", "b", "seeds", "mean_diff", "diff_low", "diff_high", "p_improvement", "p_value", "p_holm"]
    lines += [*markdown(comparisons, [*cols, "mde", "verdict"]), "", "## Equivalence (`equivalence.csv`)", ""]
    cols = ["task", "arm", "counterpart", "counterpart_gain_over_dqn", "margin", "mean_diff", "p_tost", "verdict"]
    lines += [*markdown(equivalences, cols), "", "![study](study.png)", ""]
    (args.out / "report.md").write_text("\n".join(lines))
    for r in comparisons:
        interval = f"[{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
        holm = f"Holm p {r['p_holm']:.3g}"
        print(f"{r['task']}: {r['a']} − {r['b']} = {r['mean_diff']:+.3f} {interval}, {holm}: {r['verdict']}")


if __name__ == "__main__":
    main()
