"""What the issue-13 benchmarks share: median and range over interleaved rounds, and the JSON document they write."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from benchmarks.atari_throughput import machine

ROOT = Path(__file__).resolve().parents[1]


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per key of the rounds' result dicts: median, min, max and the values (None values left out; a key with
    none is dropped)."""
    out = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run[key] is not None]
        if values:
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}
    return out


def cell(stat: dict) -> str:
    """``median (min–max)`` with one decimal."""
    return f"{stat['median']:,.1f} ({stat['min']:,.1f}–{stat['max']:,.1f})"


def write(out: Path, benchmark: str, args: argparse.Namespace, results: dict, table: str, **extra) -> dict:
    """Write the benchmark's JSON (commit, machine, arguments, results, the markdown table and ``extra``) to
    ``out`` and print the table; returns the document."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    doc = {
        "benchmark": benchmark,
        "commit": commit.stdout.strip(),
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **extra,
        "results": results,
        "table_markdown": table,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"\n{table}\nwrote {out}")
    return doc
