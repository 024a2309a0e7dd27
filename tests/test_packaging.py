"""A regular (non-editable) wheel install finds the Hydra configs (Hydra issue 2125) and every package."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_composes_configs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, ROOT],
        check=True,
    )
    wheel = next(tmp_path.glob("rlfocal-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", wheel], check=True)
    probe = textwrap.dedent("""
        import rlfocal, agents.dqn, rlfocal.replay, rlfocal.envs, rlfocal.train
        from hydra import compose, initialize_config_module
        from rlfocal.config import register_configs, validate
        assert "site-packages" in rlfocal.__file__, rlfocal.__file__
        register_configs()
        with initialize_config_module("rlfocal.configs", version_base="1.3"):
            for env in ("cartpole", "minatar/breakout", "atari/pong", "minigrid/doorkey5x5", "deepsea", "cliffwalk"):
                validate(compose("config", overrides=[f"env={env}", "replay=per", "loss=focal"]))
        print("ok")
    """)
    # run outside the source tree so the checkout cannot shadow the installed package
    out = subprocess.run([python, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
