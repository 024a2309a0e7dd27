"""What a run survives and what it refuses (issue 11): locks, resume rules, damaged checkpoints, signals during
evaluation, unreachable wandb, too-short runs; and that adding a TD loss is one registration (issue 10)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_train import TINY, rows, train

from rlfocal import runlog
from rlfocal.config import register_configs
from rlfocal.evaluation import evaluate
from rlfocal.losses import TD_LOSS_CONFIGS, TDLossConfig, huber, register_td_loss
from rlfocal.params import param
from rlfocal.rundir import RunDirLock
from rlfocal.train import StopFlag, main

CLI = [sys.executable, "-m", "rlfocal.train"]


def cli(run_dir: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *TINY, f"hydra.run.dir={run_dir}", *overrides], capture_output=True, text=True, timeout=timeout
    )


def test_a_second_run_in_a_locked_directory_fails_at_once_naming_the_holder(tmp_path):
    with RunDirLock(tmp_path):
        t0 = time.perf_counter()
        out = cli(tmp_path)
    assert out.returncode == 2 and f"pid {os.getpid()}" in out.stderr and "Traceback" not in out.stderr
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "metrics.csv").exists()


def test_resume_true_without_a_checkpoint_is_an_error_and_auto_starts_afresh(tmp_path):
    out = cli(tmp_path / "a", "resume=true")
    assert out.returncode == 2 and "holds no checkpoint" in out.stderr and "Traceback" not in out.stderr
    summary = train(tmp_path / "b", ["resume=auto"])
    assert summary["global_step"] == 300


def test_resume_refuses_another_config_listing_the_keys(tmp_path):
    train(tmp_path, ["total_steps=200"])
    out = cli(tmp_path, "resume=true", "total_steps=300", "agent.lr=0.01", "seed=3")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    differing = out.stderr.split("(", 1)[1].split(")", 1)[0]
    assert differing == "agent.lr: 0.001 -> 0.01, seed: 0 -> 3"  # total_steps may change: not listed
    resumed = cli(tmp_path, "resume=true", "total_steps=400")  # the budget may change
    assert resumed.returncode == 0, resumed.stderr
    assert [int(r["global_step"]) for r in rows(tmp_path / "metrics.csv")] == list(range(50, 401, 50))


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    train(tmp_path, ["total_steps=300"])  # checkpoints at 150 and 300: prev.pt holds step 150
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    out = cli(tmp_path, "resume=true", "total_steps=450")
    assert out.returncode == 0, out.stderr
    assert "prev.pt" in out.stderr and "resuming" in out.stdout and "at step 150" in out.stdout


def test_both_checkpoints_damaged_is_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir(parents=True)
    for name in ("last.pt", "prev.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"not a checkpoint")
    out = cli(tmp_path, "resume=true")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("error:")]


class _SignalOnStep:
    """An environment that raises SIGTERM's flag on its 5th step and would otherwise never end an episode."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop, self.steps = stop, 0

    def reset(self):
        return np.zeros(4, np.float32), {}

    def step(self, action):
        self.steps += 1
        if self.steps == 5:
            self.stop.signum = signal.SIGTERM
        return np.zeros(4, np.float32), 0.0, False, False, {}


class _Greedy:
    def act(self, obs, epsilon, rng):
        return 0


def test_evaluation_stops_within_a_step_of_sigterm():
    stop = StopFlag()
    try:
        env = _SignalOnStep(stop)
        result = evaluate(_Greedy(), env, episodes=3, epsilon=0.0, rng=np.random.default_rng(0), stop=stop)
    finally:
        stop.restore()
    assert env.steps == 5 and all(math.isnan(v) for v in result)


def test_the_interrupt_message_prints_the_exact_command(tmp_path):
    args = [f"hydra.run.dir={tmp_path}", "total_steps=200000", "progress=false", "logger=csv", "eval_every=0"]
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "metrics.csv").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    assert f"resume=true hydra.run.dir={tmp_path}" in stdout and "total_steps=200000" in stdout


def test_wandb_online_without_network_falls_back_to_offline_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.delenv("WANDB_MODE", raising=False)
    t0 = time.perf_counter()
    train(tmp_path, ["logger=wandb", "logger.mode=online", "total_steps=200"])
    assert time.perf_counter() - t0 < 60
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_a_run_too_short_to_learn_warns_and_still_ends_with_an_evaluation(tmp_path):
    with pytest.warns(UserWarning, match="no gradient step"):
        summary = train(tmp_path, ["total_steps=100", "agent.learning_starts=200", "eval_every=0"])
    assert not math.isnan(summary["final_eval_return"])
    assert isinstance(summary["episodes"], int) and isinstance(summary["updates"], int) and summary["commit"]


def test_an_unregistered_metric_is_an_error(tmp_path):
    log = runlog.CSVLog(tmp_path / "metrics.csv", None)
    with pytest.raises(KeyError, match="replay/not_a_metric"):
        log.write({"global_step": 1, "replay/not_a_metric": 2.0})
    log.close()


def test_summary_never_prints_minus_zero(capsys):
    runlog.print_summary({"a": -0.001, "b": -1.5})
    out = capsys.readouterr().out
    assert "-0.00" not in out and "-1.50" in out


@dataclass
class _ScaledHuberConfig(TDLossConfig):
    """loss=scaled_huber: a throwaway loss, registered the way README's recipe says."""

    name: str = "scaled_huber"
    scale: float = param(2.0, "factor on the Huber loss", low=0.0, strict=True)
    function = staticmethod(lambda td, scale: scale * huber(td))
    arm_fields = ("scale",)


def test_adding_a_loss_is_one_registration_and_it_trains_through_the_cli(tmp_path, monkeypatch):
    register_td_loss(_ScaledHuberConfig)
    try:
        register_configs()
        argv = ["rlfocal.train", *TINY, "loss=scaled_huber", "loss.scale=3", f"hydra.run.dir={tmp_path}"]
        monkeypatch.setattr(sys, "argv", argv)
        main()
    finally:
        TD_LOSS_CONFIGS.pop("scaled_huber")
    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.loss.scale == 3.0 and rows(tmp_path / "metrics.csv")
    assert (tmp_path / "summary.json").read_text().count('"uniform+scaled_huber(scale=3)"') == 1
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)


def test_a_sampler_refuses_state_saved_under_another_alpha_or_eps():
    from rlfocal.replay import PrioritizedSampler

    saved = PrioritizedSampler(8, alpha=0.6, eps=1e-6).state_dict()
    with pytest.raises(ValueError, match="alpha=0.6"):
        PrioritizedSampler(8, alpha=0.7, eps=1e-6).load_state_dict(saved)
    with pytest.raises(ValueError, match="eps"):
        PrioritizedSampler(8, alpha=0.6, eps=1e-3).load_state_dict(saved)
    PrioritizedSampler(8, alpha=0.6, eps=1e-6).load_state_dict(saved)


def test_a_resumed_run_reports_time_and_throughput_of_the_whole_run(tmp_path):
    first = train(tmp_path, ["total_steps=150"])
    whole = train(tmp_path, ["total_steps=300", "resume=true"])
    assert whole["wall_time_s"] > first["wall_time_s"]
    assert whole["sps"] == pytest.approx(300 / whole["wall_time_s"])
    assert whole["updates"] > first["updates"]


def test_the_eta_waits_for_the_end_of_the_warm_up(capsys):
    progress = runlog.Progress(total=1000, start=0, enabled=True, label="x", warmup=200)
    progress.update(100, 0.0)
    progress.update(300, 0.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[x] ") and lines[0].endswith("ETA after warm-up")
    assert "after warm-up" not in lines[1]


def test_wandb_offline_says_where_the_run_went_and_how_to_sync_it(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(tmp_path, ["logger=wandb", "total_steps=200"])
    out = capsys.readouterr().out
    assert "wandb sync " + str(tmp_path / "wandb" / "offline-run-") in out
