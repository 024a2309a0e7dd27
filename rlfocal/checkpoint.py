"""Checkpoints that survive crashes and run no code when read.

``save_checkpoint`` writes ``last.pt`` atomically (temporary file, fsync, rename) after moving the previous one to
``prev.pt``, so a crash mid-write, or a file damaged later, still leaves a good checkpoint. ``load_checkpoint``
falls back to ``prev.pt`` with a warning when ``last.pt`` cannot be read. Files hold only tensors and plain Python
data (numpy arrays travel as byte tensors), so they load with ``torch.load(weights_only=True)``: a file carrying
any other pickled object is refused without being run. The resolved run config travels too, so a resume can refuse
a different experiment (``check_resume_config``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

FORMAT = 2  # 2: weights_only payload (numpy as byte tensors), resolved config, CUDA RNG; 1 pickled numpy

MUTABLE_KEYS: tuple[str, ...] = (
    "total_steps",
    "device",
    "replay.storage_device",
    "agent.one_hot_input",
    "agent.capture_update",
    "resume",
    "progress",
    "checkpoint_every",
    "eval_every",
    "save_replay",
    "torch_threads",
    "logger.*",
    "hydra.*",
)
"""Config keys (``fnmatch`` patterns over dotted keys) a resume may change: budget, logging, hardware, cadence, and
settings that change float rounding only (``agent.one_hot_input``) or nothing computed (``agent.capture_update``)."""

_NUMPY = "__numpy__"  # tag of an encoded numpy array or scalar


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, damaged, refused, of another format, or of another config."""


# ---------------------------------------------------------------------------------------------- plain-data codec


def to_plain(obj: Any) -> Any:
    """``obj`` with every numpy array or scalar replaced by a tagged uint8 tensor of its bytes (no copy when it is
    contiguous and writable), so ``torch.load(weights_only=True)`` reads it back. Containers without numpy inside
    come back as the same object (a module ``state_dict`` keeps its ``_metadata``)."""
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject or arr.dtype.fields is not None:
            raise TypeError(f"cannot checkpoint a numpy array of dtype {arr.dtype}: only plain numeric/bool dtypes")
        if not (arr.flags.c_contiguous and arr.flags.writeable):
            arr = arr.copy()
        data = torch.from_numpy(arr.reshape(-1).view(np.uint8))
        return {_NUMPY: data, "dtype": arr.dtype.str, "shape": list(arr.shape), "scalar": isinstance(obj, np.generic)}
    if isinstance(obj, dict):
        items = {k: to_plain(v) for k, v in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else items
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj, strict=True)) else type(obj)(items)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of ``to_plain``: tagged byte tensors become numpy arrays (views of the loaded bytes) or scalars."""
    if isinstance(obj, dict):
        if _NUMPY in obj:
            arr = obj[_NUMPY].numpy().view(np.dtype(obj["dtype"])).reshape(obj["shape"])
            return arr[()] if obj["scalar"] else arr
        items = {k: from_plain(v) for k, v in obj.items()}
        return obj if all(items[k] is v for k, v in obj.items()) else items
    if isinstance(obj, (list, tuple)):
        items = [from_plain(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj, strict=True)) else type(obj)(items)
    return obj


def save_plain(obj: Any, file: str | os.PathLike | IO[bytes]) -> None:
    """``torch.save`` of ``to_plain(obj)``: tensors, numpy and plain Python data only."""
    torch.save(to_plain(obj), file)


def load_plain(file: str | os.PathLike | IO[bytes]) -> Any:
    """Read what ``save_plain`` wrote, on the CPU, with ``weights_only=True``: nothing in the file is run.

    Raises ``CheckpointError`` (one line) for a file that is damaged or carries any other pickled object.
    """
    name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "<stream>")
    try:
        return from_plain(torch.load(file, map_location="cpu", weights_only=True))
    except Exception as error:  # the reader raises RuntimeError, EOFError, UnpicklingError, ...: all mean unusable
        raise CheckpointError(f"{name}: {_why_unreadable(file, error)}") from error


def _why_unreadable(file, error: Exception) -> str:
    if not zipfile.is_zipfile(file):
        return "damaged: not a complete zip archive (truncated, empty or another kind of file)"
    if "Weights only load failed" in str(error):
        try:
            if hasattr(file, "seek"):
                file.seek(0)  # a stream the failed load left at its end
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(file)  # scans the pickle, runs nothing
        except Exception:
            unsafe = []
        what = f"it would import and call {', '.join(unsafe)}" if unsafe else "its pickle is not plain data"
        return f"refused to load: {what} (rlfocal files hold only tensors and plain data; not written by rlfocal)"
    first_sentence = str(error).strip().split(". ")[0].splitlines()[0] if str(error).strip() else "no detail"
    return f"damaged ({type(error).__name__}: {first_sentence})"


# ---------------------------------------------------------------------------------------------- checkpoints


def previous_path(path: Path) -> Path:
    """Where ``save_checkpoint(path, ...)`` keeps the checkpoint before the newest: ``prev.pt`` beside it."""
    return path.with_name("prev" + path.suffix)


def save_checkpoint(path: Path, agent, buffer, counters: dict, config: dict | None = None) -> None:
    """Agent (nets, optimiser, RNG), counters, torch's CPU and CUDA RNG, the resolved ``config`` (a plain dict)
    and, when given, the replay buffer. The old ``path`` becomes ``previous_path(path)`` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "agent": agent.state_dict(),
        "replay": None if buffer is None else buffer.state_dict(),
        "counters": dict(counters),
        "config": config,
        "torch_rng": torch.get_rng_state(),  # everything else draws from its own seeded generator, saved with it
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        save_plain(payload, f)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the renames durable: a power cut after this keeps them."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoint(path: Path) -> dict:
    """The payload of ``path``, or of ``previous_path(path)`` (with a warning naming both) when ``path`` is missing,
    damaged, refused or of another format. Raises one-line ``CheckpointError`` naming both when neither is usable."""
    reasons = []
    for candidate in (path, previous_path(path)):
        try:
            payload = _read_one(candidate)
        except CheckpointError as error:
            reasons.append(str(error))
            continue
        if reasons:
            warnings.warn(f"{reasons[0]}; resuming from the previous checkpoint {candidate} instead", stacklevel=2)
        return payload
    raise CheckpointError(f"no usable checkpoint: {'; '.join(reasons)}")


def _read_one(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    payload = load_plain(path)
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {found!r}, this rlfocal reads format {FORMAT} only")
    return payload


def load_checkpoint(path: Path, agent, buffer, config: dict | None = None, defaults: dict | None = None) -> dict:
    """Restore agent, replay (if it was saved) and torch's RNG from ``read_checkpoint(path)``; returns the counters.

    With ``config`` (the new run's resolved config) it first calls ``check_resume_config``, so a different
    experiment is refused before anything changes (``defaults``: see ``config_differences``). Tensors are read on the
    CPU; ``agent.load_state_dict`` moves them to ``agent.device``, and the RNG states stay CPU ByteTensors as
    ``torch.set_rng_state`` requires.
    """
    payload = read_checkpoint(path)
    if config is not None:
        check_resume_config(payload["config"], config, defaults=defaults)
    agent.load_state_dict(payload["agent"])
    if payload["replay"] is not None:
        buffer.load_state_dict(payload["replay"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"][: torch.cuda.device_count()])
    return payload["counters"]


# ---------------------------------------------------------------------------------------------- resume config


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):  # an empty dict adds no keys: {} and {"size": 12} differ in "size" only
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


_ABSENT = "<absent>"


def config_differences(
    saved: dict, new: dict, mutable: Iterable[str] = MUTABLE_KEYS, defaults: dict | None = None
) -> list[str]:
    """Dotted keys (``replay.alpha``, ``env.kwargs.size``) whose values differ between two nested config dicts, a
    key present in only one included, sorted; keys matching any ``fnmatch`` pattern in ``mutable`` are ignored, and
    so is a key the saved config predates (absent there) whose new value is its entry in ``defaults``."""
    flat_saved, flat_new = _flatten(saved), _flatten(new)
    patterns = tuple(mutable)  # may be a one-shot iterable
    defaults = defaults or {}

    def added_at_default(key: str) -> bool:
        return key not in flat_saved and key in defaults and flat_new.get(key, _ABSENT) == defaults[key]

    return sorted(
        key
        for key in flat_saved.keys() | flat_new.keys()
        if flat_saved.get(key, _ABSENT) != flat_new.get(key, _ABSENT)
        and not any(fnmatchcase(key, pattern) for pattern in patterns)
        and not added_at_default(key)
    )


def check_resume_config(
    saved: dict | None, new: dict, mutable: Iterable[str] = MUTABLE_KEYS, defaults: dict | None = None
) -> None:
    """Raise ``CheckpointError`` listing ``key: old -> new`` for every difference outside ``mutable``.

    ``saved`` None (a checkpoint saved without a config) is refused too: nothing shows it is the same experiment.
    """
    if saved is None:
        raise CheckpointError("the checkpoint carries no config, so it cannot be checked against this run's")
    mutable = tuple(mutable)
    diffs = config_differences(saved, new, mutable, defaults)
    if diffs:
        flat_saved, flat_new = _flatten(saved), _flatten(new)
        changes = ", ".join(f"{k}: {flat_saved.get(k, _ABSENT)!r} -> {flat_new.get(k, _ABSENT)!r}" for k in diffs)
        raise CheckpointError(
            f"the checkpoint was saved by a different config ({changes}); resume with the saved values "
            f"or start a new run directory (only {', '.join(mutable)} may change on resume)"
        )
