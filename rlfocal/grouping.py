"""Which runs a report may pool: those whose resolved ``config.yaml`` agree on every key but the seed.

Runs of one arm label that differ in a budget, an env kwarg or a hyper-parameter are different experiments, so
``group_runs`` pools only runs whose configs are equal once the seed, paths and ``FREE_KEYS`` (settings that may
differ between seeds of one arm without changing what is measured) are left out. Where groups share an
environment and an arm label, the keys that differ are added to the label: ``uniform+huber [total_steps=20000]``.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SEED_KEYS = frozenset({"seed"})
# settings of how a run is executed or recorded, not of what it measures
FREE_KEYS = frozenset(
    {
        "resume",
        "progress",
        "device",
        "torch_threads",
        "checkpoint_every",
        "save_replay",
        "num_seeds",
        "replay.deferred",
        "replay.storage_device",
        "agent.one_hot_input",
        "agent.capture_update",
    }
)
FREE_PREFIXES = ("logger.", "hydra.")
PATH_LEAF = re.compile(r"(^|_)(dir|path)$")  # run_dir, output_dir, ...: where a run was written
RENAMED = {"replay.kind": "replay.name"}  # runs made before 2026-12 name their sampler replay.kind
UNSET = "unset"  # shown for a key one group's configs lack (an older config schema, an empty env.kwargs)
MAX_LABEL_KEYS = 3  # differing keys shown in a label; the placement table lists them all


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values, lists kept whole: ``{"env": {"kwargs": {"size": 12}}}`` -> ``{"env.kwargs.size":
    12}``."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def is_free(key: str) -> bool:
    """True for a key that may differ between runs pooled as seeds of one arm: the seed, paths, ``FREE_KEYS``."""
    leaf = key.rsplit(".", 1)[-1]
    return key in SEED_KEYS or key in FREE_KEYS or key.startswith(FREE_PREFIXES) or bool(PATH_LEAF.search(leaf))


def comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config keys that must agree for two runs to be pooled (old key names mapped to current ones)."""
    flat = {RENAMED.get(k, k): v for k, v in flatten(cfg).items()}
    return {k: v for k, v in flat.items() if not is_free(k)}


def _canon(value: Any) -> Hashable:
    """A hashable form in which equal settings compare equal (``2`` and ``2.0`` alike; lists element-wise)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return tuple(_canon(v) for v in value)
    return repr(value)


def show(value: Any) -> str:
    """A setting as it reads in a label: YAML-like scalars, compact lists."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return json.dumps(list(value), separators=(",", ":"), default=str)
    return str(value)


@dataclass
class Group:
    """Runs pooled together: their environment, arm label, shared config, members (indices) and report label."""

    env: str
    arm: str
    config: dict[str, Any]
    members: list[int] = field(default_factory=list)
    label: str = ""
    separated_by: dict[str, str] = field(default_factory=dict)  # key -> this group's value, vs same-label groups


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose value (or presence) is not the same in every config, in the order they first appear."""
    keys = list(dict.fromkeys(k for cfg in configs for k in cfg))
    missing = object()
    return [k for k in keys if len({_canon(cfg[k]) if k in cfg else missing for cfg in configs}) > 1]


def group_runs(runs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[Group]:
    """Group ``(env, arm, comparable config)`` triples (indices into ``runs``) by equal values; labels are unique per
    environment. Groups come sorted by environment and label, members in input order."""
    groups: dict[tuple, Group] = {}
    for i, (env, arm, cfg) in enumerate(runs):
        key = (env, arm, frozenset((k, _canon(v)) for k, v in cfg.items()))
        groups.setdefault(key, Group(env, arm, dict(cfg))).members.append(i)
    sharing: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for group in groups.values():
        sharing[group.env, group.arm].append(group)
    for (_, arm), same in sharing.items():
        if len(same) == 1:
            same[0].label = arm
            continue
        keys = differing_keys([g.config for g in same])
        for g in same:
            g.separated_by = {k: show(g.config[k]) if k in g.config else UNSET for k in keys}
            shown = [f"{k}={v}" for k, v in list(g.separated_by.items())[:MAX_LABEL_KEYS]]
            more = len(keys) - len(shown)
            g.label = f"{arm} [{', '.join(shown)}{f', +{more} more' if more else ''}]"
        repeated = Counter(g.label for g in same)  # labels cut to MAX_LABEL_KEYS may collide: number those
        seen: Counter[str] = Counter()
        for g in same:
            if repeated[g.label] > 1:
                seen[g.label] += 1
                g.label = f"{g.label} #{seen[g.label]}"
    return sorted(groups.values(), key=lambda g: (g.env, g.label))
