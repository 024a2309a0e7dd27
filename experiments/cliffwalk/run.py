"""Blind Cliffwalk (Schaul et al. 2016, Fig. 1/2): updates until Q is learned, per arm, against memory size.

    python experiments/cliffwalk/run.py [--quick] [--seeds 20] [--n-max 16] [--models tabular linear] [--out DIR]

For every model (tabular, linear), arm (sampler + loss + step size), chain length n and seed, Q-learning replays one
transition of the full Blind Cliffwalk memory per update until the MSE of Q against the true values is below 1e-3
(DESIGN.md §4.1). Writes to ``--out``: ``updates.csv`` (one row per run), ``summary.csv`` (median, IQR and a
bootstrap CI per model, arm and n), ``paired.csv`` (per-seed ratios of updates between arms on the same seed),
``cliffwalk.png`` and ``command.txt`` (the command, wall time and git commit). The settings and their reasons are
in README.md next to this file.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import kernels  # experiments/cliffwalk/kernels.py: this script's directory is on sys.path
import numpy as np

from rlfocal.envs.cliffwalk import all_transitions, true_q
from rlfocal.replay.sumtree import next_pow2

ETA = 0.25  # step size (Schaul et al., Appendix B.1)
THRESHOLD = 1e-3  # MSE of Q against the true values that counts as learned
INIT_STD = 0.1  # Q (tabular) or w (linear) initialised from N(0, 0.1), read as a standard deviation
ALPHA = 0.6  # proportional PER's exponent (Atari setting); the mirror's; focal's matched γ is α/2
RANK_ALPHA = 0.7  # rank-based PER's exponent (Atari setting)
EPS = 1e-6  # PER's ε in p = |δ| + ε
TAU_FIXED = 100.0  # focal's fixed τ: ≥ 100 × every L = δ²/2 here (|δ| ≲ 1.3), the regime where α = 2γ applies
CLIP = 1.0 / ETA  # clipping a weight at 1/η makes every clipped step a full step: uniform with η = 1
ORACLE_CAP = 10**5  # the oracle scans all 2n pairs per update; tabular needs under 2 000 updates at n = 16
MODELS = ("tabular", "linear")


@dataclass(frozen=True)
class Arm:
    """A sampler, a per-sample loss and a step size η = ETA · ``eta_scale``; ``tau=None`` is ``tau: auto``."""

    sampler: str = "uniform"
    loss: str = "mse"
    eta_scale: float = 1.0
    alpha: float = ALPHA
    gamma: float = 0.0
    tau: float | None = TAU_FIXED
    max_weight: float = math.inf


ARMS: dict[str, Arm] = {
    "uniform": Arm(),
    "uniform_eta0.5": Arm(eta_scale=2.0),
    "uniform_eta1": Arm(eta_scale=4.0),
    "greedy": Arm("greedy"),
    "per": Arm("proportional"),
    "rank": Arm("rank", alpha=RANK_ALPHA),
    "oracle": Arm("oracle"),
    "focal_auto": Arm(loss="focal", gamma=ALPHA / 2, tau=None),
    "focal_tau100": Arm(loss="focal", gamma=ALPHA / 2),
    "focal_norm_auto": Arm(loss="focal_norm", gamma=ALPHA / 2, tau=None),
    "focal_norm_tau100": Arm(loss="focal_norm", gamma=ALPHA / 2),
    "focal_norm_tau100_clip4": Arm(loss="focal_norm", gamma=ALPHA / 2, max_weight=CLIP),
    "mirror": Arm(loss="mirror"),
    "mirror_clip4": Arm(loss="mirror", max_weight=CLIP),
}
_SAMPLERS = {"uniform": kernels.UNIFORM, "greedy": kernels.GREEDY, "proportional": kernels.PROPORTIONAL,
             "rank": kernels.RANK, "oracle": kernels.ORACLE}  # fmt: skip
_LOSSES = {"mse": kernels.MSE, "focal": kernels.FOCAL, "focal_norm": kernels.FOCAL_NORM, "mirror": kernels.MIRROR}

# (arm, reference) pairs compared seed by seed: samplers, step-size controls, and each loss against its analogue
PAIRS = (("per", "uniform"), ("rank", "uniform"), ("rank", "per"), ("greedy", "uniform"), ("oracle", "uniform"),
         ("uniform_eta0.5", "uniform"), ("uniform_eta1", "uniform"), ("focal_auto", "uniform"),
         ("focal_tau100", "uniform"), ("focal_norm_tau100", "per"), ("focal_norm_auto", "per"), ("mirror", "per"),
         ("focal_norm_tau100", "mirror"), ("focal_norm_tau100_clip4", "uniform_eta1"),
         ("mirror_clip4", "uniform_eta1"), ("focal_norm_tau100_clip4", "uniform_eta0.5"),
         ("mirror_clip4", "uniform_eta0.5"))  # fmt: skip


def transitions(n: int) -> int:
    """Rows in the Blind Cliffwalk memory of chain length n: 2^(n+1) − 2."""
    return 2 ** (n + 1) - 2


def features(n: int) -> np.ndarray:
    """The linear model's Φ, shape (2n, 2(n+1)): row 2s + a is φ(s) = [one-hot(s), 1] in action a's block."""
    phi = np.zeros((2 * n, 2 * (n + 1)))
    for s in range(n):
        for a in range(2):
            phi[2 * s + a, a * (n + 1) + s] = 1.0
            phi[2 * s + a, a * (n + 1) + n] = 1.0
    return phi


@functools.lru_cache(maxsize=4)
def _memory(n: int) -> dict[str, np.ndarray]:
    """Each row's pair, and each pair's transition (a pair determines it); built once per n and process."""
    memory = all_transitions(n)
    row_pair = 2 * memory["state"] + memory["action"]
    first = np.unique(row_pair, return_index=True)[1]  # one representative row per pair, in pair order
    return {"row_pair": row_pair, "reward": memory["reward"][first].astype(np.float64),
            "next_state": memory["next_state"][first], "terminated": memory["terminated"][first]}  # fmt: skip


def initial_values(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Row order, tabular Q0, linear w0 and the seed of the sampling stream: functions of (seed, n) only.

    Every arm and model of a seed reads these, so they start from the same point and replay from the same stream.
    """
    rng = np.random.default_rng([seed, n])
    order = rng.permutation(transitions(n))
    q0 = rng.normal(0.0, INIT_STD, size=2 * n)
    w0 = rng.normal(0.0, INIT_STD, size=2 * (n + 1))
    stream = int(np.random.SeedSequence([seed, n, 1]).generate_state(1)[0])
    return order, q0, w0, stream


def run_one(
    arm: str | Arm, n: int, seed: int, model: str = "tabular", max_updates: int = 10**8, threshold: float = THRESHOLD
) -> dict:
    """One run: updates until MSE(Q, true Q) < ``threshold`` for ``arm`` (a name or an ``Arm``) and ``model``."""
    spec = ARMS.get(arm) if isinstance(arm, str) else arm
    if spec is None:
        raise ValueError(f"unknown arm {arm!r}; known arms: {', '.join(ARMS)}")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(MODELS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n (chain length) must be an integer >= 2, got {n!r}")
    if max_updates < 1:
        raise ValueError(f"max_updates must be >= 1, got {max_updates!r}")
    memory = _memory(n)
    order, q0, w0, stream = initial_values(n, seed)
    linear = model == "linear"
    discount = 1.0 - 1.0 / n
    updates, converged, diverged, final_mse = kernels.run(
        memory["row_pair"][order], memory["reward"], memory["next_state"], memory["terminated"],
        features(n) @ w0 if linear else q0, true_q(n, discount).ravel(), linear, _SAMPLERS[spec.sampler],
        _LOSSES[spec.loss], spec.alpha, EPS, spec.gamma, -1.0 if spec.tau is None else spec.tau, spec.max_weight,
        ETA * spec.eta_scale, discount, threshold, int(max_updates), stream, next_pow2(transitions(n)),
    )  # fmt: skip
    return {"model": model, "arm": arm if isinstance(arm, str) else repr(arm), "n": n, "transitions": transitions(n),
            "seed": seed, "cap": int(max_updates), "updates": int(updates), "converged": bool(converged),
            "diverged": bool(diverged), "final_mse": float(final_mse)}  # fmt: skip


def _bootstrap_median_ci(values: np.ndarray, rng: np.random.Generator, resamples: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the median."""
    medians = np.median(values[rng.integers(0, len(values), (resamples, len(values)))], axis=1)
    lo, hi = np.quantile(medians, [0.025, 0.975])
    return float(lo), float(hi)


def _censored_updates(row: dict) -> int:
    """Updates to convergence, or the run's cap when it did not converge (censored or diverged): a lower bound."""
    return row["updates"] if row["converged"] else row["cap"]


def _groups(rows: list[dict]) -> dict[tuple[str, str, int], dict[int, dict]]:
    groups: dict[tuple[str, str, int], dict[int, dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["arm"], row["n"]), {})[row["seed"]] = row
    return groups


def summarise(rows: list[dict]) -> list[dict]:
    """Median, quartiles and a bootstrap CI of updates per (model, arm, n), unconverged runs counted at their cap.

    ``median_censored`` marks a median that depends on such a lower bound.
    """
    rng = np.random.default_rng(0)
    summary = []
    for (model, arm, n), runs in _groups(rows).items():
        values = np.array([_censored_updates(r) for r in runs.values()], dtype=np.float64)
        censored = sum(not r["converged"] for r in runs.values())
        q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
        lo, hi = _bootstrap_median_ci(values, rng)
        summary.append({"model": model, "arm": arm, "n": n, "transitions": transitions(n), "seeds": len(runs),
                        "converged": len(runs) - censored, "diverged": sum(r["diverged"] for r in runs.values()),
                        "median": median, "q25": q25, "q75": q75, "median_ci_lo": lo, "median_ci_hi": hi,
                        "median_censored": censored >= len(runs) - len(runs) // 2})  # fmt: skip
    return summary


def paired(rows: list[dict]) -> list[dict]:
    """Per-seed ratio updates(arm) / updates(reference) for ``PAIRS``: median, bootstrap CI, share of seeds faster.

    A ratio with one unconverged run (counted at its cap) is only a bound; ``censored_pairs`` counts those. Seeds
    where neither run converged have no ratio and are left out (``both_unconverged``); with none left it is NaN.
    """
    rng = np.random.default_rng(1)
    groups = _groups(rows)
    out = []
    for model, n in sorted({(r["model"], r["n"]) for r in rows}, key=lambda k: (MODELS.index(k[0]), k[1])):
        for arm, ref in PAIRS:
            a, b = groups.get((model, arm, n)), groups.get((model, ref, n))
            if a is None or b is None:
                continue
            seeds = sorted(a.keys() & b.keys())
            kept = [s for s in seeds if a[s]["converged"] or b[s]["converged"]]
            ratio = np.array([_censored_updates(a[s]) / _censored_updates(b[s]) for s in kept])
            lo, hi = _bootstrap_median_ci(ratio, rng) if kept else (math.nan, math.nan)
            out.append({"model": model, "n": n, "arm": arm, "reference": ref, "seeds": len(seeds),
                        "both_unconverged": len(seeds) - len(kept),
                        "censored_pairs": sum(not (a[s]["converged"] and b[s]["converged"]) for s in kept),
                        "median_ratio": float(np.median(ratio)) if kept else math.nan, "ratio_ci_lo": lo,
                        "ratio_ci_hi": hi, "frac_arm_fewer": float(np.mean(ratio < 1.0)) if kept else math.nan,
                        "frac_equal": float(np.mean(ratio == 1.0)) if kept else math.nan})  # fmt: skip
    return out


_STYLE = {"uniform": ("k", "-"), "uniform_eta0.5": ("0.4", "--"), "uniform_eta1": ("0.6", ":"),
          "greedy": ("tab:orange", "-"), "per": ("tab:blue", "-"), "rank": ("tab:cyan", "-"),
          "oracle": ("tab:green", "-"), "focal_auto": ("tab:purple", "-"), "focal_tau100": ("tab:purple", ":"),
          "focal_norm_auto": ("tab:pink", "-"), "focal_norm_tau100": ("tab:brown", "-"),
          "focal_norm_tau100_clip4": ("tab:brown", "--"), "mirror": ("tab:red", "-"),
          "mirror_clip4": ("tab:red", "--")}  # fmt: skip
_PANELS = (("samplers and step-size controls", ("uniform", "uniform_eta0.5", "uniform_eta1", "greedy", "per", "rank",
                                                "oracle")),
           ("losses, uniform sampling (PER, η controls for reference)", ("uniform", "uniform_eta1", "per",
            "focal_auto", "focal_tau100", "focal_norm_auto", "focal_norm_tau100", "focal_norm_tau100_clip4",
            "mirror", "mirror_clip4")))  # fmt: skip


def plot(summary: list[dict], rows: list[dict], path: Path) -> None:
    """Median updates against n (log y) with the IQR band, one panel per model and arm group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in MODELS if any(s["model"] == m for s in summary)]
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.6 * len(models)), squeeze=False, sharey=True)
    caps = {(r["model"], r["n"]): r["cap"] for r in rows}
    for model, row_axes in zip(models, axes, strict=True):
        ns = np.array(sorted({s["n"] for s in summary if s["model"] == model}))
        for ax, (title, arms) in zip(row_axes, _PANELS, strict=True):
            for arm in arms:
                group = sorted((s for s in summary if s["model"] == model and s["arm"] == arm), key=lambda s: s["n"])
                if not group:
                    continue
                color, ls = _STYLE[arm]
                x = np.array([s["n"] for s in group])
                med = np.array([s["median"] for s in group])
                cens = np.array([s["median_censored"] for s in group])
                div = cens & np.array([2 * s["diverged"] >= s["seeds"] for s in group])
                ax.fill_between(x, [s["q25"] for s in group], [s["q75"] for s in group], color=color, alpha=0.1, lw=0)
                ax.plot(x[~cens], med[~cens], ls=ls, color=color, marker="o", ms=3, label=arm)
                ax.plot(x[cens & ~div], med[cens & ~div], ls="none", color=color, marker="^", ms=7, mfc="none")
                ax.plot(x[div], med[div], ls="none", color=color, marker="x", ms=6)
            ax.plot(ns, [caps[(model, n)] for n in ns], color="grey", lw=0.8, ls=":", label="cap")
            ax.plot(ns, [transitions(n) for n in ns], color="grey", lw=0.8, ls="--", label="updates = transitions M")
            ax.set_yscale("log")
            ax.set_xlabel("n (memory holds M = 2^(n+1) − 2 transitions)")
            ax.set_title(f"{model}: {title}", fontsize=10)
            ax.legend(fontsize=7, loc="upper left")
        row_axes[0].set_ylabel("updates until MSE < 1e-3 (median, IQR)")
    seeds = max(s["seeds"] for s in summary)
    fig.suptitle(f"Blind Cliffwalk, {seeds} seeds. Unconverged runs count at the cap, so a median on the cap is a "
                 "lower bound: ▲ hit the cap, × most seeds diverged (MSE > 100)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CI version: n = 2..5, 3 seeds, cap 2000·M")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (0, 1, ...)")
    parser.add_argument("--n-min", type=int, default=2)
    parser.add_argument("--n-max", type=int, default=16, help="largest n, tabular")
    parser.add_argument("--n-max-linear", type=int, default=16, help="largest n, linear")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help=f"subset of: {' '.join(MODELS)}")
    parser.add_argument("--cap-factor", type=int, default=400, help="per-run cap on updates, in units of M")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help=f"subset of: {' '.join(ARMS)}")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n_max, args.n_max_linear, args.cap_factor = 3, min(args.n_max, 5), min(args.n_max, 5), 2000
    for name, given, known in (("arm", args.arms, ARMS), ("model", args.models, MODELS)):
        unknown = [a for a in given if a not in known]
        if unknown:
            raise ValueError(f"unknown {name}(s) {unknown}; known: {', '.join(known)}")
    if args.n_min < 2 or min(args.n_max, args.n_max_linear) < args.n_min:
        raise ValueError(f"need 2 <= n-min <= n-max, got n-min {args.n_min} and n-max {args.n_max}")
    if args.seeds < 1 or args.cap_factor < 1:
        raise ValueError(f"seeds and cap-factor must be >= 1, got {args.seeds} and {args.cap_factor}")

    start = time.perf_counter()
    rows = []
    for model in args.models:
        n_max = args.n_max if model == "tabular" else args.n_max_linear
        for n in range(args.n_min, n_max + 1):
            for arm in args.arms:
                cap = args.cap_factor * transitions(n)
                cap = min(cap, ORACLE_CAP) if ARMS[arm].sampler == "oracle" else cap
                rows += [run_one(arm, n, seed, model, cap) for seed in range(args.seeds)]
            print(f"{model} n={n} done at {time.perf_counter() - start:.0f} s", flush=True)
    summary = summarise(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    _write_csv(args.out / "updates.csv", rows)
    _write_csv(args.out / "summary.csv", summary)
    _write_csv(args.out / "paired.csv", paired(rows))
    plot(summary, rows, args.out / "cliffwalk.png")
    wall = time.perf_counter() - start

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    code = [str(Path(__file__).parent / name) for name in ("run.py", "kernels.py")]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *code], capture_output=True, text=True).stdout.strip()
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python", __file__, *argv])
    (args.out / "command.txt").write_text(
        f"{command}\nwall time {wall:.1f} s, one process\ngit commit {commit}"
        f"{' (experiments/cliffwalk had uncommitted changes)' if dirty else ''}\n"
    )
    for s in summary:
        flag = " (censored)" if s["median_censored"] else ""
        print(f"{s['model']:>7} {s['arm']:>23} n={s['n']:2d} median {s['median']:11.0f}{flag} "
              f"converged {s['converged']}/{s['seeds']}")  # fmt: skip
    print(f"wall time {wall:.1f} s -> {args.out}")
    return summary


if __name__ == "__main__":
    main()
