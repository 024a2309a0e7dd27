"""The report's figures: curves with 95% bootstrap bands over seeds, the aggregate interval plot, gauge traces.

They take plain ``(steps, values)`` series per group label, so they know nothing of run directories. A group of one
run is drawn with no band: a bootstrap over one seed gives a zero-width interval that would read as certainty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rlfocal import stats

Series = tuple[np.ndarray, np.ndarray]


def align_curves(series: Sequence[Series]) -> tuple[np.ndarray, np.ndarray]:
    """Runs' (steps, values) on one grid: the union of their steps inside the range all of them cover, by linear
    interpolation. Returns ``(grid [x], values [runs, x])``; the grid is empty when the ranges do not overlap."""
    start = max(s[0] for s, _ in series)
    end = min(s[-1] for s, _ in series)
    grid = np.unique(np.concatenate([s for s, _ in series]))
    grid = grid[(grid >= start) & (grid <= end)]
    return grid, np.stack([np.interp(grid, s, v) for s, v in series])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def palette(labels: Sequence[str]) -> dict[str, tuple]:
    """One colour per label (tab10, cycling), the same in every figure."""
    cmap = _plt().get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _band(ax, series: Sequence[Series], reps: int, label: str, color) -> bool:
    """Mean over runs, with its 95% bootstrap CI band when there are two or more; False if the ranges do not meet."""
    grid, values = align_curves(series)
    if grid.size == 0:
        return False
    mean, lo, hi = stats.mean_ci_over_seeds(values, reps=reps, seed=0)
    ax.plot(grid, mean, color=color, label=label, lw=1.5, marker="o" if grid.size == 1 else None)
    if values.shape[0] > 1:
        ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0)
    return True


def plot_curves(path: Path, env: str, by_group: Mapping[str, list[Series]], metric: str, reps: int,
                colors: Mapping[str, tuple]) -> list[str]:  # fmt: skip
    """One figure: mean and 95% CI over seeds per group against environment steps. Returns notes on dropped ones."""
    plt, notes = _plt(), []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, series in by_group.items():
        if not series:
            notes.append(f"{env}, {label}: nothing logged to plot")
        elif not _band(ax, series, reps, f"{label} (n={len(series)})", colors[label]):
            notes.append(f"{env}, {label}: the runs' step ranges do not overlap; curve left out")
    ax.set(xlabel="environment steps", ylabel=metric, title=env)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return notes


def plot_aggregate(path: Path, results: Mapping[str, Mapping[str, tuple[float, float, float]]],
                   colors: Mapping[str, tuple]) -> None:  # fmt: skip
    """IQM and optimality gap per group with their CIs as horizontal intervals (rliable's interval plot); a NaN
    interval (no CI: one run per environment) is drawn as the point alone."""
    plt = _plt()
    labels = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 0.5 * len(labels) + 1.5), sharey=True)
    for ax, (name, per_label) in zip(np.atleast_1d(axes), results.items(), strict=True):
        for i, label in enumerate(labels):
            point, lo, hi = per_label[label]
            if math.isfinite(lo) and math.isfinite(hi):
                ax.barh(i, hi - lo, left=lo, height=0.6, color=colors[label], alpha=0.5)
            ax.vlines(point, i - 0.3, i + 0.3, color="k", lw=1.5)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel(name)
        ax.grid(axis="x", alpha=0.3)
    np.atleast_1d(axes)[0].invert_yaxis()  # first label on top (the axes share y)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gauge(path: Path, env: str, by_key: Mapping[str, Mapping[str, list[Series]]], reps: int,
               colors: Mapping[str, tuple]) -> None:  # fmt: skip
    """One panel per gauge column: mean and 95% CI over seeds per group (groups that never log it are absent)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(by_key), figsize=(3.8 * len(by_key), 3.8), squeeze=False, layout="constrained")
    handles = {}
    for ax, (key, by_group) in zip(axes[0], by_key.items(), strict=True):
        for label, series in by_group.items():
            if series:
                _band(ax, series, reps, label, colors[label])
        ax.set(xlabel="environment steps", title=key)
        ax.grid(alpha=0.3)
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    fig.suptitle(env)
    fig.savefig(path, dpi=110)
    plt.close(fig)
