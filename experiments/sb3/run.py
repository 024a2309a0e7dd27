"""SB3 DQN vs SB3 DQN + rlfocal PER (``rlfocal.sb3``) on CartPole-v1 and MinAtar Breakout, 5 seeds each.

    python experiments/sb3/run.py [--quick] [--seeds 0 1 2 3 4] [--out experiments/sb3/results]

Hyper-parameters come from rlfocal's own presets (``env=cartpole``, ``env=minatar/breakout``, ``replay=per``),
translated to SB3 arguments by ``sb3_kwargs`` (the mapping table is in README.md), with CPU-sized budgets: CartPole
20k steps, Breakout 20k steps (a short budget: Young & Tian train for 5M). Both arms share every setting; the PER
arm adds ``PrioritizedReplayBuffer`` (α 0.6, β 0.4 → 1, no learning-rate change). Writes ``curves.png`` (training
episode return, mean ± s.e. over seeds), ``curves.csv``, ``final.csv`` (greedy evaluation per seed) and
``command.txt``. ``--quick`` runs a few hundred steps with 2 seeds, for CI.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3
import torch
from hydra import compose, initialize_config_module
from scipy import stats
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from rlfocal.config import Config, register_configs, validate
from rlfocal.envs import make_env
from rlfocal.replay import PERConfig
from rlfocal.sb3 import DQN, PrioritizedReplayBuffer

# env -> (preset overrides, env steps, curve bin in env steps); short CPU budgets (see the module docstring)
ENVS: dict[str, tuple[list[str], int, int]] = {
    "CartPole-v1": (["env=cartpole"], 20_000, 1_000),
    "MinAtar/Breakout-v1": (
        # the preset minus what a 20k-step budget cannot afford: one update per 4 steps (preset: 1), 1k random steps
        # first (preset: 5k), ε 1 → 0.1 over the first 25% (preset: 100k of 1M steps)
        ["env=minatar/breakout", "agent.train_freq=4", "agent.learning_starts=1000", "agent.eps_fraction=0.25"],
        20_000,
        1_000,
    ),
}
ARMS = ("sb3", "sb3+per")
EVAL_EPISODES = 10
EVAL_MAX_STEPS = 10_000  # a greedy MinAtar policy can keep a game alive forever


def rlfocal_config(overrides: list[str]) -> Config:
    """rlfocal's composed and validated config for ``overrides`` (what ``python -m rlfocal.train`` would run)."""
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        return validate(compose("config", overrides=overrides))


class MinAtarCNN(BaseFeaturesExtractor):
    """The MinAtar torso of ``agents.networks.MinAtarCNN`` (Young & Tian 2019): one 3×3 conv, 16 channels."""

    def __init__(self, observation_space) -> None:
        channels, height, width = observation_space.shape
        super().__init__(observation_space, 16 * (height - 2) * (width - 2))
        self.torso = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.torso(obs.float())


def sb3_kwargs(cfg: Config) -> dict[str, Any]:
    """SB3 DQN arguments equal, one for one, to rlfocal's agent/replay settings (README.md has the table)."""
    a = cfg.agent
    if a.double or a.dueling:
        raise ValueError("SB3's DQN is neither double-Q nor dueling: compose with agent.double=false, dueling off")
    if cfg.loss.name != "huber" or cfg.loss.kappa != 1.0:
        raise ValueError("SB3's DQN loss is smooth_l1 (Huber, κ = 1): compose with loss=huber")
    policy_kwargs: dict[str, Any] = {"optimizer_kwargs": {"eps": a.adam_eps}}
    if a.network == "minatar":
        policy_kwargs.update(features_extractor_class=MinAtarCNN, net_arch=[128])
    else:  # rlfocal's MLP: obs -> hidden[0] -> ... -> hidden[-1] -> actions, ReLU
        policy_kwargs.update(net_arch=list(a.hidden))
    kwargs = dict(
        learning_rate=a.lr,
        buffer_size=cfg.replay.capacity,
        learning_starts=a.learning_starts,
        batch_size=a.batch_size,
        tau=a.tau,
        gamma=a.gamma,
        train_freq=a.train_freq,
        gradient_steps=1,
        target_update_interval=a.target_update_period,
        exploration_initial_eps=a.eps_start,
        exploration_final_eps=a.eps_end,
        exploration_fraction=a.eps_fraction,
        n_steps=a.n_step,
        max_grad_norm=a.max_grad_norm if a.max_grad_norm is not None else math.inf,
        policy_kwargs=policy_kwargs,
    )
    if isinstance(cfg.replay, PERConfig):
        r = cfg.replay
        kwargs.update(
            replay_buffer_class=PrioritizedReplayBuffer,
            replay_buffer_kwargs=dict(
                alpha=r.alpha,
                beta=r.beta,
                beta_final=r.beta_final,
                anneal_beta=r.anneal_beta,
                eps=r.eps,
                is_norm=r.is_norm,
            ),
        )
    return kwargs


class EpisodeLog(BaseCallback):
    """(env step, return) of every finished training episode, from the ``episode`` info every rlfocal env reports."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.episodes.append((self.num_timesteps, float(info["episode"]["r"])))
        return True


def greedy_eval(model, env_name: str, seed: int, episodes: int) -> float:
    """Mean return of the greedy policy over whole episodes of a separate env (seeded ``seed + 10_000``, as
    ``rlfocal.train`` seeds its evaluation env)."""
    env = make_env(env_name, seed + 10_000, train=False)
    returns = []
    for _ in range(episodes):
        obs, _ = env.reset()
        total, done, steps = 0.0, False, 0
        while not done and steps < EVAL_MAX_STEPS:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, done, steps = total + float(reward), terminated or truncated, steps + 1
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def train_sb3(cfg: Config, env_name: str, seed: int, steps: int, eval_episodes: int) -> dict[str, Any]:
    """One SB3 run on ``make_env(env_name, seed)``: stock DQN, or rlfocal's DQN when the replay is PER."""
    torch.set_num_threads(1)
    kwargs = sb3_kwargs(cfg)
    algo = DQN if "replay_buffer_class" in kwargs else stable_baselines3.DQN
    env = DummyVecEnv([lambda: make_env(env_name, seed)])
    model = algo("MlpPolicy", env, seed=seed, device="cpu", **kwargs)
    log, start = EpisodeLog(), time.perf_counter()
    model.learn(steps, callback=log)
    wall = time.perf_counter() - start
    return {"episodes": log.episodes, "final_eval": greedy_eval(model, env_name, seed, eval_episodes), "wall_s": wall}


def binned(episodes: list[tuple[int, float]], steps: int, width: int) -> np.ndarray:
    """Mean return of the episodes that ended in each ``(g - width, g]``, g = width, 2·width, ..., steps."""
    ends = np.array([s for s, _ in episodes], dtype=float)
    rets = np.array([r for _, r in episodes], dtype=float)
    out = []
    for g in range(width, steps + 1, width):
        sel = (ends > g - width) & (ends <= g)
        out.append(rets[sel].mean() if sel.any() else math.nan)
    return np.array(out)


def write_command(path: Path) -> None:
    """The command line and the git commit (flagging uncommitted changes) that made the results."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
    note = " (working tree had uncommitted changes)" if dirty else ""
    path.write_text(f"{' '.join(['python', *sys.argv])}\ngit commit {commit}{note}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--quick", action="store_true", help="a seconds-long version for CI (2 seeds, tiny budgets)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    seeds = args.seeds[:2] if args.quick else args.seeds
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)

    curves: dict[tuple[str, str], list[np.ndarray]] = {}
    bins: dict[str, int] = {}
    rows, curve_rows = [], []
    for env_name, (overrides, steps, width) in ENVS.items():
        if args.quick:
            overrides = [*overrides, "agent.learning_starts=100", "agent.batch_size=32"]
            steps, width = 600, 200
        bins[env_name] = width
        for arm in ARMS:
            replay = "replay=per" if arm == "sb3+per" else "replay=uniform"
            cfg = rlfocal_config([*overrides, replay, "loss=huber", "agent.double=false", f"total_steps={steps}"])
            for seed in seeds:
                result = train_sb3(cfg, env_name, seed, steps, 2 if args.quick else EVAL_EPISODES)
                curve = binned(result["episodes"], steps, width)
                curves.setdefault((env_name, arm), []).append(curve)
                last = [r for s, r in result["episodes"] if s > steps - 2 * width]
                rows.append(
                    {
                        "env": env_name,
                        "arm": arm,
                        "seed": seed,
                        "final_eval_return": result["final_eval"],
                        "last_train_return": float(np.mean(last)) if last else math.nan,
                        "wall_s": round(result["wall_s"], 1),
                    }
                )
                curve_rows += [
                    {"env": env_name, "arm": arm, "seed": seed, "step": (i + 1) * width, "train_return": v}
                    for i, v in enumerate(curve)
                ]
                print(rows[-1], flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ENVS), figsize=(6 * len(ENVS), 4))
    for ax, env_name in zip(axes, ENVS, strict=True):
        for arm in ARMS:
            c = np.array(curves[(env_name, arm)])  # [seeds, bins]
            x = np.arange(1, c.shape[1] + 1) * bins[env_name]
            mean = np.nanmean(c, axis=0)
            se = np.nanstd(c, axis=0) / np.sqrt(np.sum(~np.isnan(c), axis=0).clip(min=1))
            ax.plot(x, mean, label=f"{arm} ({len(c)} seeds)")
            ax.fill_between(x, mean - se, mean + se, alpha=0.25)
        ax.set_title(env_name)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return (mean ± s.e.)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    for name, data in (("final.csv", rows), ("curves.csv", curve_rows)):
        with (out / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    write_command(out / "command.txt")

    for env_name in ENVS:
        finals = {
            arm: [r["final_eval_return"] for r in rows if r["env"] == env_name and r["arm"] == arm] for arm in ARMS
        }
        line = ", ".join(
            f"{arm} {np.mean(v):.1f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.1f}" for arm, v in finals.items()
        )
        p = stats.ttest_ind(finals["sb3+per"], finals["sb3"], equal_var=False).pvalue if len(seeds) > 1 else math.nan
        print(f"{env_name}: final greedy eval (mean ± sd over seeds) {line}; Welch p = {p:.3f}")


if __name__ == "__main__":
    main()
