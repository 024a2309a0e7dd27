"""Ring storage of transitions: preallocated numpy arrays, n-step returns at insertion, frame deduplication.

A stored transition is ``(obs, action, R, next_obs, discount, terminated)`` with the n-step return
``R = sum_{k<m} gamma^k r_{t+k}`` over the ``m <= n`` steps before the episode ended or n ran out, and
``discount = gamma^m`` if the return may bootstrap from ``next_obs`` (n ran out, or the episode was truncated)
and ``0`` if it terminated. So every learner computes ``y = R + discount * max_a Q(next_obs, a)``.

Transitions arrive per *stream* (one environment instance, ``env_id``): n-step returns and frame stacks are
built within a stream, so interleaved vectorised environments stay correct.

Longer than most modules on purpose: n-step windows, frame rings and eviction share one set of ring indices, and
splitting them would spread one invariant over several files.

With ``frame_stack = k > 1`` (Atari), ``obs_shape = (k, *frame_shape)`` and each frame is stored once in a
frame ring; a transition keeps the ring positions of its k obs frames and k next-obs frames and a stack is
rebuilt at gather time. Consecutive adds of a stream must then chain (``obs`` equals the previous ``next_obs``
unless that step ended the episode); at an episode start the padding frames of the first stack are stored once
when identical. Frames outnumber transitions by one per episode start, so the frame ring has a margin; if it
still wraps first, the oldest transitions whose frames are gone are evicted (``evicted`` slots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from rlfocal.replay.sumtree import next_pow2


@njit(cache=True)
def _first_outside(slots, start, size, capacity):  # pragma: no cover - compiled
    """Position of the first slot outside the stored window ``[start, start + size)`` (mod capacity), or -1."""
    for i in range(slots.shape[0]):
        s = slots[i]
        if s < 0 or s >= capacity or (s - start) % capacity >= size:
            return i
    return -1


@njit(cache=True)
def _min_set(nodes, leaf0, slot, value):  # pragma: no cover - compiled
    """Set one leaf of a min tree (heap layout, as ``SumTree``) and repair its ancestors."""
    node = slot + leaf0
    nodes[node] = value
    node >>= 1
    while node >= 1:
        nodes[node] = min(nodes[2 * node], nodes[2 * node + 1])
        node >>= 1


@njit(cache=True)
def _min_set_many(nodes, leaf0, slots, values):  # pragma: no cover - compiled
    """``_min_set`` of each slot in turn."""
    for i in range(slots.shape[0]):
        _min_set(nodes, leaf0, slots[i], values[i])


@njit(cache=True)
def _min_find_below(nodes, leaf0, threshold):  # pragma: no cover - compiled
    """Some leaf whose value is below ``threshold`` (the caller has checked the root's minimum is)."""
    node = 1
    while node < leaf0:
        node = 2 * node if nodes[2 * node] < threshold else 2 * node + 1
    return node - leaf0


@dataclass
class _Stream:
    """Per-environment state: the n-step window and, in frame mode, the frames of the last ``next_obs``."""

    pending: list = field(default_factory=list)  # (obs_ref, action, reward) oldest first
    last_next: np.ndarray | None = None  # the previous next_obs (frame mode: its absolute frame ids); None after an end


def _frames_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a, b))


class TransitionStorage:
    """Fixed-capacity ring of transitions. Knows nothing about priorities or sampling."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype=np.float32,
        *,
        action_shape: tuple[int, ...] = (),
        action_dtype=np.int64,
        n_step: int = 1,
        gamma: float = 0.99,
        frame_stack: int = 1,
        frame_margin: int | None = None,
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity <= 0:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        if isinstance(n_step, bool) or not isinstance(n_step, (int, np.integer)) or n_step < 1:
            raise ValueError(f"n_step must be an integer >= 1, got {n_step!r}")
        if isinstance(gamma, bool) or not (isinstance(gamma, (int, float, np.floating)) and 0.0 <= gamma <= 1.0):
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        if isinstance(frame_stack, bool) or not isinstance(frame_stack, (int, np.integer)) or frame_stack < 1:
            raise ValueError(f"frame_stack must be an integer >= 1, got {frame_stack!r}")
        try:
            obs_shape = tuple(int(d) for d in obs_shape)
        except TypeError:
            raise ValueError(f"obs_shape must be a tuple of ints, got {obs_shape!r}") from None
        if any(d <= 0 for d in obs_shape):
            raise ValueError(f"obs_shape must have positive dimensions, got {obs_shape}")
        if frame_stack > 1 and (len(obs_shape) < 2 or obs_shape[0] != frame_stack):
            raise ValueError(
                f"with frame_stack={frame_stack}, obs_shape must be ({frame_stack}, *frame_shape), got {obs_shape}"
            )
        self.capacity = int(capacity)
        self.obs_shape = obs_shape
        self.obs_dtype = np.dtype(obs_dtype)
        self.action_shape = tuple(action_shape)
        self.action_dtype = np.dtype(action_dtype)
        self.n_step = int(n_step)
        self.gamma = float(gamma)
        self.frame_stack = int(frame_stack)
        self._gamma_pows = self.gamma ** np.arange(self.n_step + 1)

        c = self.capacity
        self.actions = np.zeros((c, *self.action_shape), dtype=self.action_dtype)
        self.rewards = np.zeros(c, dtype=np.float32)
        self.discounts = np.zeros(c, dtype=np.float32)
        self.terminated = np.zeros(c, dtype=bool)
        if self.frame_stack == 1:
            self.obs = np.zeros((c, *obs_shape), dtype=self.obs_dtype)
            self.next_obs = np.zeros((c, *obs_shape), dtype=self.obs_dtype)
        else:
            k = self.frame_stack
            if frame_margin is None:
                # an episode start costs one extra frame (1/64 covers episodes of >= 64 steps on average), plus
                # headroom for the pending windows of 16 interleaved streams
                frame_margin = max(c // 64, 32 * (k + self.n_step))
            self.frame_capacity = c + int(frame_margin)
            self.frames = np.zeros((self.frame_capacity, *obs_shape[1:]), dtype=self.obs_dtype)
            # ring positions in `frames` of each slot's obs stack ([:, 0]) and next_obs stack ([:, 1])
            self.frame_ids = np.zeros((c, 2, k), dtype=np.int32 if self.frame_capacity < 2**31 else np.int64)
            self.first_frame = np.zeros(c, dtype=np.int64)  # absolute id of the oldest frame a slot uses
            self.frames_written = 0
            # min tree over stored slots' first_frame (inf where empty): finds a slot whose frames were overwritten
            self._leaf0 = next_pow2(c)
            self._oldest_frame = np.full(2 * self._leaf0, np.inf)
        self.start = 0  # oldest valid slot
        self.size = 0
        self._streams: dict[int, _Stream] = {}

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes of allocated storage arrays."""
        arrays = [self.actions, self.rewards, self.discounts, self.terminated]
        if self.frame_stack == 1:
            arrays += [self.obs, self.next_obs]
        else:
            arrays += [self.frames, self.frame_ids, self.first_frame, self._oldest_frame]
        return sum(a.nbytes for a in arrays)

    def first_invalid(self, slots: np.ndarray) -> int:
        """Position of the first int64 slot that holds no transition, or -1 (one compiled pass)."""
        return int(_first_outside(slots, self.start, self.size, self.capacity))

    def valid(self, slots: np.ndarray) -> np.ndarray:
        """Mask of slots that currently hold a transition."""
        return (slots >= 0) & (slots < self.capacity) & ((slots - self.start) % self.capacity < self.size)

    # ------------------------------------------------------------------ validation
    def _check_obs(self, name: str, x, batch: int | None) -> np.ndarray:
        x = np.asarray(x)
        shape = self.obs_shape if batch is None else (batch, *self.obs_shape)
        if x.shape != shape:
            raise ValueError(f"{name} has shape {x.shape}, expected {shape}")
        if x.dtype != self.obs_dtype and not np.can_cast(x.dtype, self.obs_dtype, "safe"):
            raise ValueError(
                f"{name} has dtype {x.dtype}, which does not convert safely to the buffer's obs_dtype "
                f"{self.obs_dtype}; cast it or create the buffer with obs_dtype={x.dtype}"
            )
        return x

    def _check_rest(self, action, reward, terminated, truncated, batch: int | None):
        if (batch is None and not self.action_shape and self.action_dtype.kind in "iu"
                and isinstance(action, (int, np.integer)) and isinstance(reward, (int, float, np.floating))
                and isinstance(terminated, (bool, np.bool_)) and isinstance(truncated, (bool, np.bool_))):  # fmt: skip
            # the env-step path with plain scalars: no array conversions
            if not math.isfinite(reward):
                raise ValueError(f"reward must be finite, got {reward}")
            return action, reward, terminated, truncated
        action = np.asarray(action)
        shape = self.action_shape if batch is None else (batch, *self.action_shape)
        if action.shape != shape:
            raise ValueError(f"action has shape {action.shape}, expected {shape}")
        if action.dtype != self.action_dtype and not np.can_cast(action.dtype, self.action_dtype, "same_kind"):
            raise ValueError(f"action has dtype {action.dtype}, expected {self.action_dtype}")
        reward = np.asarray(reward, dtype=np.float64)
        term = np.asarray(terminated)
        trunc = np.asarray(truncated)
        for name, x in (("reward", reward), ("terminated", term), ("truncated", trunc)):
            expected = () if batch is None else (batch,)
            if x.shape != expected:
                raise ValueError(f"{name} has shape {x.shape}, expected {expected}")
        if not np.isfinite(reward).all():
            bad = reward[~np.isfinite(reward)].flat[0]
            raise ValueError(f"reward must be finite, got {bad}")
        return action, reward, term.astype(bool), trunc.astype(bool)

    # ------------------------------------------------------------------ writing
    def add(self, obs, action, reward, next_obs, terminated, truncated, env_id: int = 0):
        """Add one transition of stream ``env_id``. Returns ``(written_slots, evicted_slots)``."""
        obs = self._check_obs("obs", obs, None)
        next_obs = self._check_obs("next_obs", next_obs, None)
        action, reward, term, trunc = self._check_rest(action, reward, terminated, truncated, None)
        written: list[int] = []
        evicted: list[int] = []
        self._add_one(obs, action, float(reward), next_obs, bool(term), bool(trunc), int(env_id), written, evicted)
        return np.asarray(written, dtype=np.int64), np.asarray(evicted, dtype=np.int64)

    def add_batch(self, obs, action, reward, next_obs, terminated, truncated, env_ids=None):
        """Add B transitions (leading dimension), in order. Row i belongs to stream ``env_ids[i]`` (default 0:
        B consecutive steps of one environment; a vectorised env step passes ``np.arange(num_envs)``).
        Returns ``(written_slots, evicted_slots)``."""
        b = int(np.shape(obs)[0]) if np.ndim(obs) > 0 else -1
        if b < 0:
            raise ValueError(f"obs must have a leading batch dimension, got shape {np.shape(obs)}")
        if b == 1:  # one row (a single environment's step): the scalar path costs a fifth of the batched one
            env_id = 0 if env_ids is None else int(np.asarray(env_ids).reshape(-1)[0])
            return self.add(obs[0], np.asarray(action)[0], np.asarray(reward)[0], next_obs[0],
                            np.asarray(terminated)[0], np.asarray(truncated)[0], env_id)  # fmt: skip
        obs = self._check_obs("obs", obs, b)
        next_obs = self._check_obs("next_obs", next_obs, b)
        action, reward, term, trunc = self._check_rest(action, reward, terminated, truncated, b)
        env_ids = np.zeros(b, dtype=np.int64) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
        if env_ids.shape != (b,):
            raise ValueError(f"env_ids has shape {env_ids.shape}, expected ({b},)")
        if self.n_step == 1 and self.frame_stack == 1:
            return self._write_rows(obs, action, reward, next_obs, term), np.empty(0, dtype=np.int64)
        if self.frame_stack > 1:
            chained = self._chained_refs(env_ids)
            if chained is not None:
                self._check_chained(chained, obs, env_ids)
                return self._add_chained(chained, action, reward, next_obs, term, trunc, env_ids)
            self._check_chain(obs, next_obs, term | trunc, env_ids)
        written: list[int] = []
        evicted: list[int] = []
        for i in range(b):
            self._add_one(obs[i], action[i], float(reward[i]), next_obs[i], bool(term[i]), bool(trunc[i]),
                          int(env_ids[i]), written, evicted)  # fmt: skip
        return np.asarray(written, dtype=np.int64), np.asarray(evicted, dtype=np.int64)

    def _write_rows(self, obs, action, reward, next_obs, term) -> np.ndarray:
        """Vectorised path for 1-step transitions without frame stacking: at most two contiguous slice copies."""
        c = self.capacity
        if obs.shape[0] > c:  # only the newest `capacity` rows survive
            self._write_rows(obs[:-c], action[:-c], reward[:-c], next_obs[:-c], term[:-c])
            obs, action, reward, next_obs, term = obs[-c:], action[-c:], reward[-c:], next_obs[-c:], term[-c:]
        b = obs.shape[0]
        first = (self.start + self.size) % c
        done = 0
        while done < b:
            lo = (first + done) % c
            n = min(b - done, c - lo)
            rows, dst = slice(done, done + n), slice(lo, lo + n)
            self.obs[dst] = obs[rows]
            self.next_obs[dst] = next_obs[rows]
            self.actions[dst] = action[rows]
            self.rewards[dst] = reward[rows]
            self.discounts[dst] = np.where(term[rows], 0.0, self.gamma)
            self.terminated[dst] = term[rows]
            done += n
        overflow = max(0, self.size + b - c)
        self.start = (self.start + overflow) % c
        self.size = min(c, self.size + b)
        return (first + np.arange(b)) % c

    def _chained_refs(self, env_ids: np.ndarray) -> np.ndarray | None:
        """The frame ids ``[B, k]`` of each row's obs when the batch is one step of distinct streams that all continue
        their episode, 1-step, with every obs frame still in the ring after this batch's frames: the vectorised
        path (a vector env's step mid-episode). None otherwise (the row-by-row path)."""
        b = env_ids.shape[0]
        if self.n_step != 1 or b >= self.capacity or np.unique(env_ids).shape[0] != b:
            return None
        refs = []
        for env_id in env_ids.tolist():
            stream = self._streams.get(env_id)
            if stream is None or stream.last_next is None:
                return None
            refs.append(stream.last_next)
        refs = np.stack(refs)
        # row i's obs frames must survive the i + 1 frames written up to it (the row-by-row path's condition)
        if (refs[:, 0] < self.frames_written + np.arange(1, b + 1) - self.frame_capacity).any():
            return None
        return refs

    def _check_chained(self, obs_refs: np.ndarray, obs: np.ndarray, env_ids: np.ndarray) -> None:
        """``_check_chain`` of chained rows (distinct streams, each continuing): one comparison for the batch."""
        last = self.frames[obs_refs[:, -1] % self.frame_capacity]
        broken = ~(last == obs[:, -1]).reshape(len(obs), -1).all(axis=1)
        if broken.any():
            i = int(np.flatnonzero(broken)[0])
            raise ValueError(
                f"row {i} (env_id {env_ids[i]}) breaks the frame chain: frame_stack storage needs obs to equal the "
                "previous next_obs of the same env_id unless the previous step ended the episode"
            )

    def _add_chained(self, obs_refs, action, reward, next_obs, term, trunc, env_ids):
        """``add_batch`` of chained rows (see ``_chained_refs``) in array operations, with the state and ``written``
        slots of adding them one by one. Evictions only ever move ``start`` forward, so applying them after all rows
        leaves the same window; ``evicted`` may differ only in slots this batch rewrites (one by one a slot can go
        stale before a later row overwrites it), which hold a transition at the end either way."""
        b, c, fc = obs_refs.shape[0], self.capacity, self.frame_capacity
        new_ids = self.frames_written + np.arange(b)
        self.frames[new_ids % fc] = next_obs[:, -1]
        self.frames_written += b
        next_refs = np.concatenate([obs_refs[:, 1:], new_ids[:, None]], axis=1)
        pos = (self.start + self.size + np.arange(b)) % c
        overflow = max(0, self.size + b - c)
        self.start = (self.start + overflow) % c
        self.size = min(c, self.size + b)
        self.frame_ids[pos, 0] = obs_refs % fc
        self.frame_ids[pos, 1] = next_refs % fc
        self.first_frame[pos] = obs_refs[:, 0]
        _min_set_many(self._oldest_frame, self._leaf0, pos, obs_refs[:, 0].astype(np.float64))
        self.actions[pos] = action
        self.rewards[pos] = reward
        self.discounts[pos] = np.where(term, 0.0, self.gamma)
        self.terminated[pos] = term
        ended = term | trunc
        for i, env_id in enumerate(env_ids.tolist()):
            self._streams[env_id].last_next = None if ended[i] else next_refs[i]
        evicted: list[int] = []
        self._evict_stale(evicted)
        return pos.astype(np.int64), np.asarray(evicted, dtype=np.int64)

    def _add_one(self, obs, action, reward, next_obs, term, trunc, env_id, written, evicted) -> None:
        stream = self._streams.get(env_id)
        if stream is None:
            stream = self._streams[env_id] = _Stream()
        if self.frame_stack == 1:
            obs_ref, next_ref = obs, next_obs
        else:
            obs_ref = self._obs_frames_for(stream, obs, env_id)
            next_ref = np.append(obs_ref[1:], self._write_frame(next_obs[-1]))
        if self.n_step == 1:
            self._emit(obs_ref, action, reward, next_ref, 0.0 if term else self.gamma, term, written, evicted)
        else:
            stream.pending.append((np.array(obs_ref), np.array(action), reward))
            if term or trunc:
                while stream.pending:
                    self._emit_pending(stream, next_ref, term, written, evicted)
            elif len(stream.pending) == self.n_step:
                self._emit_pending(stream, next_ref, False, written, evicted)
        if self.n_step > 1 or self.frame_stack > 1:  # 1-step flat storage never looks back
            stream.last_next = None if (term or trunc) else np.array(next_ref)
        if self.frame_stack > 1:
            self._evict_stale(evicted)

    def truncate_streams(self):
        """End every stream's episode as truncated (e.g. a run resumed with fresh environments): pending n-step
        windows are stored, bootstrapping from the last next_obs. Returns ``(written_slots, evicted_slots)``."""
        written: list[int] = []
        evicted: list[int] = []
        for stream in self._streams.values():
            while stream.pending:
                self._emit_pending(stream, stream.last_next, False, written, evicted)
            stream.last_next = None
        return np.asarray(written, dtype=np.int64), np.asarray(evicted, dtype=np.int64)

    def _emit_pending(self, stream: _Stream, next_ref, term: bool, written, evicted) -> None:
        """Emit the oldest pending step with the return of all pending rewards (m of them)."""
        m = len(stream.pending)
        ret = math.fsum(self._gamma_pows[j] * stream.pending[j][2] for j in range(m))
        obs_ref, action, _ = stream.pending.pop(0)
        self._emit(obs_ref, action, ret, next_ref, 0.0 if term else self._gamma_pows[m], term, written, evicted)

    def _emit(self, obs_ref, action, ret, next_ref, discount, term, written, evicted) -> None:
        if self.size == self.capacity:
            self.start = (self.start + 1) % self.capacity
            self.size -= 1
        pos = (self.start + self.size) % self.capacity
        if self.frame_stack == 1:
            self.obs[pos] = obs_ref
            self.next_obs[pos] = next_ref
        else:
            if obs_ref[0] < self.frames_written - self.frame_capacity:
                raise RuntimeError(
                    "frame ring wrapped past a pending transition; create the buffer with a larger frame_margin"
                )
            self.frame_ids[pos, 0] = obs_ref % self.frame_capacity
            self.frame_ids[pos, 1] = next_ref % self.frame_capacity
            self.first_frame[pos] = obs_ref[0]
            _min_set(self._oldest_frame, self._leaf0, pos, float(obs_ref[0]))
        self.actions[pos] = action
        self.rewards[pos] = ret
        self.discounts[pos] = discount
        self.terminated[pos] = term
        self.size += 1
        written.append(pos)

    # ------------------------------------------------------------------ frames
    def _write_frame(self, frame: np.ndarray) -> int:
        fid = self.frames_written
        self.frames[fid % self.frame_capacity] = frame
        self.frames_written += 1
        return fid

    def _obs_frames_for(self, stream: _Stream, obs: np.ndarray, env_id: int) -> np.ndarray:
        """Absolute frame ids of ``obs``: the previous next_obs mid-episode, freshly written at a start (or when the
        ring has already overwritten the previous stack, which only a very small ``frame_margin`` allows)."""
        last = stream.last_next
        if last is not None and last[0] >= self.frames_written - self.frame_capacity:
            if not _frames_equal(self.frames[last[-1] % self.frame_capacity], obs[-1]):
                raise ValueError(
                    f"env_id {env_id} breaks the frame chain: frame_stack storage needs obs to equal the previous "
                    "next_obs of the same env_id unless the previous step ended the episode"
                )
            return last
        ids = np.empty(self.frame_stack, dtype=np.int64)
        for j in range(self.frame_stack):
            if j > 0 and _frames_equal(obs[j], obs[j - 1]):  # reset padding repeats a frame: store it once
                ids[j] = ids[j - 1]
            else:
                ids[j] = self._write_frame(obs[j])
        return ids

    def _check_chain(self, obs, next_obs, ended, env_ids) -> None:
        """Reject a whole batch before writing anything if any row breaks its stream's frame chain."""
        last: dict[int, np.ndarray | None] = {}
        for i, env_id in enumerate(env_ids.tolist()):
            if env_id in last:
                prev = last[env_id]
            else:  # a chain whose frames the ring has overwritten restarts (as ``_obs_frames_for`` does)
                stream = self._streams.get(env_id)
                ids = None if stream is None else stream.last_next
                live = ids is not None and ids[0] >= self.frames_written - self.frame_capacity
                prev = self.frames[ids[-1] % self.frame_capacity] if live else None
            if prev is not None and not _frames_equal(prev, obs[i][-1]):
                raise ValueError(
                    f"row {i} (env_id {env_id}) breaks the frame chain: frame_stack storage needs obs to equal "
                    "the previous next_obs of the same env_id unless the previous step ended the episode"
                )
            last[env_id] = None if ended[i] else next_obs[i][-1]

    def _evict_stale(self, evicted: list[int]) -> None:
        """Evict from the oldest end until no stored slot uses an overwritten frame.

        Interleaved streams make ``first_frame`` non-monotone over slots, so a slot newer than the oldest can go
        stale first; the min tree finds it, and everything up to it goes, keeping the window contiguous.
        """
        oldest_kept = self.frames_written - self.frame_capacity
        while self._oldest_frame[1] < oldest_kept:
            stale = _min_find_below(self._oldest_frame, self._leaf0, oldest_kept)
            while True:
                slot = self.start
                evicted.append(slot)
                _min_set(self._oldest_frame, self._leaf0, slot, np.inf)
                self.start = (self.start + 1) % self.capacity
                self.size -= 1
                if slot == stale:
                    break

    # ------------------------------------------------------------------ reading
    def gathered_arrays(self) -> tuple[str, ...]:
        """Names of the arrays ``gather`` reads (with frame stacks: the frame ring and each slot's frame positions)."""
        return ("actions", "rewards", "discounts", *(self._ARRAYS_FLAT if self.frame_stack == 1 else self._FRAME_RING))

    def move_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Keep the named arrays in the given zero-filled ones (same shapes and dtypes) from now on, e.g. one lane's
        rows of arrays stacked over seed lanes, so all lanes gather at once; stored content moves there."""
        for name, array in arrays.items():
            own = getattr(self, name)
            if array.shape != own.shape or array.dtype != own.dtype:
                raise ValueError(f"array {name!r} has shape {array.shape} and dtype {array.dtype}, this storage "
                                 f"needs {own.shape} and {own.dtype}")  # fmt: skip
        for name, array in arrays.items():
            if self.size or getattr(self, "frames_written", 0):  # a fresh storage's pages stay untouched
                np.copyto(array, getattr(self, name))
            setattr(self, name, array)

    def gather(self, slots: np.ndarray, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Transition fields at ``slots``; written into ``out``'s arrays when given (e.g. pinned memory)."""
        fields = {
            "actions": self.actions,
            "rewards": self.rewards,
            "discounts": self.discounts,
        }
        if self.frame_stack == 1:
            fields.update(obs=self.obs, next_obs=self.next_obs)
        if out is None:
            data = {name: np.take(array, slots, axis=0) for name, array in fields.items()}
            if self.frame_stack > 1:
                # One take for both stacks: a single large allocation, which glibc keeps on the heap between
                # calls; two separate ones get trimmed and page-faulted back in on every call (~10x slower).
                ids = np.take(self.frame_ids, slots, axis=0).swapaxes(0, 1)
                data["obs"], data["next_obs"] = np.take(self.frames, ids, axis=0)
            return data
        # mode="clip" skips the defensive copy numpy makes for `out` under mode="raise"; slots are valid here
        for name, array in fields.items():
            np.take(array, slots, axis=0, out=out[name], mode="clip")
        if self.frame_stack > 1:
            ids = np.take(self.frame_ids, slots, axis=0)
            np.take(self.frames, ids[:, 0], axis=0, out=out["obs"], mode="clip")
            np.take(self.frames, ids[:, 1], axis=0, out=out["next_obs"], mode="clip")
        return out

    # ------------------------------------------------------------------ checkpoints
    _ARRAYS_FLAT = ("obs", "next_obs")
    _ARRAYS_FRAMES = ("frames", "frame_ids", "first_frame")
    _FRAME_RING = ("frames", "frame_ids")

    def _array_names(self) -> tuple[str, ...]:
        extra = self._ARRAYS_FLAT if self.frame_stack == 1 else self._ARRAYS_FRAMES
        return ("actions", "rewards", "discounts", "terminated", *extra)

    def state_dict(self) -> dict:
        """Arrays are returned as views (no copy of a multi-GB buffer): save them before adding more."""
        state = {name: getattr(self, name) for name in self._array_names()}
        state.update(
            start=self.start,
            size=self.size,
            frames_written=getattr(self, "frames_written", 0),
            streams={k: {"pending": list(s.pending), "last_next": s.last_next} for k, s in self._streams.items()},
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self._array_names():
            src = np.asarray(state[name])
            dst = getattr(self, name)
            if src.shape != dst.shape or src.dtype != dst.dtype:
                raise ValueError(
                    f"state array {name!r} has shape {src.shape} and dtype {src.dtype}, "
                    f"this storage needs {dst.shape} and {dst.dtype}"
                )
        for name in self._array_names():
            np.copyto(getattr(self, name), state[name])
        self.start, self.size = int(state["start"]), int(state["size"])
        if self.frame_stack > 1:
            self.frames_written = int(state["frames_written"])
            self._oldest_frame[:] = np.inf
            for slot in ((self.start + np.arange(self.size)) % self.capacity).tolist():
                _min_set(self._oldest_frame, self._leaf0, slot, float(self.first_frame[slot]))
        self._streams = {
            int(k): _Stream(pending=list(s["pending"]), last_next=s["last_next"]) for k, s in state["streams"].items()
        }
