"""``mpiexec -n N gpucal probe net``: real ping-pong over loopback (MPI's shared memory), the simulated
network, the refusals, and ``run_net`` (``calibrate/network.py``) called directly (leaders mode, a failed comparison)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SMALL = ("--sizes", "8B..1MiB", "--budget", "0.05")


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_two_ranks_loopback_is_measured(run_mpi):
    doc = _json(run_mpi(2, "probe", "net", *SMALL, "--json"))
    assert doc["probe"] == "net" and doc["simulated"] is False and doc["source"] == "measured"
    assert doc["world"]["size"] == 2 and len(doc["world"]["hosts"]) == 1
    (entry,) = doc["entries"]
    assert (entry["src_rank"], entry["dst_rank"]) == (0, 1)
    assert entry["same_host"] is True and entry["src_host"] == entry["dst_host"] == 0
    assert entry["transport"] == doc["world"]["library"]
    for key in ("alpha_s", "beta_Bps", "latency_s"):
        assert entry[key]["source"] == "measured"
        assert entry[key]["n"] >= 1 and entry[key]["method"]
    assert entry["alpha_s"]["statistic"] == entry["beta_Bps"]["statistic"] == "fit"
    assert entry["latency_s"]["statistic"] == "median"
    # what the code guarantees, not how well a CPU shared with other work measures: a finite alpha, a positive
    # beta, a weighted R² in [0, 1], regimes that cover the sweep in order, each with a positive beta
    assert math.isfinite(entry["alpha_s"]["value"]) and entry["beta_Bps"]["value"] > 0
    assert 0.0 <= entry["r2"] <= 1.0
    pieces = entry["pieces"]
    assert pieces[0]["lo_bytes"] == 8 and pieces[-1]["hi_bytes"] == 1 << 20
    assert all(a["hi_bytes"] < b["lo_bytes"] for a, b in zip(pieces, pieces[1:]))
    assert sum(p["n"] for p in pieces) == len(entry["points"]) and all(p["beta_Bps"] > 0 for p in pieces)
    assert entry["alpha_s"]["value"] == pieces[0]["alpha_s"] and entry["beta_Bps"]["value"] == pieces[-1]["beta_Bps"]
    assert entry["poor_fit"] == any(p["max_abs_residual_frac"] > 0.10 for p in pieces)
    assert entry["verified"] is True and entry["reason"] is None
    assert len(entry["points"]) == 18 and entry["points"][0][0] == 8 and entry["points"][-1][0] == 1 << 20
    assert doc["matrix_Bps"] == [[None]]
    results = doc["results"]
    assert len(results) == 18
    for r in results:
        assert r["status"] == "passed" and r["probe"] == "net" and r["backend"] == "mpi"
        assert r["source"] == "measured" and r["check"]["ok"] is True
        assert r["check"]["checked"] == r["params"]["bytes"]
        assert r["params"]["series"] == "net-rank0-rank1" and r["params"]["same_host"] is True
        assert r["metrics"]["link_Bps"] == pytest.approx(r["params"]["bytes"] / r["timing"]["median_s"], rel=1e-9)
        assert "half the round trip" in r["byte_convention"]
    assert results[0]["case"] == "rank0<->rank1 8 B"


def test_two_ranks_text_says_shared_memory(run_mpi):
    proc = run_mpi(2, "probe", "net", "--sizes", "8B..64KiB", "--budget", "0.05")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("gpucal probe net: 2 ranks on 1 host(s)")
    assert "ranks 0 and 1 share host" in out and "MPI's shared memory, not the network" in out
    assert "rank0<->rank1" in out and "half the round trip" in out and "statistic: " in out
    assert "simulated" not in out
    assert out.count("gpucal probe net:") == 1  # rank 0 alone prints
    assert proc.stderr == ""


def test_four_ranks_simulated_eth1g(run_mpi, gpucal):
    doc = _json(run_mpi(4, "probe", "net", *SMALL, "--simulate-net", "eth1g+noise=0.01", "--json"))
    assert doc["simulated"] is True and doc["source"] == "simulated"
    assert doc["simulated_net"]["name"] == "eth1g" and doc["simulated_net"]["noise_frac"] == 0.01
    assert len(doc["world"]["hosts"]) == 4 and doc["world"]["simulated_hosts"] is True
    entries = doc["entries"]
    assert [(e["src_rank"], e["dst_rank"]) for e in entries] == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    link = json.loads(gpucal("profiles", "show", "eth1g", "--json").stdout)
    alpha_s, beta_Bps = link["alpha_s"]["value"], link["beta_Bps"]["value"]
    for e in entries:
        assert e["same_host"] is False and e["verified"] is True
        assert e["transport"].startswith("simulated eth1g over ")
        assert e["alpha_s"]["source"] == e["beta_Bps"]["source"] == e["latency_s"]["source"] == "simulated"
        assert e["alpha_s"]["value"] == pytest.approx(alpha_s, rel=0.03)
        assert e["beta_Bps"]["value"] == pytest.approx(beta_Bps, rel=0.03)
    for r in doc["results"]:
        assert r["source"] == "simulated" and r["backend"] == "mpi+simulated-net" and r["status"] == "passed"
        assert r["check"]["ok"] is True
    m = doc["matrix_Bps"]
    assert len(m) == 4 and all(len(row) == 4 for row in m)
    for a in range(4):
        assert m[a][a] is None
        for b in range(4):
            if a != b:
                assert m[a][b] == m[b][a] == pytest.approx(beta_Bps, rel=0.03)


def test_four_ranks_simulated_text_says_simulated(run_mpi):
    proc = run_mpi(4, "probe", "net", "--sizes", "8B..64KiB", "--budget", "0.05", "--simulate-net", "eth1g")
    assert proc.returncode == 0, proc.stderr
    assert "simulated: " in proc.stdout and "no figure here is a measurement" in proc.stdout
    assert "host to host" in proc.stdout
    assert "share host" not in proc.stdout


@pytest.mark.parametrize("launch", ["mpiexec", "plain"])
def test_one_rank_is_refused(run_mpi, gpucal, launch):
    proc = run_mpi(1, "probe", "net") if launch == "mpiexec" else gpucal("probe", "net")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "mpiexec" in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(("flags", "named"), [
    (("--simulate-net", "no-such-link"), "--simulate-net"),
    (("--pairs", "0-1"), "--pairs"),
    (("--sizes", "8B,16B"), "--sizes"),
    (("--budget", "0"), "--budget"),
])
def test_bad_flags_are_refused_once(run_mpi, flags, named):
    proc = run_mpi(2, "probe", "net", *flags)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # rank 0 alone says it
    assert named in lines[0] and "Traceback" not in proc.stderr


def _run_script(mpiexec, tmp_path, n: int, body: str) -> list[dict]:
    """Run ``body`` on ``n`` ranks; each rank writes its JSON to ``rank<R>.json`` (``write(obj)``), since
    the ranks' lines on one stdout can interleave."""
    script = tmp_path / "net_script.py"
    prelude = textwrap.dedent("""
        import json

        def write(rank, obj):
            with open(f"rank{rank}.json", "w") as f:
                json.dump(obj, f)
    """)
    script.write_text(prelude + textwrap.dedent(body))
    proc = subprocess.run([mpiexec, "-n", str(n), sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(n)]


def test_leaders_on_one_host_measure_no_pair(mpiexec, tmp_path):
    lines = _run_script(mpiexec, tmp_path, 4, """
        from gpucal.kernels.comm import world
        from gpucal.calibrate.network import run_net
        from gpucal.probes.net import NetConfig

        w = world()
        report = run_net(w, NetConfig(pairs="leaders", sizes=(8, 64, 512), budget_s=0.05))
        out = {"rank": w.rank, "pairs": report.pairs, "entries": report.entries, "results": len(report.results),
               "matrix": report.matrix()}
        write(w.rank, out)
    """)
    assert sorted(d["rank"] for d in lines) == [0, 1, 2, 3]
    for d in lines:
        assert d["pairs"] == [] and d["entries"] == [] and d["results"] == 0 and d["matrix"] == [[None]]


def test_leaders_with_simulated_hosts_and_a_corrupted_size(mpiexec, tmp_path):
    """Leaders of 3 simulated hosts: 3 pairs; rank 2 expects other bytes at 64 B: those cases fail with the
    first differing byte and no number, the others pass, and every rank returns the same report."""
    docs = _run_script(mpiexec, tmp_path, 3, """
        import gpucal.probes.net as netmod
        from gpucal.kernels.comm import SimulatedNet, world
        from gpucal.calibrate.network import run_net
        from gpucal.probes.net import NetConfig

        w = world(simulate_hosts=True)
        if w.rank == 2:
            real = netmod._payload
            def other(seed, i, j, n):
                data = real(seed, i, j, n)
                if n == 64:
                    data = data.copy()
                    data[5] ^= 1
                return data
            netmod._payload = other
        net = SimulatedNet("test", 10e-6, 1e9)
        report = run_net(w, NetConfig(pairs="leaders", sizes=(8, 64, 512, 4096), budget_s=0.05, simulate=net))
        from gpucal import render
        write(w.rank, {"rank": w.rank, "report": render.json_ready(report.to_dict())})
    """)
    assert [d["rank"] for d in docs] == [0, 1, 2]
    reports = [d["report"] for d in docs]
    assert all(r["entries"] == reports[0]["entries"] for r in reports)
    report = reports[0]
    assert [(e["src_rank"], e["dst_rank"]) for e in report["entries"]] == [(0, 1), (0, 2), (1, 2)]
    by_case = {r["case"]: r for r in report["results"]}
    for pair in ("rank0<->rank2", "rank1<->rank2"):
        bad = by_case[f"{pair} 64 B"]
        assert bad["status"] == "failed" and bad["timing"] is None and bad["metrics"] == {}
        assert bad["check"]["ok"] is False and bad["check"]["index"] == [5]
        assert "first at byte 5" in bad["reason"]
    ok = by_case["rank0<->rank1 64 B"]
    assert ok["status"] == "passed"
    entries = {(e["src_rank"], e["dst_rank"]): e for e in report["entries"]}
    assert entries[(0, 1)]["verified"] is True
    assert entries[(0, 2)]["verified"] is False and len(entries[(0, 2)]["points"]) == 3
    for e in report["entries"]:  # a fit over the sizes that passed, priced by the simulated link
        assert e["alpha_s"]["value"] == pytest.approx(10e-6, rel=1e-6)
        assert e["beta_Bps"]["value"] == pytest.approx(1e9, rel=1e-6)


def test_the_pingpong_benchmark_runs(mpiexec):
    """bench/net_pingpong.py: the probe beside a plain ping-pong loop (its ratios are the benchmark's to report)."""
    script = Path(__file__).resolve().parents[2] / "bench" / "net_pingpong.py"
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), "--sizes", "8B..4KiB", "--iters", "50",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["same_host"] is True and [r["bytes"] for r in report["rows"]] == [2 ** k for k in range(3, 13)]
    assert all(r["status"] == "passed" for r in report["rows"])


@pytest.mark.parametrize("argv, flag", [
    (("plan", "--gpuu", "rtx4090"), "--gpuu"),  # argparse's error, before any MPI
    (("probe", "net", "--sizes", "1PiB..2PiB"), "--sizes"),  # gpucal's own, inside the world
    (("calibrate", "--cluster", "-o", ""), "-o"),
])
def test_under_mpiexec_one_rank_says_a_bad_input_once(run_mpi, argv, flag):
    done = run_mpi(2, *argv, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in done.stderr, done.stderr
