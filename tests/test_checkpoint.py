"""Checkpoints: exact round trip, no code run on load, rotation and fallback, config check, RNG on the CPU."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from agents.dqn import DQN
from agents.networks import make_network
from rlfocal.checkpoint import (
    FORMAT,
    CheckpointError,
    check_resume_config,
    config_differences,
    from_plain,
    load_checkpoint,
    previous_path,
    save_checkpoint,
    to_plain,
)
from rlfocal.replay import PrioritizedReplay

CONFIG = {
    "seed": 0,
    "total_steps": 1000,
    "env": {"name": "CartPole-v1", "kwargs": {}},
    "replay": {"kind": "per", "alpha": 0.6},
    "logger": {"kind": "csv", "log_every": 50},
}


def make(seed: int = 0) -> tuple[DQN, PrioritizedReplay]:
    torch.manual_seed(seed)
    agent = DQN(make_network("mlp", (4,), 2, hidden=(8,)), 2, lambda td: td.square(), seed=seed)
    return agent, PrioritizedReplay(64, (4,), seed=seed, n_step=3, gamma=0.9)


def trained(seed: int = 0) -> tuple[DQN, PrioritizedReplay]:
    """An agent with optimiser state and a buffer with priorities and half-filled n-step windows."""
    agent, buffer = make(seed)
    rng = np.random.default_rng(seed)
    for t in range(40):
        buffer.add(
            rng.normal(size=4).astype(np.float32),
            np.int64(t % 2),
            np.float32(1.0),
            rng.normal(size=4).astype(np.float32),
            t % 17 == 16,
            False,
        )
    batch = buffer.sample(8)
    buffer.update_priorities(batch.indices, agent.learn(batch.to_torch(agent.device)).td_errors.numpy())
    return agent, buffer


def assert_same(a, b) -> None:
    """Recursive equality of state dicts: same keys, types, dtypes and values."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def test_round_trip_restores_agent_replay_and_rng_exactly(tmp_path):
    agent, buffer = trained(0)
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, buffer, {"global_step": 40}, CONFIG)
    expected = torch.rand(3)
    other_agent, other_buffer = make(seed=1)
    assert load_checkpoint(path, other_agent, other_buffer, CONFIG) == {"global_step": 40}
    assert_same(other_agent.state_dict(), agent.state_dict())
    assert_same(other_buffer.state_dict(), buffer.state_dict())
    assert torch.equal(torch.rand(3), expected)
    np.testing.assert_array_equal(other_buffer.sample(16).indices, buffer.sample(16).indices)


class _Payload:
    """Pickles as a call to os.system: what a malicious last.pt carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_carrying_a_pickled_callable_is_refused_and_nothing_runs(tmp_path):
    agent, buffer = make()
    marker = tmp_path / "ran"
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, None, {"global_step": 1}, CONFIG)
    payload = torch.load(path, weights_only=True)
    payload["counters"] = {"global_step": _Payload(marker)}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"last\.pt: refused to load: it would import and call posix\.system"):
        load_checkpoint(path, agent, buffer)
    assert not marker.exists()


def test_save_rotates_the_previous_checkpoint_atomically(tmp_path):
    agent, _ = make()
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(path, agent, None, {"global_step": 1}, CONFIG)
    assert not previous_path(path).exists()
    save_checkpoint(path, agent, None, {"global_step": 2}, CONFIG)
    assert previous_path(path) == tmp_path / "ckpt" / "prev.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt", "prev.pt"]  # no .tmp left behind
    assert torch.load(previous_path(path), weights_only=True)["counters"] == {"global_step": 1}


def test_truncated_last_falls_back_to_prev_with_a_warning(tmp_path):
    agent, _ = make()
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, None, {"global_step": 1}, CONFIG)
    save_checkpoint(path, agent, None, {"global_step": 2}, CONFIG)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match=r"last\.pt: damaged: not a complete zip .*previous checkpoint .*prev\.pt"):
        assert load_checkpoint(path, agent, None) == {"global_step": 1}


def test_missing_last_falls_back_to_prev(tmp_path):
    """A crash between the two renames of save_checkpoint leaves only prev.pt."""
    agent, _ = make()
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, None, {"global_step": 1}, CONFIG)
    os.replace(path, previous_path(path))
    with pytest.warns(UserWarning, match="no such file"):
        assert load_checkpoint(path, agent, None) == {"global_step": 1}


@pytest.mark.parametrize("damage", [b"", b"not a zip", "truncate"])
def test_both_damaged_is_one_line_naming_both(tmp_path, damage):
    agent, _ = make()
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, None, {"global_step": 1}, CONFIG)
    save_checkpoint(path, agent, None, {"global_step": 2}, CONFIG)
    for p in (path, previous_path(path)):
        p.write_bytes(p.read_bytes()[:500] if damage == "truncate" else damage)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, agent, None)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and str(previous_path(path)) in message


def test_another_format_is_refused_clearly(tmp_path):
    agent, _ = make()
    path = tmp_path / "last.pt"
    torch.save({"format": 99}, path)
    with pytest.raises(CheckpointError, match=rf"last\.pt: checkpoint format 99, this rlfocal reads format {FORMAT}"):
        load_checkpoint(path, agent, None)


def test_rng_state_stays_on_the_cpu_whatever_the_agent_device(tmp_path, monkeypatch):
    """On CUDA the payload used to be mapped to agent.device and torch.set_rng_state refused the GPU tensor;
    the meta device reproduces that on a CPU-only machine."""
    agent, buffer = trained()
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, buffer, {"global_step": 40}, CONFIG)
    expected = torch.rand(3)
    monkeypatch.setattr(agent, "device", torch.device("meta"))
    load_checkpoint(path, agent, buffer)
    assert torch.equal(torch.rand(3), expected)


def test_cuda_rng_is_saved_when_initialised_and_restored_when_present(tmp_path, monkeypatch):
    agent, _ = make()
    states = [torch.arange(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, None, {}, CONFIG)
    load_checkpoint(path, agent, None)
    assert len(restored) == 1 and torch.equal(restored[0], states[0])  # one state per device present


def test_resume_with_another_config_is_refused_before_anything_changes(tmp_path):
    agent, buffer = trained(0)
    path = tmp_path / "last.pt"
    save_checkpoint(path, agent, buffer, {"global_step": 40}, CONFIG)
    other_agent, other_buffer = make(seed=1)
    before = to_plain(other_agent.state_dict())
    new = {**CONFIG, "replay": {"kind": "per", "alpha": 0.7}, "env": {"name": "CartPole-v1", "kwargs": {"size": 3}}}
    with pytest.raises(CheckpointError, match=r"env\.kwargs\.size: '<absent>' -> 3, replay\.alpha: 0\.6 -> 0\.7"):
        load_checkpoint(path, other_agent, other_buffer, new)
    assert_same(to_plain(other_agent.state_dict()), before)
    longer = {**CONFIG, "total_steps": 5000, "logger": {"kind": "wandb", "log_every": 10}}
    assert load_checkpoint(path, other_agent, other_buffer, longer) == {"global_step": 40}


def test_config_differences_flattens_and_ignores_mutable_keys():
    saved = {
        "seed": 0,
        "total_steps": 10,
        "agent": {"lr": 1e-3, "hidden": [64, 64]},
        "logger": {"kind": "csv"},
        "env": {"kwargs": {}},
    }
    new = {
        "seed": 0,
        "total_steps": 99,
        "agent": {"lr": 1e-3, "hidden": [64]},
        "logger": {"kind": "wandb"},
        "env": {"kwargs": {"size": 4}},
        "device": "cuda",
    }
    assert config_differences(saved, new) == ["agent.hidden", "env.kwargs.size"]
    assert config_differences(saved, new, mutable=()) == [
        "agent.hidden",
        "device",
        "env.kwargs.size",
        "logger.kind",
        "total_steps",
    ]
    assert config_differences(saved, new, mutable=iter(["agent.*", "env.*"])) == [
        "device",
        "logger.kind",
        "total_steps",
    ]
    assert config_differences(saved, saved) == []


def test_check_resume_config_lists_old_and_new_values_in_one_line():
    check_resume_config(CONFIG, {**CONFIG, "total_steps": 10**6, "device": "cuda"})
    with pytest.raises(CheckpointError) as info:
        check_resume_config(CONFIG, {**CONFIG, "seed": 1, "env": {"name": "Acrobot-v1", "kwargs": {}}})
    message = str(info.value)
    assert "\n" not in message
    assert "env.name: 'CartPole-v1' -> 'Acrobot-v1', seed: 0 -> 1" in message and "total_steps" in message
    with pytest.raises(CheckpointError, match="carries no config"):
        check_resume_config(None, CONFIG)


def test_plain_codec_round_trips_numpy_without_unsafe_globals(tmp_path):
    value = {
        "f64": np.linspace(0, 1, 7),
        "u8": np.arange(12, dtype=np.uint8).reshape(3, 4),
        "b": np.array([True, False]),
        "f16": np.ones((2, 0, 3), np.float16),
        "strided": np.arange(10.0)[::3],
        "scalars": (np.float32(1.5), np.int64(-3)),
        "big": 2**80,
        "none": None,
        "text": ["a", 1, 2.5],
    }
    torch.save(to_plain(value), tmp_path / "x.pt")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "x.pt") == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(from_plain(torch.load(tmp_path / "x.pt", weights_only=True)), value)
    with pytest.raises(TypeError, match="dtype object"):
        to_plain({"bad": np.array([None])})


def test_a_setting_the_checkpoint_predates_is_accepted_at_its_default_only():
    from rlfocal.checkpoint import config_differences
    from rlfocal.config import setting_defaults

    saved = {"seed": 0, "env": {"name": "deepsea"}}  # saved before demonstrations and env.overlap existed
    new = {"seed": 0, "env": {"name": "deepsea", "overlap": False}, "demonstrations": 0}
    assert config_differences(saved, new, defaults=setting_defaults()) == []
    changed = {**new, "demonstrations": 1}
    assert config_differences(saved, changed, defaults=setting_defaults()) == ["demonstrations"]
    assert config_differences(saved, new) == ["demonstrations", "env.overlap"]  # without defaults: a difference
