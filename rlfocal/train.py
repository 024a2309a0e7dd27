"""``python -m rlfocal.train env=... replay=... loss=...``: train one arm of the study on one environment.

``build_run`` makes the pieces (environments, replay, agent, logger, resume state); ``train`` is the loop, which
reads top to bottom as in CleanRL: act → store → sample → learn → update priorities → log. The run directory
(Hydra's; ``hydra.run.dir=...`` sets it) receives ``config.yaml``, ``metrics.csv``, ``checkpoints/``, and at the
end ``curve.png`` and ``summary.json``. SIGTERM/SIGINT write a checkpoint and exit; ``resume=true`` continues from
it to the same ``total_steps``; a NaN/inf loss stops the run and keeps the last good checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
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
    make_replay,
    resolve_device,
    set_determinism,
)
from rlfocal.checkpoint import CheckpointError, load_checkpoint, previous_path, save_checkpoint
from rlfocal.cli import preflight
from rlfocal.config import Config, ConfigError, register_configs, validate
from rlfocal.envs import EnvArgumentError, check_env, make_env
from rlfocal.envs.vector import make_vec_env
from rlfocal.extras import MissingExtra, require_extra
from rlfocal.metrics import prefixed
from rlfocal.replay import ReplayBuffer
from rlfocal.replay.deferred import DeferredPriorities
from rlfocal.rundir import RunDirLock, RunDirLocked


class NonFiniteLoss(RuntimeError):
    """The TD loss or TD errors became NaN/inf."""


@dataclass
class Counters:
    """What a checkpoint must restore besides the agent and the replay."""

    global_step: int = 0
    updates: int = 0
    episodes: int = 0
    gauge_updates: int = 0  # counters.updates at the last gauge reading
    wall_time_s: float = 0.0  # training time of the run's earlier parts (resumed runs report the whole run)
    start_step: int = 0  # global_step when this part began
    logger: dict = field(default_factory=dict)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop (and evaluation) checks it and stops at a clean point."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        """Put back the handlers that were there before, so a caller of ``run`` gets its signals back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Run:
    """Everything the loop touches, built once by ``build_run``."""

    cfg: Config
    run_dir: Path
    envs: object
    eval_env: object
    eval_rng: np.random.Generator
    buffer: ReplayBuffer
    agent: DQN
    gauge: object
    log: runlog.RunLogger
    counters: Counters
    arm: str
    device: torch.device
    config_dict: dict
    deferred: DeferredPriorities | None = None  # priority write-back one update late (replay.deferred)
    stop: StopFlag | None = None
    t_start: float = 0.0  # perf_counter when this part of the run began
    wall_base: float = 0.0  # wall time of the run's earlier parts

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"


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


def evaluate(agent, env, episodes: int, epsilon: float, rng: np.random.Generator, stop: StopFlag | None = None):
    """Mean and std of the return of the ε-greedy policy over whole episodes (exploration draws from ``rng``);
    (NaN, NaN) if a stop signal arrives mid-way, so a SIGTERM is answered within one environment step."""
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            if stop is not None and stop.signum is not None:
                return math.nan, math.nan
            obs, reward, term, trunc, _ = env.step(agent.act(obs, epsilon, rng))
            total += float(reward)
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


class LogWindow:
    """What a metrics row summarises: episodes finished, the last evaluation and throughput since the last row."""

    def __init__(self, step: int) -> None:
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.eval = (math.nan, math.nan)
        self.t0, self.s0 = time.perf_counter(), step

    def add_episodes(self, episodes) -> None:
        for _, episode_return, episode_length in episodes:  # whole games: raw scores, even on Atari
            self.returns.append(episode_return)
            self.lengths.append(episode_length)

    def row(self, step: int) -> dict[str, float]:
        """The window's part of a row, then start the next window."""
        now = time.perf_counter()
        row = {
            "charts/episodic_return": float(np.mean(self.returns)) if self.returns else math.nan,
            "charts/episodic_length": float(np.mean(self.lengths)) if self.lengths else math.nan,
            "charts/SPS": (step - self.s0) / max(now - self.t0, 1e-9),
            "eval/return": self.eval[0],
            "eval/return_std": self.eval[1],
        }
        self.__init__(step)
        self.t0 = now
        return row


def learn_step(r: Run):
    """One gradient step on a sampled batch; TD errors go back to the sampler. Returns (learn output, weights)."""
    batch = r.buffer.sample_torch(r.cfg.agent.batch_size, r.device)
    out = r.agent.learn(batch)
    r.counters.updates += 1
    if r.cfg.replay.prioritized:
        try:
            if r.deferred is not None:
                r.deferred.push(batch.indices, out.td_errors)
            else:
                r.buffer.update_priorities(batch.indices, out.td_errors)
        except ValueError as err:
            raise NonFiniteLoss(str(err)) from None
    return out, batch.weights


def flush_priorities(r: Run) -> None:
    """Apply a deferred write-back before anything reads or saves the priorities."""
    if r.deferred is not None:
        try:
            r.deferred.flush()
        except ValueError as err:
            raise NonFiniteLoss(str(err)) from None


def metrics_row(r: Run, step: int, epsilon: float, window: LogWindow, last) -> dict[str, float]:
    """One row of ``metrics.csv``: the window, the last gradient step, the sampler and, when due, the gauge."""
    c = r.counters
    row = {"global_step": step, "charts/episodes": c.episodes, "charts/epsilon": epsilon, "charts/updates": c.updates}
    row |= window.row(step)
    row["replay/size"] = len(r.buffer)
    if last is not None:
        out, weights = last
        row["losses/td_loss"] = float(out.loss)
        row["losses/q_values"] = float(out.q_mean)
        row["losses/td_abs"] = float(out.td_errors.abs().mean())
        row["replay/is_weight_min"] = float(weights.min())
    row |= prefixed("replay", r.buffer.stats())
    if r.cfg.gauge.every and c.updates - c.gauge_updates >= r.cfg.gauge.every:
        flush_priorities(r)
        row |= prefixed("gauge", r.gauge(r.agent))
        c.gauge_updates = c.updates
    return row


def checkpoint(r: Run) -> None:
    if bool(r.agent.nonfinite):  # one host sync, only when logging or checkpointing
        raise NonFiniteLoss("loss became NaN/inf")
    flush_priorities(r)
    r.counters.logger = r.log.state
    r.counters.wall_time_s = r.wall_base + time.perf_counter() - r.t_start
    buffer = r.buffer if r.cfg.save_replay else None
    save_checkpoint(r.ckpt_path, r.agent, buffer, vars(r.counters), r.config_dict)


def train(r: Run) -> None:
    """The loop: from the counters' step to ``total_steps``, or until a stop signal."""
    cfg, a, c = r.cfg, r.cfg.agent, r.counters
    n = cfg.env.num_envs
    env_ids = np.arange(n)
    # learn once the buffer holds learning_starts transitions: true anyway in a fresh run, and after a resume
    # without the saved replay it keeps the first updates off a near-empty buffer
    warm = max(a.batch_size, min(a.learning_starts, cfg.replay.capacity))
    obs = r.envs.reset(seed=cfg.seed + c.global_step) if c.global_step else r.envs.reset()
    step = prev = c.global_step
    window, last = LogWindow(step), None
    while step < cfg.total_steps and r.stop.signum is None:
        # act in every environment and store the steps (each env is its own n-step stream)
        epsilon = exploration_epsilon(cfg, step)
        actions = r.agent.act_batch(obs, epsilon)
        out = r.envs.step(actions)
        r.buffer.add_batch(obs, actions, out.rewards, out.next_obs, out.terminated, out.truncated, env_ids)
        obs = out.obs
        window.add_episodes(out.episodes)
        c.episodes += len(out.episodes)
        prev, step = step, step + n
        c.global_step = step

        # ALGO LOGIC: gradient steps on sampled batches, TD errors back to the sampler; then the target network
        if len(r.buffer) >= warm:
            for _ in range(gradient_steps_due(prev, step, a.learning_starts, a.train_freq)):
                last = learn_step(r)
        if crossed(prev, step, a.target_update_period):
            r.agent.update_target(a.tau)

        # evaluate (always at the end, so the final return is never missing), log, checkpoint
        done = step >= cfg.total_steps
        if (cfg.eval_every and crossed(prev, step, cfg.eval_every)) or done:
            window.eval = evaluate(r.agent, r.eval_env, cfg.eval_episodes, cfg.eval_epsilon, r.eval_rng, r.stop)
        if crossed(prev, step, cfg.logger.log_every) or done:
            if bool(r.agent.nonfinite):
                raise NonFiniteLoss("loss became NaN/inf")
            r.log.write(metrics_row(r, step, epsilon, window, last))
        if crossed(prev, step, cfg.checkpoint_every) or done:
            checkpoint(r)


def build_run(cfg: Config, run_dir: Path, config_dict: dict) -> Run:
    """Environments, replay, agent, gauge and logger for ``cfg``; restores the checkpoint when resuming."""
    torch.set_num_threads(cfg.torch_threads)
    set_determinism(cfg.deterministic)
    device = resolve_device(cfg.device)
    n = cfg.env.num_envs
    envs = make_vec_env(cfg.env.name, cfg.seed, n, mode=cfg.env.vector_mode, train=True, **cfg.env.kwargs)
    eval_env = make_env(cfg.env.name, cfg.seed + 10_000, train=False, **cfg.env.kwargs)
    obs_shape, obs_dtype = envs.single_observation_space.shape, envs.single_observation_space.dtype
    a = cfg.agent
    total_updates = max(0, cfg.total_steps - a.learning_starts) // a.train_freq
    buffer = make_replay(cfg, obs_shape, obs_dtype, total_updates)
    agent = make_agent(cfg, obs_shape, int(envs.single_action_space.n), device)
    warn_if_too_short(cfg)

    ckpt_path = run_dir / "checkpoints" / "last.pt"
    counters, resume_step = Counters(), None
    have_checkpoint = ckpt_path.exists() or previous_path(ckpt_path).exists()
    if cfg.resume is True and not have_checkpoint:
        raise CheckpointError(f"resume=true but {ckpt_path.parent} holds no checkpoint (resume=auto starts afresh)")
    if cfg.resume and have_checkpoint:
        counters = Counters(**load_checkpoint(ckpt_path, agent, buffer, config=config_dict))
        resume_step = counters.global_step
        buffer.truncate_streams()  # the interrupted episode ends here; fresh environments follow
        print(f"resuming {run_dir} at step {resume_step:,} of {cfg.total_steps:,}")
    counters.start_step = counters.global_step
    OmegaConf.save(OmegaConf.create(config_dict), run_dir / "config.yaml")
    arm = arm_name(cfg)
    log = runlog.RunLogger(run_dir, cfg, arm, config_dict, resume_step, counters.logger)
    eval_rng = np.random.default_rng(cfg.seed + 10_000)  # evaluation observes; it never draws from training's RNG
    gauge = make_gauge(cfg, buffer)
    r = Run(cfg, run_dir, envs, eval_env, eval_rng, buffer, agent, gauge, log, counters, arm, device, config_dict)
    deferred = cfg.replay.deferred is True or (cfg.replay.deferred == "auto" and device.type == "cuda")
    if cfg.replay.prioritized and deferred:
        r.deferred = DeferredPriorities(buffer)
    return r


def warn_if_too_short(cfg: Config) -> None:
    """Say at the start when a run cannot learn anything: no gradient step, or no evaluation before the end."""
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
            r.log.close()
            good = f"the last good checkpoint is {r.ckpt_path}" if r.ckpt_path.exists() else "no checkpoint was written"
            msg = (
                f"stopped at step {r.counters.global_step:,}: {err}. Lower agent.lr or check the loss settings; {good}."
            )
            print(f"\n{msg}", file=sys.stderr)
            raise NonFiniteLoss(msg) from None
        finally:
            r.stop.restore()
            r.counters.wall_time_s = r.wall_base + time.perf_counter() - r.t_start

        if r.stop.signum is not None:
            checkpoint(r)
            r.log.close()
            name = signal.Signals(r.stop.signum).name
            print(
                f"\n{name} at step {r.counters.global_step:,}: checkpoint written to {r.ckpt_path}; continue with\n"
                f"  {command} resume=true hydra.run.dir={run_dir}"
            )
            raise SystemExit(128 + r.stop.signum)
        return finish(r)


def finish(r: Run) -> dict:
    """Close everything, then write ``curve.png`` and ``summary.json`` and print the summary."""
    cfg, c = r.cfg, r.counters
    r.log.close()
    r.envs.close()
    r.eval_env.close()
    metrics = r.run_dir / "metrics.csv"
    runlog.plot_curve(metrics, r.run_dir / "curve.png", f"{cfg.env.name}: {r.arm}, seed {cfg.seed}")
    extra = {
        "arm": r.arm,
        "env": cfg.env.name,
        "seed": cfg.seed,
        "updates": c.updates,
        "sps": c.global_step / max(c.wall_time_s, 1e-9),
        "wall_time_s": c.wall_time_s,
        "eval_episodes": cfg.eval_episodes,
        "run_dir": str(r.run_dir),
    }
    summary = runlog.summarize(metrics, extra)
    runlog.write_json(r.run_dir / "summary.json", summary)
    runlog.print_summary(summary)
    return summary


register_configs()


@hydra.main(config_path="pkg://rlfocal.configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        config = validate(cfg)
        resolve_device(config.device)
        check_env(config.env.name, config.env.kwargs)
    except (ConfigError, EnvArgumentError) as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "hydra.run.dir="))]
    command = " ".join(["python -m rlfocal.train", *overrides])
    try:
        summary = run(config, run_dir, OmegaConf.to_container(cfg, resolve=True), command)
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
