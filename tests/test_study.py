"""The study's scoring and analysis (experiments/study/): fixed-reference scores from run folders, the paired
comparisons with Holm's correction, the TOST equivalence, and the pilot's keep/drop rule."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "study"))
import scores  # noqa: E402


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyse = _load("study_analyse", ROOT / "experiments" / "study" / "analyse.py")
decide = _load("pilot_decide", ROOT / "experiments" / "pilot" / "decide.py")


def fake_run(root: Path, task: str, arm: str, seed: int, evals: list[tuple[int, float]], **config) -> Path:
    run = root / task / arm / f"seed_{seed}"
    run.mkdir(parents=True)
    cfg = {"seed": seed, "total_steps": 2000, "agent": {"learning_starts": 1000, "train_freq": 1}} | config
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "eval/return"])
        for step in range(100, 2001, 100):
            writer.writerow([step, dict(evals).get(step, "")])
    return run


def test_a_solve_task_scores_the_updates_until_the_greedy_policy_is_optimal(tmp_path):
    run = fake_run(tmp_path, "cpu_deepsea_demo", "+arm=per,seed=0", 3, [(1200, -0.01), (1500, 0.99), (2000, 0.99)])
    s = scores.score_run(run, "cpu_deepsea_demo")
    assert (s.arm, s.seed, s.updates_to_solve, s.budget_updates) == ("per", 3, 500, 1000)
    assert s.score == pytest.approx(0.5)
    never = scores.score_run(fake_run(tmp_path, "cpu_deepsea_demo", "dqn", 0, [(2000, 0.98)]), "cpu_deepsea_demo")
    assert never.score == 0.0 and math.isinf(never.updates_to_solve)


def test_a_return_task_is_normalised_by_fixed_references_not_by_the_runs(tmp_path):
    run = fake_run(tmp_path, "cpu_cartpole", "dqn", 0, [(1800, 100.0), (1900, 200.0), (2000, 300.0)])
    s = scores.score_run(run, "cpu_cartpole")
    assert s.score == pytest.approx((200.0 - 22.0) / (500.0 - 22.0)) and math.isnan(s.updates_to_solve)
    with pytest.raises(ValueError, match="no scoring rule"):
        scores.score_run(run, "cpu_pong")


def build_study(root: Path, gap: int) -> None:
    """30 seeds: PER(β = 0) solves ``gap`` updates before DQN on every seed; focal_matched as PER(β = 0) ± 10."""
    rng = np.random.default_rng(0)
    for seed in range(30):
        dqn = 600 + int(rng.integers(-100, 100)) // 100 * 100
        for arm, solve in (("dqn", dqn), ("per_beta0", dqn - gap), ("focal_matched", dqn - gap)):
            fake_run(root, "cpu_deepsea_demo", arm, seed, [(1000 + solve, 0.99)])


def test_the_analysis_finds_a_real_gap_and_the_equivalence_it_was_built_with(tmp_path):
    build_study(tmp_path / "runs", gap=300)
    analyse.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    with (tmp_path / "out" / "comparisons.csv").open() as f:
        rows = {(r["a"], r["b"]): r for r in csv.DictReader(f)}
    gain = rows[("per_beta0", "dqn")]
    assert float(gain["mean_diff"]) == pytest.approx(0.3) and float(gain["p_holm"]) < 0.001
    assert gain["verdict"] == "per_beta0 > dqn" and float(gain["p_improvement"]) > 0.9
    same = rows[("focal_matched", "per_beta0")]
    assert float(same["mean_diff"]) == 0.0 and same["verdict"].startswith("no difference detected")
    with (tmp_path / "out" / "equivalence.csv").open() as f:
        eq = next(r for r in csv.DictReader(f) if r["arm"] == "focal_matched")
    assert float(eq["margin"]) == pytest.approx(0.15) and eq["verdict"] == "equivalent within ±0.150"
    for name in ("scores.csv", "arms.csv", "study.png", "report.md"):
        assert (tmp_path / "out" / name).exists(), name


def test_without_a_gap_equivalence_is_not_testable(tmp_path):
    build_study(tmp_path / "runs", gap=0)
    analyse.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    with (tmp_path / "out" / "equivalence.csv").open() as f:
        eq = next(r for r in csv.DictReader(f) if r["arm"] == "focal_matched")
    assert eq["verdict"].startswith("not testable")


def test_the_pilot_keeps_a_task_only_where_per_beats_dqn_by_one_sd(tmp_path):
    build_study(tmp_path / "big", gap=300)
    build_study(tmp_path / "none", gap=0)
    big = decide.decide(scores.by_task_arm(scores.load_scores(tmp_path / "big")))
    none = decide.decide(scores.by_task_arm(scores.load_scores(tmp_path / "none")))
    assert [r["keep"] for r in big] == [True] and [r["keep"] for r in none] == [False]
