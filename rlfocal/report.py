"""``python -m rlfocal.report RUN_DIR... [--out DIR]``: runs -> sample-efficiency curves, IQM/CIs, tables, gauge.

Reads every run directory (one holding ``metrics.csv`` and ``config.yaml``) at or below the given paths, so a
Hydra multirun folder can be passed whole. Only the CSV is read: it is written for wandb runs too. Writes
``report.md`` (PNG links), ``report.html`` (the same, PNGs embedded, no external files), ``scores.csv`` (each run's
final score) and the PNGs to ``--out``.

Choices, also stated in the report itself:

- A run's *final score* is the mean of its last K (``--last-k``, 3) values of ``--metric``; a run with no value
  of it falls back to its training return (``charts/episodic_return``), for the curve too.
- Curves: an arm's runs are put on one x grid, the union of their logged steps within the range every run
  covers, by linear interpolation (exact where runs log at the same steps, the usual case). The band is a 95%
  bootstrap CI of the mean over seeds at each step.
- Aggregates (IQM, optimality gap) use final scores normalised per environment: known score ranges for known
  environments (``KNOWN_RANGES``), otherwise min–max over every logged value of the metric in that environment.
  CIs: stratified bootstrap over runs within environments (``rlfocal.stats``).
- Runs without ``summary.json`` (unfinished or still running) are included, marked, and listed in a note; their
  arm label comes from ``config.yaml`` by the same rule training uses (``rlfocal.arms.arm_label``).
- Pooling: runs are pooled over seeds only when their resolved ``config.yaml`` agree on every other setting
  (``rlfocal.grouping``); groups sharing an environment and arm label are labelled by the keys that differ, and
  the report (and stdout) lists which runs went where. A group of one run gets its value and no CI.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import shlex
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlfocal import stats
from rlfocal.grouping import FREE_KEYS, FREE_PREFIXES, Group, differing_keys, group_runs
from rlfocal.report_doc import Doc
from rlfocal.report_figures import align_curves, palette, plot_aggregate, plot_curves, plot_gauge
from rlfocal.report_runs import TRAIN_RETURN, ReportError, Run, curve_source, final_score, find_run_dirs, load_run

__all__ = ["ReportError", "Run", "align_curves", "assign_groups", "find_run_dirs", "load_run", "main"]

METRICS = ("eval/return", "charts/episodic_return")
# (min, max) of the return, for normalising final scores to [0, 1]
KNOWN_RANGES = {
    "CartPole-v1": (0.0, 500.0),
    "CartPole-v0": (0.0, 200.0),
    "deepsea": (0.0, 1.0),  # bsuite's solved criterion: 0.99 for the one rewarding policy, <= 0 otherwise
    "cliffwalk": (0.0, 1.0),
}
KNOWN_PREFIX_RANGES = {"MiniGrid-": (0.0, 1.0)}  # MiniGrid pays 1 - 0.9 * steps / max_steps on success, else 0
IQM_LABEL, GAP_LABEL = "IQM (normalised score)", "optimality gap (normalised; lower is better)"


# --------------------------------------------------------------------------------------------------- numbers


def score_range(env: str, runs: Sequence[Run], metric: str) -> tuple[float, float, str]:
    """(low, high, how) used to normalise ``env``'s scores: a known range, else min–max of all logged values."""
    if env in KNOWN_RANGES:
        return (*KNOWN_RANGES[env], "known range")
    for prefix, rng in KNOWN_PREFIX_RANGES.items():
        if env.startswith(prefix):
            return (*rng, "known range")
    values = np.concatenate([r.series(curve_source(r, metric) or metric)[1] for r in runs])
    if values.size == 0:
        return 0.0, 1.0, "no values logged"
    return float(values.min()), float(values.max()), "min–max of all runs"


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}" if abs(x) < 1e5 else f"{x:.4g}"


def _interval(point: float, lo: float, hi: float, alone: str = "n=1") -> str:
    """``point [lo, hi]``; NaN bounds (nothing to resample) read ``point (no CI: <alone>)``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{_fmt(point)} (no CI: {alone})"
    return f"{_fmt(point)} [{_fmt(lo)}, {_fmt(hi)}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "env"


# ------------------------------------------------------------------------------------------------- grouping


def _order(run: Run) -> tuple:
    return run.env, run.group, run.seed if run.seed is not None else -1, str(run.path)


def assign_groups(runs: list[Run]) -> list[Group]:
    """Group the runs by config (``rlfocal.grouping.group_runs``) and set each run's ``group``; returns the groups."""
    groups = group_runs([(r.env, r.arm, r.config) for r in runs])
    for group in groups:
        for i in group.members:
            runs[i].group = group.label
    return groups


def placement(runs: list[Run], groups: list[Group]) -> tuple[Path | None, list[tuple[Group, list[Run], list[str]]]]:
    """Each group with its runs (by seed) and their directories, relative to the runs' common folder (returned
    first; None for a single run, whose full path is given)."""
    root = Path(os.path.commonpath([r.path for r in runs])) if len(runs) > 1 else None
    out = []
    for g in groups:
        members = sorted((runs[i] for i in g.members), key=_order)
        out.append((g, members, [str(r.path.relative_to(root) if root else r.path) for r in members]))
    return root, out


def print_placement(runs: list[Run], groups: list[Group]) -> None:
    """On stdout: which runs were pooled into which group (one line per group)."""
    root, placed = placement(runs, groups)
    where = f"; directories under {root}" if root else ""
    print(f"report: {len(runs)} runs in {len(groups)} groups (runs are pooled over seeds only){where}:")
    for g, members, dirs in placed:
        seeds = ", ".join(str(r.seed) for r in members)
        print(f"  {g.env} | {g.label} | n={len(members)}, seeds {seeds} | {', '.join(dirs)}")


def groups_section(doc: Doc, runs: list[Run], groups: list[Group]) -> None:
    """The report's placement table (group -> runs, seeds, separating keys) and, per environment, the settings its
    groups differ in besides the arm (arms compared at unequal budgets, say)."""
    free = sorted([*FREE_KEYS, *(f"{p}*" for p in FREE_PREFIXES)])
    doc.heading(2, "Groups")
    doc.para("Runs are pooled over seeds only when their resolved `config.yaml` agree on every setting except "
             "`seed`, paths (`dir`, `*_dir`, `path`, `*_path`) and settings of how a run is executed or recorded: "
             + ", ".join(f"`{k}`" for k in free) + ". Groups sharing an environment and arm label are labelled by "
             "the settings that separate them (`unset`: absent from that group's config).")  # fmt: skip
    root, placed = placement(runs, groups)
    if root:
        doc.para(f"Directories relative to `{root}`.")
    doc.table(["env", "group", "n", "seeds", "separated by", "run directories"],
              [[g.env, g.label, str(len(members)), ", ".join(str(r.seed) for r in members),
                ", ".join(f"{k}={v}" for k, v in g.separated_by.items()), ", ".join(f"`{d}`" for d in dirs)]
               for g, members, dirs in placed])  # fmt: skip
    notes = []
    for env in dict.fromkeys(g.env for g in groups):
        keys = differing_keys([g.config for g in groups if g.env == env])
        keys = [k for k in keys if not k.startswith(("replay.", "loss."))]
        if keys:
            notes.append(f"{env}: its groups differ in " + ", ".join(f"`{k}`" for k in keys) + " besides the "
                         "arm (`replay.*`, `loss.*`); compare its arms with that in mind.")  # fmt: skip
    if notes:
        doc.items(notes)


# ------------------------------------------------------------------------------------------------------- main


def build_report(runs: list[Run], groups: list[Group], out: Path, metric: str, reps: int, last_k: int,
                 command: str, roots: Sequence[str], skipped: list[str]) -> Doc:  # fmt: skip
    """Write the PNGs to ``out`` and return the document that links them; runs are pooled by ``run.group``."""
    envs: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=_order):
        envs[run.env][run.group].append(run)
    colors = palette(sorted({r.group for r in runs}))
    scores = {run.path: final_score(run, metric, last_k) for run in runs}

    doc = Doc()
    doc.heading(1, "rlfocal report")
    doc.para("Command:")
    doc.code(command)
    doc.para("Run directories given: " + ", ".join(f"`{r}`" for r in roots) + f"; {len(runs)} runs read.")
    notes = [
        f"Metric: `{metric}` (x-axis: environment steps, `global_step`). Only `metrics.csv` is read, so wandb "
        "runs are read from their CSV too.",
        f"Final score of a run: the mean of its last {last_k} values of `{metric}`; a run with none falls back to "
        f"its training return (`{TRAIN_RETURN}`), for its curve too (marked in the run list).",
        "Curves: each arm's runs are aligned on the union of their logged steps, within the range every run covers, "
        "by linear interpolation (exact where runs log at the same steps). Line: mean over seeds; band: 95% "
        f"bootstrap CI of the mean at each step ({reps} resamples of seeds).",
        "Aggregates: final scores normalised per environment to [0, 1] by a known score range where there is one, "
        "otherwise by min–max over every logged value of the metric in that environment (all arms); IQM and "
        f"optimality gap (threshold 1) with 95% stratified bootstrap CIs ({reps} resamples of runs within each "
        "environment, percentile intervals).",
        "Runs without `summary.json` (unfinished or still running) are included and marked; their arm label comes "
        "from `config.yaml` by the rule training uses.",
        "Only runs whose configs agree on everything but the seed are pooled (see Groups); a group of one run (one "
        "per environment, for aggregates) shows its value and no CI, as there is nothing to resample.",
    ]
    doc.items(notes)
    if skipped:
        doc.para("Skipped:")
        doc.items(skipped)
    groups_section(doc, runs, groups)

    doc.heading(2, "Runs")
    rows = []
    for env, by_arm in envs.items():
        for arm, env_runs in by_arm.items():
            for r in env_runs:
                src = curve_source(r, metric)
                last = r.columns["global_step"][-1]
                source = "none" if src is None else src if src == metric else f"{src} (fallback)"
                rows.append([env, r.arm, str(r.seed), f"{last:,.0f}", "yes" if r.finished else "**no**",
                             "yes" if r.wandb else "no", source, _fmt(scores[r.path]), f"`{r.path}`", arm])  # fmt: skip
    doc.table(["env", "arm", "seed", "last step", "finished", "wandb", "scored on", "final score", "directory",
               "group"], rows)  # fmt: skip
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        doc.para(f"Note: {len(unfinished)} run(s) have no `summary.json` (unfinished); they are included with the "
                 "steps they reached, which may shorten their arm's curve.")  # fmt: skip

    doc.heading(2, "Sample efficiency")
    plot_notes = []
    for env, by_arm in envs.items():
        png = out / f"curves_{_slug(env)}.png"
        by_group = {g: [r.series(src) for r in rs if (src := curve_source(r, metric))] for g, rs in by_arm.items()}
        plot_notes += plot_curves(png, env, by_group, metric, reps, colors)
        doc.image(png, f"{env}: {metric} against environment steps")
    if plot_notes:
        doc.items(plot_notes)

    doc.heading(2, "Final return")
    doc.para("Final score (raw, not normalised): mean over seeds [95% bootstrap CI over seeds], n = seeds.")
    rows = []
    for env, by_arm in envs.items():
        for arm, env_runs in by_arm.items():
            vals = np.array([scores[r.path] for r in env_runs if math.isfinite(scores[r.path])])
            if vals.size > 1:
                point, lo, hi = stats.stratified_bootstrap_ci({arm: [vals]}, np.mean, reps=reps)[arm]
                rows.append([env, arm, _interval(point, lo, hi), str(vals.size)])
            else:
                rows.append([env, arm, _interval(vals[0], math.nan, math.nan) if vals.size else "n/a", str(vals.size)])
    doc.table(["env", "arm", "final return", "n"], rows)

    doc.heading(2, "Aggregate (normalised)")
    ranges = {env: score_range(env, [r for rs in by_arm.values() for r in rs], metric) for env, by_arm in envs.items()}
    doc.table(["env", "low", "high", "from"], [[e, _fmt(lo), _fmt(hi), how] for e, (lo, hi, how) in ranges.items()])
    per_arm: dict[str, list[np.ndarray]] = defaultdict(list)
    for env, by_arm in envs.items():
        lo, hi, _ = ranges[env]
        width = hi - lo if hi > lo else 1.0
        for arm, env_runs in by_arm.items():
            vals = np.array([scores[r.path] for r in env_runs if math.isfinite(scores[r.path])])
            if vals.size:
                per_arm[arm].append((vals - lo) / width)
    if per_arm:
        results = {
            IQM_LABEL: stats.stratified_bootstrap_ci(per_arm, stats.iqm, reps=reps),
            GAP_LABEL: stats.stratified_bootstrap_ci(per_arm, stats.optimality_gap, reps=reps),
        }
        for arm, per_env in per_arm.items():  # one run in every environment: resampling gives a zero-width "CI"
            if max(v.size for v in per_env) == 1:
                for per_label in results.values():
                    per_label[arm] = (per_label[arm][0], math.nan, math.nan)
        png = out / "aggregate.png"
        plot_aggregate(png, results, colors)
        doc.image(png, "IQM and optimality gap per arm")
        doc.table(["arm", "IQM", "optimality gap", "envs", "runs"],
                  [[arm, _interval(*results[IQM_LABEL][arm], "n=1 per env"),
                    _interval(*results[GAP_LABEL][arm], "n=1 per env"), str(len(per_arm[arm])),
                    str(sum(v.size for v in per_arm[arm]))] for arm in per_arm])  # fmt: skip
        if len({len(v) for v in per_arm.values()}) > 1:
            doc.para("Note: not every arm has runs in every environment; each arm aggregates over its own.")
    else:
        doc.para("No run has a final score.")

    gauge_keys = sorted({k for r in runs for k in r.columns if k.startswith("gauge/") and r.series(k)[1].size})
    if gauge_keys:
        doc.heading(2, "Analogy gauge")
        doc.para("Mean over seeds per arm [95% bootstrap CI band]; arms that never log a column are absent from "
                 "its panel (the priority columns are NaN under uniform sampling).")  # fmt: skip
        for env, by_arm in envs.items():
            keys = [k for k in gauge_keys if any(r.series(k)[1].size for rs in by_arm.values() for r in rs)]
            if keys:
                png = out / f"gauge_{_slug(env)}.png"
                by_key = {k: {g: [s for r in rs if (s := r.series(k))[1].size] for g, rs in by_arm.items()}
                          for k in keys}  # fmt: skip
                plot_gauge(png, env, by_key, reps, colors)
                doc.image(png, f"{env}: analogy gauge")
        doc.para("Each run's mean over its readings, then the mean over seeds (blank: never logged).")
        rows = []
        for env, by_arm in envs.items():
            for arm, env_runs in by_arm.items():
                cells = []
                for key in gauge_keys:
                    means = [float(np.mean(v)) for r in env_runs if (v := r.series(key)[1]).size]
                    cells.append(_fmt(float(np.mean(means))) if means else "")
                rows.append([env, arm, *cells])
        doc.table(["env", "arm", *[k.removeprefix("gauge/") for k in gauge_keys]], rows)
    return doc


def write_scores(path: Path, runs: list[Run], metric: str, last_k: int) -> None:
    """``scores.csv``: one row per run with its final score and the group it was pooled in, for further analyses."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env", "arm", "seed", "final_score", "metric", "last_step", "finished", "run_dir", "group"])
        for r in sorted(runs, key=_order):
            writer.writerow([r.env, r.arm, r.seed, final_score(r, metric, last_k), curve_source(r, metric),
                             int(r.columns["global_step"][-1]), r.finished, r.path, r.group])  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        print(f"report: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI; returns the exit code (0 ok, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _Parser(prog="python -m rlfocal.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                        help="run directories, or folders above them (multirun sweeps)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report/)")
    parser.add_argument("--metric", choices=METRICS, default=METRICS[0], help="score to plot and aggregate")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    parser.add_argument("--last-k", type=int, default=3, help="final score: mean of the last K values (default: 3)")
    args = parser.parse_args(argv)
    try:
        if args.reps < 1 or args.last_k < 1:
            raise ReportError("--reps and --last-k must be >= 1")
        skipped, runs = [], []
        for path in find_run_dirs(args.run_dirs):
            try:
                runs.append(load_run(path))
            except (ReportError, OSError, ValueError, csv.Error) as err:
                skipped.append(f"`{path}`: {err}")
                print(f"skipping {path}: {err}", file=sys.stderr)
        if not runs:
            raise ReportError("no readable run directories (metrics.csv + config.yaml) under "
                              + " ".join(str(p) for p in args.run_dirs))  # fmt: skip
        for run in runs:
            if not run.finished:
                print(f"note: {run.path} has no summary.json (unfinished); included", file=sys.stderr)
        groups = assign_groups(runs)
        print_placement(runs, groups)
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python -m rlfocal.report " + shlex.join(argv)
        doc = build_report(runs, groups, args.out, args.metric, args.reps, args.last_k, command,
                           [str(p) for p in args.run_dirs], skipped)  # fmt: skip
        write_scores(args.out / "scores.csv", runs, args.metric, args.last_k)
        (args.out / "report.md").write_text(doc.markdown())
        (args.out / "report.html").write_text(doc.html("rlfocal report"))
    except (ReportError, OSError) as err:
        print(f"report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {len(runs)} runs -> {args.out / 'report.md'}, {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
