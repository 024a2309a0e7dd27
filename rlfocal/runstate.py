"""What a run carries from step to step and across a checkpoint: its counters, the stop flag, and each seed lane's
outputs (run directory, logger, log window, evaluation environment and generator)."""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rlfocal import runlog


@dataclass
class Counters:
    """What a checkpoint must restore besides the agent and the replay."""

    global_step: int = 0
    updates: int = 0
    episodes: list[int] = field(default_factory=list)  # per seed lane
    stopped: list[int] = field(default_factory=list)  # seed lanes stopped by a NaN/inf loss
    gauge_updates: int = 0  # counters.updates at the last gauge reading
    wall_time_s: float = 0.0  # training time of the run's earlier parts (resumed runs report the whole run)
    start_step: int = 0  # global_step when this part began
    logger: list[dict] = field(default_factory=list)  # per seed lane: what a resumed logger needs (wandb id)
    demonstrated: list[list[int]] = field(default_factory=list)  # [S][E] demonstration episodes finished


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


@dataclass
class Lane:
    """One seed's outputs: its run directory, logger, log window, evaluation environment and generator."""

    seed: int
    run_dir: Path
    log: runlog.RunLogger
    window: LogWindow
    eval_env: object
    eval_rng: np.random.Generator  # evaluation observes; it never draws from training's generators
