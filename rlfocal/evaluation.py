"""Evaluation of the ε-greedy policy over whole episodes, for one seed lane or all lanes in lockstep.

Evaluation observes: its exploration draws come from its own generators (never training's), and a stop signal
(SIGTERM/SIGINT) ends it within one environment step, returning NaN.
"""

from __future__ import annotations

import math

import numpy as np


def evaluate(agent, env, episodes: int, epsilon: float, rng: np.random.Generator, stop=None) -> tuple[float, float]:
    """Mean and std of the return over ``episodes`` episodes of one environment (one seed's agent)."""
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


def evaluate_lanes(
    agent, envs: list, episodes: int, epsilon: float, rngs: list, stop=None
) -> list[tuple[float, float]]:
    """``evaluate`` for every seed lane at once: one network call per step for all lanes' environments. One lane is
    ``evaluate`` itself, draw for draw; a lane that has finished its episodes idles until the others have, and each
    lane's generator sees exactly the draws of its lone ``evaluate``."""
    if len(envs) == 1:
        return [evaluate(agent, envs[0], episodes, epsilon, rngs[0], stop)]
    returns: list[list[float]] = [[] for _ in envs]
    obs = np.stack([env.reset()[0] for env in envs])
    totals = np.zeros(len(envs))
    idle = np.random.default_rng(0)
    while any(len(r) < episodes for r in returns):
        if stop is not None and stop.signum is not None:
            return [(math.nan, math.nan)] * len(envs)
        # a finished lane draws from a throwaway generator, so its own stream stays where a lone run leaves it
        lane_rngs = [rng if len(r) < episodes else idle for rng, r in zip(rngs, returns, strict=True)]
        actions = agent.act_lanes(obs[:, None], epsilon, rngs=lane_rngs)[:, 0]
        for k, env in enumerate(envs):
            if len(returns[k]) >= episodes:
                continue
            obs[k], reward, term, trunc, _ = env.step(actions[k])
            totals[k] += float(reward)
            if term or trunc:
                returns[k].append(totals[k])
                totals[k] = 0.0
                if len(returns[k]) < episodes:  # as evaluate: a reset per episode, none after the last
                    obs[k] = env.reset()[0]
    return [(float(np.mean(r)), float(np.std(r))) for r in returns]
