"""TD and supervised focal losses against independent float64 references (numpy, and the authors' code transcribed).

Gradients are per sample: every loss is elementwise in δ apart from detached batch statistics, so the gradient of
``loss.sum()`` with respect to ``td`` is the vector of dℓ_i/dδ_i.
"""

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import expit, log_softmax, softplus

from agents.captured import CaptureCheck
from rlfocal.losses import (
    TD_LOSSES,
    RunningMean,
    focal_td,
    huber,
    lap,
    mirror,
    mse,
    pal,
    sigmoid_focal_loss,
    softmax_focal_loss,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def td_batch(seed: int = 0, n: int = 48) -> np.ndarray:
    """Random TD errors plus the hard cases: 0, tiny, the Huber kink at ±1, and ±100."""
    rng = np.random.default_rng(seed)
    special = [0.0, 1e-9, -1e-9, 1e-4, 1.0, -1.0, 100.0, -100.0]
    return np.concatenate([special, rng.normal(scale=3.0, size=n - len(special))])


def value_and_grad(fn, td: np.ndarray, dtype=torch.float64, device="cpu", **kwargs):
    x = torch.tensor(td, dtype=dtype, device=device, requires_grad=True)
    out = fn(x, **kwargs)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return out.detach().cpu().double().numpy(), grad.cpu().double().numpy()


# ------------------------------------------------------------------------------------------- numpy references


def ref_base(d: np.ndarray, base: str = "huber", kappa: float = 1.0):
    """Base loss L(δ) and dL/dδ."""
    if base == "mse":
        return 0.5 * d**2, d
    a = np.abs(d)
    return np.where(a <= kappa, 0.5 * d**2, kappa * (a - kappa / 2)), np.where(a <= kappa, d, kappa * np.sign(d))


def ref_focal(d, gamma=2.0, tau=1.0, base="huber", kappa=1.0, normalize=False, max_weight=None, detach=False):
    """Focal-TD value and per-sample gradient (batch mean of m held constant, as the implementation detaches it)."""
    loss, dloss = ref_base(d, base, kappa)
    u = -np.expm1(-loss / tau)
    m = u**gamma
    # L·dm/dL = γ·u^γ·(L/τ)/u·exp(−L/τ); (L/τ)/u → 1 as L → 0, which also covers γ < 1 at δ = 0.
    ratio = np.divide(loss / tau, u, out=np.ones_like(u), where=u > 0)
    dfl = m * dloss if detach else (m + gamma * m * ratio * np.exp(-loss / tau)) * dloss
    weight = m
    if normalize:
        weight, dfl = m / m.mean(), dfl / m.mean()
    if max_weight is not None:
        clipped = weight > max_weight
        weight, dfl = np.minimum(weight, max_weight), np.where(clipped, max_weight * dloss, dfl)
    return weight * loss, dfl


def ref_lap(d, m):
    """sfujim/LAP-PAL ``huber`` (called on |δ|): 0.5x² if x < m else m·x; and its derivative in δ."""
    a = np.abs(d)
    return np.where(a < m, 0.5 * a**2, m * a), np.where(a < m, d, m * np.sign(d))


def ref_pal(d, alpha, m):
    """sfujim/LAP-PAL ``PAL`` per sample, divided by the batch mean of max(|δ|, m)^α; and its derivative in δ."""
    a = np.abs(d)
    value = np.where(a < m, m**alpha * 0.5 * a**2, m * a ** (1 + alpha) / (1 + alpha))
    prio = np.maximum(a, m) ** alpha
    return value / prio.mean(), prio * ref_lap(d, m)[1] / prio.mean()


# -------------------------------------------------------------------------------------------- huber, mse, lap


@pytest.mark.parametrize(
    ("delta", "kappa", "expected", "slope"),
    [
        pytest.param(0.5, 1.0, 0.125, 0.5, id="BelowKappa"),
        pytest.param(-3.0, 1.0, 2.5, -1.0, id="AboveKappa"),
        pytest.param(1.0, 1.0, 0.5, 1.0, id="AtKappa"),
        pytest.param(3.0, 2.0, 4.0, 2.0, id="AboveKappa2"),
    ],
)
def test_huber_hand_values(delta, kappa, expected, slope):
    value, grad = value_and_grad(huber, np.array([delta]), kappa=kappa)
    assert value.tolist() == [expected] and grad.tolist() == [slope]


@pytest.mark.parametrize("base", ["huber", "mse"])
def test_base_losses_match_reference(base):
    d = td_batch()
    value, grad = value_and_grad(TD_LOSSES[base], d)
    ref_value, ref_grad = ref_base(d, base)
    np.testing.assert_allclose(value, ref_value, rtol=1e-14, atol=0)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-14, atol=0)


@pytest.mark.parametrize("m", [1.0, 0.01, 2.5])
def test_lap_matches_authors_huber(m):
    d = np.concatenate([td_batch(), [m, -m, 0.5 * m]])
    value, grad = value_and_grad(lap, d, min_priority=m)
    ref_value, ref_grad = ref_lap(d, m)
    np.testing.assert_allclose(value, ref_value, rtol=1e-14, atol=0)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-14, atol=0)
    # The authors' Huber: same gradient as huber(κ = m), value higher by m²/2 on |δ| >= m (DESIGN.md says huber(κ=m)).
    h_value, h_grad = value_and_grad(huber, d, kappa=m)
    np.testing.assert_allclose(grad, h_grad, rtol=1e-14, atol=0)
    np.testing.assert_allclose(value - h_value, np.where(np.abs(d) >= m, 0.5 * m**2, 0.0), rtol=1e-9, atol=1e-9)


def test_lap_batch_mean_equals_authors_torch_code():
    """LAP_DDQN.train: td_loss = (current_Q - target_Q).abs(); Q_loss = self.huber(td_loss)."""
    m = 0.01
    td = torch.tensor(td_batch(1), requires_grad=True)
    x = td.abs()
    authors = torch.where(x < m, 0.5 * x.pow(2), m * x).mean()
    ours = lap(td, min_priority=m).mean()
    torch.testing.assert_close(ours, authors, rtol=1e-14, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ours, td)[0], torch.autograd.grad(authors, td)[0])


# ---------------------------------------------------------------------------------------------------- focal-TD


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("base", ["huber", "mse"])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("detach", [False, True])
def test_focal_gamma_zero_is_the_base_loss_exactly(base, normalize, detach, device):
    td = torch.tensor(td_batch(), dtype=torch.float32, device=device, requires_grad=True)
    out = focal_td(td, gamma=0.0, tau=0.3, base=base, normalize=normalize, detach_modulator=detach)
    plain = TD_LOSSES[base](td)
    assert torch.equal(out, plain)
    assert torch.equal(torch.autograd.grad(out.sum(), td)[0], torch.autograd.grad(plain.sum(), td)[0])


@pytest.mark.parametrize("base", ["huber", "mse"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("tau", [1.0, 0.25, 7.0])
def test_focal_matches_reference(base, gamma, tau):
    d = td_batch(2)
    value, grad = value_and_grad(focal_td, d, gamma=gamma, tau=tau, base=base)
    ref_value, ref_grad = ref_focal(d, gamma, tau, base)
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-300)


def test_focal_reference_gradient_matches_finite_differences():
    """Check the analytic reference itself, away from 0 and the Huber kink."""
    d = np.array([-3.0, -0.7, -0.2, 0.05, 0.4, 0.9, 2.5, 12.0])
    h = 1e-6
    for base in ("huber", "mse"):
        for gamma, tau in [(0.5, 1.0), (2.0, 0.5), (1.0, 3.0)]:
            fd = (ref_focal(d + h, gamma, tau, base)[0] - ref_focal(d - h, gamma, tau, base)[0]) / (2 * h)
            np.testing.assert_allclose(ref_focal(d, gamma, tau, base)[1], fd, rtol=1e-6, atol=1e-9)


def test_focal_tensor_tau_equals_float_tau():
    td = torch.tensor(td_batch(3))
    torch.testing.assert_close(focal_td(td, tau=torch.tensor(0.7, dtype=torch.float64)), focal_td(td, tau=0.7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [2.0, 0.5, 1.0])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_focal_small_loss_is_loss_power(dtype, gamma, tau):
    """With the MSE base, FL = L·(1 − e^(−L/τ))^γ ≈ L^(1+γ)/τ^γ as δ → 0: the ratio tends to 1.

    The smallest δ puts L/τ far below float epsilon, where a naive 1 − exp(−L/τ) would round to 0.
    """
    deltas = [1e-1, 1e-2, 1e-3, 1e-4] if dtype == torch.float32 else [1e-1, 1e-2, 1e-4, 1e-6, 1e-10]
    td = torch.tensor(deltas, dtype=dtype)
    loss = mse(td).double()
    ratio = (focal_td(td, gamma=gamma, tau=tau, base="mse").double() / (loss ** (1 + gamma) / tau**gamma)).numpy()
    gap = np.abs(ratio - 1)
    assert (np.diff(gap) <= 1e-6).all()  # shrinks towards 0
    assert gap[-1] < (1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("options", [{}, {"normalize": True}, {"base": "mse"}, {"normalize": True, "max_weight": 2.0}])
def test_focal_gradient_finite_at_zero(device, dtype, gamma, options):
    td = torch.tensor([0.0, -0.0, 1e-30, 3.0, -100.0], dtype=dtype, device=device, requires_grad=True)
    out = focal_td(td, gamma=gamma, **options)
    (grad,) = torch.autograd.grad(out.sum(), td)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert grad[0].item() == 0.0 and grad[1].item() == 0.0


def test_detach_modulator_changes_gradient_not_value():
    d = td_batch(4)
    value, grad = value_and_grad(focal_td, d, gamma=2.0, tau=2.0)
    value_d, grad_d = value_and_grad(focal_td, d, gamma=2.0, tau=2.0, detach_modulator=True)
    np.testing.assert_array_equal(value, value_d)
    assert not np.allclose(grad, grad_d)
    np.testing.assert_allclose(grad_d, ref_focal(d, 2.0, 2.0, detach=True)[1], rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("detach", [False, True])
def test_normalize_gives_weights_of_batch_mean_one(detach):
    d = td_batch(5)[2:]  # no exact zeros, so weight = FL / L is defined everywhere
    td = torch.tensor(d)
    weight = focal_td(td, gamma=2.0, normalize=True, detach_modulator=detach) / huber(td)
    assert abs(weight.mean().item() - 1.0) < 1e-12
    value, grad = value_and_grad(focal_td, d, gamma=2.0, normalize=True, detach_modulator=detach)
    ref_value, ref_grad = ref_focal(d, 2.0, normalize=True, detach=detach)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize(("normalize", "max_weight"), [(True, 1.5), (True, 0.5), (False, 0.3)])
def test_focal_max_weight_clips(normalize, max_weight):
    d = td_batch(6)[2:]
    td = torch.tensor(d)
    weight = focal_td(td, gamma=2.0, normalize=normalize, max_weight=max_weight) / huber(td)
    unclipped = focal_td(td, gamma=2.0, normalize=normalize) / huber(td)
    assert (unclipped > max_weight).any() and (unclipped < max_weight).any()
    torch.testing.assert_close(weight, unclipped.clamp(max=max_weight), rtol=1e-12, atol=0)
    value, grad = value_and_grad(focal_td, d, gamma=2.0, normalize=normalize, max_weight=max_weight)
    ref_value, ref_grad = ref_focal(d, 2.0, normalize=normalize, max_weight=max_weight)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-10, atol=1e-300)


def test_running_mean_for_tau_auto():
    rm = RunningMean(momentum=0.9)
    with pytest.raises(RuntimeError, match="before the first update"):
        _ = rm.value
    assert rm.update(torch.tensor([1.0, 3.0])) == 2.0
    assert rm.update(torch.tensor([12.0])) == pytest.approx(0.9 * 2.0 + 0.1 * 12.0)
    assert RunningMean().update(torch.zeros(4)) == 1e-8  # floored: always a valid tau
    td = torch.randn(16)
    focal_td(td, tau=rm.update(huber(td)))
    lanes = RunningMean(momentum=0.5)
    lanes.update(torch.tensor([1.0, 4.0]), lanes=True)
    torch.testing.assert_close(lanes.update(torch.tensor([3.0, 0.0]), lanes=True), torch.tensor([2.0, 2.0]).double())


def test_running_mean_stays_on_the_device_and_updates_in_place():
    """No host read (a CUDA graph can hold the update) and the same memory throughout (the graph writes there)."""
    rm = RunningMean(momentum=0.9)
    rm.update(torch.tensor([1.0, 3.0]))
    memory = rm._mean.data_ptr()
    with CaptureCheck():
        for x in ([5.0], [0.5, 0.25]):
            rm.update(torch.tensor(x))
    assert rm._mean.data_ptr() == memory and rm.value.dtype == torch.float64
    m, w = 0.9, 1.0 - 0.9
    expected = m * (m * 2.0 + w * 5.0) + w * 0.375  # the float64 arithmetic of a host-side mean, in its order
    assert float(rm.value) == expected


# ------------------------------------------------------------------------------------------------ mirror, PAL


@pytest.mark.parametrize("base", ["huber", "mse"])
@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("max_weight", [None, 1.5])
def test_mirror_value_and_gradient(base, alpha, max_weight):
    d, eps = td_batch(7), 1e-6
    value, grad = value_and_grad(mirror, d, alpha=alpha, eps=eps, base=base, max_weight=max_weight)
    loss, dloss = ref_base(d, base)
    p = (np.abs(d) + eps) ** alpha
    weight = p / p.mean() if max_weight is None else np.minimum(p / p.mean(), max_weight)
    np.testing.assert_allclose(value, weight * loss, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, weight * dloss, rtol=1e-12, atol=0)


@pytest.mark.parametrize(("alpha", "m"), [(0.4, 1.0), (0.6, 0.01), (0.0, 1.0), (1.0, 2.0)])
def test_pal_matches_authors_formula(alpha, m):
    d = np.concatenate([td_batch(8), [m, -m]])
    value, grad = value_and_grad(pal, d, alpha=alpha, min_priority=m)
    ref_value, ref_grad = ref_pal(d, alpha, m)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=0)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=0)


def test_pal_batch_mean_equals_authors_torch_code():
    """PAL_DDQN.train and PAL, transcribed: td_loss = |Q − y|; PAL(td_loss) / mean(clamp(td_loss, m)^α)."""
    alpha, m = 0.6, 0.01
    td = torch.tensor(td_batch(9), requires_grad=True)
    x = td.abs()
    weight = x.clamp(min=m).pow(alpha).mean().detach()
    authors = torch.where(x.abs() < m, (m**alpha) * 0.5 * x.pow(2), m * x.abs().pow(1.0 + alpha) / (1.0 + alpha))
    authors = authors.mean() / weight.detach()
    ours = pal(td, alpha=alpha, min_priority=m).mean()
    torch.testing.assert_close(ours, authors, rtol=1e-13, atol=0)
    torch.testing.assert_close(torch.autograd.grad(ours, td)[0], torch.autograd.grad(authors, td)[0])


def test_pal_max_weight_clips_the_implicit_weight():
    alpha, m, cap = 0.6, 0.5, 1.2
    d = td_batch(10)
    _, grad = value_and_grad(pal, d, alpha=alpha, min_priority=m, max_weight=cap)
    value, _ = value_and_grad(pal, d, alpha=alpha, min_priority=m)
    value_c, _ = value_and_grad(pal, d, alpha=alpha, min_priority=m, max_weight=cap)
    prio = np.maximum(np.abs(d), m) ** alpha
    weight = prio / prio.mean()
    assert (weight > cap).any()
    np.testing.assert_allclose(grad, np.minimum(weight, cap) * ref_lap(d, m)[1], rtol=1e-12, atol=0)
    np.testing.assert_allclose(value_c, value * np.minimum(1.0, cap / weight), rtol=1e-12, atol=0)


def linear_td(seed: int, n: int = 40, k: int = 5):
    """A buffer of n transitions with TD errors δ = y − Xθ of a linear Q-function; θ requires grad."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(n, k)))
    y = torch.tensor(rng.standard_t(df=2, size=n) * 2.0)
    theta = torch.tensor(rng.normal(size=k), requires_grad=True)
    return y - x @ theta, theta


@pytest.mark.parametrize("seed", [0, 1])
def test_pal_expected_gradient_equals_lap_under_lap_sampling(seed):
    """Fujimoto et al. 2020, Thm 1, over a whole buffer: E_uniform[∇PAL] = E_{P ∝ max(|δ|, m)^α}[∇lap]."""
    alpha, m = 0.4, 1.0
    td, theta = linear_td(seed)
    (g_uniform,) = torch.autograd.grad(pal(td, alpha=alpha, min_priority=m).mean(), theta)
    td, theta = linear_td(seed)
    prio = td.detach().abs().clamp_min(m) ** alpha
    (g_lap,) = torch.autograd.grad((prio / prio.sum() * lap(td, min_priority=m)).sum(), theta)
    torch.testing.assert_close(g_uniform, g_lap, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_mirror_expected_gradient_equals_per_without_is(seed):
    """Fujimoto et al. 2020, Thm 1, over a whole buffer: E_uniform[∇mirror] = E_{P ∝ (|δ|+ε)^α}[∇L] (PER, β = 0)."""
    alpha, eps = 0.6, 1e-6
    td, theta = linear_td(seed)
    (g_uniform,) = torch.autograd.grad(mirror(td, alpha=alpha, eps=eps).mean(), theta)
    td, theta = linear_td(seed)
    prio = (td.detach().abs() + eps) ** alpha
    (g_per,) = torch.autograd.grad((prio / prio.sum() * huber(td)).sum(), theta)
    torch.testing.assert_close(g_uniform, g_per, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------- all TD losses


def _all_td_losses(td: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    return torch.stack(
        [
            huber(td),
            huber(td, kappa=2.0),
            mse(td),
            focal_td(td),
            focal_td(td, gamma=0.5, tau=tau, base="mse"),
            focal_td(td, gamma=1.0, normalize=True, max_weight=2.0),
            focal_td(td, detach_modulator=True, normalize=True),
            mirror(td),
            mirror(td, alpha=1.0, base="mse", max_weight=1.5),
            pal(td),
            pal(td, alpha=0.6, min_priority=0.01, max_weight=2.0),
            lap(td),
            lap(td, min_priority=0.01),
        ]
    )


@pytest.mark.parametrize("name", sorted(TD_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_td_loss_is_per_sample_and_finite(name, dtype):
    td = torch.tensor(td_batch(11), dtype=dtype, requires_grad=True)
    out = TD_LOSSES[name](td)
    (grad,) = torch.autograd.grad(out.sum(), td)
    assert out.shape == td.shape and out.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(grad).all() and (out >= 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_td_losses_under_torch_compile(device):
    """Every TD loss, compiled in one graph, against eager: values and gradients.

    One graph keeps this cheap: ~4 s with a warm inductor cache, ~20 s cold (mostly inductor's fixed start-up).
    Graph breaks fail the test (fullgraph=True); only a missing backend or a > 60 s compile skips it.
    """
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is not supported on this Python/torch build")
    td = torch.tensor(td_batch(12), dtype=torch.float32, device=device)
    tau = torch.tensor(0.8, device=device)
    compiled = torch.compile(_all_td_losses, fullgraph=True)
    start = time.perf_counter()
    try:
        x = td.clone().requires_grad_()
        out = compiled(x, tau)
        (grad,) = torch.autograd.grad(out.sum(), x)
    except torch._dynamo.exc.BackendCompilerFailed as err:  # e.g. no C++ compiler for inductor on this machine
        pytest.skip(f"torch.compile backend unavailable: {type(err).__name__}: {str(err)[:200]}")
    if time.perf_counter() - start > 60:
        pytest.skip("torch.compile took more than 60 s on this machine")
    x = td.clone().requires_grad_()
    ref = _all_td_losses(x, tau)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ sigmoid focal loss


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss (torchvision/ops/focal_loss.py), transcribed."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def ref_sigmoid_focal(x, y, alpha, gamma):
    """Stable numpy value and derivative for hard labels: with z = x (y = 0) or −x (y = 1),
    loss = a·softplus(z)·σ(z)^γ and dloss/dz = a·σ(z)^γ·(σ(z) + γ·softplus(z)·σ(−z))."""
    z = np.where(y == 1, -x, x)
    a = 1.0 if alpha < 0 else np.where(y == 1, alpha, 1 - alpha)
    value = a * softplus(z) * expit(z) ** gamma
    dz = a * expit(z) ** gamma * (expit(z) + gamma * softplus(z) * expit(-z))
    return value, np.where(y == 1, -dz, dz)


def test_sigmoid_and_softmax_reference_gradients_match_finite_differences():
    """Check the analytic references themselves."""
    h = 1e-6
    x = np.array([-4.0, -0.5, 0.2, 1.5, 6.0])
    for y in (np.zeros_like(x), np.ones_like(x)):
        for gamma in (0.0, 0.5, 2.0):
            fd = (ref_sigmoid_focal(x + h, y, 0.25, gamma)[0] - ref_sigmoid_focal(x - h, y, 0.25, gamma)[0]) / (2 * h)
            np.testing.assert_allclose(ref_sigmoid_focal(x, y, 0.25, gamma)[1], fd, rtol=1e-6, atol=1e-10)
    logits, target = logits_batch(b=4)
    logits = np.clip(logits, -5, 5)
    for gamma, weights in [(0.5, None), (2.0, [0.5, 2.0, 1.0, 0.25, 3.0])]:
        grad = ref_softmax_focal(logits, target, gamma, weights)[1]
        for k in range(logits.shape[1]):
            step = np.zeros_like(logits)
            step[:, k] = h
            up = ref_softmax_focal(logits + step, target, gamma, weights)[0]
            down = ref_softmax_focal(logits - step, target, gamma, weights)[0]
            np.testing.assert_allclose(grad[:, k], (up - down) / (2 * h), rtol=1e-6, atol=1e-8)


LOGITS = np.array([-100.0, -30.0, -5.0, -0.3, 0.0, 0.3, 5.0, 30.0, 100.0])


@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_matches_stable_reference(alpha, gamma):
    x = np.concatenate([LOGITS, LOGITS])
    y = np.concatenate([np.zeros_like(LOGITS), np.ones_like(LOGITS)])
    xt = torch.tensor(x, requires_grad=True)
    out = sigmoid_focal_loss(xt, torch.tensor(y), alpha=alpha, gamma=gamma)
    (grad,) = torch.autograd.grad(out.sum(), xt)
    ref_value, ref_grad = ref_sigmoid_focal(x, y, alpha, gamma)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    # torch's BCE-with-logits computes log(1 + e^(−|x|)) without log1p and its gradient as σ(x) − y, so values and
    # gradients below ~1e-13 are right to ~1e-15 absolute, not relative.
    np.testing.assert_allclose(out.detach().numpy(), ref_value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.25, -1.0, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 0.5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_equals_torchvision_formula(alpha, gamma, reduction):
    rng = np.random.default_rng(13)
    x = torch.tensor(np.concatenate([[-100.0, 100.0, -100.0, 100.0], rng.normal(scale=4.0, size=(28,))]))
    y = torch.tensor(np.concatenate([[0.0, 0.0, 1.0, 1.0], rng.integers(0, 2, 20), rng.uniform(size=8)]))
    ours = sigmoid_focal_loss(x.view(4, 8), y.view(4, 8), alpha=alpha, gamma=gamma, reduction=reduction)
    theirs = torchvision_sigmoid_focal_loss(x.view(4, 8), y.view(4, 8), alpha=alpha, gamma=gamma, reduction=reduction)
    # The literal 1 − σ(x) loses relative accuracy as σ(x) → 1; absolute agreement is what is comparable there.
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)
    if gamma >= 1.0:  # the literal formula's own gradient is finite here (not for γ < 1 at |x| = 100)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        (ga,) = torch.autograd.grad(sigmoid_focal_loss(xa, y, alpha, gamma).sum(), xa)
        (gb,) = torch.autograd.grad(torchvision_sigmoid_focal_loss(xb, y, alpha, gamma).sum(), xb)
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_float32_gradients_finite_at_100(gamma):
    x = torch.tensor(LOGITS, dtype=torch.float32, requires_grad=True)
    for y in (torch.zeros_like(x), torch.ones_like(x), torch.full_like(x, 0.3)):
        out = sigmoid_focal_loss(x, y, gamma=gamma, reduction="sum")
        (grad,) = torch.autograd.grad(out, x)
        assert torch.isfinite(out) and torch.isfinite(grad).all()


# ------------------------------------------------------------------------------------------ softmax focal loss


def ref_softmax_focal(logits, target, gamma, weights=None):
    """Per-sample value and d/dlogits, numpy float64: −w_t(1 − p_t)^γ log p_t."""
    logp = log_softmax(logits, axis=1)
    rows = np.arange(len(target))
    logp_t = logp[rows, target]
    p_t, q = np.exp(logp_t), -np.expm1(logp_t)
    w = np.ones(len(target)) if weights is None else np.asarray(weights)[target]
    value = -w * q**gamma * logp_t
    # dℓ/dlog p_t = −w[(1 − p)^γ − γ(1 − p)^(γ−1)·p·log p_t]; the second term → 0 as q → 0.
    second = np.divide(gamma * q**gamma * p_t * logp_t, q, out=np.zeros_like(q), where=q > 0)
    dlogp = -w * (q**gamma - second)
    onehot = np.zeros_like(logits)
    onehot[rows, target] = 1.0
    return value, dlogp[:, None] * (onehot - np.exp(logp))


def logits_batch(seed=14, b=12, c=5):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(b, c))
    logits[0] = [100.0, -100.0, 0.0, 3.0, -3.0]
    logits[1] = [-100.0, 100.0, 100.0, -100.0, 0.0]
    target = rng.integers(0, c, size=b)
    target[0], target[1] = 0, 3  # confident right; confidently wrong
    return logits, target


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 0.25, 3.0]])
def test_softmax_focal_gamma_zero_is_cross_entropy(reduction, ignore_index, weights):
    logits, target = logits_batch()
    logits, target = torch.tensor(logits, requires_grad=True), torch.tensor(target)
    target[[4, 7]] = ignore_index
    alpha = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    ours = softmax_focal_loss(logits, target, gamma=0.0, alpha=weights, ignore_index=ignore_index, reduction=reduction)
    ce = F.cross_entropy(logits, target, weight=alpha, ignore_index=ignore_index, reduction=reduction)
    torch.testing.assert_close(ours, ce, rtol=1e-13, atol=0)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ce,) = torch.autograd.grad(ce.sum(), logits)
    torch.testing.assert_close(g_ours, g_ce, rtol=1e-12, atol=1e-15)


def test_softmax_focal_all_ignored_is_nan_like_cross_entropy():
    logits, target = torch.zeros(3, 4), torch.full((3,), -100)
    assert math.isnan(softmax_focal_loss(logits, target).item())
    assert math.isnan(F.cross_entropy(logits, target).item())


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 0.25, 3.0]])
def test_softmax_focal_matches_reference_and_is_finite_at_100(gamma, weights):
    logits, target = logits_batch()
    lt = torch.tensor(logits, requires_grad=True)
    out = softmax_focal_loss(lt, torch.tensor(target), gamma=gamma, alpha=weights, reduction="none")
    (grad,) = torch.autograd.grad(out.sum(), lt)
    ref_value, ref_grad = ref_softmax_focal(logits, target, gamma, weights)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    np.testing.assert_allclose(out.detach().numpy(), ref_value, rtol=1e-12, atol=1e-300)
    # Where p_t rounds to 1 the floor under 1 − p_t leaves gradients ~1e-197 where the reference has exact zeros.
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-150)
    lt32 = torch.tensor(logits, dtype=torch.float32, requires_grad=True)
    out32 = softmax_focal_loss(lt32, torch.tensor(target), gamma=gamma, alpha=weights)
    (grad32,) = torch.autograd.grad(out32, lt32)
    assert torch.isfinite(out32) and torch.isfinite(grad32).all()


def test_softmax_focal_mean_normaliser_is_sum_of_alpha_t():
    logits, target = logits_batch()
    weights = [0.5, 2.0, 1.0, 0.25, 3.0]
    lt, tt = torch.tensor(logits), torch.tensor(target)
    tt[3] = -100
    per_sample = softmax_focal_loss(lt, tt, gamma=2.0, alpha=weights, reduction="none")
    mean = softmax_focal_loss(lt, tt, gamma=2.0, alpha=weights, reduction="mean")
    valid = tt != -100
    torch.testing.assert_close(mean, per_sample.sum() / torch.tensor(weights, dtype=torch.float64)[tt[valid]].sum())
    assert per_sample[3].item() == 0.0


# ------------------------------------------------------------------------------------------------ bad inputs

TD = torch.zeros(4)
LOGITS_2D, TARGET_1D = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(lambda: focal_td(TD, gamma=-1.0), "gamma", id="focal-gamma<0"),
        pytest.param(lambda: focal_td(TD, gamma=float("nan")), "gamma", id="focal-gamma-nan"),
        pytest.param(lambda: focal_td(TD, tau=0.0), "tau", id="focal-tau=0"),
        pytest.param(lambda: focal_td(TD, tau=-2.0), "tau", id="focal-tau<0"),
        pytest.param(lambda: focal_td(TD, tau=float("inf")), "tau", id="focal-tau-inf"),
        pytest.param(lambda: focal_td(TD, tau=torch.ones(2)), "tau", id="focal-tau-not-0-dim"),
        pytest.param(lambda: focal_td(TD, base="l1"), "base", id="focal-base"),
        pytest.param(lambda: focal_td(TD, kappa=0.0), "kappa", id="focal-kappa"),
        pytest.param(lambda: focal_td(TD, normalize=True, max_weight=0.0), "max_weight", id="focal-max_weight"),
        pytest.param(lambda: focal_td([0.0, 1.0]), "td", id="focal-td-not-tensor"),
        pytest.param(lambda: huber(TD, kappa=-1.0), "kappa", id="huber-kappa"),
        pytest.param(lambda: huber(torch.zeros(3, dtype=torch.long)), "td", id="huber-int-td"),
        pytest.param(lambda: mirror(TD, alpha=-0.1), "alpha", id="mirror-alpha"),
        pytest.param(lambda: mirror(TD, eps=-1e-6), "eps", id="mirror-eps"),
        pytest.param(lambda: mirror(TD, base="quantile"), "base", id="mirror-base"),
        pytest.param(lambda: mirror(TD, max_weight=-1.0), "max_weight", id="mirror-max_weight"),
        pytest.param(lambda: pal(TD, alpha=-0.4), "alpha", id="pal-alpha"),
        pytest.param(lambda: pal(TD, min_priority=0.0), "min_priority", id="pal-min_priority"),
        pytest.param(lambda: pal(TD, max_weight=0.0), "max_weight", id="pal-max_weight"),
        pytest.param(lambda: lap(TD, min_priority=-1.0), "min_priority", id="lap-min_priority"),
        pytest.param(lambda: RunningMean(momentum=1.0), "momentum", id="running-mean-momentum"),
        pytest.param(lambda: sigmoid_focal_loss(TD, torch.zeros(5)), "shape", id="sigmoid-shapes"),
        pytest.param(lambda: sigmoid_focal_loss(TD, TD, gamma=-2.0), "gamma", id="sigmoid-gamma"),
        pytest.param(lambda: sigmoid_focal_loss(TD, TD, reduction="avg"), "reduction", id="sigmoid-reduction"),
        pytest.param(lambda: softmax_focal_loss(TD, TARGET_1D), "logits", id="softmax-logits-1d"),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D[:3]), "target", id="softmax-target-len"),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TD), "int64", id="softmax-target-dtype"),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D, gamma=-1.0), "gamma", id="softmax-gamma"),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D, reduction="x"), "reduction", id="softmax-red"),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D, alpha=[1.0, 2.0]), "per class", id="alpha-len"),
        pytest.param(
            lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D, alpha=torch.ones(4)), "per class", id="alpha-tensor-len"
        ),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D, alpha=[1.0, -1.0, 1.0]), "alpha", id="alpha<0"),
        pytest.param(lambda: softmax_focal_loss(LOGITS_2D, TARGET_1D, alpha=0.25), "alpha", id="alpha-scalar"),
    ],
)
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("huber", {}),
        ("mse", {}),
        ("focal", {"gamma": 0.3, "tau": "auto"}),
        ("focal", {"gamma": 2.0, "tau": 5.0, "normalize": True, "max_weight": 3.0}),
        ("mirror", {"max_weight": 2.0}),
        ("lap", {}),
        ("pal", {"min_priority": 0.1}),
    ],
)
def test_every_registered_loss_on_seed_lanes_is_each_lane_alone(name, options):
    """[S, B] TD errors give each lane what it alone would: batch means, clips and tau: auto's running mean per lane."""
    from rlfocal.losses import td_loss_config

    torch.manual_seed(0)
    td = torch.randn(4, 64, dtype=torch.float64) * torch.tensor([[1.0], [10.0], [0.1], [3.0]], dtype=torch.float64)
    lanes, alone = td_loss_config(name, **options).build(), [td_loss_config(name, **options).build() for _ in range(4)]
    for step in range(3):  # several steps: tau auto's state advances per lane
        scaled = td * (step + 1)
        expected = torch.stack([alone[k](scaled[k]) for k in range(4)])
        torch.testing.assert_close(lanes(scaled), expected, rtol=1e-12, atol=0)
