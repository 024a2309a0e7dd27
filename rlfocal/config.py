"""Structured configs: every setting's one home, its unit and its allowed range.

Hydra composes ``configs/`` against these dataclasses (a misspelt key or a wrong type fails at composition);
``validate`` then instantiates them, whose ``__post_init__`` checks ranges, so a bad value is one clear line
before any environment or network is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value outside its allowed range."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _positive(key: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, key, value, "must be > 0")


def _in_unit(key: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and 0 <= value <= 1, key, value, "must be in [0, 1]")


# ---------------------------------------------------------------------------------------------------- env
@dataclass
class EnvConfig:
    name: str = MISSING  # an id of rlfocal.envs.ENV_NAMES, e.g. CartPole-v1, MinAtar/Breakout-v1, ALE/Pong-v5
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra make_env arguments (DeepSea size, Cliffwalk n)
    num_envs: int = 1  # environments stepped together; each is its own n-step stream, seeded seed + i
    vector_mode: str = "serial"  # serial (in this process) | async (a subprocess each: slow envs, spare cores)

    def __post_init__(self) -> None:
        _require(self.num_envs >= 1, "env.num_envs", self.num_envs, "must be an integer >= 1")
        _require(self.vector_mode in ("serial", "async"), "env.vector_mode", self.vector_mode, "one of serial, async")


# ---------------------------------------------------------------------------------------------------- agent
@dataclass
class AgentConfig:
    network: str = "auto"  # mlp | minatar | nature | auto (by observation shape)
    hidden: list[int] = field(default_factory=lambda: [64, 64])  # MLP widths
    dueling: bool = False  # dueling head (Wang et al. 2016)
    double: bool = True  # double-Q targets (van Hasselt et al. 2016)
    gamma: float = 0.99  # discount per environment step
    n_step: int = 1  # n-step returns, folded in at insertion
    lr: float = 2.5e-4  # Adam learning rate
    adam_eps: float = 1e-8  # Adam epsilon
    batch_size: int = 128  # transitions per gradient step
    learning_starts: int = 1000  # env steps of random-policy data before the first update
    train_freq: int = 4  # env steps between gradient steps
    target_update_period: int = 500  # env steps between target-network updates
    tau: float = 1.0  # target update: 1 = hard copy, < 1 = Polyak
    max_grad_norm: float | None = 10.0  # gradient-norm clip (None: off)
    compile: bool = False  # torch.compile the update's forward passes (long GPU runs; first updates compile)
    amp: bool = False  # bfloat16 autocast in the update's forward passes (GPU); TD errors and losses stay float32
    eps_start: float = 1.0  # ε-greedy: initial ε
    eps_end: float = 0.05  # ε-greedy: final ε
    eps_fraction: float = 0.1  # fraction of total_steps over which ε decays linearly

    def __post_init__(self) -> None:
        _require(self.network in ("auto", "mlp", "minatar", "nature"), "agent.network", self.network,
                 "one of auto, mlp, minatar, nature")  # fmt: skip
        _require(len(self.hidden) > 0 and all(h > 0 for h in self.hidden), "agent.hidden", self.hidden,
                 "a non-empty list of positive widths")  # fmt: skip
        _in_unit("agent.gamma", self.gamma)
        for key in ("n_step", "batch_size", "train_freq", "target_update_period"):
            _require(getattr(self, key) >= 1, f"agent.{key}", getattr(self, key), "must be an integer >= 1")
        _require(self.learning_starts >= 0, "agent.learning_starts", self.learning_starts, "must be >= 0")
        _positive("agent.lr", self.lr)
        _positive("agent.adam_eps", self.adam_eps)
        _require(0 < self.tau <= 1, "agent.tau", self.tau, "must be in (0, 1]")
        if self.max_grad_norm is not None:
            _positive("agent.max_grad_norm", self.max_grad_norm)
        for key in ("eps_start", "eps_end", "eps_fraction"):
            _in_unit(f"agent.{key}", getattr(self, key))


# ---------------------------------------------------------------------------------------------------- replay
@dataclass
class ReplayConfig:
    kind: str = MISSING  # uniform | per | lap
    capacity: int = 50_000  # transitions

    def __post_init__(self) -> None:
        _require(self.capacity >= 1, "replay.capacity", self.capacity, "must be an integer >= 1")


@dataclass
class UniformReplayConfig(ReplayConfig):
    kind: str = "uniform"


@dataclass
class PERConfig(ReplayConfig):
    kind: str = "per"
    alpha: float = 0.6  # priority exponent: P(i) ∝ (|δ_i| + eps)^alpha
    beta: float = 0.4  # initial IS exponent
    beta_final: float = 1.0  # IS exponent at the end of the run
    anneal_beta: bool = True  # β moves linearly from beta to beta_final over the run's gradient steps
    eps: float = 1e-6  # added to |δ| so no transition starves
    is_norm: str = "batch"  # normalise IS weights by the batch max or the buffer max

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.alpha >= 0, "replay.alpha", self.alpha, "must be >= 0")
        _in_unit("replay.beta", self.beta)
        _in_unit("replay.beta_final", self.beta_final)
        _positive("replay.eps", self.eps)
        _require(self.is_norm in ("batch", "buffer"), "replay.is_norm", self.is_norm, "one of batch, buffer")


@dataclass
class LAPConfig(ReplayConfig):
    kind: str = "lap"
    alpha: float = 0.6  # priority exponent: P(i) ∝ max(|δ_i|, min_priority)^alpha
    min_priority: float = 1.0  # m: the priority floor (and the Huber threshold LAP pairs with)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.alpha >= 0, "replay.alpha", self.alpha, "must be >= 0")
        _positive("replay.min_priority", self.min_priority)


# ---------------------------------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    name: str = MISSING  # huber | mse | focal | mirror | pal


@dataclass
class HuberLossConfig(LossConfig):
    name: str = "huber"
    kappa: float = 1.0  # Huber threshold

    def __post_init__(self) -> None:
        _positive("loss.kappa", self.kappa)


@dataclass
class MSELossConfig(LossConfig):
    name: str = "mse"


def _check_reweighting(max_weight: float | None, base: str, kappa: float) -> None:
    if max_weight is not None:
        _positive("loss.max_weight", max_weight)
    _require(base in ("huber", "mse"), "loss.base", base, "one of huber, mse")
    _positive("loss.kappa", kappa)


@dataclass
class FocalLossConfig(LossConfig):
    name: str = "focal"
    gamma: float = 2.0  # focusing exponent γ of (1 − c)^γ
    tau: Any = 1.0  # temperature of c = exp(−L/τ): a number > 0, or "auto" (running mean of L)
    base: str = "huber"  # the loss L being modulated
    kappa: float = 1.0  # Huber threshold when base = huber
    detach_modulator: bool = False  # stop the gradient through (1 − c)^γ
    normalize: bool = False  # divide the modulator by its batch mean
    max_weight: float | None = None  # clip of the detached weight (None: no clip)

    def __post_init__(self) -> None:
        _require(isinstance(self.gamma, (int, float)) and self.gamma >= 0, "loss.gamma", self.gamma, "must be >= 0")
        if self.tau != "auto":
            _positive("loss.tau", self.tau)
        _check_reweighting(self.max_weight, self.base, self.kappa)


@dataclass
class MirrorLossConfig(LossConfig):
    name: str = "mirror"
    alpha: float = 0.6  # weight exponent: L_i (|δ_i| + eps)^alpha / batch mean
    eps: float = 1e-6
    base: str = "huber"
    kappa: float = 1.0
    max_weight: float | None = None

    def __post_init__(self) -> None:
        _require(self.alpha >= 0, "loss.alpha", self.alpha, "must be >= 0")
        _positive("loss.eps", self.eps)
        _check_reweighting(self.max_weight, self.base, self.kappa)


@dataclass
class PALLossConfig(LossConfig):
    name: str = "pal"
    alpha: float = 0.4  # PAL exponent (Fujimoto et al. 2020)
    min_priority: float = 1.0  # m
    max_weight: float | None = None

    def __post_init__(self) -> None:
        _require(self.alpha >= 0, "loss.alpha", self.alpha, "must be >= 0")
        _positive("loss.min_priority", self.min_priority)
        if self.max_weight is not None:
            _positive("loss.max_weight", self.max_weight)


# ---------------------------------------------------------------------------------------------------- logger
@dataclass
class LoggerConfig:
    kind: str = "csv"  # wandb | csv | none (CSV, config.yaml and curve.png are always written)
    project: str = "rlfocal"  # wandb project
    mode: str = "offline"  # wandb mode: offline (default, no account) | online | disabled
    group: str | None = None  # wandb group; default: the arm, e.g. "per+huber", so seeds aggregate
    log_every: int = 1000  # env steps between metric rows

    def __post_init__(self) -> None:
        _require(self.kind in ("wandb", "csv", "none"), "logger.kind", self.kind, "one of wandb, csv, none")
        _require(self.mode in ("offline", "online", "disabled"), "logger.mode", self.mode,
                 "one of offline, online, disabled")  # fmt: skip
        _require(self.log_every >= 1, "logger.log_every", self.log_every, "must be >= 1")


# ---------------------------------------------------------------------------------------------------- gauge
@dataclass
class GaugeConfig:
    every: int = 1000  # gradient steps between analogy-gauge readings, taken at the next log row (0: off)
    sample_size: int = 1024  # stored transitions in the gauge's uniform probe
    focal_gamma: float | None = None  # focal γ compared with PER; None: the run's loss.gamma if focal, else α/2

    def __post_init__(self) -> None:
        _require(self.every >= 0, "gauge.every", self.every, "must be an integer >= 0")
        _require(self.sample_size >= 2, "gauge.sample_size", self.sample_size, "must be an integer >= 2")
        if self.focal_gamma is not None:
            _require(self.focal_gamma >= 0, "gauge.focal_gamma", self.focal_gamma, "must be >= 0 or null")


# ---------------------------------------------------------------------------------------------------- top level
@dataclass
class Config:
    env: EnvConfig = MISSING
    agent: AgentConfig = MISSING
    replay: ReplayConfig = MISSING
    loss: LossConfig = MISSING
    logger: LoggerConfig = MISSING
    gauge: GaugeConfig = field(default_factory=GaugeConfig)
    seed: int = 0  # seeds env, network init, exploration and replay
    total_steps: int = 50_000  # environment steps
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    resume: bool = False  # continue from the run directory's latest checkpoint
    eval_every: int = 5_000  # env steps between greedy evaluations (0: off)
    eval_episodes: int = 10  # episodes per evaluation
    eval_epsilon: float = 0.0  # ε of the evaluation policy
    checkpoint_every: int = 10_000  # env steps between checkpoints
    save_replay: bool = False  # include the replay buffer in checkpoints
    torch_threads: int = 1  # intra-op CPU threads (1 is fastest for small nets)
    deterministic: bool = False  # CUDA: deterministic kernels (cuDNN, cuBLAS workspace), bit-for-bit reruns, slower
    progress: bool = True  # progress bar on a terminal, plain lines otherwise

    def __post_init__(self) -> None:
        _require(self.total_steps >= 1, "total_steps", self.total_steps, "must be an integer >= 1")
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"), "device",
                 self.device, "one of auto, cpu, cuda, cuda:N")  # fmt: skip
        _require(self.eval_every >= 0, "eval_every", self.eval_every, "must be >= 0")
        _require(self.eval_episodes >= 1, "eval_episodes", self.eval_episodes, "must be >= 1")
        _in_unit("eval_epsilon", self.eval_epsilon)
        _require(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, "must be >= 1")
        _require(self.torch_threads >= 1, "torch_threads", self.torch_threads, "must be >= 1")


SCHEMAS = {
    "replay": {"uniform": UniformReplayConfig, "per": PERConfig, "lap": LAPConfig},
    "loss": {
        "huber": HuberLossConfig,
        "mse": MSELossConfig,
        "focal": FocalLossConfig,
        "mirror": MirrorLossConfig,
        "pal": PALLossConfig,
    },
}


def arm_label(replay_kind: str, loss: dict[str, Any]) -> str:
    """``<sampler>+<loss>(<salient loss parameters>)`` from plain values, so a resolved ``config.yaml`` names its
    arm exactly as the run did (``rlfocal.builders.arm_name``)."""
    loss = dict(loss)
    name = loss.pop("name")
    salient = {"focal": ("gamma", "tau"), "mirror": ("alpha",), "pal": ("alpha",)}.get(name, ())
    if loss.get("max_weight") is not None:  # clipped and unclipped reweighting are different arms
        salient += ("max_weight",)
    params = ",".join(f"{k}={loss[k]:g}" if isinstance(loss[k], float) else f"{k}={loss[k]}" for k in salient)
    return f"{replay_kind}+{name}" + (f"({params})" if params else "")


def register_configs() -> None:
    """Register the schemas Hydra's YAML files extend (``defaults: [<name>_schema]``)."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="agent", name="agent_schema", node=AgentConfig)
    cs.store(group="logger", name="logger_schema", node=LoggerConfig)
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=group, name=f"{name}_schema", node=node)


def validate(cfg: DictConfig) -> Config:
    """Instantiate the composed config (running every range check); raises ``ConfigError`` with one line."""
    return OmegaConf.to_object(cfg)
