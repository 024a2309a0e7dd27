"""The training entry point: every arm runs, configs are validated, runs are deterministic, resume after a kill
reaches the same final step, and a NaN loss stops the run cleanly."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlfocal.config import register_configs, validate
from rlfocal.losses import HuberLossConfig
from rlfocal.train import NonFiniteLoss, run

ARMS = [  # DESIGN.md §2: every arm is a (sampler, loss) pair
    ("uniform", "huber"),
    ("per", "huber"),
    ("uniform", "focal"),
    ("per", "focal"),
    ("uniform", "mirror"),
    ("lap", "huber"),
    ("uniform", "pal"),
]
TINY = [
    "total_steps=300",
    "agent.learning_starts=100",
    "agent.batch_size=32",
    "eval_every=150",
    "eval_episodes=2",
    "logger=csv",
    "logger.log_every=50",
    "checkpoint_every=150",
    "progress=false",
    "device=cpu",
]


def composed(overrides: list[str]):
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        return compose("config", overrides=overrides)


def train(tmp_path: Path, overrides: list[str]) -> dict:
    cfg = composed(TINY + overrides)
    return run(validate(cfg), tmp_path, OmegaConf.to_container(cfg, resolve=True))


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("replay", "loss"), ARMS)
def test_every_arm_trains_on_cartpole(tmp_path, replay, loss):
    summary = train(tmp_path, [f"replay={replay}", f"loss={loss}"])
    assert summary["global_step"] == 300
    metrics = rows(tmp_path / "metrics.csv")
    assert [int(r["global_step"]) for r in metrics] == list(range(50, 301, 50))
    assert float(metrics[-1]["losses/td_loss"]) >= 0
    if replay == "per":
        assert 0.4 < float(metrics[-1]["replay/beta"]) <= 1.0
    for name in ("config.yaml", "curve.png", "summary.json", "checkpoints/last.pt"):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize(("replay", "loss"), ARMS)
def test_every_arm_trains_on_minatar(tmp_path, replay, loss):
    summary = train(
        tmp_path,
        ["env=minatar/breakout", f"replay={replay}", f"loss={loss}", "total_steps=300", "agent.learning_starts=100"],
    )
    assert summary["global_step"] == 300


def test_same_seed_same_run(tmp_path):
    """On CPU a fixed seed reproduces every logged number except wall-clock speed."""
    logs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(tmp_path / name, ["replay=per", "loss=focal", f"seed={seed}"])
        logs[name] = [{k: v for k, v in r.items() if k != "charts/SPS"} for r in rows(tmp_path / name / "metrics.csv")]
    assert logs["a"] == logs["b"]
    assert [r["losses/td_loss"] for r in logs["a"]] != [r["losses/td_loss"] for r in logs["c"]]


def test_evaluation_does_not_change_training(tmp_path):
    """Evaluation draws from its own RNG: the training losses are the same with and without it."""
    losses = {}
    for name, every in (("eval", 150), ("no_eval", 0)):
        train(tmp_path / name, ["replay=per", f"eval_every={every}", "eval_epsilon=0.5"])
        losses[name] = [r["losses/td_loss"] for r in rows(tmp_path / name / "metrics.csv")]
    assert losses["eval"] == losses["no_eval"]


@pytest.mark.parametrize(("num_envs", "mode"), [(1, "serial"), (4, "serial"), (2, "async")])
def test_vector_envs_keep_the_step_and_update_schedule(tmp_path, num_envs, mode):
    """N envs advance global_step by N; updates (one per train_freq steps past learning_starts), target updates
    and log rows keep their schedule in environment steps; every env's episodes are counted."""
    train(
        tmp_path,
        ["replay=per", "total_steps=300", "agent.train_freq=2", f"env.num_envs={num_envs}", f"env.vector_mode={mode}"],
    )
    counters = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)["counters"]
    assert counters["global_step"] == 300
    assert counters["updates"] == (300 - 100) // 2
    logged = [int(r["global_step"]) for r in rows(tmp_path / "metrics.csv")]
    assert len(logged) == 300 // 50 and logged[-1] == 300
    assert all(0 <= s - k * 50 < num_envs for k, s in enumerate(logged[:-1], start=1))
    assert counters["episodes"][0] >= 300 // 60  # random CartPole episodes last ~20 steps (one seed lane)


@pytest.mark.parametrize("replay", ["uniform", "per"])
def test_gauge_observes_without_changing_training(tmp_path, replay):
    """The analogy gauge is logged every K updates, and training's losses are the same with and without it."""
    logs = {}
    for name, every in (("gauge", 5), ("no_gauge", 0)):
        train(tmp_path / name, [f"replay={replay}", "loss=focal", "loss.tau=auto", f"gauge.every={every}"])
        logs[name] = rows(tmp_path / name / "metrics.csv")
    assert [r["losses/td_loss"] for r in logs["gauge"]] == [r["losses/td_loss"] for r in logs["no_gauge"]]
    read = [r for r in logs["gauge"] if r["gauge/grad_cosine"] != ""]
    assert len(read) >= 3 and all(r["gauge/grad_cosine"] == "" for r in logs["no_gauge"])
    for r in read:
        assert -1 <= float(r["gauge/grad_cosine"]) <= 1 and -1 <= float(r["gauge/shift_cosine"]) <= 1
        sampler_keys = ("gauge/modulator_spearman", "gauge/priority_ess", "gauge/priority_staleness")
        if replay == "uniform":  # no stored priorities to read
            assert all(r[k] == "" for k in sampler_keys)
        else:
            assert 0 < float(r["gauge/priority_ess"]) <= 1 and float(r["gauge/priority_staleness"]) > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gauge.every=-1", "gauge.every=-1 is not allowed: must be an integer >= 0"),
        ("env.num_envs=0", "env.num_envs=0 is not allowed: must be an integer >= 1"),
        ("agent.lr=-1", "agent.lr=-1.0 is not allowed: must be a finite number > 0"),
        ("replay=per replay.beta=1.5", "replay.beta=1.5 is not allowed: must be a finite number in [0, 1]"),
        ("loss=focal loss.gamma=-2", "loss.gamma=-2.0 is not allowed: must be a finite number >= 0"),
        ("replay=per replay.alpha=inf", "replay.alpha=inf is not allowed: must be finite"),
        ("loss=focal +loss.gama=2", "loss.gama: no such setting (python -m rlfocal.train --help lists them)"),
        (
            "replay.capacity=64 agent.batch_size=128",
            "replay.capacity=64 is not allowed: must be >= agent.batch_size=128",
        ),
        pytest.param(
            "device=cuda",
            "device='cuda' is not allowed: CUDA is not available here; use device=cpu or auto",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here"),
        ),
        ("env=deepsea env.kwargs.size=0", "env.kwargs.size=0 is not allowed: must be an integer >= 1"),
        ("total_steps=0", "total_steps=0 is not allowed: must be an integer >= 1"),
        (
            "env=cartpole agent.one_hot_input=true",
            "agent.one_hot_input=True is not allowed: env.name='CartPole-v1' has no one-hot observations (deepsea has)",
        ),
        (
            "env=deepsea agent.hidden=[32] agent.one_hot_input=true",
            "agent.one_hot_input=True is not allowed: it needs the MLP with two hidden layers or more, got "
            "agent.network=mlp and agent.hidden=[32]",
        ),
    ],
)
def test_bad_config_values_fail_in_one_line(tmp_path, override, message):
    out = subprocess.run(
        [sys.executable, "-m", "rlfocal.train", *override.split(), f"hydra.run.dir={tmp_path}", "logger=none"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == f"config error: {message}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.gama=1", "Could not override 'loss.gama'"),
        ("env=minatar/breakot", "env=minatar/breakot is not an option; env is one of: atari/battle_zone"),
        ("+arm=perr", "+arm=perr is not an option; arm is one of: dqn"),
    ],
)
def test_typos_are_rejected_listing_every_real_choice(tmp_path, override, message):
    out = subprocess.run(
        [sys.executable, "-m", "rlfocal.train", override, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and message in out.stderr


def _train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlfocal.train",
        f"hydra.run.dir={run_dir}",
        "total_steps=4000",
        "agent.learning_starts=200",
        "checkpoint_every=500",
        "eval_every=0",
        "logger=csv",
        "logger.log_every=100",
        "progress=false",
        "save_replay=true",
        "device=cpu",
        "replay=per",
        *extra,
    ]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.slow
def test_resume_after_kill_reaches_the_same_final_step(tmp_path):
    """SIGKILL after a checkpoint, then resume=true: the run finishes at total_steps with one row per step."""
    proc = subprocess.Popen(_train_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "checkpoints" / "last.pt", proc)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "summary.json").exists()
    out = subprocess.run(_train_cmd(tmp_path, "resume=true"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stdout
    steps = [int(r["global_step"]) for r in rows(tmp_path / "metrics.csv")]
    assert steps == list(range(100, 4001, 100))


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    proc = subprocess.Popen(_train_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "metrics.csv", proc)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM at step" in stdout and "Traceback" not in stderr
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = HuberLossConfig.build

    def poisoned(loss_cfg):
        loss, calls = real(loss_cfg), [0]

        def fn(td):
            calls[0] += 1
            return loss(td) * (float("nan") if calls[0] > 60 else 1.0)

        return fn

    monkeypatch.setattr(HuberLossConfig, "build", poisoned)
    with pytest.raises(NonFiniteLoss, match="stopped at step"):
        train(tmp_path, ["replay=uniform", "total_steps=600", "agent.train_freq=2", "checkpoint_every=100"])
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    steps = [int(r["global_step"]) for r in rows(tmp_path / "metrics.csv")]
    assert max(steps) < 600


def test_wandb_logs_offline_without_an_account(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(tmp_path, ["logger=wandb", "total_steps=200", "agent.learning_starts=50"])
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_run_gives_the_callers_signal_handlers_back(tmp_path):
    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        train(tmp_path, ["total_steps=200", "agent.learning_starts=50"])
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.slow
def test_compiled_agent_trains_with_the_gauge_on(tmp_path):
    """agent.compile=true runs end to end, the gauge included (it takes several gradients of one eager graph)."""
    train(tmp_path, ["replay=per", "agent.compile=true", "gauge.every=5"])
    read = [r for r in rows(tmp_path / "metrics.csv") if r["gauge/grad_cosine"] != ""]
    assert read and all(-1 <= float(r["gauge/shift_cosine"]) <= 1 for r in read)


def test_help_lists_groups_and_every_key_with_its_meaning_but_no_schema_entries():
    out = subprocess.run([sys.executable, "-m", "rlfocal.train", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "+arm:" in out.stdout and "minatar/breakout" in out.stdout and "_schema" not in out.stdout
    assert "agent.lr=0.00025: Adam learning rate" in out.stdout and "[env steps]" in out.stdout
    assert "loss.gamma=2.0: focusing exponent" in out.stdout


def test_plain_runs_do_not_import_inductor():
    code = "import sys; from rlfocal.builders import set_determinism; set_determinism(False); "
    code += "print('torch._inductor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_multirun_progress_lines_name_their_job(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rlfocal.train", "-m", "seed=0,1", *TINY[:-2], "progress=true",
         f"hydra.sweep.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    progress = [line for line in out.stdout.splitlines() if " steps (" in line]
    assert progress and all(line.startswith("[CartPole-v1 uniform+huber seed ") for line in progress)
