"""Structured configs of a run: every setting's one home, its meaning, unit and allowed range (``rlfocal.params``).

Losses and samplers declare their own configs beside their code (``rlfocal.losses.td``, ``rlfocal.replay.samplers``)
and register them; this module holds the rest of the run and registers everything with Hydra. ``validate`` turns the
composed config into these dataclasses, whose checks make a bad value one clear line before anything is built; it
also refuses keys no dataclass declares, however they were added (``+loss.gama=2``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from rlfocal.envs.registry import one_hot_observations
from rlfocal.losses import TD_LOSS_CONFIGS, TDLossConfig
from rlfocal.params import ConfigError, check_fields, describe, fail, param
from rlfocal.replay.samplers import SAMPLER_CONFIGS, SamplerConfig

__all__ = ["Config", "ConfigError", "register_configs", "validate"]


@dataclass
class EnvConfig:
    name: str = param(MISSING, "an id of rlfocal.envs.ENV_NAMES, e.g. CartPole-v1, MinAtar/Breakout-v1")
    kwargs: dict[str, Any] = param(doc="extra make_env arguments (DeepSea size, Cliffwalk n)", factory=dict)
    num_envs: int = param(1, "environments stepped together, each its own n-step stream seeded seed + i", low=1)
    vector_mode: str = param(
        "serial",
        "serial (in this process), async (a subprocess each) or envpool (Atari: EnvPool's C++ threads; [envpool])",
        choices=("serial", "async", "envpool"),
    )
    overlap: bool = param(
        False,
        "step the environments during the gradient steps (in parallel with vector_mode=async): those steps sample"
        " the replay without the transitions being stepped, so acting runs one update late; not bit-identical",
    )

    def __post_init__(self) -> None:
        check_fields(self, "env")


@dataclass
class AgentConfig:
    network: str = param(
        "auto", "Q-network: by observation shape, or named", choices=("auto", "mlp", "minatar", "nature")
    )
    hidden: list[int] = param(doc="MLP widths", low=1, factory=lambda: [64, 64])
    one_hot_input: bool = param(
        False,
        "one-hot observations (deepsea, cliffwalk): the MLP's first layer is a column lookup, not a matmul; same"
        " Q-values, gradients summed in another order (float rounding)",
    )
    dueling: bool = param(False, "dueling head (Wang et al. 2016)")
    double: bool = param(True, "double-Q targets (van Hasselt et al. 2016)")
    gamma: float = param(0.99, "discount per environment step", low=0.0, high=1.0)
    n_step: int = param(1, "n-step returns, folded in at insertion", unit="env steps", low=1)
    lr: float = param(2.5e-4, "Adam learning rate", low=0.0, strict=True)
    lr_scale: float = param(1.0, "factor on agent.lr (the study's step-size controls: 2, 4)", low=0.0, strict=True)
    adam_eps: float = param(1e-8, "Adam epsilon", low=0.0, strict=True)
    batch_size: int = param(128, "transitions per gradient step", unit="transitions", low=1)
    learning_starts: int = param(1000, "random-policy steps before the first update", unit="env steps", low=0)
    train_freq: int = param(4, "environment steps per gradient step", unit="env steps", low=1)
    target_update_period: int = param(500, "steps between target-network updates", unit="env steps", low=1)
    tau: float = param(1.0, "target update: 1 = hard copy, < 1 = Polyak", low=0.0, high=1.0, strict=True)
    max_grad_norm: float | None = param(10.0, "gradient-norm clip (null: off)", low=0.0, strict=True, nullable=True)
    compile: bool = param(False, "torch.compile the update's forward passes (long GPU runs)")
    amp: bool = param(False, "bfloat16 autocast in the update's forward passes (GPU)")
    capture_update: bool = param(
        False, "replay each gradient step as one CUDA graph (~70 kernel launches -> 1; on CPU a checking stand-in)"
    )
    eps_start: float = param(1.0, "ε-greedy: initial ε", low=0.0, high=1.0)
    eps_end: float = param(0.05, "ε-greedy: final ε", low=0.0, high=1.0)
    eps_fraction: float = param(0.1, "fraction of total_steps over which ε decays linearly", low=0.0, high=1.0)

    def __post_init__(self) -> None:
        check_fields(self, "agent")
        if not self.hidden:
            fail("agent.hidden", self.hidden, "a non-empty list of positive widths")


LOGGERS = ("wandb", "csv", "none")


@dataclass
class LoggerConfig:
    name: str = param(MISSING, "where metrics go besides metrics.csv (always written)", choices=LOGGERS)
    project: str = param("rlfocal", "wandb project")
    mode: str = param("offline", "wandb mode (offline needs no account)", choices=("offline", "online", "disabled"))
    group: str | None = param(None, "wandb group (null: env/arm, so seeds aggregate)", nullable=True)
    log_every: int = param(1000, "steps between metric rows", unit="env steps", low=1)

    def __post_init__(self) -> None:
        check_fields(self, "logger")


@dataclass
class GaugeConfig:
    every: int = param(1000, "gradient steps between analogy-gauge readings (0: off)", unit="updates", low=0)
    sample_size: int = param(1024, "stored transitions in the gauge's uniform probe", unit="transitions", low=2)
    focal_gamma: float | None = param(
        None, "focal γ compared with PER (null: the run's, else α/2)", low=0.0, nullable=True
    )

    def __post_init__(self) -> None:
        check_fields(self, "gauge")


@dataclass
class Config:
    env: EnvConfig = MISSING
    agent: AgentConfig = MISSING
    replay: SamplerConfig = MISSING
    loss: TDLossConfig = MISSING
    logger: LoggerConfig = MISSING
    gauge: GaugeConfig = field(default_factory=GaugeConfig)
    seed: int = param(0, "seeds env, network init, exploration and replay")
    num_seeds: int = param(1, "seeds trained together in lockstep: seed, seed + 1, ..., seed + num_seeds − 1", low=1)
    total_steps: int = param(50_000, "length of the run", unit="env steps", low=1)
    device: str = param("auto", "auto (cuda when available), cpu, cuda or cuda:N")
    resume: Any = param(
        False,
        "continue from the run directory's checkpoint: true (it must exist), auto (if any)",
        choices=(False, True, "auto"),
    )
    demonstrations: int = param(
        0,
        "episodes of the environment's expert policy played first in every environment and stored like any other"
        " (deepsea, cliffwalk): the rewarding path is in replay from the start",
        unit="episodes",
        low=0,
    )
    eval_every: int = param(5_000, "steps between greedy evaluations (0: off)", unit="env steps", low=0)
    eval_episodes: int = param(10, "episodes per evaluation", unit="episodes", low=1)
    eval_epsilon: float = param(0.0, "ε of the evaluation policy", low=0.0, high=1.0)
    checkpoint_every: int = param(10_000, "steps between checkpoints", unit="env steps", low=1)
    save_replay: bool = param(False, "include the replay buffer in checkpoints")
    torch_threads: int = param(1, "intra-op CPU threads (1 is fastest for small nets)", low=1)
    deterministic: bool = param(False, "CUDA: deterministic kernels, bit-for-bit reruns, slower")
    progress: bool = param(True, "progress bar on a terminal, plain lines otherwise")

    def __post_init__(self) -> None:
        check_fields(self, "")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            fail("device", self.device, "one of auto, cpu, cuda, cuda:N")
        a = self.agent
        if a.one_hot_input and not one_hot_observations(self.env.name):
            fail("agent.one_hot_input", True, f"env.name={self.env.name!r} has no one-hot observations (deepsea has)")
        if a.one_hot_input and (a.network not in ("auto", "mlp") or len(a.hidden) < 2):
            fail("agent.one_hot_input", True, f"it needs the MLP with two hidden layers or more, got "
                 f"agent.network={a.network} and agent.hidden={list(a.hidden)}")  # fmt: skip
        if a.capture_update and a.compile:
            fail("agent.capture_update", True, "not with agent.compile=true: pick one way to cut launch overhead")
        if self.replay.capacity < self.agent.batch_size:
            fail("replay.capacity", self.replay.capacity, f"must be >= agent.batch_size={self.agent.batch_size}")


_SCHEMAS = {cls.__name__: cls for cls in (EnvConfig, AgentConfig, LoggerConfig, GaugeConfig)}
GROUPS: dict[str, dict[str, type]] = {"replay": SAMPLER_CONFIGS, "loss": TD_LOSS_CONFIGS}


def register_configs() -> None:
    """Register with Hydra: the schemas the YAML files extend (``<group>_schema``), and every registered sampler
    and loss as a group option of its own (``replay=per``, ``loss=focal``: no YAML file needed)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="agent", name="agent_schema", node=AgentConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for group, options in GROUPS.items():
        for name, node in options.items():
            cs.store(group=group, name=name, node=node)


def _unknown_keys(node: Any, cls: type, prefix: str) -> list[str]:
    """Keys of the composed ``node`` that the dataclass ``cls`` does not declare (recursively)."""
    declared = {f.name: f for f in dataclasses.fields(cls)}
    out = []
    for key in node:
        if key not in declared:
            out.append(f"{prefix}{key}")
            continue
        child = node._get_node(key)
        child_cls = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
        if child_cls is not None and dataclasses.is_dataclass(child_cls):
            out += _unknown_keys(child, child_cls, f"{prefix}{key}.")
    return out


def validate(cfg: DictConfig) -> Config:
    """Instantiate the composed config (running every range check); raises ``ConfigError`` with one line."""
    unknown = _unknown_keys(cfg, Config, "")
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: no such setting (python -m rlfocal.train --help lists them)")
    try:
        return OmegaConf.to_object(cfg)
    except ValidationError as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def setting_defaults(cls: type = Config, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: default}`` of every plain setting with a default (nested groups with a fixed schema too).
    A resumed run accepts a key its checkpoint predates when the key is at this default: the older run behaved so."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.type in _SCHEMAS:  # annotations are strings here (from __future__ import annotations)
            out |= setting_defaults(_SCHEMAS[f.type], f"{prefix}{f.name}.")
        elif f.default is not dataclasses.MISSING and f.default is not MISSING:
            out[f"{prefix}{f.name}"] = f.default
    return out


def help_lines() -> list[str]:
    """Every setting with its meaning, unit and range, group by group, for ``--help``."""
    lines = [*describe(Config, ""), *describe(EnvConfig, "env."), *describe(AgentConfig, "agent.")]
    lines += [*describe(LoggerConfig, "logger."), *describe(GaugeConfig, "gauge.")]
    for group, options in GROUPS.items():
        for name, cls in options.items():
            lines.append(f"{group}={name}: {(cls.__doc__ or '').splitlines()[0]}")
            lines += ["  " + line for line in describe(cls, f"{group}.") if not line.startswith(f"{group}.name=")]
    return lines
