"""``gpucal calibrate --cluster`` on a real GPU with one rank: a cluster profile of one host whose
collectives are NCCL's (on one GPU), and that the planner reads."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu


def test_cluster_of_one_rank_writes_a_measured_cluster_profile(cupy_backend, mpi_module, tmp_path):
    from gpucal import profiles

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    out = subprocess.run([sys.executable, "-m", "gpucal", "calibrate", "--cluster", "-o", str(tmp_path / "c.json"),
                          "--budget", "0.1", "--json"], capture_output=True, text=True, env=env, timeout=400)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    doc = profiles.load(tmp_path / "c.json").data
    assert doc["source"] == "measured" and len(doc["cluster"]["hosts"]) == 1 and doc["network"] == []
    ops = {e["op"] for e in doc["collectives"]}
    assert ops == {"all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv"}
    assert all(e["verified"] and e["library"].startswith("NCCL") for e in doc["collectives"])
    plan = subprocess.run([sys.executable, "-m", "gpucal", "plan", "--gpu", str(tmp_path / "c.json"), "--model",
                           "llama-3.1-8b", "--cards", "1", "--strategy", "tp", "--batch", "1", "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert plan.returncode == 0, f"exit {plan.returncode}: {plan.stderr[-2000:]}"
    assert json.loads(plan.stdout)["inputs"]["gpu"]["profile_source"] == "measured"
