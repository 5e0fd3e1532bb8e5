"""gpucal's aiconfigurator exports in aiconfigurator itself (0.12.0, installed by .ci/run in its own environment and
found through ``GPUCAL_AICONFIGURATOR``): its SOL estimate runs unmodified on the export of a datasheet profile and
of a calibrated (simulated) one, in its aggregated mode and in its decode-only mode (``static_gen``), whose time per
output token agrees with ``gpucal plan --step seed`` for the same case as docs/exports.md explains: on one card
within 3 % once the embedding table is taken out of gpucal's streamed bytes (aiconfigurator's speed of light
gathers it); with TP, between gpucal's streaming alone and its whole step (aiconfigurator charges the all-reduce's
bytes but no latency). Skipped where the tool is not installed, except in CI
(``GPUCAL_REQUIRE_AICONFIGURATOR=1``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import run_gpucal

TOOL = os.environ.get("GPUCAL_AICONFIGURATOR", "")
FIXTURE = str(Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json")

if not (TOOL and Path(TOOL).is_file()):
    if os.environ.get("GPUCAL_REQUIRE_AICONFIGURATOR") == "1":
        raise RuntimeError("GPUCAL_REQUIRE_AICONFIGURATOR=1 but GPUCAL_AICONFIGURATOR names no aiconfigurator")
    pytest.skip("aiconfigurator is not installed here (GPUCAL_AICONFIGURATOR)", allow_module_level=True)


def _estimate(systems: Path, system: str, tp: int, batch: int, mode: str = "static_gen") -> float:
    """aiconfigurator's SOL estimate of Llama-3.1-8B (its own config), ISL 1024 / OSL 128: TPOT in seconds."""
    done = subprocess.run([TOOL, "cli", "estimate", "--systems-paths", str(systems), "--system", system,
                           "--model-path", "meta-llama/Meta-Llama-3.1-8B", "--database-mode", "SOL",
                           "--backend", "trtllm", "--batch-size", str(batch), "--isl", "1024", "--osl", "128",
                           "--tp-size", str(tp), "--estimate-mode", mode],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    found = re.search(r"TPOT:\s+([0-9.]+) ms", done.stdout)
    assert found, done.stdout[-2000:]
    return float(found[1]) * 1e-3


def _export(tmp_path: Path, profile: str) -> Path:
    out = tmp_path / "systems"
    done = run_gpucal("profiles", "export", profile, "--format", "aiconfigurator", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _plan(profile: str, tp: int, batch: int) -> dict:
    done = run_gpucal("plan", "--gpu", profile, "--model", "llama-3.1-8b", "--cards", str(tp), "--strategy", "tp",
                      "--batch", str(batch), "--context", "1088", "--step", "seed", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _streaming_s(plan: dict) -> float:
    """gpucal's article step's memory time less the embedding table, which aiconfigurator's speed of light gathers
    (B rows) rather than streams: what both stream, weights and KV cache, over the memory bandwidth."""
    i = plan["inputs"]
    embedding_s = 128256 * i["model"]["hidden"] * i["bytes_per_weight"] / i["cards"] / i["gpu"]["memory_bandwidth_Bps"]
    assert plan["bound"] == "memory"
    return plan["memory_time_s"] - embedding_s


@pytest.mark.parametrize("tp, batch", [(1, 1), (1, 32), (8, 8), (8, 32)])
def test_the_datasheet_export_runs_in_aiconfigurator_and_agrees_with_the_articles_step(tmp_path, tp, batch):
    systems = _export(tmp_path, "h200-sxm")
    tpot = _estimate(systems, "h200-sxm", tp, batch)
    plan = _plan("h200-sxm", tp, batch)
    if tp == 1:  # no all-reduce: the same bytes over the same bandwidth
        assert tpot == pytest.approx(_streaming_s(plan), rel=0.03), (tpot, plan)
    else:  # its all-reduce costs bytes over intra_node_bw but no latency; gpucal's seed model alpha + S/beta each
        assert _streaming_s(plan) < tpot < plan["token_latency_s"], (tpot, plan)
    assert _estimate(systems, "h200-sxm", tp, batch, mode="agg") > 0  # its default mode runs too (prefill mixed in)


def test_a_calibrated_profiles_export_runs_in_aiconfigurator(tmp_path):
    systems = _export(tmp_path, FIXTURE)
    name = next(systems.glob("*.yaml")).stem
    tpot = _estimate(systems, name, 1, 8)
    plan = _plan(FIXTURE, 1, 8)
    assert tpot == pytest.approx(_streaming_s(plan), rel=0.03), (tpot, plan)
    assert _streaming_s(_plan(FIXTURE, 2, 8)) < _estimate(systems, name, 2, 8) < _plan(FIXTURE, 2, 8)["token_latency_s"]
