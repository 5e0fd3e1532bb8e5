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


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """A simulated two-H200 box calibrated as a user would: decode GEMMs, attention, the one-host all-reduce."""
    path = tmp_path_factory.mktemp("cal") / "h200x2.json"
    done = run_gpucal("calibrate", "--simulate", "h200-sxm:2", "--quick", "-o", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _silicon(systems: Path, system: str, tp: int, batch: int) -> tuple[float, str]:
    done = subprocess.run([TOOL, "cli", "estimate", "--systems-paths", str(systems), "--system", system,
                           "--model-path", "meta-llama/Meta-Llama-3.1-8B", "--database-mode", "SILICON",
                           "--backend", "trtllm", "--batch-size", str(batch), "--isl", "1024", "--osl", "128",
                           "--tp-size", str(tp), "--estimate-mode", "static_gen", "--detail", "time"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return float(re.search(r"TPOT:\s+([0-9.]+) ms", done.stdout)[1]) * 1e-3, done.stdout


def _measured_plan(profile: Path, tp: int, batch: int) -> dict:
    done = run_gpucal("plan", "--gpu", str(profile), "--model", "llama-3.1-8b", "--cards", str(tp), "--strategy",
                      "tp", "--batch", str(batch), "--context", "1088", "--step", "measured", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _slower(profile: Path, out: Path, factor: float) -> Path:
    """The same profile with every decode GEMM, decode attention and one-host all-reduce ``factor`` times slower
    (points, alpha and beta alike)."""
    data = json.loads(profile.read_text())
    decode = data["devices"][0]["decode"]
    for curve in decode["gemm"].values():
        for row in curve["rows"]:
            row["alpha_s"] *= factor
            row["beta_Bps"] /= factor
            row["points"] = [[w, t * factor] for w, t in row["points"]]
    for fit in decode["attention"].values():
        fit["alpha_s"]["value"] *= factor
        fit["beta_Bps"]["value"] /= factor
    for entry in data["collectives"]:
        entry["alpha_s"]["value"] *= factor
        entry["beta_Bps"]["value"] /= factor
        for piece in entry.get("pieces") or []:
            piece["alpha_s"] *= factor
            piece["beta_Bps"] /= factor
    data["name"] = out.stem
    out.write_text(json.dumps(data))
    return out


def _op_ms(detail: str, op: str) -> float:
    """An op's time in aiconfigurator's --detail time table (its first column, ms over the whole run)."""
    return float(re.search(rf"^\s*{op}\s+([0-9.]+) ms", detail, re.M)[1])


@pytest.mark.parametrize("tp", [1, 2])
def test_silicon_mode_runs_on_a_calibrated_profiles_own_tables_and_agrees_with_the_measured_step(
        tmp_path, calibrated, tp):
    """aiconfigurator's SILICON mode on the tables gpucal writes (decode GEMMs, decode attention, the one-host
    all-reduce) gives the time per output token of gpucal's measured step within 5 %: the two price the same
    measurements; they differ in the norms and activations (aiconfigurator: bytes over mem_bw plus its 3 us
    constant; gpucal: a graph node plus bytes over the stream rate) and the context (its KV length per step; gpucal's
    mean). The GEMM rows are read, not its speed of light: GEMMs made twice as slow move both alike."""
    systems = _export(tmp_path, str(calibrated))
    assert sorted(p.name for p in (systems / "data" / "h200x2").rglob("*.parquet")) == [
        "custom_allreduce_perf.parquet", "gemm_perf.parquet", "generation_attention_perf.parquet"]
    tpot, detail = _silicon(systems, "h200x2", tp, 8)
    assert re.search(r"generation_gate_ffn1_gemm .*\[silicon\]", detail) and re.search(
        r"generation_attention .*\[silicon\]", detail)
    if tp > 1:
        assert re.search(r"generation_ar_1 .*\[silicon\]", detail)
    plan = _measured_plan(calibrated, tp, 8)
    assert plan["step"] == "measured" and not plan["fallbacks"]
    assert tpot == pytest.approx(plan["token_latency_s"], rel=0.05), (tpot, plan["token_latency_s"])
    slow = _slower(calibrated, tmp_path / "h200x2-slow.json", 2.0)
    slow_systems = _export(tmp_path / "slow", str(slow))
    slow_tpot, slow_detail = _silicon(slow_systems, "h200x2-slow", tp, 8)
    slow_plan = _measured_plan(slow, tp, 8)
    assert slow_tpot > 1.5 * tpot
    assert slow_tpot == pytest.approx(slow_plan["token_latency_s"], rel=0.05), (slow_tpot, slow_plan)
    # each table is read: its ops take twice as long, the ops priced from the system file alone do not
    ops = ["generation_gate_ffn1_gemm", "generation_ffn2_gemm", "generation_attention"] + (
        ["generation_ar_1"] if tp > 1 else [])
    for op in ops:
        assert _op_ms(slow_detail, op) == pytest.approx(2 * _op_ms(detail, op), rel=0.05), op
    assert _op_ms(slow_detail, "generation_add_norm_1") == pytest.approx(_op_ms(detail, "generation_add_norm_1"))
