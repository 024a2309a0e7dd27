"""``python -m rlfocal.train env=... replay=... loss=...``: train one arm of the study on one environment.

``build_run`` makes the pieces (environments, replay, agent, loggers, resume state); ``train`` is the loop, which
reads top to bottom as in CleanRL: act → store → sample → learn → update priorities → log. ``num_seeds=S`` trains
seeds ``seed .. seed + S − 1`` as S independent agents in lockstep ("lanes": stacked networks, one replay and one
environment set per seed) through the same loop; ``num_seeds=1`` is the single-seed run. The run directory
(Hydra's; ``hydra.run.dir=...`` sets it) receives ``config.yaml``, ``metrics.csv`` (with S > 1: one ``seed_<k>/``
directory each), ``checkpoints/`` (one for the batch), and at the end ``curve.png`` and ``summary.json``.
SIGTERM/SIGINT write a checkpoint and exit; ``resume=true`` continues from it to the same ``total_steps``; a NaN/inf
loss stops its seed (the run, when it is the only one) and keeps the last good checkpoint.
"""

from __future__ import annotations

import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from agents.dqn import DQN
from rlfocal import runlog
from rlfocal.builders import (
    arm_name,
    linear_schedule,
    make_agent,
    make_gauge,
    make_lane_replay,
    resolve_device,
    set_determinism,
)
from rlfocal.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
from rlfocal.cli import preflight
from rlfocal.config import Config, ConfigError, register_configs, setting_defaults, validate
from rlfocal.envs import EnvArgumentError, check_env, make_env
from rlfocal.envs.experts import Demonstrator, expert_policy
from rlfocal.envs.lanes import make_lane_envs
from rlfocal.evaluation import evaluate_lanes
from rlfocal.extras import MissingExtra, require_extra
from rlfocal.finish import close_logs, finish
from rlfocal.metrics import prefixed
from rlfocal.replay.deferred import DeferredPriorities
from rlfocal.replay.lanes import LaneReplay
from rlfocal.rundir import RunDirLock, RunDirLocked
from rlfocal.runstate import Counters, Lane, LogWindow, StopFlag


class NonFiniteLoss(RuntimeError):
    """The TD loss or TD errors became NaN/inf."""


@dataclass
class Run:
    """Everything the loop touches, built once by ``build_run``."""

    cfg: Config
    run_dir: Path
    envs: object  # make_lane_envs: [S, E] environments
    buffer: LaneReplay
    agent: DQN
    gauge: list  # gauge[k]: seed lane k's analogy gauge (make_gauge)
    lanes: list[Lane]
    counters: Counters
    arm: str
    device: torch.device
    config_dict: dict
    deferred: DeferredPriorities | None = None  # priority write-back one update late (replay.deferred)
    demonstrator: Demonstrator | None = None  # plays the expert's first episodes (demonstrations=K; K=0: never)
    stop: StopFlag | None = None
    t_start: float = 0.0  # perf_counter when this part of the run began
    wall_base: float = 0.0  # wall time of the run's earlier parts

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def live(self) -> list[int]:
        """Seed lanes still training (not stopped by a NaN/inf loss)."""
        return [k for k in range(len(self.lanes)) if k not in self.counters.stopped]


def gradient_steps_due(prev: int, step: int, learning_starts: int, train_freq: int) -> int:
    """Gradient steps owed for the env steps ``(prev, step]``: one per multiple of ``train_freq`` past
    ``learning_starts`` (a step of N environments can owe several, or none)."""
    if step <= learning_starts:
        return 0
    return step // train_freq - max(prev, learning_starts) // train_freq


def crossed(prev: int, step: int, period: int) -> bool:
    """A multiple of ``period`` lies in ``(prev, step]``: every-k-steps events survive steps of N envs."""
    return step // period > prev // period


def exploration_epsilon(cfg: Config, step: int) -> float:
    """ε of the behaviour policy: 1 during warm-up, then linear from eps_start to eps_end."""
    a = cfg.agent
    if step < a.learning_starts:
        return 1.0
    return linear_schedule(a.eps_start, a.eps_end, int(a.eps_fraction * cfg.total_steps), step)


def learn_step(r: Run):
    """One gradient step per seed lane on sampled batches; TD errors go back to the samplers."""
    batch = r.buffer.sample_torch(r.cfg.agent.batch_size, r.device)
    out = r.agent.learn_lanes(batch)
    r.counters.updates += 1
    if r.cfg.replay.prioritized:
        try:
            write_back = r.buffer.update_priorities if r.deferred is None else r.deferred.push
            stop_lanes(r, write_back(batch.indices, out.td_errors, lanes=r.live()))
        except ValueError as err:
            raise NonFiniteLoss(str(err)) from None
    return out, batch.weights


def flush_priorities(r: Run) -> None:
    """Apply a deferred write-back before anything reads or saves the priorities."""
    if r.deferred is not None:
        try:
            stop_lanes(r, r.deferred.flush())
        except ValueError as err:
            raise NonFiniteLoss(str(err)) from None


def check_finite(r: Run) -> None:
    """Stop the seed lanes whose loss went NaN/inf (one host sync)."""
    stop_lanes(r, [int(k) for k in np.flatnonzero(r.agent.nonfinite_lanes.cpu().numpy())])


def stop_lanes(r: Run, lanes: list[int]) -> None:
    """Mark these seed lanes stopped (they act on, unlogged, in lockstep); stop the run when none is left."""
    new = [k for k in lanes if k not in r.counters.stopped]
    if new and len(new) + len(r.counters.stopped) == len(r.lanes):
        raise NonFiniteLoss("loss became NaN/inf")
    for k in new:
        r.counters.stopped.append(k)
        step = r.counters.global_step
        print(f"seed {r.lanes[k].seed}: loss became NaN/inf at step {step:,}; that seed stops, the others go on")


def metrics_row(r: Run, k: int, step: int, epsilon: float, last, gauge: bool) -> dict[str, float]:
    """Seed lane k's row of ``metrics.csv``: its window, last gradient step, sampler and (``gauge``) the gauge."""
    c = r.counters
    row = {
        "global_step": step,
        "charts/episodes": c.episodes[k],
        "charts/epsilon": epsilon,
        "charts/updates": c.updates,
    }
    row |= r.lanes[k].window.row(step)
    row["replay/size"] = len(r.buffer.lanes[k])
    if last is not None:
        out, weights = last
        row["losses/td_loss"] = float(out.loss[k])
        row["losses/q_values"] = float(out.q_mean[k])
        row["losses/td_abs"] = float(out.td_errors[k].abs().mean())
        row["replay/is_weight_min"] = float(weights[k].min())
    row |= prefixed("replay", r.buffer.lanes[k].stats())
    if gauge:
        row |= prefixed("gauge", r.gauge[k](r.agent))
    return row


def log_rows(r: Run, step: int, epsilon: float, last) -> None:
    """One ``metrics.csv`` row per live seed lane; every lane reads the gauge at the same update when it is due
    (priorities flushed first, so a lane whose pending write-back stops it logs no row)."""
    c = r.counters
    check_finite(r)
    gauge = bool(r.cfg.gauge.every) and c.updates - c.gauge_updates >= r.cfg.gauge.every
    if gauge:
        flush_priorities(r)
    for k in r.live():
        r.lanes[k].log.write(metrics_row(r, k, step, epsilon, last, gauge))
    if gauge:
        c.gauge_updates = c.updates


def checkpoint(r: Run) -> None:
    check_finite(r)
    flush_priorities(r)
    r.counters.logger = [lane.log.state for lane in r.lanes]
    r.counters.demonstrated = r.demonstrator.done.tolist()
    r.counters.wall_time_s = r.wall_base + time.perf_counter() - r.t_start
    buffer = r.buffer if r.cfg.save_replay else None
    save_checkpoint(r.ckpt_path, r.agent, buffer, vars(r.counters), r.config_dict)


def store_step(r: Run, obs: np.ndarray, actions: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
    """Wait for the environments' step of ``actions`` from ``obs`` and store it (each env is its own n-step stream);
    count the episodes that ended. Returns the observations to act on next."""
    out = r.envs.step_wait()
    r.demonstrator.record(out.terminated | out.truncated)
    r.buffer.add_batch(obs, actions, out.rewards, out.next_obs, out.terminated, out.truncated, env_ids)
    for k, lane in enumerate(r.lanes):
        lane.window.add_episodes(out.episodes[k])
        r.counters.episodes[k] += len(out.episodes[k])
    return out.obs


def learn(r: Run, prev: int, step: int, warm: int, last):
    """The gradient steps owed for the env steps ``(prev, step]``, once the replay holds ``warm`` transitions;
    returns the last one's (output, weights), or ``last`` when none was due."""
    a = r.cfg.agent
    if len(r.buffer) >= warm:
        for _ in range(gradient_steps_due(prev, step, a.learning_starts, a.train_freq)):
            last = learn_step(r)
    return last


def train(r: Run) -> None:
    """The loop: from the counters' step to ``total_steps``, or until a stop signal. Each iteration waits for its
    environment step, so evaluation, checkpoints and a stop never meet a pending one (``env.overlap``)."""
    cfg, a, c = r.cfg, r.cfg.agent, r.counters
    n = cfg.env.num_envs
    env_ids = np.arange(n)
    # learn once the buffer holds learning_starts transitions: true anyway in a fresh run, and after a resume
    # without the saved replay it keeps the first updates off a near-empty buffer
    warm = max(a.batch_size, min(a.learning_starts, cfg.replay.capacity))
    obs = r.envs.reset(seed=cfg.seed + c.global_step) if c.global_step else r.envs.reset()  # [S, E, ...]
    step = prev = c.global_step
    last = None
    while step < cfg.total_steps and r.stop.signum is None:
        # act in every environment of every seed and step them (the step is stored and waited for below)
        epsilon = exploration_epsilon(cfg, step)
        actions = r.demonstrator.actions(obs, r.agent.act_lanes(obs, epsilon))
        r.envs.step_async(actions)
        prev, step = step, step + n
        c.global_step = step

        # ALGO LOGIC: store the step, then gradient steps on sampled batches, TD errors back to the sampler; with
        # env.overlap the gradient steps come first, while the environments step; then the target network
        if cfg.env.overlap:
            last = learn(r, prev, step, warm, last)
            obs = store_step(r, obs, actions, env_ids)
        else:
            obs = store_step(r, obs, actions, env_ids)
            last = learn(r, prev, step, warm, last)
        if crossed(prev, step, a.target_update_period):
            r.agent.update_target(a.tau)

        # evaluate (always at the end, so the final return is never missing), log, checkpoint
        done = step >= cfg.total_steps
        if (cfg.eval_every and crossed(prev, step, cfg.eval_every)) or done:
            envs, rngs = [lane.eval_env for lane in r.lanes], [lane.eval_rng for lane in r.lanes]
            results = evaluate_lanes(r.agent, envs, cfg.eval_episodes, cfg.eval_epsilon, rngs, r.stop)
            for lane, result in zip(r.lanes, results, strict=True):
                lane.window.eval = result
        if crossed(prev, step, cfg.logger.log_every) or done:
            log_rows(r, step, epsilon, last)
        if crossed(prev, step, cfg.checkpoint_every) or done:
            checkpoint(r)


def seed_dirs(run_dir: Path, seeds: list[int]) -> list[Path]:
    """Each seed's run directory: the run directory itself for one seed, else ``seed_<k>/`` inside it."""
    return [run_dir] if len(seeds) == 1 else [run_dir / f"seed_{s}" for s in seeds]


def build_run(cfg: Config, run_dir: Path, config_dict: dict) -> Run:
    """Environments, replay, agent, gauge and loggers for ``cfg``; restores the checkpoint when resuming."""
    torch.set_num_threads(cfg.torch_threads)
    set_determinism(cfg.deterministic)
    device = resolve_device(cfg.device)
    seeds = [cfg.seed + k for k in range(cfg.num_seeds)]
    envs = make_lane_envs(cfg.env.name, seeds, cfg.env.num_envs, mode=cfg.env.vector_mode, train=True, **cfg.env.kwargs)
    obs_shape, obs_dtype = envs.single_observation_space.shape, envs.single_observation_space.dtype
    a = cfg.agent
    total_updates = max(0, cfg.total_steps - a.learning_starts) // a.train_freq
    buffer = make_lane_replay(cfg, seeds, obs_shape, obs_dtype, total_updates)
    agent = make_agent(cfg, obs_shape, int(envs.single_action_space.n), device)
    warn_if_too_short(cfg)

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    counters, resume_step = Counters(episodes=[0] * len(seeds), logger=[{} for _ in seeds]), None
    have_checkpoint = ckpt_path.exists() or previous_path(ckpt_path).exists()
    if cfg.resume is True and not have_checkpoint:
        raise CheckpointError(f"resume=true but {ckpt_path.parent} holds no checkpoint (resume=auto starts afresh)")
    if cfg.resume and have_checkpoint:
        saved = load_checkpoint(ckpt_path, agent, buffer, config=config_dict, defaults=setting_defaults())
        counters = Counters(**saved)
        resume_step = counters.global_step
        buffer.truncate_streams()  # the interrupted episode ends here; fresh environments follow
        print(f"resuming {run_dir} at step {resume_step:,} of {cfg.total_steps:,}")
    counters.start_step = counters.global_step
    arm = arm_name(cfg)
    lanes = []
    for k, (seed, lane_dir) in enumerate(zip(seeds, seed_dirs(run_dir, seeds), strict=True)):
        lane_dir.mkdir(parents=True, exist_ok=True)
        lane_config = {**config_dict, "seed": seed}
        OmegaConf.save(OmegaConf.create(lane_config), lane_dir / "config.yaml")
        log = runlog.RunLogger(lane_dir, cfg, arm, lane_config, resume_step, counters.logger[k], seed=seed)
        eval_env = make_env(cfg.env.name, seed + 10_000, train=False, **cfg.env.kwargs)
        lanes.append(
            Lane(seed, lane_dir, log, LogWindow(counters.global_step), eval_env, np.random.default_rng(seed + 10_000))
        )
    gauge = [make_gauge(cfg, lane_buffer, k) for k, lane_buffer in enumerate(buffer.lanes)]
    r = Run(cfg, run_dir, envs, buffer, agent, gauge, lanes, counters, arm, device, config_dict)
    deferred = cfg.replay.deferred is True or (cfg.replay.deferred == "auto" and device.type == "cuda")
    if cfg.replay.prioritized and deferred:
        r.deferred = DeferredPriorities(buffer)
    expert = expert_policy(cfg.env.name, cfg.env.kwargs) if cfg.demonstrations else None
    done = counters.demonstrated or np.zeros((len(seeds), cfg.env.num_envs), dtype=np.int64)
    r.demonstrator = Demonstrator(expert, cfg.demonstrations, done)
    return r


def warn_if_too_short(cfg: Config) -> None:
    """Say at the start when a run cannot learn anything (no gradient step)."""
    a = cfg.agent
    if gradient_steps_due(0, cfg.total_steps, a.learning_starts, a.train_freq) == 0:
        warnings.warn(
            f"total_steps={cfg.total_steps:,} leaves no gradient step (agent.learning_starts={a.learning_starts:,}, "
            f"agent.train_freq={a.train_freq}): this run only measures a random policy",
            stacklevel=2,
        )


def run(cfg: Config, run_dir: Path, config_dict: dict, command: str = "python -m rlfocal.train ...") -> dict:
    """Train to ``cfg.total_steps`` environment steps, holding the run directory's lock; returns the summary.
    ``command`` (the caller's own command line) is what the interrupt message tells the user to rerun."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunDirLock(run_dir):
        r = build_run(cfg, run_dir, config_dict)
        r.stop, r.t_start, r.wall_base = StopFlag(), time.perf_counter(), r.counters.wall_time_s
        try:
            train(r)
        except NonFiniteLoss as err:
            close_logs(r)
            good = f"the last good checkpoint is {r.ckpt_path}" if r.ckpt_path.exists() else "no checkpoint was written"
            step = r.counters.global_step
            msg = f"stopped at step {step:,}: {err}. Lower agent.lr or check the loss settings; {good}."
            print(f"\n{msg}", file=sys.stderr)
            raise NonFiniteLoss(msg) from None
        finally:
            r.stop.restore()
            r.counters.wall_time_s = r.wall_base + time.perf_counter() - r.t_start

        if r.stop.signum is not None:
            checkpoint(r)
            close_logs(r)
            r.envs.close()  # async workers hold the run directory's lock until they exit
            name = signal.Signals(r.stop.signum).name
            print(
                f"\n{name} at step {r.counters.global_step:,}: checkpoint written to {r.ckpt_path}; continue with\n"
                f"  {command} resume=true hydra.run.dir={run_dir}"
            )
            raise SystemExit(128 + r.stop.signum)
        return finish(r)


register_configs()


@hydra.main(config_path="pkg://rlfocal.configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        config = validate(cfg)
        resolve_device(config.device)
        check_env(config.env.name, config.env.kwargs)
        if config.demonstrations:
            expert_policy(config.env.name, config.env.kwargs)
    except (ConfigError, EnvArgumentError) as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "hydra.run.dir="))]
    command = " ".join(["python -m rlfocal.train", *overrides])
    try:
        summary = run(config, run_dir, OmegaConf.to_container(cfg, resolve=True), command)
    except ConfigError as err:  # found while building the run (e.g. replay.storage_device against device)
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (CheckpointError, RunDirLocked, MissingExtra) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except NonFiniteLoss:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed and the rest of the sweep goes on
        raise SystemExit(1) from None
    return summary["final_eval_return"]


if __name__ == "__main__":
    preflight(sys.argv[1:])
    if any("launcher=joblib" in a or "experiment=analogy" in a for a in sys.argv[1:]):
        try:
            require_extra("hydra_plugins.hydra_joblib_launcher", "sweep", "a joblib sweep")
        except MissingExtra as err:
            raise SystemExit(f"config error: {err}") from None
    main()
