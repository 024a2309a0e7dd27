"""The pilot's decision (issue 14, item 5): keep a task for the study only where PER beats DQN by at least one
standard deviation of DQN's final scores across seeds. Reads the report's ``scores.csv``; writes one row per task
and PER variant, with the paired (same-seed) differences beside the unpaired summary."""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

DQN = "uniform+huber"
PERS = ("per+huber", "per(beta=0,beta_final=0)+huber")


def read_scores(path: Path) -> dict[str, dict[str, dict[int, float]]]:
    """``{env: {arm: {seed: final_score}}}``."""
    scores: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            scores[row["env"]][row.get("group") or row["arm"]][int(row["seed"])] = float(row["final_score"])
    return scores


def mean_sd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, sd


def decide(scores: dict[str, dict[str, dict[int, float]]]) -> list[dict[str, object]]:
    rows = []
    for env, arms in sorted(scores.items()):
        if DQN not in arms:
            continue
        dqn_mean, dqn_sd = mean_sd(list(arms[DQN].values()))
        for per in PERS:
            if per not in arms:
                continue
            seeds = sorted(set(arms[per]) & set(arms[DQN]))
            per_mean, per_sd = mean_sd([arms[per][s] for s in seeds])
            diffs = [arms[per][s] - arms[DQN][s] for s in seeds]
            diff_mean, diff_sd = mean_sd(diffs)
            effect = (per_mean - dqn_mean) / dqn_sd if dqn_sd > 0 else math.nan
            t = diff_mean / (diff_sd / math.sqrt(len(diffs))) if diff_sd > 0 else math.nan
            rows.append(
                {
                    "env": env,
                    "per_arm": per,
                    "seeds": len(seeds),
                    "dqn_mean": dqn_mean,
                    "dqn_sd": dqn_sd,
                    "per_mean": per_mean,
                    "per_sd": per_sd,
                    "paired_diff_mean": diff_mean,
                    "paired_diff_sd": diff_sd,
                    "paired_t": t,
                    "effect_in_dqn_sd": effect,
                    "keep": bool(effect >= 1.0),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scores", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = decide(read_scores(args.scores))
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["env"])
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(
            f"{r['env']:<28} {r['per_arm']:<34} PER − DQN = {r['per_mean'] - r['dqn_mean']:+8.2f} "
            f"({r['effect_in_dqn_sd']:+.2f} σ of DQN, paired t {r['paired_t']:+.2f}, n = {r['seeds']}): "
            f"{'keep' if r['keep'] else 'drop'}"
        )


if __name__ == "__main__":
    main()
