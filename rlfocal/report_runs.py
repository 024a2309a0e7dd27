"""Reading run directories for ``rlfocal.report``: each run's labels, config and ``metrics.csv`` columns.

Tolerant of older runs: a ``summary.json`` lacking fields falls back to ``config.yaml``, a ``metrics.csv`` lacking
newer columns reads as far as it goes, and ``replay.kind`` (before 2026-12) stands for ``replay.name``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from rlfocal.arms import arm_label
from rlfocal.grouping import comparable

TRAIN_RETURN = "charts/episodic_return"


class ReportError(Exception):
    """Bad input for the report; printed as one line, exit code 2."""


@dataclass
class Run:
    """One run directory: its labels, every column of its ``metrics.csv`` as floats (NaN for empty cells), the
    config it is grouped by (``rlfocal.grouping.comparable``) and, once grouped, its group's label."""

    path: Path
    env: str
    arm: str
    seed: int | None
    finished: bool
    wandb: bool
    columns: dict[str, np.ndarray]
    config: dict[str, Any]
    group: str = ""

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the rows where ``key`` was logged."""
        values = self.columns.get(key)
        if values is None:
            return np.empty(0), np.empty(0)
        keep = np.isfinite(values)
        return self.columns["global_step"][keep], values[keep]


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
    columns = {c: np.array([_float(r.get(c)) for r in rows], dtype=float) for c in header}
    keep = np.isfinite(columns["global_step"])  # a row cut short by a kill has no step: leave it out
    return {c: values[keep] for c, values in columns.items()}


def load_run(path: Path) -> Run:
    """A run's labels from ``summary.json`` when present (finished), else from ``config.yaml``; any field the
    summary lacks (older runs) comes from ``config.yaml`` too."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path / "config.yaml"), resolve=False)
    except Exception as err:  # a half-written or foreign YAML: report it as a reason to skip the run
        raise ReportError(f"unreadable config.yaml ({type(err).__name__})") from None
    if not isinstance(cfg, dict):
        raise ReportError("config.yaml is not a mapping")
    summary: dict[str, Any] = {}
    finished = (path / "summary.json").is_file()
    if finished:
        try:
            summary = json.loads((path / "summary.json").read_text())
        except json.JSONDecodeError:
            raise ReportError("unreadable summary.json") from None
        if not isinstance(summary, dict):
            raise ReportError("summary.json is not a JSON object")
    try:
        env = summary.get("env") or cfg["env"]["name"]
        arm = summary.get("arm") or arm_label(cfg["replay"], cfg["loss"], cfg.get("agent"))
    except (KeyError, TypeError, AttributeError):
        raise ReportError("config.yaml lacks env.name, replay.name or loss.name") from None
    seed = summary.get("seed", cfg.get("seed"))
    try:
        seed = None if seed is None else int(seed)
    except (TypeError, ValueError):
        raise ReportError(f"seed {seed!r} is not an integer") from None
    columns = read_csv(path / "metrics.csv")
    if columns["global_step"].size == 0:
        raise ReportError("metrics.csv has no rows")
    return Run(path, str(env), str(arm), seed, finished, (path / "wandb").is_dir(), columns, comparable(cfg))


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
