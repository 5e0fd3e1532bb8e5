"""The benchmark scripts run (their speed targets are theirs to report, not a test's to time)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_plan_sweep_benchmark_runs_100k_configurations():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "plan_sweep.py"), "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["configurations"] >= 100_000 and report["configurations_per_s"] > 0
