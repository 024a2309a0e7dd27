"""α* against γ: how far focal-TD's effective per-sample weight is from PER's |δ|^α with α = 2γ (DESIGN.md §2.2).

    python experiments/alpha_fit/run.py [--n 50000] [--out experiments/alpha_fit/results]
    python experiments/alpha_fit/run.py --quick --out /tmp/af    # the seconds-long CI version

For synthetic TD errors (standard Gaussian, Laplace with scale 1, Student-t with 3 degrees of freedom), each base loss
L (MSE ½δ², Huber with κ = 1) and each τ = multiple × mean L, fits α* with the gauge's ``alpha_fit`` (least squares of
log w on log |δ|, w = (∂FL/∂δ)/(∂L/∂δ)) for γ = 0.1..2. τ = 1 × mean L is what ``tau: auto`` (a running mean of L)
settles at on a stationary error distribution. Writes ``alpha_fit.csv``, ``alpha_fit.png`` and ``command.txt``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlfocal import losses  # noqa: E402
from rlfocal.gauge import alpha_fit  # noqa: E402

DISTS = {
    "gaussian": lambda rng, n: rng.standard_normal(n),
    "laplace": lambda rng, n: rng.laplace(size=n),
    "student_t3": lambda rng, n: rng.standard_t(3, size=n),
}
BASES = ("mse", "huber")
TAU_MULTIPLES = (1.0, 10.0, 100.0, 1000.0)
GAMMAS = tuple(round(0.1 * k, 1) for k in range(1, 21))
KAPPA = 1.0


def base_loss(td: torch.Tensor, base: str) -> torch.Tensor:
    return losses.huber(td, KAPPA) if base == "huber" else losses.mse(td)


def fit_table(
    n: int,
    gammas: tuple[float, ...] = GAMMAS,
    tau_multiples: tuple[float, ...] = TAU_MULTIPLES,
    dists: tuple[str, ...] = tuple(DISTS),
    bases: tuple[str, ...] = BASES,
    seed: int = 0,
) -> list[dict]:
    """One row per (distribution, base, τ multiple, γ): α*, 2γ, and the share of samples whose L exceeds τ."""
    rows = []
    for k, dist in enumerate(dists):
        td = torch.from_numpy(DISTS[dist](np.random.default_rng(seed + k), n))
        for base in bases:
            loss = base_loss(td, base)
            for multiple in tau_multiples:
                tau = multiple * float(loss.mean())
                above = float((loss > tau).double().mean())
                for gamma in gammas:
                    rows.append(
                        {
                            "dist": dist,
                            "base": base,
                            "tau_multiple": multiple,
                            "gamma": gamma,
                            "alpha_star": alpha_fit(td, gamma, tau, base=base, kappa=KAPPA),
                            "two_gamma": 2 * gamma,
                            "frac_loss_above_tau": above,
                            "n": n,
                        }
                    )
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """α* against γ, one panel per (base, distribution), one line per τ multiple, with α = 2γ dashed."""
    dists, bases = sorted({r["dist"] for r in rows}), [b for b in BASES if any(r["base"] == b for r in rows)]
    multiples = sorted({r["tau_multiple"] for r in rows})
    fig, axes = plt.subplots(len(bases), len(dists), figsize=(4 * len(dists), 3.6 * len(bases)), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(multiples)))
    for i, base in enumerate(bases):
        for j, dist in enumerate(dists):
            ax = axes[i, j]
            for color, multiple in zip(colors, multiples, strict=True):
                sel = [r for r in rows if (r["base"], r["dist"], r["tau_multiple"]) == (base, dist, multiple)]
                label = f"τ = {multiple:g} × mean L" + (" (tau: auto)" if multiple == 1 else "")
                ax.plot([r["gamma"] for r in sel], [r["alpha_star"] for r in sel], "o-", ms=3, color=color, label=label)
            gammas = sorted({r["gamma"] for r in rows})
            ax.plot(gammas, [2 * g for g in gammas], "k--", lw=1, label="α = 2γ")
            ax.set_title(f"{dist}, {base} base" + (f" (κ = {KAPPA:g})" if base == "huber" else ""))
            ax.set_xlabel("focal γ")
            ax.set_ylabel("fitted α*")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Exponent α* of |δ|^α that best fits focal-TD's weight (∂FL/∂δ)/(∂L/∂δ) (log-log least squares)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CI version: 2,000 errors, 4 values of γ")
    parser.add_argument("--n", type=int, default=50_000, help="synthetic TD errors per distribution")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    gammas = (0.3, 0.6, 1.0, 2.0) if args.quick else GAMMAS
    n = 2000 if args.quick else args.n

    start = time.perf_counter()
    rows = fit_table(n, gammas, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "alpha_fit.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, args.out / "alpha_fit.png")
    wall = time.perf_counter() - start

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    code = [__file__, str(Path(__file__).resolve().parents[2] / "rlfocal" / "gauge.py")]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *code], capture_output=True, text=True).stdout.strip()
    command = " ".join(["python", *sys.argv]) if argv is None else " ".join(["python", __file__, *argv])
    (args.out / "command.txt").write_text(
        f"{command}\nwall time {wall:.1f} s, one process\ngit commit {commit}"
        f"{' (run.py or rlfocal/gauge.py had uncommitted changes)' if dirty else ''}\n"
    )
    for r in rows:
        if r["gamma"] == 0.3:
            print(f"{r['dist']:>10} {r['base']:>5} τ = {r['tau_multiple']:6g} × mean L: α* = {r['alpha_star']:.3f}")
    print(f"wall time {wall:.1f} s -> {args.out}")
    return rows


if __name__ == "__main__":
    main()
