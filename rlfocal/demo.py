"""A one-minute tour of the replay engine: does PER sample in proportion to p^α, and how fast is it?

``python -m rlfocal.demo [--out DIR]`` fills a prioritized buffer, gives it known TD errors, draws 10^5
transitions, and writes ``sampling.png`` (empirical frequency against P(i) = p_i^α / Σ p^α) and ``summary.json``
(the fit and the throughput of sample, update_priorities and add on a 2^16 buffer).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from rlfocal.replay import PrioritizedReplay


def _rate(fn, seconds: float = 0.5) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return calls / elapsed


def sampling_check(alpha: float, draws: int, seed: int) -> dict:
    """Empirical PER sampling frequencies against the target P(i) on 64 transitions."""
    n = 64
    buf = PrioritizedReplay(n, (1,), alpha=alpha, seed=seed)
    obs = np.arange(n, dtype=np.float32)[:, None]
    buf.add_batch(obs, np.zeros(n, np.int64), np.zeros(n), obs, np.zeros(n, bool), np.zeros(n, bool))
    td = np.random.default_rng(seed).exponential(size=n)
    buf.update_priorities(np.arange(n), td)
    counts = np.zeros(n)
    for _ in range(draws // n):
        np.add.at(counts, buf.sample(n).indices, 1)
    target = (td + buf.sampler.eps) ** alpha
    return {"td": td, "target": target / target.sum(), "empirical": counts / counts.sum()}


def throughput(capacity: int, seed: int) -> dict[str, float]:
    """Calls per second of the hot operations on a full buffer of 4-float observations."""
    rng = np.random.default_rng(seed)
    buf = PrioritizedReplay(capacity, (4,), seed=seed)
    obs = rng.random((capacity, 4), dtype=np.float32)
    zeros = np.zeros(capacity)
    buf.add_batch(obs, zeros.astype(np.int64), zeros, obs, zeros.astype(bool), zeros.astype(bool))
    batch = buf.sample(256)
    td = rng.random(256)
    one = obs[0]
    return {
        "sample_256_per_s": _rate(lambda: buf.sample(256)),
        "update_256_per_s": _rate(lambda: buf.update_priorities(batch.indices, td)),
        "add_one_per_s": _rate(lambda: buf.add(one, 0, 0.0, one, False, False)),
    }


def plot(check: dict, alpha: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(check["td"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(check["td"][order], check["target"][order], "k-", label=f"P(i) ∝ (|δ|+ε)^{alpha}")
    ax.plot(check["td"][order], check["empirical"][order], "o", ms=4, label="empirical (PrioritizedReplay)")
    ax.set_xlabel("|TD error| of transition i")
    ax.set_ylabel("sampling probability")
    ax.set_title("Proportional PER samples in proportion to priority")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--draws", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    check = sampling_check(args.alpha, args.draws, args.seed)
    tv = 0.5 * np.abs(check["empirical"] - check["target"]).sum()
    summary = {
        "alpha": args.alpha,
        "draws": args.draws,
        "total_variation_empirical_vs_target": float(tv),
        "throughput_capacity_2^16": throughput(2**16, args.seed),
    }
    plot(check, args.alpha, args.out / "sampling.png")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"PER sampling, alpha={args.alpha}, {args.draws} draws: total variation to P(i) = {tv:.4f}")
    for name, value in summary["throughput_capacity_2^16"].items():
        print(f"  {name:<18} {value:>10,.0f}")
    print(f"wrote {args.out / 'sampling.png'} and {args.out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
