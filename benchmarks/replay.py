"""Prioritized replay benchmark: rlfocal against cpprb and Tianshou.

Every (library, observation config) pair runs in its own subprocess, one after
another, with ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``NUMBA_NUM_THREADS`` and
``OPENBLAS_NUM_THREADS`` set to 1, so the libraries share neither a heap nor the
cores. A child fills a buffer to capacity with bulk adds of a synthetic stream
of consecutive episodes (frame-stacked, so frame deduplication applies), records
its memory (rlfocal's ``nbytes``, the growth of live RSS over the fill, and the
process's peak RSS), and then times:

* ``sample``: ``sample(256)`` including the gathered transition data
  (obs, action, reward, next_obs, done) and the importance-sampling weights;
* ``update_priorities``: 256 sampled indices with random positive TD errors;
* ``add``: one transition per call (the env-step path);
* ``add_chunk``: 1024 consecutive transitions per call.

Each figure is the median over ``--repeats`` loops of about ``--seconds`` each.
Two observation configs run separately: ``vector`` (float32, shape (4,)) and
``atari`` (uint8 84x84 frames stacked 4, shape (4, 84, 84)). For atari each
library uses its own frame-saving storage: rlfocal ``frame_stack=4``, cpprb
``next_of="obs", stack_compress="obs"``, Tianshou ``stack_num=4,
save_only_last_obs=True, ignore_obs_next=True``. A library that fails to import
is reported as unavailable, and a cell that would not fit in the available
memory is skipped. The parent writes the results and the machine info to JSON
and prints Markdown tables.

Usage::

    python benchmarks/replay.py --quick                   # smoke run, < 1 min
    python benchmarks/replay.py --configs vector          # capacity 2**20
    python benchmarks/replay.py --configs atari --atari-capacity 131072
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import importlib
import importlib.metadata
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

LIBS = ("rlfocal", "rlfocal-bufnorm", "cpprb", "tianshou")
OURS = ("rlfocal", "rlfocal-bufnorm")  # rlfocal-bufnorm: is_norm="buffer", cpprb's IS normalisation (keeps a min tree)
# Where each library's prioritized buffer lives: (module, class name).
BUFFER_CLASSES = {
    "rlfocal": ("rlfocal.replay", "PrioritizedReplay"),
    "rlfocal-bufnorm": ("rlfocal.replay", "PrioritizedReplay"),
    "cpprb": ("cpprb", "PrioritizedReplayBuffer"),
    "tianshou": ("tianshou.data", "PrioritizedReplayBuffer"),
}
# Distributions whose versions go into the machine info.
VERSIONED = ("numpy", "numba", "cpprb", "tianshou", "torch", "psutil")
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)

BATCH_SIZE = 256
CHUNK = 1024
ALPHA, BETA, EPS = 0.6, 0.4, 1e-6
N_ACTIONS = 18
EPISODE_LEN = (900, 1100)  # episode lengths are drawn uniformly from this range
FRAME_POOL = 4096  # distinct random frames the synthetic stream cycles through
WARMUP_CALLS = 5  # untimed calls before calibrating a loop (numba JIT, caches)
UPDATE_POOL = 32  # (indices, td errors) pairs cycled by the update loop

DEFAULT_CAPACITY = 2**20
QUICK_CAPACITY = 2**14
DEFAULT_REPEATS, QUICK_REPEATS = 5, 3
DEFAULT_SECONDS, QUICK_SECONDS = 0.5, 0.05


@dataclasses.dataclass(frozen=True)
class ObsConfig:
    """An observation layout: one frame, optionally stacked on a leading axis."""

    name: str
    frame_shape: tuple[int, ...]
    dtype: type[np.generic]
    stack: int

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """Shape of one observation as the environment emits it."""
        return (self.stack, *self.frame_shape) if self.stack > 1 else self.frame_shape

    @property
    def frame_bytes(self) -> int:
        """Bytes of one frame."""
        return int(np.prod(self.frame_shape)) * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        """Human-readable description for table headers."""
        return f"obs {self.obs_shape} {np.dtype(self.dtype).name}"


CONFIGS = {
    "vector": ObsConfig("vector", (4,), np.float32, 1),
    "atari": ObsConfig("atari", (84, 84), np.uint8, 4),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Run settings shared by the parent and its children."""

    quick: bool
    capacity: dict[str, int]  # per config
    repeats: int
    seconds: float
    seed: int


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive transitions of one stream, with a leading batch axis."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray

    def __len__(self) -> int:
        return len(self.action)

    @property
    def ended(self) -> np.ndarray:
        """Whether each transition is the last of its episode."""
        return self.terminated | self.truncated


class TransitionStream:
    """Endless stream of consecutive transitions from episodes of ~1000 steps.

    Frame ``g`` of the stream is row ``g % FRAME_POOL`` of a pool of random
    frames. Step ``k`` of an episode observes the stack of frames ``k-3..k``
    (padded with the episode's first frame, as gymnasium's
    ``FrameStackObservation`` does after a reset), so ``obs[t+1]`` is
    ``obs[t]`` shifted by one new frame and ``next_obs[t] == obs[t+1]`` inside
    an episode, which is what frame deduplication relies on. Every fourth
    episode ends by truncation, the others by termination.
    """

    def __init__(self, cfg: ObsConfig, seed: int) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        shape = (FRAME_POOL, *cfg.frame_shape)
        if np.issubdtype(cfg.dtype, np.integer):
            self.pool = self.rng.integers(0, 256, shape, dtype=cfg.dtype)
        else:
            self.pool = self.rng.standard_normal(shape, dtype=cfg.dtype)
        self.window = np.arange(1 - cfg.stack, 1)
        self.episode = 0
        self.first_frame = 0  # stream index of the current episode's first frame
        self.step = 0  # steps already taken in the current episode
        self.length = self._draw_length()

    def _draw_length(self) -> int:
        return int(self.rng.integers(*EPISODE_LEN))

    def _frames(self, steps: np.ndarray, out: np.ndarray) -> None:
        """Write the stacked observations at the given steps of the current episode into ``out``."""
        ids = self.first_frame + np.maximum(steps[:, None] + self.window, 0)
        np.take(self.pool, ids, axis=0, out=out.reshape(*ids.shape, *self.cfg.frame_shape), mode="wrap")

    def next_chunk(self, n: int) -> Chunk:
        """The next ``n`` transitions of the stream."""
        obs = np.empty((n, *self.cfg.obs_shape), self.cfg.dtype)
        next_obs = np.empty_like(obs)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        pos = 0
        while pos < n:
            take = min(n - pos, self.length - self.step)
            steps = np.arange(self.step, self.step + take)
            self._frames(steps, obs[pos : pos + take])
            self._frames(steps + 1, next_obs[pos : pos + take])
            self.step += take
            pos += take
            if self.step == self.length:
                ends = truncated if self.episode % 4 == 3 else terminated
                ends[pos - 1] = True
                self.episode += 1
                self.first_frame += self.length + 1  # an episode of L steps shows L+1 frames
                self.step = 0
                self.length = self._draw_length()
        return Chunk(
            obs=obs,
            action=self.rng.integers(0, N_ACTIONS, n),
            reward=self.rng.standard_normal(n, dtype=np.float32),
            next_obs=next_obs,
            terminated=terminated,
            truncated=truncated,
        )


class Adapter(Protocol):
    """What the benchmark needs from each library's prioritized buffer.

    ``prepare_*`` turn a chunk into the library's native arguments outside the
    timed region; ``add_*`` consume them and are timed.
    """

    options: dict[str, Any]
    notes: list[str]

    def prepare_singles(self, chunk: Chunk) -> Any: ...
    def add_singles(self, prepared: Any) -> None: ...
    def prepare_chunk(self, chunk: Chunk) -> Any: ...
    def add_chunk(self, prepared: Any) -> None: ...
    def sample(self) -> Any: ...
    def indices(self, sampled: Any) -> np.ndarray: ...
    def update(self, indices: np.ndarray, td_errors: np.ndarray) -> None: ...
    def stored(self) -> int: ...
    def nbytes(self) -> int | None: ...


class RlfocalAdapter:
    """``rlfocal.replay.PrioritizedReplay``."""

    def __init__(self, cls: type, cfg: ObsConfig, capacity: int, seed: int, is_norm: str = "batch") -> None:
        self.buf = cls(
            capacity,
            cfg.obs_shape,
            obs_dtype=cfg.dtype,
            alpha=ALPHA,
            beta=BETA,
            eps=EPS,
            seed=seed,
            frame_stack=cfg.stack,
            is_norm=is_norm,
        )
        self.options = {"frame_stack": cfg.stack, "is_norm": is_norm}
        how = "the batch max (no min tree)" if is_norm == "batch" else "the buffer max, via a min tree (as cpprb)"
        self.notes = ["add_chunk is add_batch(); sample() returns gathered arrays", f"IS weights normalized by {how}"]

    def prepare_singles(self, chunk: Chunk) -> list[tuple[Any, ...]]:
        return list(
            zip(
                chunk.obs,
                chunk.action.tolist(),
                chunk.reward.tolist(),
                chunk.next_obs,
                chunk.terminated.tolist(),
                chunk.truncated.tolist(),
                strict=True,
            )
        )

    def add_singles(self, prepared: list[tuple[Any, ...]]) -> None:
        add = self.buf.add
        for transition in prepared:
            add(*transition)

    def prepare_chunk(self, chunk: Chunk) -> Chunk:
        return chunk

    def add_chunk(self, prepared: Chunk) -> None:
        self.buf.add_batch(
            prepared.obs,
            prepared.action,
            prepared.reward,
            prepared.next_obs,
            prepared.terminated,
            prepared.truncated,
        )

    def sample(self) -> Any:
        return self.buf.sample(BATCH_SIZE)

    def indices(self, sampled: Any) -> np.ndarray:
        return sampled.indices

    def update(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.buf.update_priorities(indices, td_errors)

    def stored(self) -> int:
        return len(self.buf)

    def nbytes(self) -> int | None:
        return int(self.buf.nbytes)


CpprbCall = tuple[dict[str, Any], bool]  # add() keyword arguments, whether an episode ends


class CpprbAdapter:
    """``cpprb.PrioritizedReplayBuffer``.

    Stacked observations use the memory compression cpprb documents for Atari:
    ``next_of="obs"`` (next_obs shares obs storage) and ``stack_compress="obs"``
    (overlapping frames stored once), which needs the stack axis last and
    ``on_episode_end()`` after each episode. ``done`` is ``terminated``.
    """

    def __init__(self, cls: type, cfg: ObsConfig, capacity: int, seed: int) -> None:
        np.random.seed(seed)  # noqa: NPY002 - cpprb draws from the global RNG
        self.stack_last = cfg.stack > 1
        obs_shape = (*cfg.frame_shape, cfg.stack) if self.stack_last else cfg.frame_shape
        env_dict: dict[str, dict[str, Any]] = {
            "obs": {"shape": obs_shape, "dtype": cfg.dtype},
            "act": {"dtype": np.int64},
            "rew": {},
            "done": {},
        }
        compression: dict[str, str] = {}
        if self.stack_last:
            compression = {"next_of": "obs", "stack_compress": "obs"}
        else:
            env_dict["next_obs"] = env_dict["obs"]
        self.buf = cls(capacity, env_dict, alpha=ALPHA, eps=EPS, **compression)
        self.options = {"obs_shape": list(obs_shape), **compression}
        self.notes = [
            "sample() returns a dict with the gathered data, weights and indexes",
            "IS weights normalized by the weight of the global minimum priority",
            "update_priorities() gets |td|; cpprb adds eps and applies alpha",
            "on_episode_end() after each episode's last transition, inside the timed adds",
        ]
        if self.stack_last:
            self.notes += [
                "obs stored stack-last (84, 84, 4), as stack_compress requires",
                "add_chunk: a chunk crossing an episode end is split into two add() calls around on_episode_end()",
            ]

    def _native(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(obs, 1, -1)) if self.stack_last else obs

    def prepare_singles(self, chunk: Chunk) -> list[CpprbCall]:
        obs, next_obs = self._native(chunk.obs), self._native(chunk.next_obs)
        return [
            ({"obs": o, "act": a, "rew": r, "next_obs": n, "done": float(d)}, e)
            for o, a, r, n, d, e in zip(
                obs,
                chunk.action.tolist(),
                chunk.reward.tolist(),
                next_obs,
                chunk.terminated.tolist(),
                chunk.ended.tolist(),
                strict=True,
            )
        ]

    def add_singles(self, prepared: list[CpprbCall]) -> None:
        add, on_episode_end = self.buf.add, self.buf.on_episode_end
        for kwargs, episode_ends in prepared:
            add(**kwargs)
            if episode_ends:
                on_episode_end()

    def prepare_chunk(self, chunk: Chunk) -> list[CpprbCall]:
        obs, next_obs = self._native(chunk.obs), self._native(chunk.next_obs)
        cuts = (np.flatnonzero(chunk.ended) + 1).tolist()
        if not cuts or cuts[-1] != len(chunk):
            cuts.append(len(chunk))
        return [
            (
                {
                    "obs": obs[a:b],
                    "act": chunk.action[a:b],
                    "rew": chunk.reward[a:b],
                    "next_obs": next_obs[a:b],
                    "done": chunk.terminated[a:b],
                },
                bool(chunk.ended[b - 1]),
            )
            for a, b in itertools.pairwise([0, *cuts])
        ]

    add_chunk = add_singles

    def sample(self) -> dict[str, np.ndarray]:
        return self.buf.sample(BATCH_SIZE, beta=BETA)

    def indices(self, sampled: dict[str, np.ndarray]) -> np.ndarray:
        return sampled["indexes"]

    def update(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.buf.update_priorities(indices, td_errors)

    def stored(self) -> int:
        return int(self.buf.get_stored_size())

    def nbytes(self) -> int | None:
        return None


TianshouCall = tuple[Any, ...]  # obs, act, rew, terminated, truncated, obs_next


class TianshouAdapter:
    """``tianshou.data.PrioritizedReplayBuffer``.

    Stacked observations use Tianshou's frame-stack storage (``stack_num=4``,
    ``save_only_last_obs=True``, ``ignore_obs_next=True``): one frame per
    transition, re-stacked from neighbouring slots when sampling.
    """

    def __init__(self, cls: type, cfg: ObsConfig, capacity: int, seed: int) -> None:
        from tianshou.data import Batch

        np.random.seed(seed)  # noqa: NPY002 - Tianshou's prioritized sampling draws from the global RNG
        self.batch = Batch
        frame_stack: dict[str, Any] = {}
        if cfg.stack > 1:
            frame_stack = {
                "stack_num": cfg.stack,
                "save_only_last_obs": True,
                "ignore_obs_next": True,
            }
        self.buf = cls(capacity, alpha=ALPHA, beta=BETA, **frame_stack)
        self.options = frame_stack
        self.notes = [
            "add() takes a Batch; building it is part of the timed add",
            "no multi-transition add for a single buffer: add_chunk loops add()",
            "sample() returns (Batch, indices); weights normalized by the batch max",
            "priority eps is fixed to float32 eps (~1.2e-7), not settable",
        ]
        if cfg.stack > 1:
            self.notes.append(
                "frame-stack storage: obs_next is rebuilt from the next slot, so "
                "it equals obs for episode ends and the newest transition"
            )

    def prepare_singles(self, chunk: Chunk) -> list[TianshouCall]:
        return list(
            zip(
                chunk.obs,
                chunk.action.tolist(),
                chunk.reward.tolist(),
                chunk.terminated.tolist(),
                chunk.truncated.tolist(),
                chunk.next_obs,
                strict=True,
            )
        )

    def add_singles(self, prepared: list[TianshouCall]) -> None:
        add, batch = self.buf.add, self.batch
        for obs, act, rew, terminated, truncated, obs_next in prepared:
            add(
                batch(
                    obs=obs,
                    act=act,
                    rew=rew,
                    terminated=terminated,
                    truncated=truncated,
                    obs_next=obs_next,
                )
            )

    prepare_chunk = prepare_singles
    add_chunk = add_singles

    def sample(self) -> tuple[Any, np.ndarray]:
        return self.buf.sample(BATCH_SIZE)

    def indices(self, sampled: tuple[Any, np.ndarray]) -> np.ndarray:
        return sampled[1]

    def update(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.buf.update_weight(indices, td_errors)

    def stored(self) -> int:
        return len(self.buf)

    def nbytes(self) -> int | None:
        return None


ADAPTERS: dict[str, Callable[[type, ObsConfig, int, int], Adapter]] = {
    "rlfocal": RlfocalAdapter,
    "rlfocal-bufnorm": functools.partial(RlfocalAdapter, is_norm="buffer"),
    "cpprb": CpprbAdapter,
    "tianshou": TianshouAdapter,
}


# --------------------------------------------------------------------- timing


def _time_calls(call: Callable[[], object], n: int) -> float:
    """Seconds taken by ``n`` calls of ``call``."""
    start = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - start


def call_rates(call: Callable[[], object], seconds: float, repeats: int) -> list[float]:
    """Calls per second of ``call``, one figure per repeated loop of ~``seconds``."""
    _time_calls(call, WARMUP_CALLS)
    n = 1
    while (elapsed := _time_calls(call, n)) < seconds / 4:
        n *= 4
    n = max(1, round(n * seconds / elapsed))
    return [n / _time_calls(call, n) for _ in range(repeats)]


def add_rates(
    stream: TransitionStream,
    prepare: Callable[[Chunk], Any],
    add: Callable[[Any], None],
    seconds: float,
    repeats: int,
) -> list[tuple[float, float]]:
    """(chunks/s, transitions/s) of ``add``, one pair per repeat.

    Each repeat feeds fresh chunks of the stream (so frame-stacked buffers see
    one consecutive stream) until ``add`` has taken ``seconds``; only ``add``
    is timed.
    """
    add(prepare(stream.next_chunk(CHUNK)))  # warm-up
    rates = []
    for _ in range(repeats):
        elapsed, chunks = 0.0, 0
        while elapsed < seconds:
            prepared = prepare(stream.next_chunk(CHUNK))
            start = time.perf_counter()
            add(prepared)
            elapsed += time.perf_counter() - start
            chunks += 1
        rates.append((chunks / elapsed, chunks * CHUNK / elapsed))
    return rates


# ---------------------------------------------------------------------- child


def peak_rss() -> int:
    """Peak resident set size of this process in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def live_rss(process: psutil.Process) -> int:
    """Resident set size after glibc hands freed heap back to the OS, so it counts live memory only."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return process.memory_info().rss


def estimated_bytes(cfg: ObsConfig, capacity: int) -> int:
    """Rough memory a full buffer needs in any of the three libraries.

    With frame stacking every library here keeps about one frame per
    transition; otherwise obs and next_obs. 64 bytes cover the scalars and
    sum trees, 512 MiB the interpreter and the stream's chunks.
    """
    frames = 1 if cfg.stack > 1 else 2
    return capacity * (frames * cfg.frame_bytes + 64) + 2**29


def exercise(adapter: Adapter, stream: TransitionStream) -> None:
    """Run every operation on a small buffer, so that JIT compilation (numba, in rlfocal) and lazy imports
    happen before the memory baseline is taken."""
    for _ in range(2):
        adapter.add_chunk(adapter.prepare_chunk(stream.next_chunk(CHUNK)))
    adapter.add_singles(adapter.prepare_singles(stream.next_chunk(CHUNK)))
    sampled = adapter.sample()
    adapter.update(adapter.indices(sampled), np.ones(BATCH_SIZE, dtype=np.float32))


def run_child(lib: str, cfg: ObsConfig, settings: Settings) -> dict[str, Any]:
    """Fill one library's buffer, measure it, and return the results."""
    capacity, repeats, seconds, seed = settings.capacity[cfg.name], settings.repeats, settings.seconds, settings.seed
    result: dict[str, Any] = {"lib": lib, "config": cfg.name, "capacity": capacity}
    module, name = BUFFER_CLASSES[lib]
    try:
        cls = getattr(importlib.import_module(module), name)
    except Exception as exc:  # any import-time failure makes the peer unavailable
        return {**result, "status": "unavailable", "reason": f"{type(exc).__name__}: {exc}"}

    need, available = estimated_bytes(cfg, capacity), psutil.virtual_memory().available
    if need > available:
        reason = f"needs ~{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
        return {**result, "status": "skipped", "reason": reason}

    stream = TransitionStream(cfg, seed)
    scratch = ADAPTERS[lib](cls, cfg, 2 * CHUNK, seed)
    exercise(scratch, TransitionStream(cfg, seed + 1))
    del scratch
    process = psutil.Process()
    rss_before = live_rss(process)
    adapter = ADAPTERS[lib](cls, cfg, capacity, seed)
    start = time.perf_counter()
    for filled in range(0, capacity, CHUNK):
        adapter.add_chunk(adapter.prepare_chunk(stream.next_chunk(min(CHUNK, capacity - filled))))
    result["fill_s"] = time.perf_counter() - start
    result["stored"] = adapter.stored()
    result["memory"] = {
        "nbytes": adapter.nbytes(),
        "rss_before_bytes": rss_before,  # after imports and JIT warm-up, before the buffer exists
        "rss_after_fill_bytes": live_rss(process),
        "peak_rss_bytes": peak_rss(),  # includes the fill's transient chunks
    }

    rng = np.random.default_rng(seed)
    sample_rates = call_rates(adapter.sample, seconds, repeats)
    pairs = itertools.cycle(
        [
            (adapter.indices(adapter.sample()), rng.uniform(0.01, 2.0, BATCH_SIZE).astype(np.float32))
            for _ in range(UPDATE_POOL)
        ]
    )
    update_rates = call_rates(lambda: adapter.update(*next(pairs)), seconds, repeats)
    single_rates = [t for _, t in add_rates(stream, adapter.prepare_singles, adapter.add_singles, seconds, repeats)]
    chunk_rates = add_rates(stream, adapter.prepare_chunk, adapter.add_chunk, seconds, repeats)

    result["ops"] = {
        "sample": {"calls_per_s": statistics.median(sample_rates), "runs": sample_rates},
        "update_priorities": {"calls_per_s": statistics.median(update_rates), "runs": update_rates},
        "add": {"calls_per_s": statistics.median(single_rates), "runs": single_rates},
        "add_chunk": {
            "calls_per_s": statistics.median(c for c, _ in chunk_rates),
            "transitions_per_s": statistics.median(t for _, t in chunk_rates),
            "runs": [t for _, t in chunk_rates],
        },
    }
    return {**result, "status": "ok", "options": adapter.options, "notes": adapter.notes}


# --------------------------------------------------------------------- parent


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _git_commit() -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU, Python and library versions of this machine."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {dist: _version(dist) for dist in VERSIONED},
        "rlfocal_commit": _git_commit(),
        "child_env": {var: "1" for var in THREAD_VARS},
    }


def spawn(lib: str, config: str, settings: Settings) -> dict[str, Any]:
    """Run one child benchmark in a single-threaded subprocess and parse its JSON line."""
    capacity = settings.capacity[config]
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child", lib, config,
        "--capacity" if config == "vector" else "--atari-capacity", str(capacity),
        "--repeats", str(settings.repeats),
        "--seconds", str(settings.seconds),
        "--seed", str(settings.seed),
    ]  # fmt: skip
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **{var: "1" for var in THREAD_VARS}, "PYTHONPATH": pythonpath}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    if proc.returncode < 0:
        reason = f"killed by signal {-proc.returncode}" + (" (out of memory?)" if proc.returncode == -9 else "")
    else:
        tail = proc.stderr.strip().splitlines()
        reason = f"exit code {proc.returncode}: {tail[-1] if tail else 'no output'}"
    return {"lib": lib, "config": config, "capacity": capacity, "status": "failed", "reason": reason}


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_bytes(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


# (row label, how to read the figure from a child's result, formatter)
ROWS: tuple[tuple[str, Callable[[dict[str, Any]], float | None], Callable[[float], str]], ...] = (
    (f"sample({BATCH_SIZE}) calls/s", lambda r: r["ops"]["sample"]["calls_per_s"], _fmt_rate),
    (f"update_priorities({BATCH_SIZE}) calls/s", lambda r: r["ops"]["update_priorities"]["calls_per_s"], _fmt_rate),
    ("add (1 transition) calls/s", lambda r: r["ops"]["add"]["calls_per_s"], _fmt_rate),
    (f"add ({CHUNK} transitions) calls/s", lambda r: r["ops"]["add_chunk"]["calls_per_s"], _fmt_rate),
    (f"add ({CHUNK} transitions) transitions/s", lambda r: r["ops"]["add_chunk"]["transitions_per_s"], _fmt_rate),
    ("storage nbytes", lambda r: r["memory"]["nbytes"], _fmt_bytes),
    (
        "RSS growth from fill",
        lambda r: r["memory"]["rss_after_fill_bytes"] - r["memory"]["rss_before_bytes"],
        _fmt_bytes,
    ),
    ("peak RSS after fill (process)", lambda r: r["memory"]["peak_rss_bytes"], _fmt_bytes),
)


def markdown_table(cfg: ObsConfig, capacity: int, results: dict[str, dict[str, Any]]) -> str:
    """Markdown table for one config: a row per operation, a column per library and ratio."""
    libs = list(results)
    ours = [lib for lib in libs if lib in OURS]
    pairs = [(mine, peer) for mine in ours for peer in libs if peer not in OURS]
    ok = {lib: r for lib, r in results.items() if r["status"] == "ok"}
    header = ["operation", *libs, *(f"{mine}/{peer}" for mine, peer in pairs)]
    lines = [
        f"### {cfg.name}: {cfg.describe()}, capacity {capacity:,}, batch {BATCH_SIZE}",
        "",
        "| " + " | ".join(header) + " |",
        "|---" + "|---:" * (len(header) - 1) + "|",
    ]
    for label, read, fmt in ROWS:
        values = {lib: read(r) for lib, r in ok.items()}
        cells = [fmt(values[lib]) if values.get(lib) is not None else "-" for lib in libs]
        for mine, peer in pairs:
            a, b = values.get(mine), values.get(peer)
            cells.append(f"{a / b:.2f}x" if a is not None and b else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Rates: higher is better. Memory: lower is better.", ""]
    for lib, r in results.items():
        if r["status"] != "ok":
            lines.append(f"- {lib}: {r['status']}: {r['reason']}")
        else:
            options = ", ".join(f"{k}={v!r}" for k, v in r["options"].items()) or "defaults"
            lines.append(f"- {lib} ({options}): " + "; ".join(r["notes"]))
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically (via a ``.tmp`` sibling)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def run_parent(libs: list[str], configs: list[str], settings: Settings, out: Path) -> None:
    """Run every requested (config, library) child in turn, then report."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for config in configs:
        results[config] = {}
        for lib in libs:
            start = time.perf_counter()
            print(f"[{config}] {lib} ...", end=" ", file=sys.stderr, flush=True)
            r = spawn(lib, config, settings)
            print(f"{r['status']} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
            results[config][lib] = r

    report = {
        "machine": machine_info(),
        "settings": {
            **dataclasses.asdict(settings),
            "capacity": {config: settings.capacity[config] for config in configs},
            "batch_size": BATCH_SIZE,
            "chunk": CHUNK,
            "alpha": ALPHA,
            "beta": BETA,
            "eps": EPS,
            "episode_len": EPISODE_LEN,
        },
        "results": results,
    }
    write_json(out, report)
    machine = report["machine"]
    print(f"{machine['cpu_model']} ({machine['cpu_count']} CPUs), Python {machine['python']}, one thread per library")
    for config in configs:
        print()
        print(markdown_table(CONFIGS[config], settings.capacity[config], results[config]))
    print(f"\nwrote {out}")


def _names(choices: Iterable[str]) -> Callable[[str], list[str]]:
    """argparse type for a comma-separated subset of ``choices``."""
    allowed = list(choices)

    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return names

    return parse


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point for both the parent and the children."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small capacity, short loops (smoke test)")
    parser.add_argument("--libs", type=_names(LIBS), default=list(LIBS), help="comma-separated libraries")
    parser.add_argument("--configs", type=_names(CONFIGS), default=list(CONFIGS), help="comma-separated configs")
    parser.add_argument("--capacity", type=int, help=f"vector capacity (default {DEFAULT_CAPACITY})")
    parser.add_argument("--atari-capacity", type=int, help=f"atari capacity (default {DEFAULT_CAPACITY})")
    parser.add_argument("--repeats", type=int, help=f"timed loops per operation (default {DEFAULT_REPEATS})")
    parser.add_argument("--seconds", type=float, help=f"length of one timed loop (default {DEFAULT_SECONDS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/replay[-quick].json)")
    parser.add_argument("--child", nargs=2, metavar=("LIB", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    default_capacity = QUICK_CAPACITY if args.quick else DEFAULT_CAPACITY
    settings = Settings(
        quick=args.quick,
        capacity={
            "vector": args.capacity or default_capacity,
            "atari": args.atari_capacity or default_capacity,
        },
        repeats=args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS),
        seconds=args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS),
        seed=args.seed,
    )
    if args.child:
        lib, config = args.child
        print(json.dumps(run_child(lib, CONFIGS[config], settings)), flush=True)
    else:
        out = args.out or RESULTS_DIR / ("replay-quick.json" if args.quick else "replay.json")
        run_parent(args.libs, args.configs, settings, out)


if __name__ == "__main__":
    main()
