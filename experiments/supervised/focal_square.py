"""The supervised half of the focal/PER square: reweighting vs resampling a long-tailed training set.

One run = (dataset, arm, seed) -> test metrics. Every arm trains the same MLP with Adam for the same number of
gradient steps on batches of the same size; arms differ only in how a batch is drawn (uniform, loss-prioritized,
OHEM's hardest-k) and how its per-sample losses are weighted (class weights α, focal modulator, IS weights).
The losses all come from ``rlfocal.losses.softmax_focal_loss`` and the prioritized sampler from
``rlfocal.replay.sumtree.SumTree``, so the definitions are the library's (DESIGN.md §1, §3).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from rlfocal.extras import require_extra
from rlfocal.losses import softmax_focal_loss
from rlfocal.replay.sumtree import SumTree


@dataclass(frozen=True)
class Arm:
    """One way of turning a training set into gradient steps."""

    name: str
    sampler: str  # "uniform" | "per" | "ohem"
    gamma: float = 0.0  # focal exponent (0 = cross-entropy)
    class_alpha: bool = False  # weight each class by its normalised inverse frequency
    per_alpha: float = 0.0  # priority exponent of the loss-prioritized sampler
    is_weights: bool = True  # the sampler's IS weights (β 0.4 → 1); False: β = 0, the sampling's full bias kept


ARMS: dict[str, Arm] = {
    a.name: a
    for a in [
        Arm("ce", "uniform"),
        Arm("inv_freq_ce", "uniform", class_alpha=True),
        Arm("focal_g0.5", "uniform", gamma=0.5, class_alpha=True),
        Arm("focal_g1", "uniform", gamma=1.0, class_alpha=True),
        Arm("focal_g2", "uniform", gamma=2.0, class_alpha=True),
        Arm("focal_g5", "uniform", gamma=5.0, class_alpha=True),
        Arm("focal_g1_no_alpha", "uniform", gamma=1.0),
        Arm("focal_g2_no_alpha", "uniform", gamma=2.0),
        Arm("per_a0.6", "per", per_alpha=0.6),
        Arm("per_a1", "per", per_alpha=1.0),
        # the sharp analogue of focal without class weights: for a confident example CE = -log p ≈ 1 - p, so
        # focal's factor (1 - p)^γ ≈ CE^γ, which is what sampling by CE^α without IS weights does in expectation
        # at α = γ (issue 14, item 7)
        Arm("per_a1_beta0", "per", per_alpha=1.0, is_weights=False),
        Arm("per_a2_beta0", "per", per_alpha=2.0, is_weights=False),
        Arm("ohem", "ohem"),
    ]
}


def get_arm(name: str) -> Arm:
    """The arm called ``name``; ValueError listing the known arms otherwise."""
    if name not in ARMS:
        raise ValueError(f"unknown arm {name!r}; known arms: {', '.join(ARMS)}")
    return ARMS[name]


# ------------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DatasetSpec:
    """A long-tailed training set carved out of a balanced pool, plus a balanced test set."""

    name: str
    source: str  # "digits" | "synthetic"
    ratio: float  # imbalance ratio ρ = n_max / n_min of the training set
    n_max: int  # training examples kept of the most frequent class
    test_per_class: int


DATASETS: dict[str, DatasetSpec] = {
    d.name: d
    for d in [
        DatasetSpec("digits_rho10", "digits", 10.0, n_max=100, test_per_class=70),
        DatasetSpec("digits_rho100", "digits", 100.0, n_max=100, test_per_class=70),
        DatasetSpec("synthetic_rho100", "synthetic", 100.0, n_max=500, test_per_class=200),
    ]
}

SYNTHETIC_SEED = 1234  # the synthetic problem is fixed; seeds change only the split, the tail order and training


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def long_tail_counts(n_max: int, ratio: float, num_classes: int) -> np.ndarray:
    """Examples kept per tail rank c = 0..K−1: round(n_max · ρ^(−c/(K−1))), so the head keeps n_max, the tail n_max/ρ.

    Cui et al. 2019 / Cao et al. 2019's exponential profile ("long-tailed CIFAR"). Every class keeps at least one.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 1:
        raise ValueError(f"imbalance ratio must be a finite number >= 1, got {ratio!r}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    ranks = np.arange(num_classes)
    return np.maximum(1, np.round(n_max * ratio ** (-ranks / (num_classes - 1)))).astype(np.int64)


@dataclass
class Split:
    x_train: np.ndarray  # float32 [N, D], standardised with training statistics
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray
    y_test: np.ndarray
    class_order: np.ndarray  # labels from most to least frequent in training (tail rank -> label)
    counts: np.ndarray  # training examples per label


def load_pool(source: str) -> tuple[np.ndarray, np.ndarray]:
    """The balanced pool that a split is cut from (bundled or generated; never downloaded)."""
    require_extra("sklearn", "supervised", "the supervised study")
    from sklearn.datasets import load_digits, make_classification

    if source == "digits":
        x, y = load_digits(return_X_y=True)  # 1797 8×8 images, 174-183 per class, shipped with scikit-learn
        return x.astype(np.float32), y.astype(np.int64)
    if source == "synthetic":
        x, y = make_classification(
            n_samples=8000,
            n_features=20,
            n_informative=10,
            n_redundant=4,
            n_classes=10,
            n_clusters_per_class=1,
            class_sep=1.5,
            flip_y=0.01,
            random_state=SYNTHETIC_SEED,
        )
        return x.astype(np.float32), y.astype(np.int64)
    raise ValueError(f"unknown data source {source!r}; known: digits, synthetic")


def make_split(x: np.ndarray, y: np.ndarray, ratio: float, n_max: int, test_per_class: int, seed: int) -> Split:
    """Hold out ``test_per_class`` of every class first, then subsample the rest of each class to a long tail.

    The tail order (which label is rarest) is a fresh permutation per seed, so results average over which digit
    is rare rather than describing one arbitrary choice.
    """
    rng = np.random.default_rng(seed)
    labels = np.unique(y)
    counts = long_tail_counts(n_max, ratio, len(labels))
    class_order = rng.permutation(labels)
    train_idx, test_idx = [], []
    for rank, label in enumerate(class_order):
        idx = rng.permutation(np.flatnonzero(y == label))
        if len(idx) < test_per_class + counts[rank]:
            raise ValueError(f"class {label} has {len(idx)} examples; needs {test_per_class} test + {counts[rank]}")
        test_idx.append(idx[:test_per_class])
        train_idx.append(idx[test_per_class : test_per_class + counts[rank]])
    train_idx, test_idx = rng.permutation(np.concatenate(train_idx)), np.concatenate(test_idx)
    mean, std = x[train_idx].mean(0), x[train_idx].std(0)
    std[std == 0] = 1.0  # digits has always-blank pixels
    standardise = lambda a: ((a - mean) / std).astype(np.float32)
    label_counts = np.zeros(len(labels), dtype=np.int64)
    label_counts[class_order] = counts
    return Split(
        standardise(x[train_idx]), y[train_idx], standardise(x[test_idx]), y[test_idx], class_order, label_counts
    )


def inverse_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """Per-class weights ∝ 1/n_c, normalised to mean 1 over classes."""
    w = 1.0 / np.asarray(counts, dtype=np.float64)
    return w * len(w) / w.sum()


# --------------------------------------------------------------------------------------------------- samplers


class LossPrioritizedSampler:
    """PER for a fixed training set (Schaul et al. 2016, DESIGN.md §1) with the per-sample loss in place of |δ|.

    P(i) ∝ (loss_i + ε)^α, stratified over B segments; IS weights (N·P(i))^(−β) divided by the batch max. Items
    never sampled yet sit at the largest (loss + ε) seen so far (1.0 before any), as new transitions do in PER.
    """

    def __init__(self, n: int, alpha: float, eps: float = 1e-6, seed: int = 0) -> None:
        if not alpha >= 0:
            raise ValueError(f"priority exponent alpha must be >= 0, got {alpha!r}")
        self.n, self.alpha, self.eps = n, alpha, eps
        self.tree = SumTree(n, track_min=False)
        self.rng = np.random.default_rng(seed)
        self.max_raw = 1.0
        self.unseen = np.ones(n, dtype=bool)
        self.tree.update(np.arange(n), np.full(n, self.max_raw**alpha))

    def sample(self, batch_size: int, beta: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices [B] and their batch-max-normalised IS weights [B]."""
        idx, prio = self.tree.sample_stratified(self.rng.random(batch_size))
        weights = (self.n * prio / self.tree.total) ** (-beta)
        return idx, weights / weights.max()

    def update(self, idx: np.ndarray, losses: np.ndarray) -> None:
        """Refresh the priorities of a sampled batch from its per-sample losses (computed before the step)."""
        raw = np.asarray(losses, dtype=np.float64) + self.eps
        self.tree.update(idx, raw**self.alpha)
        self.unseen[idx] = False
        if raw.max() > self.max_raw:
            self.max_raw = float(raw.max())
            rest = np.flatnonzero(self.unseen)
            if rest.size:
                self.tree.update(rest, np.full(rest.size, self.max_raw**self.alpha))


def ohem_loss(model: nn.Module, x: Tensor, y: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Online hard example mining (Shrivastava, Gupta & Girshick 2016, https://arxiv.org/abs/1604.03540).

    Forwards the whole candidate batch without a graph, keeps the k largest cross-entropy losses and
    back-propagates through those k only. Returns (mean loss of the k, their indices into the candidates).
    """
    if not 1 <= k <= len(y):
        raise ValueError(f"OHEM keeps k in [1, {len(y)}] of the candidates, got k={k}")
    with torch.no_grad():
        candidate_loss = softmax_focal_loss(model(x), y, gamma=0.0, reduction="none")
    hard = torch.topk(candidate_loss, k).indices
    return softmax_focal_loss(model(x[hard]), y[hard], gamma=0.0, reduction="mean"), hard


# ---------------------------------------------------------------------------------------------------- metrics


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, minority: np.ndarray) -> dict:
    """Balanced accuracy, macro-F1, per-class recall and the mean recall of the ``minority`` labels.

    Same definitions as sklearn.metrics (balanced_accuracy_score, f1_score(average="macro", zero_division=0)).
    """
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "balanced_accuracy": float(recall[support > 0].mean()),
        "macro_f1": float(f1.mean()),
        "minority_recall": float(recall[minority].mean()),
        "recall": recall,
    }


def balanced_recall(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    return classification_metrics(y_true, y_pred, num_classes, np.arange(num_classes))["balanced_accuracy"]


def minority_labels(class_order: np.ndarray, fraction: float = 0.3) -> np.ndarray:
    """The rarest ⌈fraction·K⌉ labels of the training set (3 of 10 classes at the default)."""
    return class_order[len(class_order) - math.ceil(fraction * len(class_order)) :]


# --------------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # gradient steps, the same for every arm
    batch_size: int = 64  # examples back-propagated per step
    lr: float = 1e-3  # Adam step size
    hidden: int = 64  # width of the one hidden layer
    ohem_candidates: int = 4  # OHEM forwards batch_size × this and keeps the hardest batch_size
    beta0: float = 0.4  # IS exponent at step 0, annealed linearly to 1 at the last step (PER)


def make_mlp(in_dim: int, num_classes: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def train_and_evaluate(arm: Arm, split: Split, cfg: TrainConfig, seed: int) -> dict:
    """Train one MLP with ``arm`` on ``split.x_train`` and return its test metrics."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed + 10_000)
    num_classes = len(split.counts)
    x, y = torch.from_numpy(split.x_train), torch.from_numpy(split.y_train)
    n = len(y)
    alpha = torch.as_tensor(inverse_frequency_weights(split.counts), dtype=torch.float32) if arm.class_alpha else None
    model = make_mlp(x.shape[1], num_classes, cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = LossPrioritizedSampler(n, arm.per_alpha, seed=seed + 20_000) if arm.sampler == "per" else None
    start = time.perf_counter()

    for step in range(cfg.steps):
        if arm.sampler == "ohem":
            idx = rng.integers(n, size=cfg.batch_size * cfg.ohem_candidates)
            loss, _ = ohem_loss(model, x[idx], y[idx], cfg.batch_size)
        else:
            if sampler is not None:
                beta = cfg.beta0 + (1.0 - cfg.beta0) * step / max(1, cfg.steps - 1) if arm.is_weights else 0.0
                idx, is_weights = sampler.sample(cfg.batch_size, beta)
                weights = torch.as_tensor(is_weights, dtype=torch.float32)
            else:
                idx, weights = rng.integers(n, size=cfg.batch_size), None
            per_sample = softmax_focal_loss(model(x[idx]), y[idx], gamma=arm.gamma, alpha=alpha, reduction="none")
            # A plain batch mean of the weighted per-sample losses: an unbiased estimate of the reweighted risk
            # (torch's weighted-CE "mean" would divide by the batch's sum of α instead).
            loss = (per_sample if weights is None else weights * per_sample).mean()
            if sampler is not None:
                # as in PER, the learn step's own errors (raw CE, not IS-weighted) become the new priorities
                sampler.update(idx, per_sample.detach().numpy())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        y_pred = model(torch.from_numpy(split.x_test)).argmax(1).numpy()
        train_logits = model(x)
        train_ce = softmax_focal_loss(train_logits, y, gamma=0.0).item()
        train_balanced_accuracy = balanced_recall(split.y_train, train_logits.argmax(1).numpy(), num_classes)
    metrics = classification_metrics(split.y_test, y_pred, num_classes, minority_labels(split.class_order))
    metrics.update(
        train_ce=train_ce, train_balanced_accuracy=train_balanced_accuracy, train_seconds=time.perf_counter() - start
    )
    return metrics
