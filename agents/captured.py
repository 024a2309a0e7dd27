"""The gradient step as one CUDA graph (``agent.capture_update``): its ~70 kernel launches become one replay.

A CUDA graph (``torch.cuda.CUDAGraph``) records the kernels a function launches and replays them with one launch;
it reads fixed input memory and writes fixed output memory. So ``CapturedStep`` copies each call's tensors into
static inputs, replays, and returns static outputs, which the next replay overwrites: consume or copy them before
the next call (a copy queued on the same stream, like the deferred priority write-back's, is ordered before it).

What a captured function may not do, refused while it is recorded (``CaptureCheck``): read a tensor's value on the
host (``.item()``, ``float(t)``, ``if t:``: a device sync, illegal during capture) or make a tensor whose shape
depends on values (``nonzero``, boolean-mask indexing). Its Python code runs once, at capture, so host state it
keeps (a counter, a running mean held as a Python float) would not advance on replay.

On CPU (CI has no GPU) ``EagerGraph`` stands in for the CUDA graph with the same contracts: static inputs and
outputs, the eager warm-up and the check, which it applies at every replay; it computes the same numbers and saves
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

aten = torch.ops.aten
# operations that read a value on the host (a sync) or size their output by the values
_FORBIDDEN = {
    aten._local_scalar_dense,
    aten.is_nonzero,
    aten.nonzero,
    aten.masked_select,
    aten._unique2,
    aten.unique_dim,
    aten.unique_consecutive,
}


class CaptureError(RuntimeError):
    """The function cannot be captured as a CUDA graph (it syncs or has value-dependent shapes)."""


class CaptureCheck(TorchDispatchMode):
    """Raises ``CaptureError`` at any operation a CUDA graph cannot hold (see the module docstring)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in _FORBIDDEN or _boolean_index(func, args):
            raise CaptureError(
                f"agent.capture_update=true: the update calls {func.name()}, which reads a tensor value on the host "
                "or sizes a tensor by its values; a CUDA graph cannot hold it (set agent.capture_update=false)"
            )
        return func(*args, **(kwargs or {}))


def _boolean_index(func, args: tuple) -> bool:
    """``x[mask]`` or ``x[mask] = v``: indexing by a boolean tensor runs ``nonzero`` inside."""
    if func.overloadpacket not in (aten.index, aten.index_put, aten.index_put_) or len(args) < 2:
        return False
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])


class CudaGraph:
    """``fn()`` recorded as a ``torch.cuda.CUDAGraph`` on ``device`` (recording runs no kernel); ``replay()`` runs
    them there, whichever CUDA device is current (``cuda:N``)."""

    def __init__(self, fn: Callable[[], Any], device: torch.device) -> None:
        self.device = device
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(device), CaptureCheck(), torch.cuda.graph(self.graph):
            self.outputs = fn()

    def replay(self) -> None:
        with torch.cuda.device(self.device):
            self.graph.replay()


class EagerGraph:
    """The CPU stand-in of ``CudaGraph``: ``replay()`` runs ``fn()`` under ``CaptureCheck`` and writes its results
    into the tensors of the first replay, which stay the outputs, as a graph's do."""

    def __init__(self, fn: Callable[[], Any], device: torch.device) -> None:
        self.fn = fn
        self.outputs = None

    def replay(self) -> None:
        with CaptureCheck():
            outputs = self.fn()
        if self.outputs is None:
            self.outputs = outputs
            return
        for static, fresh in zip(tree_flatten(self.outputs)[0], tree_flatten(outputs)[0], strict=True):
            static.copy_(fresh)


class CapturedStep:
    """``fn(inputs)`` (a pytree of tensors in, one of tensors out) run from a graph: the first ``warmup`` calls run
    eagerly (on CUDA on a side stream, as capture needs: lazy initialisation such as the optimizer's state happens
    there); the next records the graph on static copies of its inputs; every call from then on copies its inputs
    into them, replays and returns the static outputs. Inputs must keep their shapes, dtypes and devices."""

    def __init__(self, fn: Callable[[Any], Any], device: torch.device, warmup: int = 3) -> None:
        self.fn = fn
        self.device = torch.device(device)
        self.warmup = warmup
        self.calls = 0
        self._graph: CudaGraph | EagerGraph | None = None
        self._static: list[torch.Tensor] = []

    def __call__(self, inputs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.warmup:
            return self._eager(inputs)
        tensors, spec = tree_flatten(inputs)
        if self._graph is None:
            if not all(_on(t.device, self.device) for t in tensors):
                raise ValueError(
                    f"a captured update on {self.device} needs its inputs there, got them on "
                    f"{sorted({str(t.device) for t in tensors})}"
                )
            self._static = [t.clone() for t in tensors]
            static_inputs = tree_unflatten(self._static, spec)
            graph_type = CudaGraph if self.device.type == "cuda" else EagerGraph
            self._graph = graph_type(lambda: self.fn(static_inputs), self.device)
        else:
            self._check_like(tensors)
            for static, t in zip(self._static, tensors, strict=True):
                static.copy_(t)
        self._graph.replay()
        return self._graph.outputs

    def reset(self) -> None:
        """Drop the graph (the memory it was recorded on was replaced, e.g. by loading a checkpoint); the next
        calls warm up and record again."""
        self._graph, self._static, self.calls = None, [], 0

    def _eager(self, inputs: Any) -> Any:
        if self.device.type != "cuda":
            return self.fn(inputs)
        side, main = torch.cuda.Stream(self.device), torch.cuda.current_stream(self.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            outputs = self.fn(inputs)
        main.wait_stream(side)
        return outputs

    def _check_like(self, tensors: list[torch.Tensor]) -> None:
        """Raise unless ``tensors`` match the recorded inputs in number, shape, dtype and device."""
        recorded = [(tuple(t.shape), t.dtype, t.device) for t in self._static]
        given = [(tuple(t.shape), t.dtype, t.device) for t in tensors]
        if given != recorded:
            raise ValueError(
                f"a captured update replays on inputs like those it was recorded with: recorded {recorded}, got "
                f"{given} (keep agent.batch_size fixed, or set agent.capture_update=false)"
            )


def _on(device: torch.device, wanted: torch.device) -> bool:
    """``device`` is ``wanted`` (``cuda`` without an index matches any CUDA device)."""
    return device.type == wanted.type and wanted.index in (None, device.index)
