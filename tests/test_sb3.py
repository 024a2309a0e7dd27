"""rlfocal.sb3: SB3's DQN with rlfocal's PER and TD losses. Uniform mode reproduces stock SB3 bit for bit,
priorities steer sampling, n-step matches SB3's NStepReplayBuffer per env column, save/load round-trips, and the
pieces SB3 users rely on (vectorised envs, callbacks, progress bar, logger) keep working."""

from __future__ import annotations

import os
import pickle

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3
import torch
from scipy import stats
from stable_baselines3.common.buffers import NStepReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env

from rlfocal.checkpoint import CheckpointError
from rlfocal.sb3 import DQN, TD_LOSS_NAMES, PrioritizedReplayBuffer

TINY = dict(
    learning_starts=64, batch_size=16, train_freq=1, target_update_interval=50, policy_kwargs=dict(net_arch=[16, 16])
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LossRecorder(BaseCallback):
    """The ``train/loss`` each train() call logged, read before the next rollout overwrites it."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def _on_rollout_start(self) -> None:
        if "train/loss" in self.model.logger.name_to_value:
            self.losses.append(float(self.model.logger.name_to_value["train/loss"]))

    def _on_step(self) -> bool:
        return True


def vector_buffer(n: int = 8, n_envs: int = 1, **kwargs) -> PrioritizedReplayBuffer:
    """A buffer of ``n`` rows whose observation (for env e at row t) is ``[t, e]``."""
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    buf = PrioritizedReplayBuffer(n * n_envs, space, gym.spaces.Discrete(2), "cpu", n_envs, **kwargs)
    return buf


def add_row(buf: PrioritizedReplayBuffer, t: int, reward=1.0, done=False, truncated=False) -> None:
    e = np.arange(buf.n_envs, dtype=np.float32)
    obs = np.stack([np.full(buf.n_envs, t, np.float32), e], axis=1)
    nxt = np.stack([np.full(buf.n_envs, t + 1, np.float32), e], axis=1)
    infos = [{"TimeLimit.truncated": bool(tr)} for tr in np.broadcast_to(truncated, buf.n_envs)]
    buf.add(
        obs, nxt, np.zeros(buf.n_envs), np.broadcast_to(reward, buf.n_envs), np.broadcast_to(done, buf.n_envs), infos
    )


# ---------------------------------------------------------------------------------------------- smoke


def test_check_env_and_learn_smoke():
    """SB3's own env checker passes on the env we train on, and PER + Huber learns a few hundred steps."""
    check_env(gym.make("CartPole-v1"))
    model = DQN("MlpPolicy", "CartPole-v1", replay_buffer_class=PrioritizedReplayBuffer, seed=0, **TINY)
    model.learn(300)
    assert model._n_updates == 300 - 64
    assert model.replay_buffer.sampler.num_updates == model._n_updates
    assert np.isfinite(model.logger.name_to_value["train/loss"])


def test_import_names_and_td_loss_names():
    from rlfocal import sb3

    assert issubclass(sb3.DQN, stable_baselines3.DQN)
    assert set(TD_LOSS_NAMES) == {"huber", "mse", "focal", "mirror", "pal", "lap"}


# -------------------------------------------------------------------------------- reproduces stock SB3


@pytest.mark.parametrize("n_steps", [1, 3])
@pytest.mark.parametrize("buffer", ["stock", "ours_uniform"])
def test_uniform_huber_reproduces_stock_sb3_bit_for_bit(buffer, n_steps):
    """Same seed, same hyper-parameters: the same loss at every update and identical final weights."""
    kwargs = dict(TINY, n_steps=n_steps, seed=7)
    stock, ours = LossRecorder(), LossRecorder()
    ref = stable_baselines3.DQN("MlpPolicy", "CartPole-v1", **kwargs)
    ref.learn(400, callback=stock)
    if buffer == "ours_uniform":
        kwargs.update(replay_buffer_class=PrioritizedReplayBuffer, replay_buffer_kwargs=dict(prioritized=False))
    model = DQN("MlpPolicy", "CartPole-v1", td_loss="huber", **kwargs)
    model.learn(400, callback=ours)
    assert len(ours.losses) == len(stock.losses) > 300
    assert ours.losses == stock.losses
    for a, b in zip(model.policy.state_dict().values(), ref.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_n_step_matches_sb3_n_step_buffer_per_env_column():
    """With n_envs=2, dones, truncations and wrap-around, our uniform-mode n-step samples equal SB3's
    NStepReplayBuffer's draw for draw: each return runs down its own env's column."""
    rng = np.random.default_rng(0)
    space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    args = (20, space, gym.spaces.Discrete(2), "cpu", 2)
    ours = PrioritizedReplayBuffer(*args, n_steps=3, gamma=0.9, prioritized=False)
    ref = NStepReplayBuffer(*args, n_steps=3, gamma=0.9)
    for _ in range(27):  # 10 rows per env: wraps around
        obs = rng.normal(size=(2, 2)).astype(np.float32)
        nxt = rng.normal(size=(2, 2)).astype(np.float32)
        action, reward = rng.integers(0, 2, 2), rng.normal(size=2).astype(np.float32)
        done = rng.random(2) < 0.2
        infos = [{"TimeLimit.truncated": bool(d and rng.random() < 0.5)} for d in done]
        for buf in (ours, ref):
            buf.add(obs, nxt, action, reward, done, infos)
    for seed in range(20):  # both buffers draw from SB3's global np.random
        np.random.seed(seed)  # noqa: NPY002
        a = ours.sample(32)
        np.random.seed(seed)  # noqa: NPY002
        b = ref.sample(32)
        for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert torch.equal(a.weights, torch.ones(32))


def test_n_step_prioritized_returns_stop_at_done_and_newest_row():
    """PER-sampled n-step data, checked by hand: env 0 ends at row 1, env 1 runs into the newest row (row 3)."""
    buf = vector_buffer(8, n_envs=2, n_steps=3, gamma=0.5)
    add_row(buf, 0, reward=1.0)
    add_row(buf, 1, reward=2.0, done=[True, False])
    add_row(buf, 2, reward=4.0)
    add_row(buf, 3, reward=8.0)
    data = buf._gather(np.array([0, 0, 2]), np.array([0, 1, 1]), None, np.zeros(3, np.int64), np.ones(3, np.float32))
    np.testing.assert_allclose(data.rewards.squeeze(1), [1 + 0.5 * 2, 1 + 0.5 * 2 + 0.25 * 4, 4 + 0.5 * 8])
    np.testing.assert_allclose(data.discounts.squeeze(1), [0.25, 0.125, 0.25])
    np.testing.assert_allclose(data.dones.squeeze(1), [1, 0, 0])
    np.testing.assert_allclose(data.next_observations, [[2, 0], [3, 1], [4, 1]])


# ------------------------------------------------------------------------------------ priorities steer sampling


def test_priorities_change_sampling_and_weights():
    """After write-back, draws follow (|δ| + ε)^α (chi-square, fixed seed) and IS weights are (p_i / p_min)^-β."""
    buf = vector_buffer(64, n_envs=2, alpha=0.6, beta=0.5, eps=1e-2, seed=0)
    for t in range(64):
        add_row(buf, t)
    td = np.random.default_rng(1).exponential(size=128) * np.repeat([0.0, 0.1, 1.0, 10.0], 32)
    buf.update_priorities(np.arange(128), td)
    counts = np.zeros(128)
    for _ in range(300):
        batch = buf.sample(128)
        np.add.at(counts, batch.indices, 1)
    p = (np.abs(td) + 1e-2) ** 0.6
    assert stats.chisquare(counts, counts.sum() * p / p.sum()).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(128, counts.sum() / 128)).pvalue < 1e-12  # not uniform any more
    # the slot drawn is what the batch holds: obs = [row, env] of slot row * 2 + env
    rows, envs = np.divmod(batch.indices, 2)
    np.testing.assert_array_equal(batch.observations.numpy(), np.stack([rows, envs], 1))
    expected = (p[batch.indices] / p[batch.indices].min()) ** -0.5
    np.testing.assert_allclose(batch.weights.numpy(), expected, rtol=1e-5)


def test_new_transitions_enter_at_max_priority_and_empty_slots_are_never_drawn():
    buf = vector_buffer(16, n_envs=2, seed=0)
    for t in range(4):
        add_row(buf, t)
    buf.update_priorities(np.array([0, 1]), np.array([3.0, 0.5]))
    add_row(buf, 4)
    prio = buf.priorities()
    np.testing.assert_allclose(prio[4], (3.0 + 1e-6) ** 0.6)  # max raw priority, exponent applied once
    assert (prio[5:] == 0).all()
    drawn = np.concatenate([buf.sample(64).indices for _ in range(50)])
    assert drawn.max() < 10


def test_optimize_memory_usage_never_samples_the_overwritten_row():
    """With one array for obs and next_obs, the row after the newest holds a broken transition: priority 0."""
    buf = vector_buffer(4, optimize_memory_usage=True, handle_timeout_termination=False, seed=0)
    for t in range(6):
        add_row(buf, t)
    assert buf.full and buf.pos == 2
    assert buf.priorities()[2, 0] == 0
    batch = buf.sample(256)
    assert 2 not in batch.indices
    np.testing.assert_array_equal(batch.next_observations[:, 0], batch.observations[:, 0] + 1)


# ------------------------------------------------------------------------------- losses, β, vectorised envs


@pytest.mark.parametrize(
    ("td_loss", "td_loss_kwargs"),
    [("focal", {"gamma": 2.0, "tau": "auto"}), ("mirror", {"alpha": 0.6}), ("pal", {}), ("mse", {})],
)
def test_losses_train_and_write_back_priorities(td_loss, td_loss_kwargs):
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        td_loss=td_loss,
        td_loss_kwargs=td_loss_kwargs,
        seed=1,
        replay_buffer_class=PrioritizedReplayBuffer,
        **TINY,
    )
    before = [p.detach().clone() for p in model.policy.q_net.parameters()]
    model.learn(200)
    buf = model.replay_buffer
    assert buf.sampler.num_updates == model._n_updates == 200 - 64
    prio = buf.priorities()[:200, 0]
    assert len(np.unique(prio)) > 50  # written back from |δ|, not left at the entry priority
    assert np.isfinite(model.logger.name_to_value["train/loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.policy.q_net.parameters(), strict=True))


@pytest.mark.parametrize(
    ("td_loss", "fn"),
    [("huber", lambda td: torch.nn.functional.huber_loss(td, 0 * td, reduction="none")), ("focal", None)],
)
def test_train_loss_is_the_is_weighted_mean_of_the_td_loss(td_loss, fn):
    """One train() step by hand: mean_i w_i · ℓ(δ_i) with SB3's target, and |δ_i| (+ε)^α written to the tree."""
    from rlfocal.losses import focal_td

    fn = fn or (lambda td: focal_td(td, gamma=2.0, tau=0.5))
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        replay_buffer_class=PrioritizedReplayBuffer,
        td_loss=td_loss,
        seed=2,
        td_loss_kwargs={"gamma": 2.0, "tau": 0.5} if td_loss == "focal" else {},
        **TINY,
    )
    model.learn(150)
    buf, drawn = model.replay_buffer, []
    sample = buf.sample
    buf.sample = lambda *a, **k: drawn.append(sample(*a, **k)) or drawn[-1]
    q_net = {k: v.clone() for k, v in model.q_net.state_dict().items()}
    model.train(1, 16)
    batch = drawn[0]
    assert batch.weights.min() < 1  # the check below has IS weights to get wrong
    model.q_net.load_state_dict(q_net)
    with torch.no_grad():
        y = batch.rewards + (1 - batch.dones) * 0.99 * model.q_net_target(batch.next_observations).max(1, True)[0]
        td = (y - model.q_net(batch.observations).gather(1, batch.actions.long())).squeeze(1)
    assert model.logger.name_to_value["train/loss"] == pytest.approx(float((batch.weights * fn(td)).mean()), rel=1e-5)
    np.testing.assert_allclose(buf.sampler.tree.get(batch.indices), (td.abs().numpy() + 1e-6) ** 0.6, rtol=1e-5)


def test_vectorised_envs_multiple_gradient_steps_and_beta_annealing():
    """n_envs=2: both env columns are stored and drawn; each of gradient_steps=3 gets its own batch and write-back;
    β reaches beta_final at the end of the run and the SB3 logger carries replay/* for any logger callback."""
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = DQN(
        "MlpPolicy",
        env,
        replay_buffer_class=PrioritizedReplayBuffer,
        gradient_steps=3,
        seed=0,
        replay_buffer_kwargs=dict(beta=0.4, beta_final=1.0),
        **dict(TINY, train_freq=2),
    )
    model.learn(400)
    buf = model.replay_buffer
    assert buf.n_envs == 2 and buf.pos == 200
    assert buf.sampler.num_updates == model._n_updates > 0 and model._n_updates % 3 == 0
    assert (buf.priorities()[:200] != buf.priorities()[0, 0]).any(axis=0).all()  # both columns reprioritised
    assert buf.beta == pytest.approx(1.0)
    logged = model.logger.name_to_value
    assert logged["replay/beta"] == pytest.approx(1.0) and 0 < logged["replay/is_weight_min"] <= 1


def test_beta_is_fixed_without_annealing_and_n_steps_is_handed_to_the_buffer():
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        replay_buffer_class=PrioritizedReplayBuffer,
        n_steps=3,
        gamma=0.9,
        replay_buffer_kwargs=dict(anneal_beta=False, beta=0.5),
        seed=0,
        **TINY,
    )
    model.learn(150)
    assert model.replay_buffer.beta == 0.5
    assert (model.replay_buffer.n_steps, model.replay_buffer.gamma) == (3, 0.9)


def test_progress_bar(monkeypatch):
    """learn(progress_bar=True) runs. SB3's bar needs tqdm and rich; without rich, SB3's own ProgressBarCallback
    is driven by a plain tqdm bar (same interface), so the test still exercises the callback path."""
    try:
        import rich  # noqa: F401
    except ImportError:
        import tqdm
        from stable_baselines3.common import callbacks

        monkeypatch.setattr(callbacks, "tqdm", tqdm.tqdm)
    model = DQN("MlpPolicy", "CartPole-v1", replay_buffer_class=PrioritizedReplayBuffer, seed=0, **TINY)
    model.learn(100, progress_bar=True)
    assert model.num_timesteps == 100


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_model_and_replay_buffer_round_trip(tmp_path):
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        replay_buffer_class=PrioritizedReplayBuffer,
        td_loss="focal",
        td_loss_kwargs={"gamma": 1.0},
        seed=0,
        **TINY,
    )
    model.learn(200)
    model.save(tmp_path / "model")
    model.save_replay_buffer(tmp_path / "buffer")

    loaded = DQN.load(tmp_path / "model", env=gym.make("CartPole-v1"))
    assert (loaded.td_loss, loaded.td_loss_kwargs) == ("focal", {"gamma": 1.0})
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])

    loaded.load_replay_buffer(tmp_path / "buffer")
    a, b = model.replay_buffer, loaded.replay_buffer
    assert isinstance(b, PrioritizedReplayBuffer)
    np.testing.assert_array_equal(a.priorities(), b.priorities())
    assert (a.sampler.max_priority, a.beta, a.pos) == (b.sampler.max_priority, b.beta, b.pos)
    np.testing.assert_array_equal(a.sample(64).indices, b.sample(64).indices)  # sampler RNG restored too
    loaded.learn(100, reset_num_timesteps=False)  # and training continues from the loaded buffer
    assert loaded.replay_buffer.sampler.num_updates > a.sampler.num_updates


class _Payload:
    """Pickles as a call to os.system: what a malicious replay file carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_replay_buffer_file_is_plain_data_and_a_pickled_callable_is_refused_unrun(tmp_path):
    model = DQN("MlpPolicy", "CartPole-v1", replay_buffer_class=PrioritizedReplayBuffer, seed=0, **TINY)
    model.learn(80)
    model.save_replay_buffer(tmp_path / "buffer")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "buffer.pkl") == []
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pkl", "wb") as f:  # what stock SB3's save_replay_buffer (pickle) would hold
        pickle.dump(_Payload(marker), f)
    state = torch.load(tmp_path / "buffer.pkl", weights_only=True)
    state["pos"] = _Payload(marker)
    torch.save(state, tmp_path / "evil_zip.pkl")
    for name, match in [("evil", "not a complete zip archive"), ("evil_zip", r"would import and call posix\.system")]:
        with pytest.raises(
            CheckpointError, match=rf"{name}\.pkl: .*{match}.*reads only files its own save_replay_buffer"
        ):
            model.load_replay_buffer(tmp_path / name)
    assert not marker.exists()
    model.load_replay_buffer(tmp_path / "buffer")  # the buffer is untouched and still loads its own file


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_td_loss_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown td_loss .focl.*huber, mse, focal, mirror, lap, pal"):
        DQN("MlpPolicy", "CartPole-v1", td_loss="focl")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(td_loss="focal", td_loss_kwargs={"gama": 2}), "gama"),
        (dict(td_loss="focal", td_loss_kwargs={"gamma": -1}), "loss.gamma"),
        (dict(replay_buffer_kwargs={"alpha": -0.1}), "alpha"),
        (dict(replay_buffer_kwargs={"n_steps": 0}), "n_steps"),
        (dict(replay_buffer_kwargs={"n_steps": 2}, optimize_memory_usage=True), "optimize_memory_usage"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    kwargs.setdefault("replay_buffer_class", PrioritizedReplayBuffer)
    if kwargs.get("optimize_memory_usage"):
        kwargs["replay_buffer_kwargs"]["handle_timeout_termination"] = False
    with pytest.raises(ValueError, match=match):
        DQN("MlpPolicy", "CartPole-v1", **kwargs)


def test_sampling_an_empty_buffer_and_non_finite_td_errors_raise():
    buf = vector_buffer(4, seed=0)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)
    add_row(buf, 0)
    with pytest.raises(ValueError, match="finite"):
        buf.update_priorities(np.array([0]), np.array([np.nan]))
