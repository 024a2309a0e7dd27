"""What the study scores (issue 14): one number per seed run, read from its ``metrics.csv`` and ``config.yaml``, on
a scale fixed before any run (a random policy's score and the task's optimum), never the best run observed.

Run folders are laid out ``<root>/<task>/<arm>/seed_<k>/``; ``<arm>`` may be Hydra's override folder name
(``+arm=per,...``), from which the arm's name is read. Two kinds of task:

- ``solve`` (DeepSea with a demonstration): the number of gradient updates until the greedy policy's evaluation
  first reaches the optimal return; the normalised score is ``1 - updates / budget`` (0 when never reached, so a
  random policy scores 0 and a learner that is optimal at once scores 1).
- ``return``: the mean of the last three evaluation returns, ``(R - random) / (optimum - random)``.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Task:
    kind: str  # "solve" or "return"
    random: float  # score of the uniform random policy (return tasks)
    optimum: float  # the best return the task allows
    source: str  # where the references come from


TASKS = {
    "cpu_deepsea_demo": Task("solve", 0.0, 0.99, "DeepSea's optimal return 1 - 0.01 (bsuite); random never solves"),
    "cpu_cartpole": Task("return", 22.0, 500.0, "random policy ~22 (Brockman et al. 2016); 500 is the time limit"),
    "cpu_minigrid_doorkey": Task("return", 0.0, 1.0, "MiniGrid pays 0 without success, at most 1"),
}
SOLVED_TOLERANCE = 1e-6
LAST_EVALS = 3
_ARM = re.compile(r"(?:^|,)\+arm=([\w.-]+)")


@dataclass(frozen=True)
class SeedScore:
    task: str
    arm: str
    seed: int
    score: float  # normalised, in [0, 1] up to noise
    updates_to_solve: float  # solve tasks: updates until greedy-optimal (inf: not within the budget); else NaN
    budget_updates: int
    run_dir: Path


def arm_of(folder: str) -> str:
    """The arm's name: Hydra's ``+arm=NAME`` inside an override folder name, else the folder name itself."""
    match = _ARM.search(folder)
    return match.group(1) if match else folder


def eval_curve(metrics: Path) -> tuple[list[int], list[float]]:
    """(global steps, greedy evaluation returns) of every row that carries an evaluation."""
    steps, returns = [], []
    with metrics.open(newline="") as f:
        for row in csv.DictReader(f):
            value = row.get("eval/return", "")
            if value not in ("", "nan"):
                steps.append(int(float(row["global_step"])))
                returns.append(float(value))
    return steps, returns


def score_run(run_dir: Path, task: str) -> SeedScore:
    """Score one seed's run folder as the study does (see the module docstring)."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} has no scoring rule; known: {sorted(TASKS)}")
    spec = TASKS[task]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    agent = config["agent"]
    budget = max(0, int(config["total_steps"]) - int(agent["learning_starts"])) // int(agent["train_freq"])
    steps, returns = eval_curve(run_dir / "metrics.csv")
    if not returns:
        raise ValueError(f"{run_dir / 'metrics.csv'} has no evaluation rows")
    if spec.kind == "solve":
        solved = [s for s, r in zip(steps, returns, strict=True) if r >= spec.optimum - SOLVED_TOLERANCE]
        if solved:
            updates = max(0, solved[0] - int(agent["learning_starts"])) // int(agent["train_freq"])
            score = 1.0 - updates / budget
        else:
            updates, score = math.inf, 0.0
    else:
        final = sum(returns[-LAST_EVALS:]) / len(returns[-LAST_EVALS:])
        updates, score = math.nan, (final - spec.random) / (spec.optimum - spec.random)
    arm = arm_of(run_dir.parent.name)
    return SeedScore(task, arm, int(config["seed"]), score, updates, budget, run_dir)


def load_scores(root: Path) -> list[SeedScore]:
    """Every ``<root>/<task>/<arm>/seed_<k>/`` run with a known task, sorted by task, arm and seed."""
    out = []
    for metrics in sorted(Path(root).glob("*/*/seed_*/metrics.csv")):
        run_dir = metrics.parent
        task = run_dir.parent.parent.name
        if task in TASKS:
            out.append(score_run(run_dir, task))
    if not out:
        raise ValueError(f"no <task>/<arm>/seed_<k>/metrics.csv under {root} for the tasks {sorted(TASKS)}")
    return sorted(out, key=lambda s: (s.task, s.arm, s.seed))


def by_task_arm(scores: list[SeedScore]) -> dict[str, dict[str, dict[int, SeedScore]]]:
    """``{task: {arm: {seed: SeedScore}}}``."""
    table: dict[str, dict[str, dict[int, SeedScore]]] = {}
    for s in scores:
        table.setdefault(s.task, {}).setdefault(s.arm, {})[s.seed] = s
    return table
