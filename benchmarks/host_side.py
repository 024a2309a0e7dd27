"""Host-side work of an Atari PER agent step, before and after the GPU-path options (issue 13's CPU target).

What a GPU run cannot hide is the learner thread's own work: Python, numpy, the env steps it runs itself, and the
launch of every torch operation. This benchmark runs the loop of ``rlfocal.train`` for Atari PER (Nature CNN, batch
32 every 4 agent steps, 8 environments, 1M-transition replay, target copy every 1,000 steps) on a CPU machine with
every learner tensor on torch's ``meta`` device, where an operation computes nothing, and measures
``time.thread_time()`` of the learner thread per agent step (wall time beside it), split by component:

- ``env``, ``add``, ``sample``, ``write_back``: the replay and environment work around the network, measured. Their
  sum is the **host work** compared before and after (``sample`` after the change includes its device operations'
  dispatch on meta: conservative, a meta dispatch costs about what a CUDA launch does or more).
- ``act``, ``learn``: the network's forward, backward and optimizer. Meta kernels are partly Python, so their time
  says nothing about CUDA; the JSON gives instead the aten operations per agent step that launch a kernel on CUDA
  (views excluded), and the table the host work with them priced at 5 and 10 µs each.

- ``before``: the step as it ran before these options: ``env.vector_mode=serial`` (the 8 ALE emulators stepped in
  this thread), replay storage on the host (every batch gathered on the host, then one copy per field),
  ``replay.deferred=false`` (priorities written back at once).
- ``after``: ``env.vector_mode=async env.overlap=true`` (a worker process per emulator, stepping while the learner
  learns), ``replay.storage_device`` = the learner's device (each env step's rows copied there, batches gathered
  there: two small copies per batch), ``replay.deferred=true``, ``agent.capture_update=true`` (the update replayed
  as one CUDA graph: here the graph is recorded with the CPU stand-in, then its replay is a no-op counted as one
  kernel launch, which is what a replay costs the host; the copies of the batch into the graph's inputs are
  dispatched and counted as they are).
- ``after_eager_update``: ``after`` with the eager update (``agent.capture_update=false``), the control that sets
  the capture's share apart from the other options'.
- ``after_uniform``: ``after`` with uniform replay (no priorities, no write-back), PER's counterpart for issue 13's
  GPU target "PER <= 1.15x uniform time per step": PER adds only host work to a step (the sum-tree descent, IS
  weights, the write-back; on the GPU one multiply by the weights), so a step that the host bounds costs PER / uniform
  at most ``after`` / ``after_uniform`` of host work with the launches priced (``per_over_uniform`` in the JSON), and
  a step that the GPU bounds hides some of PER's extra work.
- ``after_envpool``: the same with ``env.vector_mode=envpool`` (EnvPool's C++ threads; only where it is installed).
  On a 2-core machine the emulators of both run on the learner's cores while it learns, so the learner's own work
  costs more CPU time there (cold caches) than on a GPU host with cores to spare.

Stand-ins, the same on both sides: the actions are drawn at random (meta tensors hold no values); TD errors for the
write-back are drawn on the host; Adam is one ``torch._foreach_add_`` (fused Adam is one launch on CUDA and refuses
meta tensors). ``before`` runs its meta update in the learner thread, ``after`` does not (a graph replay): meta
kernels are Python and evict the caches that the host parts then miss, so ``before``'s host parts may read high.
Not counted: waiting (a blocking ``.cpu()`` costs the learner wall time on a GPU, not work) and the
GPU's own time. Rounds alternate the configurations' order; figures are the median over rounds, with the range.

    python benchmarks/host_side.py                 # 3 rounds, ~5 minutes on 2 cores
    python benchmarks/host_side.py --quick         # CI smoke: tiny, figures mean nothing
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.dqn import DQN  # noqa: E402
from agents.networks import make_network  # noqa: E402
from benchmarks.rounds import cell, summarise, write  # noqa: E402
from rlfocal import losses  # noqa: E402
from rlfocal.envs.vector import make_vec_env  # noqa: E402
from rlfocal.replay import PrioritizedSampler, ReplayBuffer, TransitionStorage, UniformSampler  # noqa: E402
from rlfocal.replay.deferred import DeferredPriorities  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
AFTER = {"overlap": True, "storage_device": "meta", "deferred": True, "capture": True}
CONFIGS = {
    "before": {"vector_mode": "serial", "overlap": False, "storage_device": None, "deferred": False, "capture": False},
    "after": {"vector_mode": "async", **AFTER},
    "after_envpool": {"vector_mode": "envpool", **AFTER},
    # the control: "after" with the eager update, to set the capture's share apart from the other options'
    "after_eager_update": {"vector_mode": "async", **AFTER, "capture": False},
    "after_uniform": {"vector_mode": "async", **AFTER, "sampler": "uniform"},
}
PARTS = ("act", "env", "add", "sample", "learn", "write_back")
HOST_PARTS = ("env", "add", "sample", "write_back")  # the work around the network, compared before and after
LAUNCH_US = (5, 10)  # prices of one kernel launch for the table's estimates
BATCH, TRAIN_FREQ, TARGET_PERIOD = 32, 4, 1000
META = torch.device("meta")


def uniform(cfg: dict) -> bool:
    """The configuration replays uniformly (no priorities, no write-back)."""
    return cfg.get("sampler") == "uniform"


def build(cfg: dict, args: argparse.Namespace):
    """Environments, replay and learner of one configuration (learner and device storage on meta)."""
    envs = make_vec_env(args.game, 0, args.num_envs, mode=cfg["vector_mode"])
    obs_shape = envs.single_observation_space.shape
    storage = TransitionStorage(args.capacity, obs_shape, np.uint8, frame_stack=obs_shape[0])
    if uniform(cfg):
        sampler = UniformSampler(storage.capacity)
    else:
        sampler = PrioritizedSampler(storage.capacity, 0.6, 0.4, 1e-6, beta_steps=10**6)
    buffer = ReplayBuffer(storage, sampler, 0, storage_device=cfg["storage_device"] and META)
    num_actions = int(envs.single_action_space.n)
    net = make_network("nature", obs_shape, num_actions)
    agent = DQN(net, num_actions, losses.huber, device=META, capture=cfg["capture"])
    agent.optimizer.step = torch.no_grad()(lambda: torch._foreach_add_(agent.params, 1e-3))  # one launch, as fused Adam
    deferred = DeferredPriorities(buffer) if cfg["deferred"] and not uniform(cfg) else None
    return envs, buffer, agent, deferred, num_actions


def record_graph(agent: DQN, buffer: ReplayBuffer) -> None:
    """Warm up and record the captured update (the stand-in graph), then make its replay a no-op: on CUDA a replay
    is one launch from the host, whatever it runs on the GPU."""
    step = agent._captured
    while step._graph is None or step._graph.outputs is None:
        agent.learn(buffer.sample_torch(BATCH, META))
    step._graph.replay = lambda: None


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched inside it that launch a kernel on CUDA: all but views (``detach``,
    ``t``, ``view``, ...), which only make new tensor metadata."""

    ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += not func.is_view
        return func(*args, **(kwargs or {}))


def network_ops(agent: DQN, buffer: ReplayBuffer, obs: np.ndarray, num_envs: int) -> float:
    """Kernel-launching aten operations per agent step of the network: one forward to act per iteration, one update
    per 4 steps."""
    with OpCounter() as act, torch.inference_mode():
        agent.q_net(torch.as_tensor(obs).to(META)).argmax(dim=1)
    batch = buffer.sample_torch(BATCH, META)
    with OpCounter() as learn:
        agent.learn(batch)
    replays = int(agent._captured is not None)  # a graph replay: one launch (see record_graph)
    return act.ops / num_envs + (learn.ops + replays) / TRAIN_FREQ


def run(cfg: dict, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    """Fill the replay with ``args.warmup`` random steps, then time ``args.steps`` agent steps of training."""
    envs, buffer, agent, deferred, num_actions = build(cfg, args)
    n = args.num_envs
    env_ids = np.arange(n)
    obs = envs.reset(seed=0)
    step, clock = 0, dict.fromkeys(PARTS, 0.0)

    def timed(part: str, fn, *a):
        t0 = time.thread_time()
        out = fn(*a)
        clock[part] += time.thread_time() - t0
        return out

    def learn() -> None:
        for _ in range(n // TRAIN_FREQ):
            batch = timed("sample", buffer.sample_torch, BATCH, META)
            timed("learn", agent.learn, batch)
            if uniform(cfg):  # no priorities to write back
                continue
            td = rng.standard_normal(BATCH).astype(np.float32)  # the TD errors a GPU would send back
            if deferred is None:
                timed("write_back", buffer.update_priorities, batch.indices, td)
            else:
                timed("write_back", deferred.push, batch.indices, torch.from_numpy(td))

    def agent_step(measured: bool) -> np.ndarray:
        nonlocal step
        if measured:
            with torch.inference_mode():
                timed("act", lambda: agent.q_net(torch.as_tensor(obs).to(META)).argmax(dim=1))
        actions = rng.integers(num_actions, size=n)
        timed("env", envs.step_async, actions)
        if measured and cfg["overlap"]:
            learn()
        out = timed("env", envs.step_wait)
        timed("add", buffer.add_batch, obs, actions, out.rewards, out.next_obs, out.terminated, out.truncated,
              env_ids)  # fmt: skip
        if measured and not cfg["overlap"]:
            learn()
        step += n
        if measured and step // TARGET_PERIOD > (step - n) // TARGET_PERIOD:
            timed("learn", agent.update_target)
        return out.obs

    try:
        while step < args.warmup:
            obs = agent_step(measured=False)
        if cfg["capture"]:
            record_graph(agent, buffer)
        clock = dict.fromkeys(PARTS, 0.0)
        start, t0, cpu0 = step, time.perf_counter(), time.thread_time()
        while step < start + args.steps:
            obs = agent_step(measured=True)
        wall, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        ops = network_ops(agent, buffer, obs, n)
    finally:
        envs.close()
    agent_steps = step - start
    host = sum(clock[part] for part in HOST_PARTS)
    out = {
        "agent_steps": agent_steps,
        "host_us_per_step": 1e6 * host / agent_steps,
        "network_ops_per_step": ops,
        "thread_us_per_step": 1e6 * cpu / agent_steps,
        "wall_us_per_step": 1e6 * wall / agent_steps,
        **{f"{part}_us_per_step": 1e6 * clock[part] / agent_steps for part in PARTS},
    }
    for price in LAUNCH_US:
        out[f"host_with_launches_{price}us_per_step"] = out["host_us_per_step"] + price * ops
    return out


LABELS = {
    "host_us_per_step": "**host work** (env + add + sample + write back)",
    **{f"host_with_launches_{p}us_per_step": f"host work + network launches at {p} µs" for p in LAUNCH_US},
    "network_ops_per_step": "network: kernel launches per agent step (count)",
    "act_us_per_step": "act on meta (not a CUDA figure)",
    "learn_us_per_step": "learn on meta (not a CUDA figure)",
    "wall_us_per_step": "wall on meta (not a target)",
}


def table(results: dict) -> str:
    """Markdown: each component's median (range) per configuration, and before / after."""
    keys = [
        "host_us_per_step",
        *(f"{p}_us_per_step" for p in HOST_PARTS),
        *(f"host_with_launches_{p}us_per_step" for p in LAUNCH_US),
        "network_ops_per_step",
        "act_us_per_step",
        "learn_us_per_step",
        "wall_us_per_step",
    ]
    configs = list(results)
    columns = " | ".join(name.replace("_", " ") for name in configs)
    rule = "|---|" + "---:|" * (len(configs) + 1)
    lines = [f"| per agent step (µs unless said) | {columns} | before / after |", rule]
    for key in keys:
        cells = [cell(results[c][key]) for c in configs]
        before, after = results["before"][key]["median"], results["after"][key]["median"]
        ratio = f"{before / after:.2f}x" if after > 0 else "–"
        label = LABELS.get(key, key.removesuffix("_us_per_step").replace("_", " "))
        lines.append(f"| {label} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="ALE/Pong-v5")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--warmup", type=int, default=10_000, help="random agent steps before timing")
    parser.add_argument("--steps", type=int, default=4_000, help="timed agent steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 round, a few hundred steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "host_side.json")
    args = parser.parse_args()
    if args.quick:
        args.capacity, args.warmup, args.steps, args.rounds = 2_000, 200, 160, 1
    torch.set_num_threads(1)
    configs = [c for c in CONFIGS if CONFIGS[c]["vector_mode"] != "envpool" or importlib.util.find_spec("envpool")]
    raw: dict[str, list[dict]] = {name: [] for name in configs}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]  # interleaved, alternating order
        for name in order:
            result = run(CONFIGS[name], args, np.random.default_rng(r))
            raw[name].append(result)
            print(f"round {r + 1}/{args.rounds} {name:6s} host work {result['host_us_per_step']:8.1f} µs/step, "
                  f"network {result['network_ops_per_step']:.0f} ops/step", flush=True)  # fmt: skip
    results = {name: summarise(runs) for name, runs in raw.items()}
    reduction = {
        key: results["before"][key]["median"] / results["after"][key]["median"]
        for key in ("host_us_per_step", *(f"host_with_launches_{p}us_per_step" for p in LAUNCH_US))
    }
    per_over_uniform = {
        key: results["after"][key]["median"] / results["after_uniform"][key]["median"] for key in reduction
    }
    write(args.out, "host_side", args, results, table(results), loadavg_end=list(os.getloadavg()),
          configs={name: CONFIGS[name] for name in configs}, total_wall_s=time.perf_counter() - t_start,
          host_reduction=reduction, per_over_uniform=per_over_uniform)  # fmt: skip
    for what, ratios in (("before / after (target >= 2x)", reduction), ("after, PER / uniform", per_over_uniform)):
        print(f"host-side work per agent step, {what}: " + ", ".join(f"{k.removesuffix('_per_step')} {v:.2f}x"
                                                                    for k, v in ratios.items()))  # fmt: skip


if __name__ == "__main__":
    main()
