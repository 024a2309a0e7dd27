"""experiments/supervised: the long-tail split, the loss-prioritized sampler, OHEM, the metrics and the script."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "supervised" / "run.py"


def _load(name: str, path: Path):
    # by path, under a unique name: experiments/ is not a package and other experiments have a run.py too
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sq_run = _load("supervised_run", SCRIPT)  # puts its folder on sys.path, so focal_square imports beside it
import focal_square as fs  # noqa: E402

# ------------------------------------------------------------------------------------------------ long tail


@pytest.mark.parametrize(("ratio", "tail"), [(10, 10), (100, 1)])
def test_long_tail_counts_hit_the_requested_ratio(ratio, tail):
    counts = fs.long_tail_counts(100, ratio, 10)
    assert counts[0] == 100 and counts[-1] == tail
    assert counts[0] / counts[-1] == ratio
    assert np.all(np.diff(counts) <= 0)
    # ρ = 10: 100·10^(−c/9), rounded
    if ratio == 10:
        assert counts.tolist() == [100, 77, 60, 46, 36, 28, 22, 17, 13, 10]


def test_split_gives_the_tail_counts_and_a_balanced_disjoint_test_set():
    # one feature is a unique id, so train/test overlap is visible after standardisation
    y = np.repeat(np.arange(5), 40)
    x = np.stack([np.arange(200), np.random.default_rng(0).normal(size=200)], 1).astype(np.float32)
    split = fs.make_split(x, y, ratio=10, n_max=20, test_per_class=15, seed=3)
    expected = fs.long_tail_counts(20, 10, 5)
    assert np.bincount(split.y_train, minlength=5)[split.class_order].tolist() == expected.tolist()
    assert split.counts[split.class_order].tolist() == expected.tolist()
    assert np.bincount(split.y_test).tolist() == [15] * 5
    assert np.intersect1d(split.x_train[:, 0], split.x_test[:, 0]).size == 0
    assert abs(split.x_train[:, 1].mean()) < 1e-5 and abs(split.x_train[:, 1].std() - 1) < 1e-5
    other = fs.make_split(x, y, ratio=10, n_max=20, test_per_class=15, seed=4)
    assert not np.array_equal(split.class_order, other.class_order)  # the tail order is drawn per seed


def test_digits_split_is_long_tailed_and_its_test_set_balanced():
    spec = fs.get_dataset("digits_rho100")
    x, y = fs.load_pool(spec.source)
    split = fs.make_split(x, y, spec.ratio, spec.n_max, spec.test_per_class, seed=0)
    train_counts = np.bincount(split.y_train, minlength=10)
    assert train_counts.max() / train_counts.min() == 100
    assert np.bincount(split.y_test).tolist() == [spec.test_per_class] * 10


def test_inverse_frequency_weights_have_mean_one():
    w = fs.inverse_frequency_weights(np.array([100, 50, 10]))
    assert w.mean() == pytest.approx(1.0)
    assert w.tolist() == pytest.approx([3 / 13, 6 / 13, 30 / 13])  # (1/n) / mean(1/n), mean(1/n) = 0.13/3


@pytest.mark.parametrize("ratio", [0.5, -1, float("nan"), float("inf"), True])
def test_bad_ratio_is_a_value_error(ratio):
    with pytest.raises(ValueError, match="imbalance ratio"):
        fs.long_tail_counts(100, ratio, 10)


def test_too_small_class_is_a_value_error():
    y = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match="needs"):
        fs.make_split(np.zeros((30, 2), np.float32), y, ratio=2, n_max=8, test_per_class=5, seed=0)


def test_unknown_arm_or_dataset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown arm 'focal_g3'"):
        fs.get_arm("focal_g3")
    with pytest.raises(ValueError, match="unknown dataset"):
        fs.get_dataset("cifar")
    with pytest.raises(ValueError, match="unknown arm"):
        sq_run.main(["--arms", "ce", "nope", "--out", "/nonexistent"])


# ---------------------------------------------------------------------------------------- prioritized sampler


def test_is_weights_match_the_per_formula():
    losses = np.array([0.5, 2.0, 0.1, 1.0])
    alpha, beta, eps = 0.6, 0.7, 1e-6
    sampler = fs.LossPrioritizedSampler(4, alpha, eps=eps, seed=0)
    sampler.update(np.arange(4), losses)
    idx, weights = sampler.sample(8, beta)
    p = (losses + eps) ** alpha
    prob = p / p.sum()
    w = (4 * prob[idx]) ** (-beta)
    np.testing.assert_allclose(weights, w / w.max(), rtol=1e-12)
    assert weights.max() == 1.0


def test_high_loss_items_are_drawn_in_proportion_to_their_priority():
    losses = np.array([0.1, 0.1, 0.1, 2.0, 0.5])
    sampler = fs.LossPrioritizedSampler(5, alpha=1.0, seed=1)
    sampler.update(np.arange(5), losses)
    draws = np.concatenate([sampler.sample(50, beta=1.0)[0] for _ in range(400)])
    freq = np.bincount(draws, minlength=5) / draws.size
    np.testing.assert_allclose(freq, (losses + 1e-6) / (losses + 1e-6).sum(), atol=0.01)
    assert freq[3] > 5 * freq[0]


def test_unseen_items_sit_at_the_largest_priority_seen():
    sampler = fs.LossPrioritizedSampler(5, alpha=0.5, eps=0.0, seed=0)
    np.testing.assert_allclose(sampler.tree.get(np.arange(5)), 1.0)  # 1.0 before any loss is seen
    sampler.update(np.array([0]), np.array([4.0]))
    np.testing.assert_allclose(sampler.tree.get(np.arange(5)), 2.0)  # 4^0.5, also for the unseen 1..4
    sampler.update(np.array([0, 1]), np.array([0.25, 0.25]))
    np.testing.assert_allclose(sampler.tree.get(np.arange(5)), [0.5, 0.5, 2.0, 2.0, 2.0])


# ------------------------------------------------------------------------------------------------------- OHEM


def test_ohem_backpropagates_exactly_the_k_hardest():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    x = torch.randn(16, 3, requires_grad=True)
    y = torch.randint(0, 4, (16,))
    loss, hard = fs.ohem_loss(model, x, y, k=5)
    loss.backward()
    touched = torch.nonzero(x.grad.abs().sum(1)).squeeze(1)
    assert touched.numel() == 5
    per_sample = torch.nn.functional.cross_entropy(model(x), y, reduction="none").detach()
    assert set(touched.tolist()) == set(torch.topk(per_sample, 5).indices.tolist()) == set(hard.tolist())
    assert loss.item() == pytest.approx(per_sample[hard].mean().item())
    with pytest.raises(ValueError, match="OHEM"):
        fs.ohem_loss(model, x, y, k=17)


# ---------------------------------------------------------------------------------------------------- metrics


def test_metrics_agree_with_sklearn():
    # class 3 is never predicted (F1 = 0 by zero_division), class 2 only wrongly
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    y_pred = np.array([0, 0, 1, 2, 1, 1, 0, 0, 1, 0, 2, 1])
    m = fs.classification_metrics(y_true, y_pred, 4, minority=np.array([2, 3]))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    np.testing.assert_allclose(m["recall"], recall_score(y_true, y_pred, average=None, zero_division=0))
    assert m["recall"].tolist() == pytest.approx([0.5, 2 / 3, 0.0, 0.0])
    assert m["minority_recall"] == 0.0
    assert fs.minority_labels(np.array([7, 1, 4, 0, 2, 9, 3, 8, 6, 5])).tolist() == [8, 6, 5]


# ----------------------------------------------------------------------------------------------- training, CLI


def test_training_is_deterministic_per_seed():
    spec = fs.get_dataset("digits_rho10")
    split = fs.make_split(*fs.load_pool(spec.source), spec.ratio, spec.n_max, spec.test_per_class, seed=0)
    cfg = fs.TrainConfig(steps=20)
    for arm in ["per_a0.6", "ohem", "focal_g2"]:
        a = fs.train_and_evaluate(fs.get_arm(arm), split, cfg, seed=1)
        b = fs.train_and_evaluate(fs.get_arm(arm), split, cfg, seed=1)
        np.testing.assert_array_equal(a["recall"], b["recall"])
        assert a["train_ce"] == b["train_ce"]


def test_quick_run_writes_csv_png_and_command(tmp_path):
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)], check=True, capture_output=True, cwd=ROOT
    )
    with (tmp_path / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(fs.DATASETS) * len(fs.ARMS) * len(sq_run.QUICK_SEEDS)
    assert {f"recall_rank{r}" for r in range(10)} <= set(rows[0])
    assert all(0.0 <= float(r["balanced_accuracy"]) <= 1.0 for r in rows)
    with (tmp_path / "summary.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(fs.DATASETS) * len(fs.ARMS)
    for png in ["metrics.png", "recall_by_rank.png"]:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ce |" in (tmp_path / "summary.md").read_text()
    command = (tmp_path / "command.txt").read_text()
    assert "--quick" in command and "git commit" in command and "wall time" in command
