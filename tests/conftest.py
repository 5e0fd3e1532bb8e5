"""Shared test helpers. Tests split by what they need: ``unit/`` (nothing but the package) and
``cli/`` (the installed ``gpucal`` command, run as a subprocess, exactly as users run it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_gpucal(*args: str, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    """``python -m gpucal ARGS`` in a fresh process; output captured as text."""
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "gpucal", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture
def gpucal():
    return run_gpucal
