"""The study's configs: every arm and task composes and validates, arms are the (sampler, loss) pairs they claim,
and each experiment's sweep names only options that exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.types import RunMode

from rlfocal.builders import arm_name
from rlfocal.config import register_configs, validate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ARMS = sorted(p.stem for p in (CONFIGS / "arm").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONFIGS / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def composed(overrides: list[str], hydra: bool = False):
    register_configs()
    with initialize_config_module("rlfocal.configs", version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


SPOT_CHECKS = {  # a few arms' labels, written out (the rule itself is rlfocal.arms.arm_label)
    "dqn": "uniform+huber",
    "per": "per+huber",
    "focal": "uniform+focal(gamma=0.3,tau=auto)",
    "per_beta0": "per(beta=0,beta_final=0)+huber",
    "dqn_lr2": "uniform+huber@lr×2",
    "lap": "lap(min_priority=0.01)+lap(min_priority=0.01)",
    "focal_matched": "uniform+focal(gamma=0.3,tau=auto,tau_scale=100,normalize=True)",
}


def test_every_arm_has_its_own_label():
    """Two arm files never share a label (a shared label would merge them into one arm in the report)."""
    labels = {arm: arm_name(validate(composed([f"+arm={arm}"]))) for arm in ARMS}
    assert len(set(labels.values())) == len(ARMS), labels
    for arm, label in SPOT_CHECKS.items():
        assert labels[arm] == label


@pytest.mark.parametrize("arm", ARMS)
def test_each_arm_is_its_sampler_loss_pair(arm):
    cfg = validate(composed([f"+arm={arm}"]))
    sampler, loss = arm_name(cfg).split("@")[0].split("+")
    assert sampler.split("(")[0] == cfg.replay.name and loss.split("(")[0] == cfg.loss.name


@pytest.mark.parametrize("task", TASKS)
def test_each_task_composes_with_every_arm(task):
    for arm in ("dqn", "focal_matched"):
        validated = validate(composed([f"+task={task}", f"+arm={arm}"]))
        assert validated.total_steps >= 10_000
        assert (validated.device == "cuda") == task.startswith("gpu_")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_experiment_sweeps_existing_options(experiment):
    cfg = composed([f"+experiment={experiment}"], hydra=True)
    assert cfg.hydra.mode == RunMode.MULTIRUN
    params = cfg.hydra.sweeper.params
    tasks = [t.strip() for t in params["+task"].split(",")]
    assert set(tasks) <= set(TASKS) and all(t.startswith(experiment.split("_")[-1]) for t in tasks)
    assert params["+arm"] == "glob(*)"  # every arm file joins the sweep: a new arm needs no list edited
    if experiment.startswith("study"):  # the study: one num_seeds batch per arm, so seeds pair across arms
        assert "seed" not in params and cfg.num_seeds >= 20
    else:
        assert len(str(params["seed"]).split(",")) >= 3
