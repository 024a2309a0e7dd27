"""A regular (non-editable) wheel install finds the Hydra configs (Hydra issue 2125) and every package."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_composes_configs(tmp_path):
    """Build the wheel offline where setuptools is installed (no build isolation: no download, no pip cache; a
    Python >= 3.12 venv without setuptools fetches it as ``pip install -e .`` did), unpack it into a target
    directory and import from there with this interpreter: its own site-packages (torch, hydra, ...) stay visible,
    whether it is a venv, CI's system Python or a conda env, and no nested venv is needed."""
    source = tmp_path / "src"  # a copy, so setuptools' build/ and egg-info never touch (or race in) the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("rlfocal", "agents", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", "-q"]
    offline = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    subprocess.run([*pip, "wheel", "--no-deps", *offline, "-w", tmp_path, source], check=True)
    wheel = next(tmp_path.glob("rlfocal-*.whl"))
    target = tmp_path / "installed"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", target, wheel], check=True)
    probe = textwrap.dedent(f"""
        import rlfocal, agents.dqn, rlfocal.replay, rlfocal.envs, rlfocal.train
        from hydra import compose, initialize_config_module
        from rlfocal.config import register_configs, validate
        assert rlfocal.__file__.startswith({str(target)!r}), rlfocal.__file__
        register_configs()
        with initialize_config_module("rlfocal.configs", version_base="1.3"):
            for env in ("cartpole", "minatar/breakout", "atari/pong", "minigrid/doorkey5x5", "deepsea", "cliffwalk"):
                validate(compose("config", overrides=[f"env={{env}}", "replay=per", "loss=focal"]))
        print("ok")
    """)
    # outside the source tree, the target first on the path: an editable install's finder or the checkout (on a
    # PYTHONPATH) cannot shadow the installed package
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
