"""``gpucal calibrate`` on a real GPU: a measured profile that validates, with figures in healthy ranges,
that the planner reads."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu


def run_gpucal(*args):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    return subprocess.run([sys.executable, "-m", "gpucal", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_calibrate_quick_writes_a_measured_profile(cupy_backend, tmp_path):
    from gpucal import profile as profiles

    out = run_gpucal("calibrate", "-o", str(tmp_path / "p.json"), "--json")
    summary = json.loads(out.stdout)
    assert out.returncode == 0, [a for a in summary["anomalies"] if a["kind"] in ("failed", "error")]
    doc = profiles.load(tmp_path / "p.json").data
    assert doc["source"] == "measured" and summary["source"] == "measured"
    dev = doc["devices"][0]
    sheet = profiles.datasheet_for(dev["name"])
    if sheet is not None:  # a healthy card: 50-100 % of the datasheet's memory bandwidth and fp16 rate
        want = sheet.data["devices"][0]
        assert 0.5 < dev["memory_bandwidth_Bps"]["value"] / want["memory_bandwidth_Bps"]["value"] <= 1.02
        assert 0.3 < dev["dense_flops"]["fp16_fp32acc"]["value"] / want["dense_flops"]["fp16_fp32acc"]["value"] <= 1.05
    h2d = dev["host_link"]["h2d"]
    assert 1e-6 < h2d["alpha_s"]["value"] < 1e-3 and 1e9 < h2d["beta_Bps"]["value"] < 1e12
    plan = run_gpucal("plan", "--gpu", str(tmp_path / "p.json"), "--model", "llama-3.1-8b", "--cards", "1",
                      "--strategy", "tp", "--batch", "1", "--json")
    assert plan.returncode == 0, plan.stderr
