"""The pilot's decision (issue 14, item 5): keep a task for the study only where PER beats DQN by at least one
standard deviation of DQN's scores across seeds. Scores are the study's (`experiments/study/scores.py`: fixed
references; on DeepSea with a demonstration, the updates until the greedy policy is optimal); one row per task and
PER variant, with the paired (same-seed) differences beside the unpaired summary.

    python experiments/pilot/decide.py experiments/pilot/results/deepsea_demo/runs --out decision.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "study"))
from scores import by_task_arm, load_scores  # noqa: E402

DQN = "dqn"
PERS = ("per", "per_beta0")


def decide(table) -> list[dict[str, object]]:
    rows = []
    for task, arms in sorted(table.items()):
        if DQN not in arms:
            continue
        dqn = np.array([s.score for s in arms[DQN].values()])
        for per in PERS:
            if per not in arms:
                continue
            seeds = sorted(set(arms[per]) & set(arms[DQN]))
            x = np.array([arms[per][s].score for s in seeds])
            d = x - np.array([arms[DQN][s].score for s in seeds])
            dqn_sd, diff_sd = float(dqn.std(ddof=1)), float(d.std(ddof=1))
            effect = (x.mean() - dqn.mean()) / dqn_sd if dqn_sd > 0 else math.nan
            rows.append(
                {
                    "task": task,
                    "per_arm": per,
                    "seeds": len(seeds),
                    "dqn_mean": float(dqn.mean()),
                    "dqn_sd": dqn_sd,
                    "per_mean": float(x.mean()),
                    "per_sd": float(x.std(ddof=1)),
                    "paired_diff_mean": float(d.mean()),
                    "paired_diff_sd": diff_sd,
                    "paired_t": float(d.mean() / (diff_sd / math.sqrt(d.size))) if diff_sd > 0 else math.nan,
                    "effect_in_dqn_sd": effect,
                    "keep": bool(effect >= 1.0),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, help="folder of <task>/<arm>/seed_<k>/ runs")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = decide(by_task_arm(load_scores(args.runs)))
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        writer.writeheader()
        writer.writerows(rows)
    for r in rows:
        print(
            f"{r['task']:<24} {r['per_arm']:<10} PER − DQN = {r['per_mean'] - r['dqn_mean']:+.3f} "
            f"({r['effect_in_dqn_sd']:+.2f} σ of DQN, paired t {r['paired_t']:+.2f}, n = {r['seeds']}): "
            f"{'keep' if r['keep'] else 'drop'}"
        )


if __name__ == "__main__":
    main()
