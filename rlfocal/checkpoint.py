"""Atomic checkpoints: write to a temporary file, fsync, then rename over the old one, so a crash or SIGKILL
mid-write leaves the previous checkpoint intact."""

from __future__ import annotations

import os
from pathlib import Path

import torch

FORMAT = 1


def save_checkpoint(path: Path, agent, buffer, counters: dict) -> None:
    """Agent (nets, optimiser, RNG), counters, torch's RNG and, when given, the replay buffer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "agent": agent.state_dict(),
        "replay": None if buffer is None else buffer.state_dict(),
        "counters": dict(counters),
        "torch_rng": torch.get_rng_state(),  # everything else draws from its own seeded generator, saved with it
    }
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, agent, buffer) -> dict:
    """Restore agent, replay (if it was saved) and torch's RNG; returns the counters."""
    payload = torch.load(path, map_location=agent.device, weights_only=False)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path} has checkpoint format {payload.get('format')!r}, this rlfocal reads {FORMAT}")
    agent.load_state_dict(payload["agent"])
    if payload["replay"] is not None:
        buffer.load_state_dict(payload["replay"])
    torch.set_rng_state(payload["torch_rng"])
    return payload["counters"]
