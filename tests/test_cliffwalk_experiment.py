"""Blind Cliffwalk experiment (experiments/cliffwalk): the compiled loss derivatives equal torch autograd of
rlfocal.losses, the tabular learner reaches the true Q, prioritised replay beats uniform, and the script runs."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rlfocal.losses import RunningMean, focal_td, mirror

CLIFF_DIR = Path(__file__).resolve().parents[1] / "experiments" / "cliffwalk"
sys.path.insert(0, str(CLIFF_DIR))  # run.py imports its sibling kernels.py, as it does when run as a script
_spec = importlib.util.spec_from_file_location("cliffwalk_run", CLIFF_DIR / "run.py")
cliff = importlib.util.module_from_spec(_spec)
sys.modules["cliffwalk_run"] = cliff  # dataclasses look their module up there
_spec.loader.exec_module(cliff)
kernels = cliff.kernels


def _td_samples() -> torch.Tensor:
    rng = np.random.default_rng(0)
    td = np.concatenate([rng.normal(0.0, 1.0, 200), rng.normal(0.0, 1e-3, 50), [0.0, 1e-9, -1e-9, 5.0, -12.0]])
    return torch.tensor(td, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.0])
@pytest.mark.parametrize("tau", [1.0, 0.05, 3.0])
def test_focal_grad_matches_autograd(gamma, tau):
    td = _td_samples().requires_grad_(True)
    focal_td(td, gamma=gamma, tau=tau, base="mse").sum().backward()
    ours = np.array([kernels.focal_mse_grad(float(d), gamma, tau) for d in td.detach()])
    np.testing.assert_allclose(ours, td.grad.numpy(), rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("max_weight", [None, 2.0])
@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_mirror_grad_matches_autograd_when_the_batch_is_the_buffer(alpha, max_weight):
    td = _td_samples().requires_grad_(True)
    mirror(td, alpha=alpha, eps=1e-6, base="mse", max_weight=max_weight).sum().backward()
    priority = (td.detach().abs() + 1e-6) ** alpha
    cap = math.inf if max_weight is None else max_weight
    mean = float(priority.mean())
    ours = [kernels.mirror_mse_grad(float(d), float(p), mean, cap) for d, p in zip(td.detach(), priority, strict=True)]
    np.testing.assert_allclose(ours, td.grad.numpy(), rtol=1e-12, atol=1e-300)


def test_running_mean_matches_rlfocal():
    reference = RunningMean(momentum=0.99)
    mean = 0.0
    for t, x in enumerate(np.random.default_rng(1).exponential(size=50)):
        mean = kernels.running_mean_update(mean, x, t == 0, 0.99)
        assert mean == pytest.approx(reference.update(torch.tensor([x])), rel=1e-14)


@pytest.mark.parametrize("arm", list(cliff.ARMS))
def test_learner_reaches_true_q(arm):
    # 1e-8, not less: focal-TD's step shrinks like |δ|^(1+2γ) near the fixed point, so its last digits come slowly
    result = cliff.run_one(arm, 3, seed=0, max_updates=10**6, threshold=1e-8)
    assert result["converged"] and not result["diverged"]
    assert result["final_mse"] < 1e-8


def test_unclipped_mirror_diverges_where_the_clipped_one_converges():
    runs = {arm: cliff.run_one(arm, 8, seed=0) for arm in ("mirror", "mirror_clip4")}
    assert runs["mirror"]["diverged"] and not runs["mirror"]["converged"]
    assert runs["mirror_clip4"]["converged"]


@pytest.mark.parametrize("n", [4, 5, 6])
def test_prioritised_and_oracle_beat_uniform(n):
    def median(arm):
        runs = [cliff.run_one(arm, n, seed) for seed in range(10)]
        assert all(r["converged"] for r in runs)
        return np.median([r["updates"] for r in runs])

    uniform = median("uniform")
    for arm in ("oracle", "per", "greedy"):
        assert median(arm) < uniform, arm


def test_runs_are_deterministic_in_their_seed():
    assert cliff.run_one("per", 6, seed=3) == cliff.run_one("per", 6, seed=3)
    assert cliff.run_one("per", 6, seed=3) != cliff.run_one("per", 6, seed=4)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="unknown arm"):
        cliff.run_one("nope", 4, seed=0)
    with pytest.raises(ValueError, match="n \\(chain length\\) must be an integer >= 2"):
        cliff.run_one("uniform", 1, seed=0)
    with pytest.raises(ValueError, match="unknown arm"):
        cliff.main(["--arms", "uniform", "nope"])
    with pytest.raises(ValueError, match="n-min"):
        cliff.main(["--n-max", "1"])


def test_quick_writes_results(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, str(CLIFF_DIR / "run.py"), "--quick", "--workers", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    with (out / "updates.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cliff.ARMS) * 4 * 3  # arms × n = 2..5 × 3 seeds
    assert {"arm", "n", "seed", "updates", "converged"} <= set(rows[0])
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == len(cliff.ARMS) * 4 and {"median", "q25", "q75"} <= set(summary[0])
    assert (out / "cliffwalk.png").read_bytes()[:4] == b"\x89PNG"
    assert "git commit" in (out / "command.txt").read_text()
