"""Lanes: S independent copies of one network trained in lockstep, as one module with stacked parameters.

Each parameter and buffer gets a leading lane axis ``[S, ...]``; ``torch.vmap`` over ``torch.func.functional_call``
runs lane k's forward on its own slice, so the MLP and both CNNs batch without per-architecture code. Nothing here
mixes lanes: forward, backward, per-lane gradient clipping and elementwise Adam keep them independent.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """A copy of the modules' common architecture whose every parameter and buffer is theirs, stacked on a new leading
    lane axis. Its ``state_dict`` has the usual keys; call it per lane (``torch.func.functional_call`` under vmap), or
    on inputs with a lane axis when it is ``lanes_native`` (the MLP). Matrices the module names in ``lane_transposed()``
    keep their shape ``[S, out, in]`` but are stored ``[S, in, out]`` (a transposed view), so that a lookup of their
    columns reads contiguous rows; gradients and Adam's state take the same layout."""
    stacked = copy.deepcopy(modules[0])
    transposed = set(getattr(modules[0], "lane_transposed", tuple)())
    for name, _ in modules[0].named_parameters():
        owner, _, leaf = name.rpartition(".")
        values = torch.stack([m.get_parameter(name).detach() for m in modules])
        if name in transposed:
            values = values.transpose(1, 2).contiguous().transpose(1, 2)
        setattr(stacked.get_submodule(owner), leaf, nn.Parameter(values))
    for name, _ in modules[0].named_buffers():
        owner, _, leaf = name.rpartition(".")
        setattr(stacked.get_submodule(owner), leaf, torch.stack([m.get_buffer(name) for m in modules]))
    return stacked


def lane_state(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The live (parameters, buffers) of a stacked module, the pytree vmap slices into lanes for ``functional_call``."""
    return dict(module.named_parameters()), dict(module.named_buffers())


def clip_grad_norm_(grads: list[torch.Tensor], max_norm: float, lanes: bool = False) -> None:
    """``nn.utils.clip_grad_norm_``'s arithmetic without its per-call checks (half its ~50 µs on small nets). With
    ``lanes`` the gradients carry a leading lane axis and each lane is clipped by its own norm over all parameters."""
    if lanes:
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [P, S]
        total = torch.linalg.vector_norm(norms, dim=0)
    else:
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    coef = (max_norm / (total + 1e-6)).clamp_(max=1.0)
    torch._foreach_mul_(grads, [coef.view(-1, *[1] * (g.dim() - 1)) for g in grads] if lanes else coef)
