"""``agent.capture_update``: the gradient step replayed from a graph computes what the eager step does.

On CPU the graph is ``EagerGraph``, the stand-in that keeps the CUDA graph's contracts (static inputs and outputs,
eager warm-up, no host reads inside); tests/test_cuda.py runs the real CUDA graph against eager where a GPU is."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from test_agent_lanes import _batches, _stack
from test_train import composed, rows, train

from agents.captured import CaptureCheck, CapturedStep, CaptureError, EagerGraph
from agents.dqn import DQN, LaneBatch
from agents.networks import make_network
from rlfocal import losses
from rlfocal.checkpoint import config_differences
from rlfocal.config import ConfigError, validate


def _agent(kind: str, obs_shape: tuple[int, ...], seeds: list[int], **kwargs) -> DQN:
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(make_network(kind, obs_shape, 3, hidden=(32, 32)))
    return DQN(nets if len(seeds) > 1 else nets[0], 3, losses.huber, lr=1e-2, seed=seeds, **kwargs)


def _run(agent: DQN, batches: list[LaneBatch]) -> list[tuple[torch.Tensor, ...]]:
    """Each update's outputs, copied at once (a captured step's are overwritten by the next)."""
    return [tuple(t.clone() for t in agent.learn_lanes(b)) for b in batches]


@pytest.mark.parametrize(
    ("kind", "obs_shape", "seeds"),
    [("mlp", (4,), [0]), ("mlp", (4,), [0, 1, 2]), ("minatar", (4, 10, 10), [0]), ("minatar", (4, 10, 10), [0, 1])],
)
def test_captured_update_matches_eager_bit_for_bit(kind, obs_shape, seeds):
    """Eight updates on different batches (three warm-up, one recording, four replays): same outputs, parameters,
    target net and Adam state, for one seed and for lanes."""
    rng = np.random.default_rng(0)
    batches = [_stack(_batches(rng, len(seeds), obs_shape)) for _ in range(8)]
    eager, captured = _agent(kind, obs_shape, seeds), _agent(kind, obs_shape, seeds, capture=True)
    for a, b in zip(_run(eager, batches), _run(captured, batches), strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    for x, y in zip(eager.params, captured.params, strict=True):
        assert torch.equal(x, y)
    assert captured._captured.calls == 8 and isinstance(captured._captured._graph, EagerGraph)
    assert torch.equal(eager.nonfinite_lanes, captured.nonfinite_lanes)


def test_replays_read_the_static_inputs_and_overwrite_the_static_outputs():
    """A replay sees the new batch (copied into the recorded inputs) and returns the same output tensors."""
    rng = np.random.default_rng(1)
    agent = _agent("mlp", (4,), [0], capture=True)
    batches = [_stack(_batches(rng, 1, (4,))) for _ in range(6)]
    outs = [agent.learn_lanes(b) for b in batches]
    ptr = [out.td_errors.data_ptr() for out in outs]
    assert ptr[3] == ptr[4] == ptr[5]  # the graph's outputs, rewritten in place
    assert torch.equal(outs[5].td_errors, outs[4].td_errors)  # (so the fifth update's values are gone)
    static_obs = agent._captured._static[0]
    assert torch.equal(static_obs, batches[-1].obs[0]) and static_obs.data_ptr() != batches[-1].obs.data_ptr()


def test_a_batch_of_another_shape_is_refused_after_recording():
    rng = np.random.default_rng(2)
    agent = _agent("mlp", (4,), [0], capture=True)
    for _ in range(4):
        agent.learn_lanes(_stack(_batches(rng, 1, (4,), n=16)))
    with pytest.raises(ValueError, match="replays on inputs like those it was recorded with"):
        agent.learn_lanes(_stack(_batches(rng, 1, (4,), n=8)))


def test_an_update_that_reads_a_value_on_the_host_cannot_be_captured():
    """A loss that scales by ``float(td.abs().max())`` reads a value on the host: a sync, which a CUDA graph cannot
    hold (the warm-up steps, eager, may)."""

    def scaled_huber(td: torch.Tensor) -> torch.Tensor:
        return losses.huber(td) / float(td.abs().max())

    torch.manual_seed(0)
    agent = DQN(make_network("mlp", (4,), 3, hidden=(16,)), 3, scaled_huber, capture=True)
    rng = np.random.default_rng(3)
    for _ in range(3):  # warm-up runs eagerly, as it may
        agent.learn_lanes(_stack(_batches(rng, 1, (4,))))
    with pytest.raises(CaptureError, match="calls aten::_local_scalar_dense, which reads a tensor value on the host"):
        agent.learn_lanes(_stack(_batches(rng, 1, (4,))))


@pytest.mark.parametrize(
    "fn",
    [lambda x: x.sum().item(), lambda x: x[x > 0].sum(), lambda x: x.nonzero(), lambda x: float(x.max()) * x],
    ids=["item", "mask", "nonzero", "float"],
)
def test_capture_check_refuses_syncs_and_value_dependent_shapes(fn):
    with pytest.raises(CaptureError), CaptureCheck():
        fn(torch.randn(5))


def test_capture_check_allows_a_whole_update():
    """The checker passes the eager step itself (forward, backward, clipping, fused Adam): nothing in it syncs."""
    agent = _agent("mlp", (4,), [0, 1])
    with CaptureCheck():
        agent.learn_lanes(_stack(_batches(np.random.default_rng(4), 2, (4,))))


def test_loading_a_checkpoint_records_the_graph_again():
    """load_state_dict replaces the optimizer's state tensors, so the graph would update stale memory: it is
    dropped and recorded again, and the run goes on as the eager agent loaded from the same checkpoint does."""
    rng = np.random.default_rng(5)
    batches = [_stack(_batches(rng, 1, (4,))) for _ in range(12)]
    source = _agent("mlp", (4,), [0])
    _run(source, batches[:5])
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    eager, captured = _agent("mlp", (4,), [0]), _agent("mlp", (4,), [0], capture=True)
    _run(captured, batches[:5])  # recorded on its own memory
    for agent in (eager, captured):
        buffer.seek(0)
        agent.load_state_dict(torch.load(buffer, weights_only=False))
    assert captured._captured.calls == 0
    for a, b in zip(_run(eager, batches[5:]), _run(captured, batches[5:]), strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_capture_and_compile_together_are_refused():
    with pytest.raises(ValueError, match="capture and compile"):
        _agent("mlp", (4,), [0], capture=True, compile=True)


def test_inputs_on_another_device_are_refused():
    step = CapturedStep(lambda x: x * 2, torch.device("meta"), warmup=0)
    with pytest.raises(ValueError, match="needs its inputs there"):
        step(torch.ones(3))


# ---------------------------------------------------------------------------------------------- settings and runs
@pytest.mark.parametrize("extra", [[], ["num_seeds=2"], ["loss.tau=auto"]], ids=["one-seed", "two-seeds", "tau-auto"])
def test_a_captured_run_logs_what_the_eager_run_logs(tmp_path, extra):
    """Same seed and config but ``agent.capture_update=true`` (the CPU stand-in): every logged number but speed;
    focal-TD's ``tau=auto`` too (its running mean is updated on the device, in place)."""
    logs = {}
    for name, opts in (("eager", []), ("captured", ["agent.capture_update=true"])):
        train(tmp_path / name, ["replay=per", "loss=focal", *extra, *opts])
        seeds = ["seed_0", "seed_1"] if "num_seeds=2" in extra else ["."]
        logs[name] = [
            [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows(tmp_path / name / s / "metrics.csv")]
            for s in seeds
        ]
    assert logs["captured"] == logs["eager"] and all(len(seed) >= 5 for seed in logs["eager"])


def test_capture_with_compile_is_a_config_error():
    message = "agent.capture_update=True is not allowed: not with agent.compile=true"
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(composed(["agent.capture_update=true", "agent.compile=true"]))


def test_capture_is_no_part_of_an_arm_and_may_change_on_resume():
    saved, captured = {"agent": {"capture_update": False}}, {"agent": {"capture_update": True}}
    assert config_differences(saved, captured) == [] and config_differences({"agent": {}}, captured) == []
