"""The command line's front door: ``--help`` from the config dataclasses, and group choices checked up front.

Hydra's own help lists internal schema entries and says nothing of units; its error for a typo'd option lists only
one sub-folder. ``preflight`` answers both before Hydra starts: ``--help`` prints every group's options and every
key's meaning, unit and range; an unknown option (``env=minatar/breakot``) exits 2 listing every real choice.
"""

from __future__ import annotations

import sys
from importlib.resources import files

from rlfocal.config import GROUPS, help_lines

YAML_GROUPS = ("env", "agent", "logger", "arm", "task", "experiment")
APPEND_ONLY = ("arm", "task", "experiment")  # groups with no default: add them with +arm=..., not arm=...


def group_options(group: str) -> list[str]:
    """Every option of a config group: its YAML files (sub-folders included) and registered configs."""
    options = set(GROUPS.get(group, {}))
    root = files("rlfocal.configs").joinpath(group)
    if root.is_dir():
        stack = [(root, "")]
        while stack:
            folder, prefix = stack.pop()
            for entry in folder.iterdir():
                if entry.is_dir():
                    stack.append((entry, f"{prefix}{entry.name}/"))
                elif entry.name.endswith(".yaml"):
                    options.add(prefix + entry.name.removesuffix(".yaml"))
    return sorted(options)


def help_text() -> str:
    groups = [*YAML_GROUPS[:3], *GROUPS, *YAML_GROUPS[3:]]
    lines = [
        "python -m rlfocal.train [GROUP=OPTION ...] [KEY=VALUE ...]   (Hydra overrides; -m for a sweep)",
        "",
        "Groups (arm, task and experiment have no default: add them with a +, e.g. +arm=per +task=cpu_deepsea):",
    ]
    for group in groups:
        plus = "+" if group in APPEND_ONLY else ""
        lines.append(f"  {plus}{group}: {', '.join(group_options(group))}")
    lines += ["", "Keys (default: meaning [unit] (allowed)):", *("  " + line for line in help_lines())]
    lines += ["", "Hydra's own flags: --hydra-help, --cfg job, --multirun (-m)."]
    return "\n".join(lines)


def unknown_choice(override: str) -> str | None:
    """The one-line error for a ``[+]group=option`` override naming no option, else None."""
    key, sep, value = override.partition("=")
    group = key.lstrip("+~")
    if not sep or group not in (*YAML_GROUPS, *GROUPS) or value.startswith(("glob(", "choice(", "range(")):
        return None
    options = group_options(group)
    bad = [v for v in value.split(",") if v and v not in options]
    if not bad:
        return None
    return f"{key}={bad[0]} is not an option; {group} is one of: {', '.join(options)}"


def preflight(argv: list[str]) -> None:
    """Handle ``--help`` and refuse unknown group options, before Hydra parses ``argv``."""
    if "--help" in argv or "-h" in argv:
        print(help_text())
        raise SystemExit(0)
    for override in argv:
        message = unknown_choice(override)
        if message:
            print(f"config error: {message}", file=sys.stderr)
            raise SystemExit(2)
