"""Run logging: CSV always, wandb when asked (offline by default), a progress line, and at the end a
learning-curve PNG and a one-screen summary. Metric names, units and meanings live in ``rlfocal.metrics``; every
row is checked against it, so what reaches wandb also reaches ``metrics.csv``."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rlfocal.extras import require_extra
from rlfocal.metrics import COLUMNS, check_row


class CSVLog:
    """``metrics.csv`` with fixed columns; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r["global_step"])) <= resume_step]
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)

    def write(self, row: dict[str, float]) -> None:
        check_row(row)
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"


class WandbLog:
    """wandb run, offline unless ``mode='online'``; grouped by ``env/arm`` so seeds aggregate into mean ± CI curves
    and one group never mixes environments."""

    def __init__(
        self, run_dir: Path, project: str, group: str, name: str, mode: str, config: dict, run_id: str | None
    ) -> None:
        os.environ.setdefault("WANDB_MODE", mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        if os.environ["WANDB_MODE"] == "online" and not wandb_reachable():
            print(f"wandb: {wandb_host()} is unreachable; logging offline instead (wandb sync uploads it later)")
            os.environ["WANDB_MODE"] = "offline"
        wandb = require_extra("wandb", "wandb", "logger=wandb")

        self.run = wandb.init(
            project=project,
            group=group,
            name=name,
            config=config,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=os.environ["WANDB_MODE"],
            job_type="train",
        )
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        self.run_id = self.run.id

    def write(self, row: dict[str, float]) -> None:
        self.run.log({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))})

    def close(self) -> None:
        offline = self.run.settings.mode == "offline"
        directory = Path(self.run.dir).parent  # .../wandb/offline-run-<date>-<id>
        self.run.finish()
        if offline:
            print(f"wandb: offline run in {directory}; upload it with: wandb sync {directory}")


def wandb_host() -> str:
    """The wandb server this process would talk to (``WANDB_BASE_URL``, else the public one)."""
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc


def wandb_reachable(timeout: float = 5.0) -> bool:
    """A TCP connection to the wandb server opens within ``timeout`` seconds (wandb itself retries for minutes)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


class Progress:
    """A carriage-return status line on a terminal; a plain line per update otherwise (log files, sweeps), prefixed
    with the run's label so a multirun's interleaved lines say which job they belong to. The rate and ETA count only
    steps after ``warmup`` (the random-policy phase runs far faster than training)."""

    def __init__(self, total: int, start: int, enabled: bool, label: str = "", warmup: int = 0) -> None:
        self.total, self.enabled, self.label, self.warmup = total, enabled, label, warmup
        self.tty = sys.stdout.isatty()
        self.t0, self.s0 = time.perf_counter(), start

    def update(self, step: int, recent_return: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        sps = (step - self.s0) / max(now - self.t0, 1e-9)
        eta = _hms((self.total - step) / max(sps, 1e-9)) if step > self.warmup else "after warm-up"
        if step <= self.warmup:
            self.t0, self.s0 = now, step
        pct = 100.0 * step / self.total
        line = (
            f"{step:>9,}/{self.total:,} steps ({pct:5.1f}%) | {sps:7,.0f} SPS | return {recent_return:8.2f} | ETA {eta}"
        )
        if self.tty:
            print("\r" + line, end="", flush=True)
        else:
            print(f"[{self.label}] {line}" if self.label else line, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class RunLogger:
    """Fans a metrics row out to CSV (always) and wandb (``kind='wandb'``), and drives the progress line."""

    def __init__(
        self,
        run_dir: Path,
        cfg,
        arm: str,
        config_dict: dict,
        resume_step: int | None,
        state: dict | None = None,
        seed: int | None = None,
    ) -> None:
        seed = cfg.seed if seed is None else seed  # one seed lane's logger (num_seeds > 1)
        self.csv = CSVLog(run_dir / "metrics.csv", resume_step)
        self.wandb = None
        self.state = dict(state or {})  # what a resumed run needs again (the wandb run id)
        if cfg.logger.name == "wandb":
            group = cfg.logger.group or f"{cfg.env.name}/{arm}"
            self.wandb = WandbLog(
                run_dir,
                cfg.logger.project,
                group,
                f"{arm}-s{seed}",
                cfg.logger.mode,
                config_dict,
                self.state.get("wandb_id"),
            )
            self.state["wandb_id"] = self.wandb.run_id
        label = f"{cfg.env.name} {arm} seed {seed}"
        self.progress = Progress(cfg.total_steps, resume_step or 0, cfg.progress, label, cfg.agent.learning_starts)

    def write(self, row: dict[str, Any]) -> None:
        self.csv.write(row)
        if self.wandb is not None:
            self.wandb.write(row)
        recent = row.get("charts/episodic_return", math.nan)
        self.progress.update(int(row["global_step"]), recent)

    def close(self) -> None:
        self.progress.close()
        self.csv.close()
        if self.wandb is not None:
            self.wandb.close()


def read_metrics(path: Path) -> dict[str, list[float]]:
    """Columns of a ``metrics.csv`` as float lists (empty cells become NaN)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {c: [float(r[c]) if r.get(c) else math.nan for r in rows] for c in COLUMNS}


def plot_curve(metrics_path: Path, out_path: Path, title: str) -> None:
    """``curve.png``: training episodic return (and greedy evaluation return) against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style, label in (
        ("charts/episodic_return", "-", "training episodes"),
        ("eval/return", "o-", "greedy eval"),
    ):
        pts = [(s, v) for s, v in zip(m["global_step"], m[key], strict=True) if not math.isnan(v)]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, ms=3, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episodic return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)


def summarize(metrics_path: Path, extra: dict[str, Any]) -> dict[str, Any]:
    """Final numbers of a run: last and best evaluation, last training return, steps."""
    m = read_metrics(metrics_path)

    def last(key: str) -> float:
        vals = [v for v in m[key] if not math.isnan(v)]
        return vals[-1] if vals else math.nan

    evals = [v for v in m["eval/return"] if not math.isnan(v)]
    summary = {
        "final_eval_return": last("eval/return"),
        "best_eval_return": max(evals) if evals else math.nan,
        "last_train_return": last("charts/episodic_return"),
        "eval_return_std": last("eval/return_std"),
        "episodes": _int(last("charts/episodes")),
        "global_step": _int(last("global_step")),
        "commit": git_commit(),
        **extra,
    }
    return summary


def _int(v: float) -> int | None:
    return None if math.isnan(v) else int(v)


def git_commit() -> str:
    """The rlfocal checkout's commit (``unknown`` outside a git checkout), so every result names its code."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def print_summary(summary: dict[str, Any]) -> None:
    width = max(len(k) for k in summary)
    print("-" * 60)
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v + 0.0 if round(v, 2) else 0.0:,.2f}"  # never "-0.00"
        print(f"{k:<{width}}  {v}")
    print("-" * 60)


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
