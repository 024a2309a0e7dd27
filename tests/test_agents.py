"""Networks and the DQN learner: shapes, the dueling aggregation, the numpy acting path against torch's forward,
TD targets against a hand computation, and one update against a reference written with torch's own clip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal import losses
from rlfocal.replay import Batch


@pytest.mark.parametrize(
    ("kind", "obs_shape"), [("mlp", (4,)), ("mlp", (3, 5)), ("minatar", (4, 10, 10)), ("nature", (4, 84, 84))]
)
@pytest.mark.parametrize("dueling", [False, True])
def test_network_output_shapes(kind, obs_shape, dueling):
    net = make_network(kind, obs_shape, 5, dueling=dueling)
    assert net(torch.zeros(3, *obs_shape)).shape == (3, 5)


def test_dueling_head_is_value_plus_centred_advantage():
    torch.manual_seed(0)
    net = make_network("mlp", (4,), 3, dueling=True, hidden=(8, 8))
    x = torch.randn(6, 4)
    feats = torch.relu(net.torso[0](x))
    value = net.head.value[1](torch.relu(net.head.value[0](feats)))
    adv = net.head.advantage[1](torch.relu(net.head.advantage[0](feats)))
    torch.testing.assert_close(net(x), value + adv - adv.mean(1, keepdim=True))


def test_unknown_network_names_the_choices():
    with pytest.raises(ValueError, match="unknown network 'resnet'"):
        make_network("resnet", (4,), 2)


@pytest.mark.parametrize("dueling", [False, True])
def test_numpy_forward_matches_torch_and_follows_parameter_updates(dueling):
    torch.manual_seed(0)
    net = make_network("mlp", (4,), 3, dueling=dueling, hidden=(32, 32))
    forward = net.numpy_forward()
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)

    def check() -> None:
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(np.stack([forward(o) for o in x]), ref, rtol=1e-5, atol=1e-6)

    check()
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)  # in-place steps must show through the views
    net(torch.from_numpy(x)).pow(2).mean().backward()
    opt.step()
    check()
    other = make_network("mlp", (4,), 3, dueling=dueling, hidden=(32, 32))
    net.load_state_dict(other.state_dict())  # so must load_state_dict (resume)
    check()


def _batch(rng: np.random.Generator, n: int = 16) -> Batch:
    return Batch(
        obs=rng.normal(size=(n, 4)).astype(np.float32),
        actions=rng.integers(0, 2, n),
        rewards=rng.normal(size=n).astype(np.float32),
        next_obs=rng.normal(size=(n, 4)).astype(np.float32),
        discounts=np.where(rng.random(n) < 0.2, 0.0, 0.99).astype(np.float32),
        indices=np.arange(n),
        weights=rng.uniform(0.2, 1.0, n).astype(np.float32),
    ).to_torch()


@pytest.mark.parametrize("double", [False, True])
def test_td_errors_match_a_hand_computation(double):
    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 2, hidden=(16,)), 2, losses.huber, double=double)
    with torch.no_grad():
        for p in agent.target_net.parameters():
            p.add_(0.3)  # make online and target differ
    b = _batch(np.random.default_rng(0))
    td, q_sa = agent.td_errors(b)
    with torch.no_grad():
        q_next_t, q_next_o = agent.target_net(b.next_obs), agent.q_net(b.next_obs)
        a_star = (q_next_o if double else q_next_t).argmax(1)
        y = b.rewards + b.discounts * q_next_t[torch.arange(16), a_star]
        expected_q = agent.q_net(b.obs)[torch.arange(16), b.actions]
    torch.testing.assert_close(q_sa.detach(), expected_q)
    torch.testing.assert_close(td.detach(), y - expected_q)


def test_learn_step_equals_a_reference_with_torchs_clip():
    """One update: weighted mean loss, clipped with nn.utils.clip_grad_norm_, Adam; parameters must agree exactly."""
    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 2, hidden=(16,)), 2, losses.huber, lr=0.05, max_grad_norm=0.1)
    ref_net = copy.deepcopy(agent.q_net)
    ref_opt = torch.optim.Adam(ref_net.parameters(), lr=0.05, fused=True)
    b = _batch(np.random.default_rng(1))
    with torch.no_grad():
        target = b.rewards + b.discounts * agent.target_net(b.next_obs).gather(
            1, agent.q_net(b.next_obs).argmax(1, keepdim=True)
        ).squeeze(1)
    out = agent.learn(b)
    q_sa = ref_net(b.obs).gather(1, b.actions.long().unsqueeze(1)).squeeze(1)
    ref_loss = (b.weights * losses.huber(target - q_sa)).mean()
    ref_loss.backward()
    nn.utils.clip_grad_norm_(list(ref_net.parameters()), 0.1)
    ref_opt.step()
    torch.testing.assert_close(out.loss, ref_loss.detach())
    for p, q in zip(agent.q_net.parameters(), ref_net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_greedy_act_is_the_argmax_and_epsilon_one_is_uniform():
    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 3, hidden=(16,)), 3, losses.huber, seed=0)
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with torch.no_grad():
        greedy = agent.q_net(torch.from_numpy(obs)).argmax(1).numpy()
    assert [agent.act(o, 0.0) for o in obs] == greedy.tolist()
    counts = np.bincount([agent.act(obs[0], 1.0) for _ in range(3000)], minlength=3)
    assert counts.min() > 900


def _five_updates(**agent_kwargs) -> tuple[list, list[torch.Tensor]]:
    """Five learn steps on fixed batches from a fixed init: the outputs and the final parameters."""
    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 2, hidden=(16,)), 2, losses.huber, lr=1e-3, **agent_kwargs)
    rng = np.random.default_rng(2)
    learned = [agent.learn(_batch(rng)) for _ in range(5)]
    return learned, [p.detach().clone() for p in agent.q_net.parameters()]


@pytest.mark.slow
def test_compiled_update_matches_eager():
    """agent.compile=true changes how the update runs, not what it computes (float tolerance: fused kernels)."""
    (eager, eager_params), (compiled, compiled_params) = _five_updates(), _five_updates(compile=True)
    np.testing.assert_allclose([float(o.loss) for o in compiled], [float(o.loss) for o in eager], rtol=1e-5)
    for a, b in zip(compiled_params, eager_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_amp_update_stays_close_to_float32():
    """agent.amp=true: bfloat16 forward passes (about 3 significant digits), float32 TD errors and losses."""
    (full, _), (amp, _) = _five_updates(), _five_updates(amp=True)
    assert all(o.td_errors.dtype == torch.float32 and o.loss.dtype == torch.float32 for o in amp)
    full_losses, amp_losses = [float(o.loss) for o in full], [float(o.loss) for o in amp]
    np.testing.assert_allclose(amp_losses, full_losses, rtol=3e-2)
    assert amp_losses != full_losses  # it did run in lower precision
