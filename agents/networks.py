"""Q-networks: an MLP for vector observations, the MinAtar CNN and the Nature DQN CNN, each with an optional
dueling head (Wang et al. 2016, https://arxiv.org/abs/1511.06581)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _linears(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def _lane_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``F.linear`` of stacked lanes (``agents.lanes``: weight ``[S, out, in]``): each lane's inputs ``[S, B, in]``
    through its own slice, in one batched matmul."""
    return torch.baddbmm(bias.unsqueeze(-2), x, weight.transpose(-1, -2))


def _relu_layers(x: torch.Tensor, layers: nn.ModuleList, relu_last: bool) -> torch.Tensor:
    """Linear layers with ReLUs between them, applied as functions: for nets this small, calling each layer as a
    module (hooks, dispatch) costs more than its matmul, and acting calls the net once per environment step."""
    for i, layer in enumerate(layers):
        weight = layer.weight
        x = F.linear(x, weight, layer.bias) if weight.dim() == 2 else _lane_linear(x, weight, layer.bias)
        if relu_last or i < len(layers) - 1:
            x = torch.relu(x)
    return x


def _one_hot_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``F.linear`` for one-hot rows (0/1 with at most one 1, as DeepSea's and Cliffwalk's observations): the 1's
    weight column plus the bias (the bias alone for an all-zero row). An embedding lookup instead of a matmul, with
    the matmul's float result (one exact product; the zeros add nothing); the weight gradient sums the same products
    in another order. The 1's position comes from ``x @ [0, 1, ..., in − 1]``, exact in float32 and ~10x faster on
    CPU than ``argmax``."""
    positions = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
    idx = (x @ positions).long()  # [..., B]; 0 for an all-zero row, whose x[0] is 0
    table, rows = layer.weight.transpose(-1, -2), idx  # [..., in, out]
    if table.dim() == 3:  # stacked lanes (stored [S, in, out]: MLP.lane_transposed): lane k's rows start at k * in
        rows = idx + torch.arange(table.shape[0], device=idx.device).unsqueeze(-1) * table.shape[1]
        table = table.reshape(-1, table.shape[-1])
    return F.embedding(rows, table) * x.gather(-1, idx.unsqueeze(-1)) + layer.bias.unsqueeze(-2)


def _numpy_layers(layers: nn.ModuleList, lanes: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of each layer as numpy views of the live CPU parameters: in-place optimizer steps and
    ``load_state_dict`` write through them, so they never go stale. ``lanes``: parameters stacked on a leading lane
    axis (``agents.lanes``), biases as columns ``[S, out, 1]``."""
    views = [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in layers]
    return [(weight, bias[..., None]) for weight, bias in views] if lanes else views


def _numpy_relu_layers(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]], relu_last: bool) -> np.ndarray:
    """``_relu_layers`` for one observation vector ``[in]``, or for lanes of column vectors ``[S, in, E]``, in numpy."""
    for i, (weight, bias) in enumerate(layers):
        x = weight @ x + bias
        if relu_last or i < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


class QHead(nn.Module):
    """Linear Q-values, or dueling: ``Q = V + A − mean_a A`` (the mean, not the max, as in Wang et al. eq. 9)."""

    def __init__(self, in_features: int, num_actions: int, hidden: int, dueling: bool) -> None:
        super().__init__()
        self.dueling = dueling
        if dueling:
            self.value = _linears([in_features, hidden, 1])
            self.advantage = _linears([in_features, hidden, num_actions])
        else:
            self.q = _linears([in_features, hidden, num_actions])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.dueling:
            return _relu_layers(x, self.q, relu_last=False)
        advantage = _relu_layers(x, self.advantage, relu_last=False)
        return _relu_layers(x, self.value, relu_last=False) + advantage - advantage.mean(dim=-1, keepdim=True)

    def numpy_forward(self, lanes: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """Q-values of features ``[in]``, or with ``lanes`` of columns ``[S, in, E]`` (``[S, A, E]`` out)."""
        if not self.dueling:
            q = _numpy_layers(self.q, lanes)
            return lambda x: _numpy_relu_layers(x, q, relu_last=False)
        value, advantage = _numpy_layers(self.value, lanes), _numpy_layers(self.advantage, lanes)
        mean = partial(np.mean, axis=-2, keepdims=True) if lanes else np.mean  # over actions

        def dueling(x: np.ndarray) -> np.ndarray:
            a = _numpy_relu_layers(x, advantage, relu_last=False)
            return _numpy_relu_layers(x, value, relu_last=False) + a - mean(a)

        return dueling


class MLP(nn.Module):
    """Vector observations ``[B, *obs_shape]`` (flattened) -> ``[B, num_actions]``. ``one_hot``: observations have
    at most one nonzero entry (DeepSea, Cliffwalk), so the first layer is a column lookup (``_one_hot_linear``).
    With stacked lane parameters (``lanes_native``) it maps ``[S, B, *obs_shape]`` to ``[S, B, num_actions]``
    directly, in batched matmuls: no vmap."""

    lanes_native = True

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        num_actions: int,
        hidden: tuple[int, ...] = (64, 64),
        dueling: bool = False,
        one_hot: bool = False,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MLP needs at least one hidden layer, got hidden=()")
        if one_hot and len(hidden) < 2:
            raise ValueError(f"a one-hot MLP needs two hidden layers or more (the first is the lookup), got {hidden}")
        sizes = [math.prod(obs_shape), *hidden[:-1]]
        self.obs_dims = len(obs_shape)
        self.one_hot = one_hot
        self.torso = _linears(sizes)
        self.head = QHead(sizes[-1], num_actions, hidden[-1], dueling)

    def lane_transposed(self) -> tuple[str, ...]:
        """Parameters ``agents.lanes.stack_modules`` stores as ``[S, in, out]``: the one-hot layer's lookup table."""
        return ("torso.0.weight",) if self.one_hot else ()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.flatten(obs.dim() - self.obs_dims).float()
        if not self.one_hot:
            return self.head(_relu_layers(x, self.torso, relu_last=True))
        x = torch.relu(_one_hot_linear(x, self.torso[0]))
        return self.head(_relu_layers(x, self.torso[1:], relu_last=True))

    def numpy_forward(self, lanes: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        """Q-values ``[num_actions]`` of ONE observation, in numpy on the live CPU parameters (see
        ``_numpy_layers``). Acting needs one tiny forward per environment step, where torch's per-op dispatch
        (~5 µs an op) costs more than the arithmetic; numpy's costs ~1 µs. Same float32 math, other summation order.
        ``lanes``: this module's parameters are stacked lanes (``agents.lanes``); observations ``[S, E, *obs_shape]``
        give Q-values ``[S, E, num_actions]``.
        """
        torso, head = _numpy_layers(self.torso, lanes), self.head.numpy_forward(lanes)
        if lanes:  # lane k's observations as the columns of an [in, E] matrix, so `weight @ x + bias` still applies

            def lane_columns(obs: np.ndarray) -> np.ndarray:
                x = np.asarray(obs, np.float32).reshape(*obs.shape[:2], -1).transpose(0, 2, 1)
                return head(_numpy_relu_layers(x, torso, relu_last=True)).transpose(0, 2, 1)

            return lane_columns
        return lambda obs: head(_numpy_relu_layers(np.asarray(obs, np.float32).reshape(-1), torso, relu_last=True))


class MinAtarCNN(nn.Module):
    """Young & Tian 2019 (https://arxiv.org/abs/1903.03176): one 3×3 conv with 16 channels, then 128 units.

    Input ``[B, C, 10, 10]`` with 0/1 entries (any dtype)."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, dueling: bool = False) -> None:
        super().__init__()
        channels, height, width = obs_shape
        self.torso = nn.Sequential(nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.head = QHead(16 * (height - 2) * (width - 2), num_actions, 128, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(obs.float()))


class NatureCNN(nn.Module):
    """Mnih et al. 2015: convs 32×8×8/4, 64×4×4/2, 64×3×3/1, then 512 units. Input ``[B, 4, 84, 84]`` uint8."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, dueling: bool = False) -> None:
        super().__init__()
        self.torso = nn.Sequential(
            nn.Conv2d(obs_shape[0], 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            features = self.torso(torch.zeros(1, *obs_shape)).shape[1]
        self.head = QHead(features, num_actions, 512, dueling)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(torch.div(obs, 255.0)))  # uint8 -> float32 / 255 in one kernel, as .float() / 255


NETWORKS = {"mlp": MLP, "minatar": MinAtarCNN, "nature": NatureCNN}


def make_network(
    kind: str,
    obs_shape: tuple[int, ...],
    num_actions: int,
    *,
    dueling: bool = False,
    hidden: tuple[int, ...] = (64, 64),
    one_hot: bool = False,
) -> nn.Module:
    """Build a Q-network by name; ``auto`` picks by observation rank (1-D: MLP, 10×10 images: MinAtar, else Nature).
    ``hidden`` sets the MLP's widths and ``one_hot`` its first layer's lookup; the CNNs keep their published sizes."""
    if kind == "auto":
        kind = "mlp" if len(obs_shape) == 1 else ("minatar" if tuple(obs_shape[1:]) == (10, 10) else "nature")
    if kind not in NETWORKS:
        raise ValueError(f"unknown network {kind!r}; choose one of {sorted(NETWORKS)} or 'auto'")
    if one_hot and kind != "mlp":
        raise ValueError(f"one_hot inputs need the mlp network, got {kind!r}")
    kwargs = {"hidden": tuple(hidden), "one_hot": one_hot} if kind == "mlp" else {}
    return NETWORKS[kind](tuple(obs_shape), num_actions, dueling=dueling, **kwargs)
