"""``python -m rlfocal.report`` on synthetic run directories with known numbers, and on one tiny real run."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlfocal.config import register_configs, validate
from rlfocal.metrics import COLUMNS
from rlfocal.report import align_curves, main
from rlfocal.train import run as train_run

GAUGE = ("gauge/grad_cosine", "gauge/modulator_spearman", "gauge/priority_ess", "gauge/priority_staleness")
HEADER = list(dict.fromkeys([*COLUMNS, *GAUGE]))  # COLUMNS may or may not list the gauge yet
OLD_HEADER = [c for c in HEADER if not c.startswith("gauge/")]
ENVS = {"CartPole-v1": 500.0, "deepsea": 1.0}  # both have known ranges: normalised score = return / this
ARMS = {("uniform", "focal"): "uniform+focal(gamma=2,tau=auto)", ("per", "huber"): "per+huber"}
SEEDS = (0, 1, 2)
STEPS = range(100, 1001, 100)  # a row every 100 steps, an evaluation every 200


def eval_return(env: str, replay: str, seed: int, step: int) -> float:
    return ENVS[env] * step / 1000 * (0.5 + 0.1 * seed + (0.2 if replay == "per" else 0.0))


def write_run(path: Path, env: str, replay: str, loss: str, seed: int, *, finished: bool = True,
              header: list[str] = HEADER) -> None:  # fmt: skip
    """A run directory as train.py leaves it: metrics.csv, config.yaml and (when finished) summary.json."""
    path.mkdir(parents=True)
    with (path / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for step in STEPS:
            row = {"global_step": step, "charts/episodic_return": 10.0 + step / 100, "charts/episodes": step // 20}
            if step % 200 == 0:
                row["eval/return"] = eval_return(env, replay, seed, step)
            if step % 300 == 0 and "gauge/grad_cosine" in header:
                row["gauge/grad_cosine"] = 0.9 - 0.1 * seed
                row["gauge/modulator_spearman"] = 0.5
                if replay == "per":  # the priority columns are NaN under uniform sampling
                    row["gauge/priority_ess"], row["gauge/priority_staleness"] = 0.8, step / 10
            writer.writerow({k: f"{v:.6g}" for k, v in row.items()})
    loss_cfg = {"name": loss, **({"gamma": 2.0, "tau": "auto"} if loss == "focal" else {})}
    OmegaConf.save({"env": {"name": env, "kwargs": {}}, "replay": {"kind": replay}, "loss": loss_cfg,
                    "seed": seed, "logger": {"kind": "csv"}}, path / "config.yaml")  # fmt: skip
    if finished:
        summary = {"arm": ARMS[replay, loss], "env": env, "seed": seed, "final_eval_return": eval_return(env, replay,
                   seed, 1000)}  # fmt: skip
        (path / "summary.json").write_text(json.dumps(summary))


def make_sweep(root: Path, header: list[str] = HEADER) -> list[Path]:
    """2 envs x 2 arms x 3 seeds, nested as a Hydra multirun leaves them."""
    dirs = []
    for env in ENVS:
        for replay, loss in ARMS:
            for seed in SEEDS:
                d = root / "2026-01-01_12-00-00" / f"env={env.lower()},loss={loss},replay={replay},seed={seed}"
                write_run(d, env, replay, loss, seed, header=header)
                dirs.append(d)
    return dirs


def final_score(env: str, replay: str, seed: int) -> float:
    return float(np.mean([eval_return(env, replay, seed, s) for s in (600, 800, 1000)]))  # the last 3 evaluations


def section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines[1:] if "---" not in ln]


def interval(cell: str) -> tuple[float, float, float]:
    point, lo, hi = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", cell).groups()
    return float(point), float(lo), float(hi)


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> tuple[Path, list[Path], int]:
    tmp = tmp_path_factory.mktemp("sweep")
    dirs = make_sweep(tmp / "multirun")
    out = tmp / "report"
    code = main([str(tmp / "multirun"), "--out", str(out), "--reps", "300"])
    return out, dirs, code


def test_writes_markdown_html_and_figures(sweep_report):
    out, _, code = sweep_report
    assert code == 0
    assert "## Analogy gauge" in (out / "report.md").read_text()
    pngs = {"curves_cartpole_v1.png", "curves_deepsea.png", "aggregate.png", "gauge_cartpole_v1.png",
            "gauge_deepsea.png"}  # fmt: skip
    assert {p.name for p in out.iterdir()} == {"report.md", "report.html", "scores.csv", *pngs}
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in (out / "report.md").read_text()  # linked relative to the report


def test_scores_csv_has_one_row_per_run_matching_the_runs_table(sweep_report):
    out, _, _ = sweep_report
    with (out / "scores.csv").open(newline="") as f:
        scores = list(csv.DictReader(f))
    runs = table_rows(section((out / "report.md").read_text(), "Runs"))
    assert len(scores) == len(runs) == 12
    by_key = {(r["env"], r["arm"], r["seed"]): float(r["final_score"]) for r in scores}
    for row in runs:
        assert by_key[(row[0], row[1], row[2])] == pytest.approx(float(row[7]), abs=0.01)


def test_gauge_table_lists_each_env_and_arm(sweep_report):
    md = (sweep_report[0] / "report.md").read_text()
    rows = table_rows(section(md, "Analogy gauge"))
    assert len(rows) == 4 and all(row[2] for row in rows)  # grad_cosine logged by every arm


def test_finds_every_nested_run_and_states_the_command(sweep_report):
    out, dirs, _ = sweep_report
    md = (out / "report.md").read_text()
    assert len(table_rows(section(md, "Runs"))) == 12
    for d in dirs:
        assert f"`{d.resolve()}`" in md
    assert "python -m rlfocal.report " in md and "--reps 300" in md
    assert "unfinished" not in section(md, "Runs")


def test_final_return_table_matches_hand_computed_means(sweep_report):
    md = (sweep_report[0] / "report.md").read_text()
    rows = table_rows(section(md, "Final return"))
    assert len(rows) == 4
    for env, arm, cell, n in rows:
        replay, loss = next(k for k, v in ARMS.items() if v == arm)
        scores = [final_score(env, replay, s) for s in SEEDS]
        point, lo, hi = interval(cell)
        assert point == pytest.approx(np.mean(scores), abs=0.005)
        assert min(scores) - 0.005 <= lo <= point <= hi <= max(scores) + 0.005
        assert n == "3"


def test_aggregate_iqm_uses_normalised_scores(sweep_report):
    md = (sweep_report[0] / "report.md").read_text()
    rows = {r[0]: r for r in table_rows(section(md, "Aggregate (normalised)")) if r[0] in ARMS.values()}
    assert set(rows) == set(ARMS.values())
    for (replay, _), arm in ARMS.items():
        normalised = [final_score(env, replay, s) / top for env, top in ENVS.items() for s in SEEDS]
        point, lo, hi = interval(rows[arm][1])
        assert point == pytest.approx(scipy.stats.trim_mean(normalised, 0.25), abs=0.005)
        gap = interval(rows[arm][2])[0]
        assert gap == pytest.approx(np.mean(np.maximum(1 - np.array(normalised), 0)), abs=0.005)
        assert rows[arm][3:] == ["2", "6"]  # environments, runs


def test_html_is_self_contained(sweep_report):
    page = (sweep_report[0] / "report.html").read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "href=" not in page and ".png" not in page.replace("base64", "")


def test_gauge_section_is_skipped_without_gauge_columns(tmp_path):
    make_sweep(tmp_path / "runs", header=OLD_HEADER)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--reps", "50"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Analogy gauge" not in md and "](gauge_" not in md
    assert not list((tmp_path / "out").glob("gauge_*.png"))


def test_unfinished_run_is_included_with_a_note(tmp_path, capsys):
    write_run(tmp_path / "done", "CartPole-v1", "uniform", "focal", 0)
    write_run(tmp_path / "running", "CartPole-v1", "uniform", "focal", 1, finished=False)
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--reps", "50"]) == 0
    assert "has no summary.json (unfinished); included" in capsys.readouterr().err
    rows = table_rows(section((tmp_path / "out" / "report.md").read_text(), "Runs"))
    labels = {(r[1], r[2], r[4]) for r in rows}
    # the unfinished run's label comes from its config.yaml by training's own rule: the same arm
    assert labels == {
        ("uniform+focal(gamma=2,tau=auto)", "0", "yes"),
        ("uniform+focal(gamma=2,tau=auto)", "1", "**no**"),
    }


def test_unknown_environment_is_normalised_by_min_max_of_its_runs(tmp_path):
    ENVS["MinAtar/Breakout-v1"] = 40.0
    try:
        for seed in (0, 1):
            write_run(tmp_path / f"s{seed}", "MinAtar/Breakout-v1", "per", "huber", seed)
    finally:
        del ENVS["MinAtar/Breakout-v1"]
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--reps", "50"]) == 0
    rows = table_rows(section((tmp_path / "out" / "report.md").read_text(), "Aggregate (normalised)"))
    # evaluations run from 40 * 0.2 * 0.7 = 5.6 (seed 0, step 200) to 40 * 1.0 * 0.8 = 32 (seed 1, step 1000)
    assert rows[0] == ["MinAtar/Breakout-v1", "5.60", "32.00", "min–max of all runs"]
    scores = np.array([40 * 0.8 * 0.7, 40 * 0.8 * 0.8])  # last 3 evaluations at 600, 800, 1000 average to step 800
    iqm = interval(next(r for r in rows if r[0] == "per+huber")[1])[0]
    assert iqm == pytest.approx(np.mean((scores - 5.6) / (32 - 5.6)), abs=0.005)


def test_metric_option_and_fallback_to_training_return(tmp_path):
    write_run(tmp_path / "a", "CartPole-v1", "per", "huber", 0, header=[c for c in OLD_HEADER if c != "eval/return"])
    assert main([str(tmp_path / "a"), "--out", str(tmp_path / "out"), "--reps", "50"]) == 0
    row = table_rows(section((tmp_path / "out" / "report.md").read_text(), "Runs"))[0]
    assert row[6:8] == ["charts/episodic_return (fallback)", "20.00"]  # no evaluation: the last training return
    assert main([str(tmp_path / "a"), "--out", str(tmp_path / "o2"), "--metric", "charts/episodic_return",
                 "--last-k", "2"]) == 0  # fmt: skip
    row = table_rows(section((tmp_path / "o2" / "report.md").read_text(), "Runs"))[0]
    assert row[6:8] == ["charts/episodic_return", "19.50"]  # mean of 19 and 20


def test_curves_are_aligned_on_the_shared_range_by_interpolation():
    grid, values = align_curves([(np.array([0.0, 10.0, 20.0, 30.0]), np.array([0.0, 1.0, 2.0, 3.0])),
                                 (np.array([5.0, 20.0, 40.0]), np.array([5.0, 20.0, 40.0]))])  # fmt: skip
    np.testing.assert_array_equal(grid, [5.0, 10.0, 20.0, 30.0])  # union of steps, within [5, 30]
    np.testing.assert_allclose(values, [[0.5, 1.0, 2.0, 3.0], [5.0, 10.0, 20.0, 30.0]])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/nope"], "report: error: no such directory: {tmp}/nope"),
        (["{tmp}/empty"], "report: error: no readable run directories (metrics.csv + config.yaml) under {tmp}/empty"),
        (["{tmp}/empty", "--reps", "0"], "report: error: --reps and --last-k must be >= 1"),
        (["{tmp}/empty", "--metric", "losses/td_loss"], "report: error: argument --metric: invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) if "--metric" in args else _no_raise() as caught:
        code = main([a.format(tmp=tmp_path) for a in args])
    code = caught.value.code if caught else code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(message.format(tmp=tmp_path))


class _no_raise:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_cli_missing_directory_has_no_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rlfocal.report", str(tmp_path / "nope")], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == f"report: error: no such directory: {tmp_path / 'nope'}\n"


@pytest.mark.slow
def test_reports_on_a_real_tiny_run(tmp_path):
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        cfg = compose("config", overrides=["total_steps=600", "agent.learning_starts=200", "eval_every=200",
                                           "eval_episodes=2", "logger=csv", "logger.log_every=100", "progress=false",
                                           "device=cpu", "replay=per", "checkpoint_every=600"])  # fmt: skip
    summary = train_run(validate(cfg), tmp_path / "run", OmegaConf.to_container(cfg, resolve=True))
    assert main([str(tmp_path), "--out", str(tmp_path / "report"), "--reps", "100"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    (row,) = table_rows(section(md, "Runs"))
    assert row[:5] == ["CartPole-v1", summary["arm"], "0", "600", "yes"]
    assert row[6] == "eval/return"
    scores = [float(r["eval/return"]) for r in csv.DictReader((tmp_path / "run" / "metrics.csv").open())
              if r["eval/return"]]  # fmt: skip
    assert float(row[7]) == pytest.approx(np.mean(scores[-3:]), abs=0.005)
    assert (tmp_path / "report" / "curves_cartpole_v1.png").exists()
