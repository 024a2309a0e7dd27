"""``python -m rlfocal.train env=... replay=... loss=...``: train one arm of the study on one environment.

The loop reads top to bottom, as in CleanRL: act → store → sample → learn → update priorities → log. The run
directory (Hydra's; ``hydra.run.dir=...`` sets it) receives ``config.yaml``, ``metrics.csv``, ``checkpoints/``,
and at the end ``curve.png`` and ``summary.json``. SIGTERM/SIGINT write a checkpoint and exit; ``resume=true``
continues from it to the same ``total_steps``; a NaN/inf loss stops the run and keeps the last good checkpoint.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlfocal import logging as runlog
from rlfocal.builders import (
    arm_name,
    linear_schedule,
    make_agent,
    make_gauge,
    make_replay,
    resolve_device,
    set_determinism,
)
from rlfocal.checkpoint import load_checkpoint, save_checkpoint
from rlfocal.config import Config, ConfigError, register_configs, validate
from rlfocal.envs import make_env
from rlfocal.envs.vector import make_vec_env


class NonFiniteLoss(RuntimeError):
    """The TD loss or TD errors became NaN/inf."""


@dataclass
class Counters:
    """What a checkpoint must restore besides the agent and the replay."""

    global_step: int = 0
    updates: int = 0
    episodes: int = 0
    gauge_updates: int = 0  # counters.updates at the last gauge reading
    logger: dict = field(default_factory=dict)


class StopFlag:
    """Set by SIGTERM/SIGINT; the loop checks it once per step and stops at a clean point."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        """Put back the handlers that were there before, so a caller of ``run`` gets its signals back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def evaluate(agent, env, episodes: int, epsilon: float, rng: np.random.Generator) -> tuple[float, float]:
    """Mean and std of the return of the ε-greedy policy over whole episodes (exploration draws from ``rng``)."""
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset()
        done, total = False, 0.0
        while not done:
            obs, reward, term, trunc, _ = env.step(agent.act(obs, epsilon, rng))
            total += float(reward)
            done = term or trunc
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def run(cfg: Config, run_dir: Path, config_dict: dict) -> dict:
    """Train to ``cfg.total_steps`` environment steps; returns the summary."""
    torch.set_num_threads(cfg.torch_threads)
    set_determinism(cfg.deterministic)
    device = resolve_device(cfg.device)
    n = cfg.env.num_envs
    envs = make_vec_env(cfg.env.name, cfg.seed, n, mode=cfg.env.vector_mode, train=True, **cfg.env.kwargs)
    eval_env = make_env(cfg.env.name, cfg.seed + 10_000, train=False, **cfg.env.kwargs)
    eval_rng = np.random.default_rng(cfg.seed + 10_000)  # evaluation observes; it never draws from training's RNG
    obs_shape, obs_dtype = envs.single_observation_space.shape, envs.single_observation_space.dtype
    a = cfg.agent
    total_updates = max(0, cfg.total_steps - a.learning_starts) // a.train_freq
    buffer = make_replay(cfg, obs_shape, obs_dtype, total_updates)
    agent = make_agent(cfg, obs_shape, int(envs.single_action_space.n), device)
    gauge = make_gauge(cfg, buffer)
    arm = arm_name(cfg)
    prioritized = cfg.replay.kind != "uniform"

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoints" / "last.pt"
    counters, resume_step = Counters(), None
    if cfg.resume and ckpt_path.exists():
        counters = Counters(**load_checkpoint(ckpt_path, agent, buffer))
        resume_step = counters.global_step
        buffer.truncate_streams()  # the interrupted episode ends here; fresh environments follow
        print(f"resuming {run_dir} at step {resume_step:,} of {cfg.total_steps:,}")
    elif cfg.resume:
        print(f"resume=true but no checkpoint at {ckpt_path}: starting from scratch")
    OmegaConf.save(OmegaConf.create(config_dict), run_dir / "config.yaml")
    log = runlog.RunLogger(run_dir, cfg, arm, config_dict, resume_step, counters.logger)
    counters.logger = log.state

    def ensure_finite() -> None:
        if bool(agent.nonfinite):  # one host sync, only when logging or checkpointing
            raise NonFiniteLoss("loss became NaN/inf")

    def checkpoint() -> None:
        ensure_finite()
        save_checkpoint(ckpt_path, agent, buffer if cfg.save_replay else None, vars(counters))

    stop = StopFlag()
    obs = envs.reset(seed=cfg.seed + counters.global_step) if counters.global_step else envs.reset()
    env_ids = np.arange(n)
    window_returns: list[float] = []
    window_lengths: list[int] = []
    last_eval = (math.nan, math.nan)
    last_learn, last_weights = None, None
    t_window, s_window = time.perf_counter(), counters.global_step
    eps_steps = int(a.eps_fraction * cfg.total_steps)
    # learn once the buffer holds learning_starts transitions: true anyway in a fresh run, and after a resume
    # without the saved replay it keeps the first updates off a near-empty buffer
    warm = max(a.batch_size, min(a.learning_starts, cfg.replay.capacity))
    step = start_step = prev = counters.global_step

    def crossed(period: int) -> bool:
        """A multiple of ``period`` lies in ``(prev, step]``: every-k-steps events survive steps of N envs."""
        return step // period > prev // period

    t_start = time.perf_counter()
    try:
        while step < cfg.total_steps and stop.signum is None:
            # act in every environment and store the steps (each env is its own n-step stream)
            epsilon = 1.0 if step < a.learning_starts else linear_schedule(a.eps_start, a.eps_end, eps_steps, step)
            actions = agent.act_batch(obs, epsilon)
            out = envs.step(actions)
            buffer.add_batch(obs, actions, out.rewards, out.next_obs, out.terminated, out.truncated, env_ids)
            obs = out.obs
            for _, episode_return, episode_length in out.episodes:  # whole games: raw scores, even on Atari
                window_returns.append(episode_return)
                window_lengths.append(episode_length)
                counters.episodes += 1
            prev, step = step, step + n
            counters.global_step = step

            # ALGO LOGIC: one gradient step per train_freq environment steps past learning_starts; feed the TD
            # errors back to the sampler
            if step > a.learning_starts and len(buffer) >= warm:
                for _ in range(step // a.train_freq - max(prev, a.learning_starts) // a.train_freq):
                    batch = buffer.sample_torch(a.batch_size, device)
                    last_learn, last_weights = agent.learn(batch), batch.weights
                    counters.updates += 1
                    if prioritized:
                        try:
                            buffer.update_priorities(batch.indices, last_learn.td_errors)
                        except ValueError as err:
                            raise NonFiniteLoss(str(err)) from None
            if crossed(a.target_update_period):
                agent.update_target(a.tau)

            # evaluate, log, checkpoint
            if cfg.eval_every and crossed(cfg.eval_every):
                last_eval = evaluate(agent, eval_env, cfg.eval_episodes, cfg.eval_epsilon, eval_rng)
            if crossed(cfg.logger.log_every) or step >= cfg.total_steps:
                ensure_finite()
                now = time.perf_counter()
                row = {
                    "global_step": step,
                    "charts/episodic_return": float(np.mean(window_returns)) if window_returns else math.nan,
                    "charts/episodic_length": float(np.mean(window_lengths)) if window_lengths else math.nan,
                    "charts/episodes": counters.episodes,
                    "charts/epsilon": epsilon,
                    "charts/SPS": (step - s_window) / max(now - t_window, 1e-9),
                    "replay/size": len(buffer),
                    "eval/return": last_eval[0],
                    "eval/return_std": last_eval[1],
                }
                if last_learn is not None:
                    row.update({
                        "losses/td_loss": float(last_learn.loss),
                        "losses/q_values": float(last_learn.q_mean),
                        "losses/td_abs": float(last_learn.td_errors.abs().mean()),
                        "replay/is_weight_min": float(last_weights.min()),
                    })  # fmt: skip
                row.update({f"replay/{k}": v for k, v in buffer.stats().items()})
                if cfg.gauge.every and counters.updates - counters.gauge_updates >= cfg.gauge.every:
                    row.update({f"gauge/{k}": v for k, v in gauge(agent).items()})
                    counters.gauge_updates = counters.updates
                log.write(row)
                window_returns, window_lengths, last_eval = [], [], (math.nan, math.nan)
                t_window, s_window = now, step
            if crossed(cfg.checkpoint_every) or step >= cfg.total_steps:
                checkpoint()
    except NonFiniteLoss as err:
        log.close()
        good = f"the last good checkpoint is {ckpt_path}" if ckpt_path.exists() else "no checkpoint was written"
        msg = f"stopped at step {step:,}: {err}. Lower agent.lr or check the loss settings; {good}."
        print(f"\n{msg}", file=sys.stderr)
        raise NonFiniteLoss(msg) from None
    finally:
        stop.restore()

    if stop.signum is not None:
        checkpoint()
        log.close()
        name = signal.Signals(stop.signum).name
        print(f"\n{name} at step {step:,}: checkpoint written to {ckpt_path}; continue with resume=true")
        raise SystemExit(128 + stop.signum)

    wall = time.perf_counter() - t_start
    log.close()
    envs.close()
    eval_env.close()
    runlog.plot_curve(run_dir / "metrics.csv", run_dir / "curve.png", f"{cfg.env.name}: {arm}, seed {cfg.seed}")
    extra = {"arm": arm, "env": cfg.env.name, "seed": cfg.seed, "sps": (step - start_step) / wall,
             "wall_time_s": wall, "run_dir": str(run_dir)}  # fmt: skip
    summary = runlog.summarize(run_dir / "metrics.csv", extra)
    runlog.write_json(run_dir / "summary.json", summary)
    runlog.print_summary(summary)
    return summary


register_configs()


@hydra.main(config_path="pkg://rlfocal.configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        config = validate(cfg)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run(config, run_dir, OmegaConf.to_container(cfg, resolve=True))
    except NonFiniteLoss:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra marks this job failed and the rest of the sweep goes on
        raise SystemExit(1) from None
    return summary["final_eval_return"]


if __name__ == "__main__":
    main()
