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
  arm label comes from ``config.yaml`` by the same rule training uses (``rlfocal.losses.arm_label``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import re
import shlex
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from rlfocal import stats
from rlfocal.losses import arm_label

METRICS = ("eval/return", "charts/episodic_return")
TRAIN_RETURN = "charts/episodic_return"
# (min, max) of the return, for normalising final scores to [0, 1]
KNOWN_RANGES = {
    "CartPole-v1": (0.0, 500.0),
    "CartPole-v0": (0.0, 200.0),
    "deepsea": (0.0, 1.0),  # bsuite's solved criterion: 0.99 for the one rewarding policy, <= 0 otherwise
    "cliffwalk": (0.0, 1.0),
}
KNOWN_PREFIX_RANGES = {"MiniGrid-": (0.0, 1.0)}  # MiniGrid pays 1 - 0.9 * steps / max_steps on success, else 0
IQM_LABEL, GAP_LABEL = "IQM (normalised score)", "optimality gap (normalised; lower is better)"


class ReportError(Exception):
    """Bad input for the report; printed as one line, exit code 2."""


@dataclass
class Run:
    """One run directory: its labels and every column of its ``metrics.csv`` as floats (NaN for empty cells)."""

    path: Path
    env: str
    arm: str
    seed: int | None
    finished: bool
    wandb: bool
    columns: dict[str, np.ndarray]

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows where ``key`` was logged."""
        values = self.columns.get(key)
        if values is None:
            return np.empty(0), np.empty(0)
        keep = np.isfinite(values)
        return self.columns["global_step"][keep], values[keep]


# ------------------------------------------------------------------------------------------------ reading runs


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Every directory at or below ``paths`` holding both ``metrics.csv`` and ``config.yaml``, sorted, unique."""
    found = set()
    for root in paths:
        if not root.exists():
            raise ReportError(f"no such directory: {root}")
        if not root.is_dir():
            raise ReportError(f"not a directory: {root}")
        for csv_path in root.rglob("metrics.csv"):  # root itself included
            if csv_path.is_file() and (csv_path.parent / "config.yaml").is_file():
                found.add(csv_path.parent.resolve())
    return sorted(found)


def _float(cell: str | None) -> float:
    try:
        return float(cell) if cell else math.nan
    except ValueError:
        return math.nan


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Every column in the file's own header (not only ``logging.COLUMNS``), as float arrays."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames or []
    if "global_step" not in header:
        raise ReportError("metrics.csv has no global_step column")
    return {c: np.array([_float(r.get(c)) for r in rows], dtype=float) for c in header}


def load_run(path: Path) -> Run:
    """A run's labels from ``summary.json`` when present (finished), else from ``config.yaml``."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=False)
    except Exception as err:  # a half-written or foreign YAML: report it as a reason to skip the run
        raise ReportError(f"unreadable config.yaml ({type(err).__name__})") from None
    if not isinstance(cfg, dict):
        raise ReportError("config.yaml is not a mapping")
    summary = {}
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text())
        except json.JSONDecodeError:
            raise ReportError("unreadable summary.json") from None
    try:
        env = summary.get("env") or cfg["env"]["name"]
        sampler = cfg["replay"].get("name") or cfg["replay"]["kind"]  # "kind" in runs made before 2026-12
        arm = summary.get("arm") or arm_label(sampler, cfg["loss"])
    except (KeyError, TypeError, AttributeError):
        raise ReportError("config.yaml lacks env.name, replay.name or loss.name") from None
    seed = summary.get("seed", cfg.get("seed"))
    columns = read_csv(path / "metrics.csv")
    if columns["global_step"].size == 0:
        raise ReportError("metrics.csv has no rows")
    return Run(path, str(env), str(arm), None if seed is None else int(seed), bool(summary),
               (path / "wandb").is_dir(), columns)  # fmt: skip


def curve_source(run: Run, metric: str) -> str | None:
    """The column a run is scored on: ``metric``, else the training return, else None (nothing logged)."""
    for key in (metric, TRAIN_RETURN):
        if run.series(key)[1].size:
            return key
    return None


def final_score(run: Run, metric: str, last_k: int) -> float:
    """Mean of the last ``last_k`` values of ``metric``; without any, the last training return (NaN if none)."""
    values = run.series(metric)[1]
    if values.size:
        return float(values[-last_k:].mean())
    train = run.series(TRAIN_RETURN)[1]
    return float(train[-1]) if train.size else math.nan


# --------------------------------------------------------------------------------------------------- numbers


def align_curves(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs' (steps, values) on one grid: the union of their steps inside the range all of them cover, by linear
    interpolation. Returns ``(grid [x], values [runs, x])``; the grid is empty when the ranges do not overlap."""
    start = max(s[0] for s, _ in series)
    end = min(s[-1] for s, _ in series)
    grid = np.unique(np.concatenate([s for s, _ in series]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, s, v) for s, v in series])


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


def _interval(point: float, lo: float, hi: float) -> str:
    return f"{_fmt(point)} [{_fmt(lo)}, {_fmt(hi)}]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "env"


# --------------------------------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, grid: np.ndarray, values: np.ndarray, reps: int, label: str, color) -> None:
    mean, lo, hi = stats.mean_ci_over_seeds(values, reps=reps, seed=0)
    ax.plot(grid, mean, color=color, label=label, lw=1.5, marker="o" if grid.size == 1 else None)
    ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)


def plot_curves(path: Path, env: str, by_arm: dict[str, list[Run]], metric: str, reps: int, colors: dict) -> list[str]:
    """One figure: mean and 95% CI over seeds per arm against environment steps. Returns notes on dropped arms."""
    plt, notes = _plt(), []
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, runs in by_arm.items():
        series = [r.series(src) for r in runs if (src := curve_source(r, metric))]
        if not series:
            notes.append(f"{env}, {arm}: nothing logged to plot")
            continue
        grid, values = align_curves(series)
        if grid.size == 0:
            notes.append(f"{env}, {arm}: the runs' step ranges do not overlap; curve left out")
            continue
        _band(ax, grid, values, reps, f"{arm} (n={len(series)})", colors[arm])
    ax.set(xlabel="environment steps", ylabel=metric, title=env)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return notes


def plot_aggregate(path: Path, results: dict[str, dict[str, tuple[float, float, float]]], colors: dict) -> None:
    """IQM and optimality gap per arm with their CIs, as horizontal intervals (rliable's interval plot)."""
    plt = _plt()
    arms = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 0.5 * len(arms) + 1.5), sharey=True)
    for ax, (name, per_arm) in zip(np.atleast_1d(axes), results.items(), strict=True):
        for i, arm in enumerate(arms):
            point, lo, hi = per_arm[arm]
            ax.barh(i, hi - lo, left=lo, height=0.6, color=colors[arm], alpha=0.5)
            ax.vlines(point, i - 0.3, i + 0.3, color="k", lw=1.5)
        ax.set_yticks(range(len(arms)), arms, fontsize=8)
        ax.set_xlabel(name)
        ax.grid(axis="x", alpha=0.3)
    np.atleast_1d(axes)[0].invert_yaxis()  # first arm on top (the axes share y)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gauge(path: Path, env: str, by_arm: dict[str, list[Run]], keys: list[str], reps: int, colors: dict) -> None:
    """One panel per gauge column: mean and 95% CI over seeds per arm (arms that never log a column are absent)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3.8), squeeze=False, layout="constrained")
    handles = {}
    for ax, key in zip(axes[0], keys, strict=True):
        for arm, runs in by_arm.items():
            series = [s for r in runs if (s := r.series(key))[1].size]
            if series and (aligned := align_curves(series))[0].size:
                _band(ax, *aligned, reps, arm, colors[arm])
        ax.set(xlabel="environment steps", title=key)
        ax.grid(alpha=0.3)
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    fig.suptitle(env)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------------------------------------------- document


class Doc:
    """A report as a list of blocks, rendered to Markdown (linked PNGs) and to self-contained HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def markdown(self) -> str:
        out = []
        for kind, *args in self.blocks:
            if kind == "h":
                out.append("#" * args[0] + " " + args[1])
            elif kind == "p":
                out.append(args[0])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in args[0]))
            elif kind == "pre":
                out.append(f"```\n{args[0]}\n```")
            elif kind == "table":
                header, rows = args
                cells = [header, ["---"] * len(header), *rows]
                out.append("\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells))
            elif kind == "img":
                out.append(f"![{args[1]}]({args[0].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        def inline(text: str) -> str:  # `code` spans, the only markup the paragraphs use
            return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))

        body = []
        for kind, *args in self.blocks:
            if kind == "h":
                body.append(f"<h{args[0]}>{inline(args[1])}</h{args[0]}>")
            elif kind == "p":
                body.append(f"<p>{inline(args[0])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in args[0]) + "</ul>")
            elif kind == "pre":
                body.append(f"<pre>{html.escape(args[0])}</pre>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{inline(c)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(args[0].read_bytes()).decode("ascii")
                body.append(f'<img alt="{html.escape(args[1])}" src="data:image/png;base64,{data}">')
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
                 "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}"
                 "img{max-width:100%}pre{background:#f4f4f4;padding:.5em;overflow-x:auto}")  # fmt: skip
        return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")  # fmt: skip


# ------------------------------------------------------------------------------------------------------- main


def build_report(runs: list[Run], out: Path, metric: str, reps: int, last_k: int, command: str,
                 roots: Sequence[str], skipped: list[str]) -> Doc:  # fmt: skip
    """Write the PNGs to ``out`` and return the document that links them."""
    envs: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in sorted(runs, key=lambda r: (r.env, r.arm, r.seed if r.seed is not None else -1, str(r.path))):
        envs[run.env][run.arm].append(run)
    arms = sorted({r.arm for r in runs})
    palette = _plt().get_cmap("tab10")
    colors = {arm: palette(i % 10) for i, arm in enumerate(arms)}
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
    ]
    doc.items(notes)
    if skipped:
        doc.para("Skipped:")
        doc.items(skipped)

    doc.heading(2, "Runs")
    rows = []
    for env, by_arm in envs.items():
        for arm, env_runs in by_arm.items():
            for r in env_runs:
                src = curve_source(r, metric)
                last = r.columns["global_step"][-1]
                source = "none" if src is None else src if src == metric else f"{src} (fallback)"
                rows.append([env, arm, str(r.seed), f"{last:,.0f}", "yes" if r.finished else "**no**",
                             "yes" if r.wandb else "no", source, _fmt(scores[r.path]), f"`{r.path}`"])  # fmt: skip
    doc.table(["env", "arm", "seed", "last step", "finished", "wandb", "scored on", "final score", "directory"], rows)
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        doc.para(f"Note: {len(unfinished)} run(s) have no `summary.json` (unfinished); they are included with the "
                 "steps they reached, which may shorten their arm's curve.")  # fmt: skip

    doc.heading(2, "Sample efficiency")
    plot_notes = []
    for env, by_arm in envs.items():
        png = out / f"curves_{_slug(env)}.png"
        plot_notes += plot_curves(png, env, by_arm, metric, reps, colors)
        doc.image(png, f"{env}: {metric} against environment steps")
    if plot_notes:
        doc.items(plot_notes)

    doc.heading(2, "Final return")
    doc.para("Final score (raw, not normalised): mean over seeds [95% bootstrap CI over seeds], n = seeds.")
    rows = []
    for env, by_arm in envs.items():
        for arm, env_runs in by_arm.items():
            vals = np.array([scores[r.path] for r in env_runs if math.isfinite(scores[r.path])])
            if vals.size:
                point, lo, hi = stats.stratified_bootstrap_ci({arm: [vals]}, np.mean, reps=reps)[arm]
                rows.append([env, arm, _interval(point, lo, hi), str(vals.size)])
            else:
                rows.append([env, arm, "n/a", "0"])
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
        png = out / "aggregate.png"
        plot_aggregate(png, results, colors)
        doc.image(png, "IQM and optimality gap per arm")
        doc.table(["arm", "IQM", "optimality gap", "envs", "runs"],
                  [[arm, _interval(*results[IQM_LABEL][arm]), _interval(*results[GAP_LABEL][arm]),
                    str(len(per_arm[arm])), str(sum(v.size for v in per_arm[arm]))] for arm in per_arm])  # fmt: skip
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
                plot_gauge(png, env, by_arm, keys, reps, colors)
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
    """``scores.csv``: one row per run with its final score, for analyses beyond the report."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env", "arm", "seed", "final_score", "metric", "last_step", "finished", "run_dir"])
        for r in sorted(runs, key=lambda r: (r.env, r.arm, r.seed if r.seed is not None else -1)):
            writer.writerow([r.env, r.arm, r.seed, final_score(r, metric, last_k), curve_source(r, metric),
                             int(r.columns["global_step"][-1]), r.finished, r.path])  # fmt: skip


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
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python -m rlfocal.report " + shlex.join(argv)
        doc = build_report(runs, args.out, args.metric, args.reps, args.last_k, command,
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
