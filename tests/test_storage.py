"""TransitionStorage and the replay buffers against hand-computed n-step targets and a naive full-stack store."""

import copy
import pickle
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import pytest

from rlfocal.replay import LAPReplay, PrioritizedReplay, TransitionStorage, UniformReplay

GAMMA = 0.5  # powers of 1/2 and integer rewards keep every n-step return exact in float32
FRAME = (2, 3)  # frame shape of the synthetic streams: every pixel of frame i holds i, frame 0 is all zeros


# ---------------------------------------------------------------------------------------------- synthetic data
def frame(fid: int) -> np.ndarray:
    return np.full(FRAME, fid, dtype=np.int32)


def stack(ids) -> np.ndarray:
    return np.stack([frame(i) for i in ids])


def frame_ids(stacks: np.ndarray) -> np.ndarray:
    """Frame ids of stacked observations: shape (..., k, *FRAME) -> (..., k)."""
    return stacks[..., 0, 0]


@dataclass(frozen=True)
class Step:
    env_id: int
    obs: np.ndarray
    action: int
    reward: float
    next_obs: np.ndarray
    terminated: bool
    truncated: bool

    @property
    def ended(self) -> bool:
        return self.terminated or self.truncated

    def add_to(self, target) -> tuple:
        """Add this step to a storage or buffer with ``add``; returns whatever ``add`` returns."""
        return target.add(
            self.obs, self.action, self.reward, self.next_obs, self.terminated, self.truncated, self.env_id
        )


def add_batch(target, steps: list[Step], with_env_ids: bool = True) -> None:
    target.add_batch(
        np.stack([s.obs for s in steps]),
        np.array([s.action for s in steps], dtype=np.int64),
        np.array([s.reward for s in steps]),
        np.stack([s.next_obs for s in steps]),
        np.array([s.terminated for s in steps]),
        np.array([s.truncated for s in steps]),
        np.array([s.env_id for s in steps]) if with_env_ids else None,
    )


class FrameSource:
    """Hands out fresh frame ids (never 0, the all-zero padding frame)."""

    def __init__(self) -> None:
        self.last = 0

    def fresh(self) -> int:
        self.last += 1
        return self.last


def first_stack(src: FrameSource, k: int, padding: str) -> list[int]:
    """Frame ids of an episode's first observation."""
    if padding == "reset":  # the reset frame repeated k times (Atari-style padding)
        return [src.fresh()] * k
    if padding == "distinct":  # no padding frames at all
        return [src.fresh() for _ in range(k)]
    if padding == "zeros":  # all-zero padding frames before the reset frame
        return [0] * (k - 1) + [src.fresh()]
    if padding == "partial":  # a repeated frame, then fresh ones
        f = src.fresh()
        return ([f] * k + [src.fresh(), src.fresh()])[-k:] if k > 1 else [f]
    raise AssertionError(padding)


# (length, padding of the first stack, how it ends): includes length-1 episodes and every padding kind
EPISODES = [
    (1, "reset", "terminated"),
    (4, "distinct", "truncated"),
    (1, "zeros", "truncated"),
    (5, "partial", "terminated"),
    (2, "reset", "truncated"),
    (1, "distinct", "terminated"),
    (7, "zeros", "terminated"),
    (3, "reset", "truncated"),
]


def make_stream(src: FrameSource, env_id: int, k: int, rounds: int, rng) -> tuple[list[Step], int]:
    """Chained steps of ``rounds`` passes over EPISODES, and how many distinct frames a deduplicating store
    writes for them (per episode: the runs of equal frames in the first stack, plus one frame per step)."""
    steps, frames = [], 0
    for _ in range(rounds):
        for length, padding, end in EPISODES:
            ids = first_stack(src, k, padding)
            frames += 1 + sum(a != b for a, b in pairwise(ids)) + length
            ids += [src.fresh() for _ in range(length)]
            for t in range(length):
                last = t == length - 1
                steps.append(
                    Step(
                        env_id,
                        stack(ids[t : t + k]),
                        int(rng.integers(6)),
                        float(rng.integers(-3, 4)),
                        stack(ids[t + 1 : t + k + 1]),
                        last and end == "terminated",
                        last and end == "truncated",
                    )
                )
    return steps, frames


def interleave(streams: list[list[Step]], rng) -> list[Step]:
    """A random merge of the streams that keeps each stream's order."""
    queues = [list(s) for s in streams]
    out = []
    while any(queues):
        live = [i for i, q in enumerate(queues) if q]
        out.append(queues[int(rng.choice(live))].pop(0))
    return out


# ---------------------------------------------------------------------------------------------- naive reference
@dataclass(frozen=True)
class Ref:
    obs: np.ndarray
    action: int
    reward: float
    next_obs: np.ndarray
    discount: float
    done: bool


def naive_store(steps: list[Step], n_step: int, gamma: float) -> tuple[list[Ref], list[int]]:
    """Reference n-step transitions with full stacks, in emission order, and how many exist after each step."""
    pending: dict[int, list[Step]] = defaultdict(list)
    out: list[Ref] = []
    counts: list[int] = []

    def emit(window: list[Step], last: Step) -> None:
        m = len(window)
        ret = sum(gamma**j * s.reward for j, s in enumerate(window))
        discount = 0.0 if last.terminated else gamma**m
        out.append(Ref(window[0].obs, window[0].action, ret, last.next_obs, discount, last.terminated))

    for step in steps:
        window = pending[step.env_id]
        window.append(step)
        if step.ended:
            while window:
                emit(window, step)
                window.pop(0)
        elif len(window) == n_step:
            emit(window, step)
            window.pop(0)
        counts.append(len(out))
    return out, counts


def window_slots(storage: TransitionStorage) -> np.ndarray:
    return (storage.start + np.arange(storage.size)) % storage.capacity


def assert_window_is(storage: TransitionStorage, expected: list[Ref]) -> None:
    """The valid slots, oldest first, hold exactly ``expected``."""
    assert storage.size == len(expected)
    if not expected:
        return
    got = storage.gather(window_slots(storage))
    where = f"valid window of {storage.size} slots from slot {storage.start}, oldest first"
    np.testing.assert_array_equal(got["obs"], np.stack([r.obs for r in expected]), err_msg=f"obs, {where}")
    np.testing.assert_array_equal(
        got["next_obs"], np.stack([r.next_obs for r in expected]), err_msg=f"next_obs, {where}"
    )
    np.testing.assert_array_equal(got["actions"], [r.action for r in expected])
    np.testing.assert_array_equal(got["rewards"], np.array([r.reward for r in expected], dtype=np.float32))
    np.testing.assert_array_equal(got["discounts"], np.array([r.discount for r in expected], dtype=np.float32))
    np.testing.assert_array_equal(storage.terminated[window_slots(storage)], [r.done for r in expected])


def stored_multiset(storage: TransitionStorage) -> Counter:
    """Stored transitions as hashable tuples (frame ids instead of arrays)."""
    got = storage.gather(window_slots(storage))
    return Counter(
        (tuple(frame_ids(o).tolist()), int(a), float(r), tuple(frame_ids(no).tolist()), float(d), bool(done))
        for o, a, r, no, d, done in zip(
            got["obs"],
            got["actions"],
            got["rewards"],
            got["next_obs"],
            got["discounts"],
            storage.terminated[window_slots(storage)],
            strict=True,
        )
    )


def assert_same_state(a, b, path: str = "state") -> None:
    """Recursive equality of state dicts (arrays compared by value and dtype)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    else:
        assert a == b, path


def without_idle_streams(state: dict) -> dict:
    """A buffer state without streams that hold nothing (no pending window, no frame chain to continue)."""
    streams = state["storage"]["streams"]
    idle = [k for k, s in streams.items() if not s["pending"] and s["last_next"] is None]
    storage = {**state["storage"], "streams": {k: s for k, s in streams.items() if k not in idle}}
    return {**state, "storage": storage}


def assert_batches_equal(a, b) -> None:
    for name in ("obs", "actions", "rewards", "next_obs", "discounts", "indices", "weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ---------------------------------------------------------------------------------------------- 1. n-step targets
def add_scalar_episode(storage: TransitionStorage, rewards, end: str) -> list[int]:
    """Steps with obs_t = [t], next_obs = [t + 1], action t; the last step ends as ``end``. Returns len after each."""
    sizes = []
    for t, r in enumerate(rewards):
        last = t == len(rewards) - 1
        obs, next_obs = np.array([t], np.float32), np.array([t + 1], np.float32)
        storage.add(obs, t, r, next_obs, last and end == "terminated", last and end == "truncated")
        sizes.append(len(storage))
    return sizes


def stored_rows(storage: TransitionStorage) -> list[tuple]:
    """(obs id, action, reward, next_obs id, discount, done) of the valid slots, oldest first."""
    got = storage.gather(window_slots(storage))
    return [
        (int(o[0]), int(a), float(r), int(no[0]), float(d), bool(done))
        for o, a, r, no, d, done in zip(
            got["obs"],
            got["actions"],
            got["rewards"],
            got["next_obs"],
            got["discounts"],
            storage.terminated[window_slots(storage)],
            strict=True,
        )
    ]


# gamma = 0.5. Rows: (obs, action, R, next_obs, discount, done). E.g. n=3, t=0: R = 1 + 0.5*2 + 0.25*3 = 2.75.
HAND_COMPUTED = [
    pytest.param(
        3,
        (1, 2, 3, 4, 5),
        "terminated",
        [0, 0, 1, 2, 5],
        [
            (0, 0, 2.75, 3, 0.125, False),
            (1, 1, 4.5, 4, 0.125, False),
            (2, 2, 6.25, 5, 0.0, True),  # a full window that reaches the terminal step: no bootstrap
            (3, 3, 6.5, 5, 0.0, True),
            (4, 4, 5.0, 5, 0.0, True),
        ],
        id="n3-terminated",
    ),
    pytest.param(
        3,
        (1, 2, 3, 4, 5),
        "truncated",
        [0, 0, 1, 2, 5],
        [
            (0, 0, 2.75, 3, 0.125, False),
            (1, 1, 4.5, 4, 0.125, False),
            (2, 2, 6.25, 5, 0.125, False),
            (3, 3, 6.5, 5, 0.25, False),  # truncated tails bootstrap with gamma^m
            (4, 4, 5.0, 5, 0.5, False),
        ],
        id="n3-truncated",
    ),
    pytest.param(
        3,
        (1, 2, 3, 4),
        "open",
        [0, 0, 1, 2],
        [
            (0, 0, 2.75, 3, 0.125, False),
            (1, 1, 4.5, 4, 0.125, False),
        ],
        id="n3-still-running",
    ),
    pytest.param(
        3,
        (1, 2),
        "terminated",
        [0, 2],
        [
            (0, 0, 2.0, 2, 0.0, True),
            (1, 1, 2.0, 2, 0.0, True),
        ],
        id="n3-shorter-than-n-terminated",
    ),
    pytest.param(
        3,
        (1, 2),
        "truncated",
        [0, 2],
        [
            (0, 0, 2.0, 2, 0.25, False),
            (1, 1, 2.0, 2, 0.5, False),
        ],
        id="n3-shorter-than-n-truncated",
    ),
    pytest.param(
        1,
        (1, 2, 3),
        "terminated",
        [1, 2, 3],
        [
            (0, 0, 1.0, 1, 0.5, False),
            (1, 1, 2.0, 2, 0.5, False),
            (2, 2, 3.0, 3, 0.0, True),
        ],
        id="n1-terminated",
    ),
    pytest.param(
        1,
        (1, 2, 3),
        "truncated",
        [1, 2, 3],
        [
            (0, 0, 1.0, 1, 0.5, False),
            (1, 1, 2.0, 2, 0.5, False),
            (2, 2, 3.0, 3, 0.5, False),
        ],
        id="n1-truncated",
    ),
]


@pytest.mark.parametrize("n_step, rewards, end, sizes, expected", HAND_COMPUTED)
def test_n_step_targets_match_hand_computed_episode(n_step, rewards, end, sizes, expected):
    """Stored returns, discounts, next_obs, dones and counts equal the hand-computed n-step transitions."""
    storage = TransitionStorage(16, (1,), np.float32, n_step=n_step, gamma=GAMMA)
    assert add_scalar_episode(storage, rewards, end) == sizes
    assert stored_rows(storage) == expected


def test_episodes_after_an_end_start_fresh_windows():
    """A new episode's first n-step return does not include the previous episode's rewards."""
    storage = TransitionStorage(16, (1,), np.float32, n_step=3, gamma=GAMMA)
    add_scalar_episode(storage, (1, 2), "terminated")
    add_scalar_episode(storage, (8, 8, 8, 8), "truncated")
    assert stored_rows(storage)[2:] == [
        (0, 0, 14.0, 3, 0.125, False),
        (1, 1, 14.0, 4, 0.125, False),
        (2, 2, 12.0, 4, 0.25, False),
        (3, 3, 8.0, 4, 0.5, False),
    ]


# ---------------------------------------------------------------------------------------------- 2. streams
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("mode", ["add", "add_batch"])
def test_interleaved_streams_store_what_each_stream_stores_alone(k, n_step, mode):
    """Interleaving three env_ids (by add or vectorised add_batch) stores the same transitions as separate runs."""
    rng = np.random.default_rng(1)
    src = FrameSource()
    streams = [make_stream(src, env_id, k, 1, rng)[0] for env_id in range(3)]
    mixed = interleave(streams, rng)

    def fresh():
        return TransitionStorage(256, (k, *FRAME), np.int32, n_step=n_step, gamma=GAMMA, frame_stack=k)

    together = fresh()
    if mode == "add":
        for step in mixed:
            step.add_to(together)
    else:
        lo = 0
        while lo < len(mixed):  # vectorised steps of random width
            hi = lo + int(rng.integers(1, 6))
            add_batch(together, mixed[lo:hi])
            lo = hi
    alone = Counter()
    for stream in streams:
        storage = fresh()
        for step in stream:
            step.add_to(storage)
        alone += stored_multiset(storage)
    assert together.size == sum(len(s) for s in streams)  # every episode ended: every step was emitted
    assert stored_multiset(together) == alone


# ---------------------------------------------------------------------------------------------- 3. frames
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("num_streams", [1, 3])
def test_frame_storage_gathers_exactly_the_naive_stacks(k, n_step, num_streams):
    """Gathered stacks always equal a naive full-stack store's, across episodes and ring wraps; frames stored once."""
    rng = np.random.default_rng(k * 10 + n_step + num_streams)
    src = FrameSource()
    made = [make_stream(src, env_id, k, 6, rng) for env_id in range(num_streams)]
    steps = interleave([s for s, _ in made], rng)
    expected, counts = naive_store(steps, n_step, GAMMA)
    storage = TransitionStorage(7, (k, *FRAME), np.int32, n_step=n_step, gamma=GAMMA, frame_stack=k)
    for step, count in zip(steps, counts, strict=True):
        step.add_to(storage)
        assert_window_is(storage, expected[max(0, count - storage.capacity) : count])
    assert storage.frames_written == sum(frames for _, frames in made)
    assert len(expected) > storage.capacity and storage.frames_written > storage.frame_capacity  # both wrapped


@pytest.mark.parametrize("frame_margin", [0, 3])
@pytest.mark.parametrize("n_step", [1, 3])
def test_small_frame_ring_evicts_oldest_transitions_single_stream(frame_margin, n_step):
    """When the frame ring wraps first, the oldest transitions leave and the rest still match the naive store."""
    rng = np.random.default_rng(5)
    steps, _ = make_stream(FrameSource(), 0, 4, 3, rng)
    expected, counts = naive_store(steps, n_step, GAMMA)
    storage = TransitionStorage(
        7, (4, *FRAME), np.int32, n_step=n_step, gamma=GAMMA, frame_stack=4, frame_margin=frame_margin
    )
    evicted = 0
    for step, count in zip(steps, counts, strict=True):
        evicted += len(step.add_to(storage)[1])
        assert_window_is(storage, expected[count - storage.size : count])
    assert evicted > 0


def test_frame_eviction_with_interleaved_streams_never_serves_overwritten_frames():
    """With interleaved streams and the default frame margin, no valid slot gathers overwritten frames."""
    # A long episode on env 0 beside one-step episodes with k distinct start frames on envs 1-3 fills the frame
    # ring faster than the slot ring, so transitions must be evicted as their frames are overwritten. Env 0's
    # slots point at frames older than those of the env 1-3 slots written just before them.
    k, src = 4, FrameSource()
    long_ids = [src.fresh()] * k + [src.fresh() for _ in range(100)]
    steps = []
    for t in range(100):
        steps.append(Step(0, stack(long_ids[t : t + k]), 0, 0.0, stack(long_ids[t + 1 : t + k + 1]), False, False))
        for env_id in (1, 2, 3):
            ids = [src.fresh() for _ in range(k + 1)]
            steps.append(Step(env_id, stack(ids[:k]), 0, 0.0, stack(ids[1:]), True, False))
    expected, counts = naive_store(steps, 1, GAMMA)
    storage = TransitionStorage(64, (k, *FRAME), np.int32, n_step=1, gamma=GAMMA, frame_stack=k)
    for step, count in zip(steps, counts, strict=True):
        step.add_to(storage)
        assert_window_is(storage, expected[count - storage.size : count])


def test_prioritized_add_batch_leaves_no_priority_on_evicted_slots():
    """After an add_batch that evicts slots it wrote itself, only valid slots have priority and can be sampled."""
    k, src = 4, FrameSource()
    steps = []
    for _ in range(100):  # one-step episodes with distinct frames: k + 1 frames per transition
        ids = [src.fresh() for _ in range(k + 1)]
        steps.append(Step(0, stack(ids[:k]), 0, 1.0, stack(ids[1:]), True, False))
    buf = PrioritizedReplay(64, (k, *FRAME), np.int32, frame_stack=k, seed=0)
    add_batch(buf, steps)
    slots = np.arange(buf.capacity)
    assert len(buf) < buf.capacity  # frames ran out before slots: eviction happened
    np.testing.assert_array_equal(buf.sampler.tree.get(slots) > 0, buf.storage.valid(slots))
    for _ in range(20):
        assert buf.storage.valid(buf.sample(8).indices).all()


# ---------------------------------------------------------------------------------------------- 4. memory
@pytest.mark.parametrize("buffer_cls", [UniformReplay, PrioritizedReplay])
def test_frame_stacked_atari_buffer_stores_each_frame_about_once(buffer_cls):
    """A 10k frame_stack=4 84x84 uint8 buffer allocates under 1.1 frames per slot, not 8 (obs + next_obs)."""
    capacity = 10_000
    buf = buffer_cls(capacity, (4, 84, 84), np.uint8, frame_stack=4)
    assert buf.nbytes < 1.1 * capacity * 84 * 84
    assert buf.nbytes < (2 * 4 * capacity * 84 * 84) / 7


# ---------------------------------------------------------------------------------------------- 5. add_batch
@pytest.mark.parametrize(
    "k, n_step, num_streams",
    [(1, 1, 1), (1, 1, 2), (1, 3, 1), (1, 3, 2), (4, 1, 1), (4, 3, 1), (4, 3, 2)],
)
def test_add_batch_equals_adding_rows_one_at_a_time(k, n_step, num_streams):
    """Chunks of add_batch (one larger than capacity) give the same storage and priorities as single adds."""
    rng = np.random.default_rng(3)
    src = FrameSource()
    steps = interleave([make_stream(src, e, k, 2, rng)[0] for e in range(num_streams)], rng)
    capacity = 6
    config = dict(obs_dtype=np.int32, n_step=n_step, gamma=GAMMA, frame_stack=k)
    single = PrioritizedReplay(capacity, (k, *FRAME), **config)
    batched = PrioritizedReplay(capacity, (k, *FRAME), **config)
    for step in steps:
        step.add_to(single)
    bounds = [0, 3, 4, 4 + capacity + 5, 4 + capacity + 7, len(steps)]
    for lo, hi in pairwise(bounds):
        add_batch(batched, steps[lo:hi], with_env_ids=num_streams > 1)
    assert (len(batched), batched.storage.start) == (len(single), single.storage.start)
    assert_same_state(without_idle_streams(batched.state_dict()), without_idle_streams(single.state_dict()))
    assert_batches_equal(batched.sample(5), single.sample(5))


def stored_state(buf) -> dict:
    """``without_idle_streams`` of the buffer's state with ``refreshed`` zeroed outside the stored slots."""
    state = without_idle_streams(buf.state_dict())
    empty = np.setdiff1d(np.arange(buf.capacity), buf.stored_slots())
    refreshed = state["sampler"]["refreshed"].copy()
    refreshed[empty] = 0
    return {**state, "sampler": {**state["sampler"], "refreshed": refreshed}}


def long_episodes(src: FrameSource, env_id: int, k: int, steps: int, rng) -> list[Step]:
    """``steps`` chained steps of one stream in episodes of 6-20 steps (Atari-like: mostly mid-episode)."""
    out: list[Step] = []
    while len(out) < steps:
        length = int(rng.integers(6, 21))
        ids = first_stack(src, k, str(rng.choice(["reset", "distinct", "zeros"])))
        ids += [src.fresh() for _ in range(length)]
        end = str(rng.choice(["terminated", "truncated"]))
        for t in range(length):
            ended = end if t == length - 1 else ""
            obs, next_obs = stack(ids[t : t + k]), stack(ids[t + 1 : t + k + 1])
            action, reward = int(rng.integers(6)), float(rng.integers(-3, 4))
            out.append(Step(env_id, obs, action, reward, next_obs, ended == "terminated", ended == "truncated"))
    return out[:steps]


@pytest.mark.parametrize("frame_margin", [0, 2, None])
@pytest.mark.parametrize("capacity", [5, 9, 64])
def test_a_vector_env_step_added_at_once_equals_its_rows_one_at_a_time(capacity, frame_margin):
    """Lockstep rows of 4 streams (a vector env's steps, mostly mid-episode: the vectorised path) give the same
    storage, sampler state and batches as the same rows added one by one, through ring and frame-ring wraps and
    stale-frame evictions; the vectorised path really runs where the frame ring has room (below, a frame ring of 5-11
    frames for 4 streams of 4-frame stacks keeps overwriting their chains, so every batch takes the row path).
    Compared over stored slots: a slot a batch writes and evicts again ends empty, and the row-by-row adds stamp its
    ``refreshed`` (meaningless while empty) one update later."""
    rng = np.random.default_rng(7)
    src = FrameSource()
    streams = [long_episodes(src, e, 4, 60, rng) for e in range(4)]
    length = 60
    config = dict(obs_dtype=np.int32, gamma=GAMMA, frame_stack=4, frame_margin=frame_margin, alpha=0.7, seed=1)
    single = PrioritizedReplay(capacity, (4, *FRAME), **config)
    batched = PrioritizedReplay(capacity, (4, *FRAME), **config)
    calls = []
    vectorised = batched.storage._add_chained
    batched.storage._add_chained = lambda *a: calls.append(1) or vectorised(*a)
    for t in range(length):
        rows = [stream[t] for stream in streams]
        for step in rows:
            step.add_to(single)
        add_batch(batched, rows)
        if t % 5 == 4 and len(single):  # priorities that differ from the max, on slots both hold
            slots, td = rng.choice(single.stored_slots(), 3), rng.normal(size=3)
            single.update_priorities(slots, td)
            batched.update_priorities(slots, td)
        assert (len(batched), batched.storage.start) == (len(single), single.storage.start)
    assert_same_state(stored_state(batched), stored_state(single))
    assert_batches_equal(batched.sample(min(8, len(single))), single.sample(min(8, len(single))))
    assert len(calls) > length // 2 or (capacity < 64 and frame_margin is not None)


def test_a_broken_chain_in_a_vector_env_step_writes_nothing():
    """The vectorised path checks the chains too: a lockstep batch whose row 1 does not continue env 1 raises
    naming that row and env, and leaves the buffer as it was."""
    rng = np.random.default_rng(8)
    src = FrameSource()
    streams = [long_episodes(src, e, 4, 30, rng) for e in range(3)]
    t = next(t for t in range(1, 30) if not any(s[t - 1].ended for s in streams))  # a step where all continue
    buf = PrioritizedReplay(16, (4, *FRAME), obs_dtype=np.int32, gamma=GAMMA, frame_stack=4, seed=0)
    for step in range(t):
        add_batch(buf, [stream[step] for stream in streams])
    rows = [stream[t] for stream in streams]
    bad = Step(1, stack([src.fresh() for _ in range(4)]), 0, 1.0, rows[1].next_obs, False, False)
    state = copy.deepcopy(buf.state_dict())
    with pytest.raises(ValueError, match=r"row 1 \(env_id 1\) breaks the frame chain"):
        add_batch(buf, [rows[0], bad, rows[2]])
    assert_same_state(buf.state_dict(), state)


# ---------------------------------------------------------------------------------------------- 6. checkpoints
def make_buffer(kind: str, k: int, n_step: int, seed: int):
    config = dict(obs_dtype=np.int32, seed=seed, n_step=n_step, gamma=GAMMA, frame_stack=k)
    if kind == "prioritized":
        return PrioritizedReplay(32, (k, *FRAME), alpha=0.7, beta=0.5, beta_steps=20, **config)
    if kind == "lap":
        return LAPReplay(32, (k, *FRAME), alpha=0.7, **config)
    return UniformReplay(32, (k, *FRAME), **config)


@pytest.mark.parametrize(
    "kind, k, n_step, num_streams",
    [("prioritized", 1, 1, 1), ("uniform", 1, 3, 1), ("lap", 1, 3, 2), ("prioritized", 4, 3, 2)],
)
@pytest.mark.parametrize(
    "snapshot", [copy.deepcopy, lambda s: pickle.loads(pickle.dumps(s))], ids=["deepcopy", "pickle"]
)
def test_state_dict_round_trip_continues_identically(kind, k, n_step, num_streams, snapshot):
    """A buffer loaded from a saved state samples, updates and accepts further steps exactly like the original."""
    rng = np.random.default_rng(4)
    src = FrameSource()
    steps = interleave([make_stream(src, e, k, 2, rng)[0] for e in range(num_streams)], rng)
    cut = next(i for i in range(40, len(steps)) if not steps[i].ended and not steps[i - 1].ended)
    original = make_buffer(kind, k, n_step, seed=0)
    for step in steps[:cut]:
        step.add_to(original)
    for _ in range(3):
        batch = original.sample(6)
        original.update_priorities(batch.indices, rng.normal(size=6))
    state = snapshot(original.state_dict())
    if n_step > 1:
        assert any(s["pending"] for s in state["storage"]["streams"].values())  # mid-episode windows are saved
    restored = make_buffer(kind, k, n_step, seed=123)
    restored.load_state_dict(state)
    for _ in range(5):
        assert_batches_equal(original.sample(6), restored.sample(6))
    for step in steps[cut:]:
        step.add_to(original)
        step.add_to(restored)
    for _ in range(5):
        a, b = original.sample(6), restored.sample(6)
        assert_batches_equal(a, b)
        td = rng.normal(size=6)
        original.update_priorities(a.indices, td)
        restored.update_priorities(b.indices, td)
    assert_same_state(original.state_dict(), restored.state_dict())


# ---------------------------------------------------------------------------------------------- 7. bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(capacity=0), r"capacity.*got 0"),
        (dict(capacity=-1), r"capacity.*got -1"),
        (dict(capacity=2.5), r"capacity.*got 2\.5"),
        (dict(capacity=True), r"capacity.*got True"),
        (dict(n_step=0), r"n_step.*got 0"),
        (dict(gamma=1.5), r"gamma.*got 1\.5"),
        (dict(frame_stack=4, obs_shape=(3, 84, 84)), r"frame_stack=4.*got \(3, 84, 84\)"),
        (dict(frame_stack=4, obs_shape=(4,)), r"frame_stack=4.*got \(4,\)"),
        (dict(alpha=-0.1), r"alpha.*got -0\.1"),
        (dict(beta=1.5), r"beta.*got 1\.5"),
        (dict(beta=-0.5), r"beta.*got -0\.5"),
        (dict(eps=0.0), r"eps.*got 0\.0"),
        (dict(eps=-1e-3), r"eps.*got -0\.001"),
    ],
)
def test_bad_constructor_arguments_raise_naming_the_value(kwargs, match):
    """Invalid buffer settings raise ValueError naming the offending value."""
    args = dict(capacity=8, obs_shape=(3,), obs_dtype=np.float32) | kwargs
    with pytest.raises(ValueError, match=match):
        PrioritizedReplay(**args)


def filled_buffer(kind: str = "prioritized"):
    """A float32 buffer of capacity 8 holding 5 one-step transitions with obs [t, t, t]."""
    cls = PrioritizedReplay if kind == "prioritized" else UniformReplay
    buf = cls(8, (3,), np.float32, seed=0)
    for t in range(5):
        buf.add(np.full(3, t, np.float32), t, float(t), np.full(3, t + 1, np.float32), t == 4, False)
    return buf


def seeded_sample(buf, batch_size: int = 4):
    """A sample from a copy of ``buf`` with a fixed rng: compares sampling behaviour without touching ``buf``."""
    clone = copy.deepcopy(buf)
    clone.rng = np.random.default_rng(99)
    return clone.sample(batch_size)


f32, f64 = np.float32, np.float64
BAD_CALLS = [
    pytest.param(
        lambda b: b.add(np.zeros(4, f32), 0, 1.0, np.zeros(3, f32), False, False),
        r"obs has shape \(4,\)",
        id="obs-shape",
    ),
    pytest.param(
        lambda b: b.add(np.zeros(3, f32), 0, 1.0, np.zeros((3, 1), f32), False, False),
        r"next_obs has shape \(3, 1\)",
        id="next-obs-shape",
    ),
    pytest.param(
        lambda b: b.add(np.zeros(3, f64), 0, 1.0, np.zeros(3, f32), False, False),
        r"float64",
        id="obs-float64-into-float32",
    ),
    pytest.param(
        lambda b: b.add(np.zeros(3, f32), 0.5, 1.0, np.zeros(3, f32), False, False),
        r"float64",
        id="float-action-into-int",
    ),
    pytest.param(lambda b: b.add(np.zeros(3, f32), 0, np.nan, np.zeros(3, f32), False, False), r"nan", id="nan-reward"),
    pytest.param(lambda b: b.add(np.zeros(3, f32), 0, np.inf, np.zeros(3, f32), False, False), r"inf", id="inf-reward"),
    pytest.param(
        lambda b: b.add_batch(
            np.zeros((3, 3), f32),
            np.zeros(3, np.int64),
            [1.0, -np.inf, 2.0],
            np.zeros((3, 3), f32),
            np.zeros(3, bool),
            np.zeros(3, bool),
        ),
        r"-inf",
        id="add-batch-inf-reward",
    ),
    pytest.param(lambda b: b.sample(6), r"batch_size 6 .*5 transitions", id="batch-larger-than-filled"),
    pytest.param(lambda b: b.sample(0), r"batch_size.*got 0", id="batch-size-0"),
    pytest.param(lambda b: b.update_priorities(np.array([0, 1]), [1.0, np.nan]), r"nan", id="nan-td"),
    pytest.param(lambda b: b.update_priorities(np.array([0, 1]), [np.inf, 1.0]), r"inf", id="inf-td"),
    pytest.param(lambda b: b.update_priorities(np.array([0, 6]), [1.0, 1.0]), r"index 6", id="unfilled-slot"),
    pytest.param(lambda b: b.update_priorities(np.array([-1]), [1.0]), r"index -1", id="negative-slot"),
    pytest.param(
        lambda b: b.update_priorities(np.array([0, 1, 2]), [1.0, 1.0]), r"2 values for 3 indices", id="length-mismatch"
    ),
]


@pytest.mark.parametrize("kind", ["prioritized", "uniform"])
@pytest.mark.parametrize("call, match", BAD_CALLS)
def test_bad_calls_raise_and_leave_the_buffer_unchanged(kind, call, match):
    """Each bad call raises ValueError naming the bad value and changes neither the state nor later samples."""
    buf = filled_buffer(kind)
    state, before = copy.deepcopy(buf.state_dict()), seeded_sample(buf)
    with pytest.raises(ValueError, match=match):
        call(buf)
    assert (len(buf), buf.storage.start) == (5, 0)
    assert_same_state(buf.state_dict(), state)
    assert_batches_equal(seeded_sample(buf), before)


def test_obs_dtype_casting_rules():
    """uint8 obs go into a float32 buffer; float32 obs into a uint8 buffer raise, naming the dtype."""
    buf = UniformReplay(4, (2,), np.float32)
    buf.add(np.array([3, 255], np.uint8), 0, 1.0, np.array([4, 0], np.uint8), False, False)
    np.testing.assert_array_equal(buf.sample(1).obs, [[3.0, 255.0]])
    small = UniformReplay(4, (2,), np.uint8)
    with pytest.raises(ValueError, match=r"float32"):
        small.add(np.zeros(2, f32), 0, 1.0, np.zeros(2, f32), False, False)
    assert len(small) == 0


def test_sampling_an_empty_buffer_raises():
    """Sampling before anything is stored raises ValueError saying the buffer is empty."""
    with pytest.raises(ValueError, match=r"empty"):
        PrioritizedReplay(8, (3,), np.float32).sample(1)


def frame_buffer_mid_episode():
    """A frame_stack=4, n_step=3 prioritized buffer with env 0 four steps into an episode (two windows pending)."""
    src = FrameSource()
    ids = [src.fresh()] * 4 + [src.fresh() for _ in range(6)]
    steps = [Step(0, stack(ids[t : t + 4]), t, 1.0, stack(ids[t + 1 : t + 5]), False, False) for t in range(6)]
    buf = PrioritizedReplay(8, (4, *FRAME), np.int32, frame_stack=4, n_step=3)
    for step in steps[:4]:
        step.add_to(buf)
    return buf, steps, src


def test_broken_frame_chain_in_add_raises_and_writes_nothing():
    """An obs that is not the previous next_obs of its env_id raises ValueError and changes nothing."""
    buf, steps, src = frame_buffer_mid_episode()
    state, before = copy.deepcopy(buf.state_dict()), seeded_sample(buf, 1)
    broken = stack([src.fresh() for _ in range(4)])
    with pytest.raises(ValueError, match=r"previous next_obs"):
        buf.add(broken, 0, 1.0, steps[4].next_obs, False, False)
    assert_same_state(buf.state_dict(), state)
    assert_batches_equal(seeded_sample(buf, 1), before)
    steps[4].add_to(buf)  # the true continuation is still accepted


def test_broken_frame_chain_in_add_batch_writes_nothing_for_the_whole_batch():
    """A batch whose row 2 breaks env 0's chain raises naming that row, and none of its rows is written."""
    buf, steps, src = frame_buffer_mid_episode()
    state, before = copy.deepcopy(buf.state_dict()), seeded_sample(buf, 1)
    other_env = Step(1, stack([src.fresh()] * 4), 0, 1.0, stack([src.fresh()] * 4), False, False)
    broken = Step(0, stack([src.fresh() for _ in range(4)]), 5, 1.0, steps[5].next_obs, False, False)
    with pytest.raises(ValueError, match=r"row 2 \(env_id 0\)"):
        add_batch(buf, [steps[4], other_env, broken])
    assert_same_state(buf.state_dict(), state)
    assert_batches_equal(seeded_sample(buf, 1), before)


def test_slots_written_then_evicted_in_one_batch_get_no_priority():
    """Every slot a batch writes and then evicts (none rewritten) ends with zero priority and is never sampled."""
    k, src = 4, FrameSource()
    steps = []
    for _ in range(3):  # one-step episodes with k + 1 distinct frames against an 8-frame ring: 0 and 1 go stale
        ids = [src.fresh() for _ in range(k + 1)]
        steps.append(Step(0, stack(ids[:k]), 0, 1.0, stack(ids[1:]), True, False))
    buf = PrioritizedReplay(8, (k, *FRAME), np.int32, frame_stack=k, frame_margin=0, seed=0)
    add_batch(buf, steps)
    slots = np.arange(buf.capacity)
    assert len(buf) == 1 and buf.storage.start == 2
    np.testing.assert_array_equal(buf.sampler.tree.get(slots) > 0, buf.storage.valid(slots))
