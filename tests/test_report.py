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

from rlfocal.arms import arm_label
from rlfocal.config import register_configs, validate
from rlfocal.grouping import comparable, group_runs
from rlfocal.metrics import COLUMNS
from rlfocal.report import align_curves, main

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
              header: list[str] = HEADER, overrides: dict[str, object] | None = None) -> None:  # fmt: skip
    """A run directory as train.py leaves it: metrics.csv, config.yaml (``overrides``: dotted keys set in it) and
    (when finished) summary.json, whose arm label is training's for the config."""
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
    cfg = OmegaConf.create({"env": {"name": env, "kwargs": {}}, "replay": {"kind": replay}, "loss": loss_cfg,
                            "agent": {"lr": 2.5e-4, "hidden": [64, 64]}, "seed": seed, "total_steps": 1000,
                            "device": "cpu", "checkpoint_every": 500, "logger": {"kind": "csv"}})  # fmt: skip
    for key, value in (overrides or {}).items():
        OmegaConf.update(cfg, key, value, merge=False)
    OmegaConf.save(cfg, path / "config.yaml")
    if finished:
        arm = arm_label(cfg.replay.get("name") or cfg.replay.kind, OmegaConf.to_container(cfg.loss))
        summary = {"arm": arm, "env": env, "seed": seed, "final_eval_return": eval_return(env, replay, seed, 1000)}
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
    from rlfocal.train import run as train_run  # imported here: the other tests need no training code

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


# ------------------------------------------------------------------------------------- pooling by config (issue 11)


def report_on(root: Path, *runs: tuple[str, int, dict[str, object]], loss: str = "huber", finished: bool = True) -> str:
    """Write runs ``(name, seed, overrides)`` of one CartPole arm under ``root`` and return report.md."""
    for name, seed, overrides in runs:
        write_run(root / "runs" / name, "CartPole-v1", "uniform", loss, seed, overrides=overrides, finished=finished)
    assert main([str(root / "runs"), "--out", str(root / "out"), "--reps", "50"]) == 0
    return (root / "out" / "report.md").read_text()


def test_runs_differing_only_in_seed_and_free_keys_are_pooled(tmp_path, capsys):
    free = {"resume": True, "device": "cuda", "torch_threads": 4, "progress": False, "checkpoint_every": 100,
            "logger.kind": "wandb", "hydra.run.dir": "/elsewhere", "run_dir": "/elsewhere"}  # fmt: skip
    md = report_on(tmp_path, ("a", 0, {}), ("b", 1, free), ("c", 2, {"replay.name": "uniform"}))
    (row,) = table_rows(section(md, "Final return"))  # replay.kind (older runs) and replay.name pool too
    assert row[1] == "uniform+huber" and row[3] == "3"
    interval(row[2])  # a real interval: point [lo, hi]
    (group,) = table_rows(section(md, "Groups"))
    assert group[:5] == ["CartPole-v1", "uniform+huber", "3", "0, 1, 2", ""]
    assert "report: 3 runs in 1 groups" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "labels"),
    [
        ({"total_steps": 20000}, {"uniform+huber [total_steps=1000]", "uniform+huber [total_steps=20000]"}),
        ({"env.kwargs": {"size": 12}}, {"uniform+huber [env.kwargs.size=unset]", "uniform+huber [env.kwargs.size=12]"}),
        ({"agent.hidden": [32]}, {"uniform+huber [agent.hidden=[64,64]]", "uniform+huber [agent.hidden=[32]]"}),
    ],
)
def test_runs_differing_in_a_setting_are_not_pooled_and_get_distinct_labels(tmp_path, overrides, labels):
    md = report_on(tmp_path, ("a", 0, {}), ("a2", 1, {}), ("b", 1, overrides))
    rows = table_rows(section(md, "Final return"))
    assert {r[1] for r in rows} == labels
    assert sorted(r[3] for r in rows) == ["1", "2"]
    key = next(iter(labels)).split("[")[1].split("=")[0]
    assert {r[4].split("=")[0] for r in table_rows(section(md, "Groups"))} == {key}  # the separating key
    assert {r[9] for r in table_rows(section(md, "Runs"))} == labels
    with (tmp_path / "out" / "scores.csv").open(newline="") as f:
        assert {r["group"] for r in csv.DictReader(f)} == labels


def test_focal_gamma_runs_are_not_pooled(tmp_path):
    """loss.gamma is in the focal arm's label already, whether read from summary.json or from config.yaml."""
    for finished in (True, False):
        md = report_on(tmp_path / str(finished), ("a", 0, {}), ("b", 1, {"loss.gamma": 0.5}),
                       loss="focal", finished=finished)  # fmt: skip
        rows = table_rows(section(md, "Final return"))
        assert {r[1] for r in rows} == {"uniform+focal(gamma=2,tau=auto)", "uniform+focal(gamma=0.5,tau=auto)"}
        assert [r[3] for r in rows] == ["1", "1"]


def test_same_summary_label_with_other_settings_is_split_by_config(tmp_path):
    """An arm label that hides a difference (here a loss option in a summary.json from older code) still splits."""
    report_on(tmp_path, ("a", 0, {}), ("b", 1, {"loss.delta": 2.0}))
    summary = json.loads((tmp_path / "runs" / "b" / "summary.json").read_text())
    (tmp_path / "runs" / "b" / "summary.json").write_text(json.dumps({**summary, "arm": "uniform+huber"}))
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--reps", "50"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert {r[1] for r in table_rows(section(md, "Final return"))} == {
        "uniform+huber [loss.delta=unset]", "uniform+huber [loss.delta=2.0]"}  # fmt: skip


def test_a_single_run_gets_its_value_and_no_confidence_interval(tmp_path):
    md = report_on(tmp_path, ("a", 0, {}))
    (row,) = table_rows(section(md, "Final return"))
    assert row[2] == f"{final_score('CartPole-v1', 'uniform', 0):.2f} (no CI: n=1)" and row[3] == "1"
    agg = next(r for r in table_rows(section(md, "Aggregate (normalised)")) if r[0] == "uniform+huber")
    assert agg[1].endswith("(no CI: n=1 per env)") and agg[2].endswith("(no CI: n=1 per env)")
    assert "[" not in agg[1] + agg[2]


def test_placement_table_and_stdout_list_every_run(tmp_path, capsys):
    md = report_on(tmp_path, ("s0", 0, {}), ("s1", 1, {}), ("big", 0, {"total_steps": 20000}),
                   ("lr", 0, {"agent.lr": 1e-3}))  # fmt: skip
    rows = table_rows(section(md, "Groups"))
    assert f"Directories relative to `{(tmp_path / 'runs').resolve()}`." in section(md, "Groups")
    placed = {d.strip("`"): (r[1], r[3]) for r in rows for d in r[5].split(", ")}
    assert placed == {
        "s0": ("uniform+huber [agent.lr=0.00025, total_steps=1000]", "0, 1"),
        "s1": ("uniform+huber [agent.lr=0.00025, total_steps=1000]", "0, 1"),
        "big": ("uniform+huber [agent.lr=0.00025, total_steps=20000]", "0"),
        "lr": ("uniform+huber [agent.lr=0.001, total_steps=1000]", "0"),
    }
    assert {r[4] for r in rows} == {r[1].split("[")[1].rstrip("]") for r in rows}
    assert "CartPole-v1: its groups differ in `agent.lr`, `total_steps`" in section(md, "Groups")
    out = capsys.readouterr().out
    assert "report: 4 runs in 3 groups" in out
    assert "  CartPole-v1 | uniform+huber [agent.lr=0.00025, total_steps=1000] | n=2, seeds 0, 1 | s0, s1" in out


def test_old_summary_and_metrics_without_newer_fields_still_read(tmp_path):
    header = [c for c in OLD_HEADER if c not in ("charts/updates", "replay/priority_total", "eval/return_std")]
    write_run(tmp_path / "old", "CartPole-v1", "per", "huber", 0, header=header)
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"final_eval_return": 1.0}))  # no arm, env, seed
    write_run(tmp_path / "new", "CartPole-v1", "per", "huber", 1)
    with (tmp_path / "new" / "metrics.csv").open("a") as f:
        f.write("1100,12\n")  # a last line cut short by a kill: no eval cell, no later columns
    write_run(tmp_path / "bad", "CartPole-v1", "per", "huber", 2)
    (tmp_path / "bad" / "summary.json").write_text("[]")
    assert main([str(tmp_path), "--out", str(tmp_path / "out"), "--reps", "50"]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    runs = table_rows(section(md, "Runs"))
    assert [(r[1], r[2], r[3], r[4]) for r in runs] == [("per+huber", "0", "1,000", "yes"),
                                                         ("per+huber", "1", "1,100", "yes")]  # fmt: skip
    assert table_rows(section(md, "Final return"))[0][3] == "2"
    assert "summary.json is not a JSON object" in md


def test_group_runs_treats_equal_numbers_alike():
    base = {"env": {"name": "deepsea", "kwargs": {"size": 10}}, "loss": {"name": "focal", "gamma": 2.0}}
    same = {"env": {"name": "deepsea", "kwargs": {"size": 10.0}}, "loss": {"name": "focal", "gamma": 2}}
    other = {"env": {"name": "deepsea", "kwargs": {"size": 12}}, "loss": {"name": "focal", "gamma": 2}}
    groups = group_runs([("deepsea", "arm", comparable(c)) for c in (base, same, other)])
    assert [g.members for g in groups] == [[0, 1], [2]]
    assert [g.label for g in groups] == ["arm [env.kwargs.size=10]", "arm [env.kwargs.size=12]"]
