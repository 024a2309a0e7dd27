"""``num_seeds=S`` through the one training loop: per-seed outputs, each seed as it trains alone, a NaN in one seed
stops that seed only, resume of the batch (issue 12)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_train import rows, train

from rlfocal.losses import HuberLossConfig

LANES = ["num_seeds=3", "seed=4"]


def _numbers(row: dict[str, str], key: str) -> float:
    return float(row[key]) if row[key] else math.nan


@pytest.mark.parametrize("replay", ["uniform", "per", "per,replay.deferred=true"])
def test_each_seed_of_a_batch_trains_as_it_does_alone(tmp_path, replay):
    """Seed k inside a batch of 3 takes the same actions (same episodes, same evaluations) and the same losses to
    1e-5 relative as seed k trained alone: lanes stack the networks, so batched BLAS may reorder sums. With the
    one-update-late write-back too (``replay.deferred``), which then runs over all lanes at once."""
    opts = [f"replay={replay.split(',')[0]}", *replay.split(",")[1:]]
    batch = train(tmp_path / "batch", [*LANES, *opts])
    assert [s["seed"] for s in batch["seeds"]] == [4, 5, 6] and batch["stopped"] == []
    for seed in (4, 5, 6):
        alone = train(tmp_path / f"alone{seed}", [f"seed={seed}", *opts])
        lane_rows = rows(tmp_path / "batch" / f"seed_{seed}" / "metrics.csv")
        alone_rows = rows(tmp_path / f"alone{seed}" / "metrics.csv")
        assert len(lane_rows) == len(alone_rows)
        for a, b in zip(lane_rows, alone_rows, strict=True):
            for key in ("global_step", "charts/episodes", "charts/episodic_return", "eval/return", "replay/size"):
                assert a[key] == b[key], (seed, key)
            for key in ("losses/td_loss", "losses/q_values", "losses/td_abs"):
                assert _numbers(a, key) == pytest.approx(_numbers(b, key), rel=1e-5, nan_ok=True), (seed, key)
        summary = json.loads((tmp_path / "batch" / f"seed_{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["final_eval_return"] == alone["final_eval_return"]
        config = (tmp_path / "batch" / f"seed_{seed}" / "config.yaml").read_text()
        assert f"seed: {seed}\n" in config


def test_a_nan_in_one_seed_stops_that_seed_only(tmp_path, monkeypatch):
    real = HuberLossConfig.build

    def poisoned(loss_cfg):
        loss, calls = real(loss_cfg), [0]

        def fn(td):
            calls[0] += 1
            out = loss(td)
            if calls[0] > 20:  # seed lane 1 only
                out = out * torch.tensor([1.0, math.nan, 1.0])[:, None]
            return out

        return fn

    monkeypatch.setattr(HuberLossConfig, "build", poisoned)
    summary = train(tmp_path, LANES)
    assert summary["stopped"] == [5]
    for seed, stopped in ((4, False), (5, True), (6, False)):
        lane = json.loads((tmp_path / f"seed_{seed}" / "summary.json").read_text())
        assert lane["stopped_nonfinite"] is stopped
        steps = [int(r["global_step"]) for r in rows(tmp_path / f"seed_{seed}" / "metrics.csv")]
        assert (max(steps) < 300) if stopped else (max(steps) == 300)


def test_a_batch_resumes_where_it_stopped(tmp_path):
    train(tmp_path, [*LANES, "total_steps=150"])
    summary = train(tmp_path, [*LANES, "total_steps=300", "resume=true"])
    assert len(summary["seeds"]) == 3
    for seed in (4, 5, 6):
        steps = [int(r["global_step"]) for r in rows(tmp_path / f"seed_{seed}" / "metrics.csv")]
        assert steps == list(range(50, 301, 50))
