"""``gpucal profiles import``: other tools' outputs into profiles the planner takes, each figure converted to gpucal's
units and byte conventions. The outputs here are written in each tool's own format (the layouts of their real
outputs: nvbandwidth's JSON and text, p2pBandwidthLatencyTest's matrices, nccl-tests' table) with figures of the
test's choosing; real outputs from public threads, kept beside the project (``../shared/fixtures/imports``, its
SOURCES.md naming each), are read too where that folder is present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_gpucal

from gpucal.calibrate import imports
from gpucal import profiles
from gpucal.calibrate.imports.build import NVLINK_ABOVE_BPS, link_verdict, pcie_limit
from gpucal.errors import InputError

SHARED = Path(os.environ.get("GPUCAL_IMPORT_FIXTURES", Path(__file__).parents[3] / "shared" / "fixtures" / "imports"))


def _matrix_text(title: str, rows: list[list[float]], label: str = "D\\D") -> str:
    n = len(rows)
    out = [title, f"   {label}" + "".join(f"{j:7d}" for j in range(n))]
    out += [f"{i:6d} " + " ".join(f"{v:6.2f}" for v in row) for i, row in enumerate(rows)]
    return "\n".join(out) + "\n"


def p2plat_text(names, can, uni_off, uni_on, bi_off, bi_on, lat_off, lat_on) -> str:
    """p2pBandwidthLatencyTest's output, as cuda-samples prints it, with these figures."""
    n = len(names)
    text = "[P2P (Peer-to-Peer) GPU Bandwidth Latency Test]\n"
    text += "".join(f"Device: {i}, {name}, pciBusID: {i + 1}, pciDeviceID: 0, pciDomainID:0\n"
                    for i, name in enumerate(names))
    text += "".join(f"Device={i} {'CAN' if can else 'CANNOT'} Access Peer Device={j}\n"
                    for i in range(n) for j in range(n) if i != j)
    text += "\nP2P Connectivity Matrix\n"
    text += _matrix_text("Unidirectional P2P=Disabled Bandwidth Matrix (GB/s)", uni_off)
    text += _matrix_text("Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)", uni_on)
    text += _matrix_text("Bidirectional P2P=Disabled Bandwidth Matrix (GB/s)", bi_off)
    text += _matrix_text("Bidirectional P2P=Enabled Bandwidth Matrix (GB/s)", bi_on)
    text += _matrix_text("P2P=Disabled Latency Matrix (us)", lat_off, "GPU") + "\n"
    text += _matrix_text("P2P=Enabled Latency (P2P Writes) Matrix (us)", lat_on, "GPU")
    return text + "\nNOTE: The CUDA Samples are not meant for performance measurements.\n"


def nvbandwidth_json(names, cases: dict, version: str = "v0.8") -> str:
    """nvbandwidth -j's output: every matrix as strings, N/A where a figure is absent, waived tests bare."""
    testcases = []
    for name, (description, rows) in cases.items():
        if rows is None:
            testcases.append({"name": name, "status": "Waived"})
            continue
        cells = [["N/A" if v is None else f"{v:g}" for v in row] for row in rows]
        testcases.append({"bandwidth_description": description, "bandwidth_matrix": cells, "name": name,
                          "status": "Passed", "sum": sum(v or 0 for row in rows for v in row)})
    return json.dumps({"nvbandwidth": {"CUDA Runtime Version": 12080, "Driver Version": "570.86.16",
                                       "GPU Device list": [f"{i}: {n} (00000000:{i:02x}:00): (box)"
                                                           for i, n in enumerate(names)],
                                       "git_version": version, "testcases": testcases, "version": version}}, indent=1)


def nvbandwidth_text(cases: dict, version: str = "v0.10.0") -> str:
    """nvbandwidth's text output of the same test cases."""
    text = f"nvbandwidth Version: {version}\nBuilt from Git version: {version}\n\n"
    for name, (description, rows) in cases.items():
        text += f"Running {name}.\n"
        if rows is None:
            continue
        width = len(rows[0])
        text += description + "\n" + "".join(f"{j:10d}" for j in range(width)) + "\n"
        text += "".join(f"{i:2d}" + "".join(f"{'N/A' if v is None else f'{v:.2f}':>10}" for v in row) + "\n"
                        for i, row in enumerate(rows))
        text += f"\nSUM {name} {sum(v or 0 for row in rows for v in row):.2f}\n\n"
    return text


def nccl_text(card: str, hosts: dict[str, int], rows, one_process: bool, graph: int = 0) -> str:
    """nccl-tests all_reduce_perf's output: rows of (size B, time us, #wrong) in float, out of place and in place."""
    text = (f"# nThread 1 nGpus {max(hosts.values()) if one_process else 1} minBytes {rows[0][0]} maxBytes "
            f"{rows[-1][0]} step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1 validation: 1 graph: {graph}\n#\n"
            "# Using devices\n")
    rank = 0
    for h, (host, count) in enumerate(hosts.items()):
        for d in range(count):
            pid = 1000 + h if one_process else 1000 + rank
            text += f"#  Rank {rank:2d} Group  0 Pid {pid:6d} on {host:>10} device {d:2d} [0x{d + 1:02x}] {card}\n"
            rank += 1
    n = rank
    text += ("#\n#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw"
             "   busbw #wrong\n")
    for size, time_us, wrong in rows:
        algbw = size / (time_us * 1e-6) / 1e9
        busbw = algbw * 2 * (n - 1) / n
        text += (f"{size:12d}  {size // 4:12d}     float     sum      -1  {time_us:7.1f}  {algbw:6.2f}  {busbw:6.2f}  "
                 f"{wrong:>5}  {time_us:7.1f}  {algbw:6.2f}  {busbw:6.2f}  {wrong:>5}\n")
    return text + "# Out of bounds values : 0 OK\n# Avg bus bandwidth    : 1.0\n#\n"


def nccl_json(card: str, hosts: dict[str, int], rows, one_process: bool, graph: int = 0) -> str:
    """nccl-tests -J's file (its version 3 layout, as src/util.cu writes it) of the same run as ``nccl_text``."""
    devices, rank = [], 0
    for h, (host, count) in enumerate(hosts.items()):
        for d in range(count):
            devices.append({"rank": rank, "group": 0, "pid": 1000 + h if one_process else 1000 + rank,
                            "hostname": host, "device": d, "device_hex": f"0000:{d + 1:02x}:00", "device_info": card})
            rank += 1
    results = []
    for size, time_us, wrong in rows:
        algbw = size / (time_us * 1e-6) / 1e9
        half = {"time": time_us, "alg_bw": algbw, "bus_bw": algbw * 2 * (rank - 1) / rank, "nwrong": wrong}
        results.append({"size": size, "count": size // 4, "type": "float", "redop": "sum", "root": "    -1",
                        "out_of_place": half, "in_place": dict(half), "actual_iterations": 20, "experiment_name": ""})
    return json.dumps({"version": 3, "start_time": "2026-12-01 10:00:00",
                       "args": ["./build/all_reduce_perf", "-b", "8", "-e", "128M", "-f", "2", "-J", "out.json"],
                       "env": ["PATH=/usr/bin"], "nccl_version": 22809,
                       "config": {"nthreads": 1, "ngpus": max(hosts.values()) if one_process else 1,
                                  "minimum_bytes": rows[0][0], "maximum_bytes": rows[-1][0], "step_factor": 2,
                                  "warmup_iters": 5, "iterations": 20, "aggregated_iterations": 1, "validation": 1,
                                  "graph": graph, "blocking_collectives": "false", "per_iter_timing": "false",
                                  "per_iter_skip": 0, "parallel_init": "false", "devices": devices},
                       "results": results, "out_of_bounds": {"count": 0, "okay": "true"},
                       "average_bus_bandwidth": {"bandwidth": 1.0, "okay": "true"}, "errors": [],
                       "end_time": "2026-12-01 10:00:05"})


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _sweep(alpha_us: float, beta_GBps: float, wrong=0):
    return [(2**k, alpha_us + 2**k / (beta_GBps * 1e3), wrong) for k in range(3, 28, 2)]


def _import(tmp_path, *argv) -> dict:
    out = tmp_path / "imported.json"
    done = run_gpucal("profiles", "import", *argv, "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["file"] == str(out)
    return json.loads(out.read_text())


def _link(doc: dict, src: int, dst: int) -> dict:
    return next(l for l in doc["links"] if (l["src"], l["dst"]) == (src, dst))


RTX4090, H100 = "NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3"
NO_P2P = dict(uni_off=[[909.49, 21.73], [22.61, 921.83]], uni_on=[[902.14, 20.91], [22.36, 922.92]],
              bi_off=[[918.48, 29.84], [28.81, 924.56]], bi_on=[[918.22, 29.73], [28.90, 924.20]],
              lat_off=[[1.33, 12.84], [11.44, 1.31]], lat_on=[[1.33, 13.10], [11.59, 1.30]])


def _nvlink_box(n=4, p2p=375.0, off=37.0):
    def m(diag, other):
        return [[diag if i == j else other + 0.5 * i + 0.1 * j for j in range(n)] for i in range(n)]
    return dict(uni_off=m(2500.0, off), uni_on=m(2490.0, p2p), bi_off=m(2510.0, 2 * off), bi_on=m(2500.0, 2 * p2p),
                lat_off=m(2.0, 14.0), lat_on=m(2.0, 2.5))


def test_a_4090_pair_without_p2p_is_host_staged_at_the_rates_with_p2p_off(tmp_path):
    path = _write(tmp_path, "p2p.txt", p2plat_text([RTX4090] * 2, False, **NO_P2P))
    doc = _import(tmp_path, str(path), "--from", "p2pbandwidthlatencytest")
    assert doc["source"] == "measured" and [d["name"] for d in doc["devices"]] == [RTX4090] * 2
    there, back = _link(doc, 0, 1), _link(doc, 1, 0)
    # rows are the source: 0 -> 1 at 21.73 GB/s, 1 -> 0 at 22.61 (P2P=Disabled); P2P=Enabled is staged too here
    assert there["verdict"] == there["path"] == "host-staged" and there["p2p"]["supported"] is False
    assert there["beta_Bps"]["value"] == pytest.approx(21.73e9) and back["beta_Bps"]["value"] == pytest.approx(22.61e9)
    assert there["alpha_s"]["value"] == pytest.approx(12.84e-6) and back["alpha_s"]["value"] == pytest.approx(11.44e-6)
    assert there["bidirectional"]["sum_Bps"] == pytest.approx((29.84e9 + 28.81e9) / 2)
    assert "p2pBandwidthLatencyTest" in there["beta_Bps"]["method"]
    # the sample counts a local copy twice, as gpucal's DRAM traffic: the diagonal as printed
    bandwidth = doc["devices"][0]["memory_bandwidth_Bps"]
    assert bandwidth["value"] == pytest.approx(909.49e9) and bandwidth["byte_convention"].startswith("dram_Bps = 2n/t")
    assert doc["devices"][1]["memory_bandwidth_Bps"]["value"] == pytest.approx(921.83e9)
    assert doc["devices"][0]["memory_bytes"]["source"] == "datasheet"  # the tools measure no memory size
    assert doc["devices"][0]["peer_link"]["kind"] == "none"
    plan = run_gpucal("plan", "--gpu", str(tmp_path / "imported.json"), "--model", "llama-3.1-8b", "--cards", "2",
                      "--strategy", "pp", "--batch", "1", "--step", "seed", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["inputs"]["link"]["beta_Bps"] == pytest.approx(21.73e9)  # the slowest hop


def test_an_nvlink_box_is_nvlink_and_the_planner_takes_its_slowest_link(tmp_path):
    path = _write(tmp_path, "p2p.txt", p2plat_text([H100] * 4, True, **_nvlink_box()))
    doc = _import(tmp_path, str(path), "--from", "p2pbandwidthlatencytest")
    assert len(doc["devices"]) == 4 and len(doc["links"]) == 12
    assert {l["verdict"] for l in doc["links"]} == {"nvlink"} and doc["devices"][0]["peer_link"]["kind"] == "nvlink"
    assert _link(doc, 0, 1)["beta_Bps"]["value"] == pytest.approx(375.1e9)
    assert _link(doc, 0, 1)["alpha_s"]["value"] == pytest.approx(2.6e-6)  # the P2P=Enabled latency
    plan = run_gpucal("plan", "--gpu", str(tmp_path / "imported.json"), "--model", "llama-3.1-70b", "--cards", "4",
                      "--strategy", "tp", "--batch", "8", "--step", "seed", "--json")
    assert plan.returncode == 0, plan.stderr
    slowest = min(doc["links"], key=lambda l: l["beta_Bps"]["value"])
    assert json.loads(plan.stdout)["inputs"]["link"]["beta_Bps"] == pytest.approx(slowest["beta_Bps"]["value"])


def test_p2p_slower_than_staging_is_said_and_staging_is_the_path(tmp_path):
    box = _nvlink_box(2, p2p=12.0, off=42.0)
    path = _write(tmp_path, "p2p.txt", p2plat_text([RTX4090] * 2, True, **box))
    link = _link(_import(tmp_path, str(path), "--from", "p2pbandwidthlatencytest"), 0, 1)
    assert link["verdict"] == "p2p-slower-than-staged" and link["path"] == "host-staged"
    assert link["beta_Bps"]["value"] == pytest.approx(42.1e9) and link["alpha_s"]["value"] == pytest.approx(14.1e-6)


H2D = "memcpy CE CPU(row) -> GPU(column) bandwidth (GB/s)"
D2H = "memcpy CE CPU(row) <- GPU(column) bandwidth (GB/s)"
LOCAL = "memcpy local GPU(column) bandwidth (GB/s)"
WRITE = "memcpy CE GPU(row) <- GPU(column) bandwidth (GB/s)"


def test_nvbandwidth_without_p2p_derives_the_staged_rate_from_the_host_copies(tmp_path):
    cases = {"host_to_device_memcpy_ce": (H2D, [[56.3829, 56.3762, 56.3944, 56.3959]]),
             "device_to_host_memcpy_ce": (D2H, [[57.004, 56.9175, 56.9681, 56.9794]]),
             "device_to_device_memcpy_write_ce": ("", None),
             "device_local_copy": (LOCAL, [[760.777, 761.047, 761.047, 760.912]])}
    path = _write(tmp_path, "nvb.json", nvbandwidth_json(["NVIDIA GeForce RTX 5090"] * 4, cases))
    doc = _import(tmp_path, str(path), "--from", "nvbandwidth")
    assert doc["devices"][0]["name"] == "NVIDIA GeForce RTX 5090" and len(doc["devices"]) == 4
    link = _link(doc, 0, 1)
    assert link["verdict"] == "host-staged" and link["p2p"]["supported"] is False
    # the slower of device 0's device-to-host (57.004) and device 1's host-to-device (56.3762) copies
    assert link["beta_Bps"]["source"] == "derived" and link["beta_Bps"]["value"] == pytest.approx(56.3762e9)
    host = doc["devices"][1]["host_link"]
    assert host["h2d"]["beta_Bps"]["value"] == pytest.approx(56.3762e9)
    assert host["d2h"]["beta_Bps"]["value"] == pytest.approx(56.9175e9)
    # nvbandwidth counts a local copy once (n/t): its DRAM traffic is twice that
    assert doc["devices"][0]["memory_bandwidth_Bps"]["value"] == pytest.approx(2 * 760.777e9)
    assert doc["host"]["imported"][0]["version"] == "v0.8"


def test_nvbandwidth_json_and_text_of_one_box_give_the_same_links(tmp_path):
    rows = [[None if i == j else 276.0 + i + 0.1 * j for j in range(4)] for i in range(4)]
    cases = {"device_to_device_memcpy_write_ce": (WRITE, rows)}
    doc_json = _import(tmp_path / "j", str(_write(tmp_path, "nvb.json", nvbandwidth_json([H100] * 4, cases))),
                       "--from", "nvbandwidth")
    doc_text = _import(tmp_path / "t", str(_write(tmp_path, "nvb.txt", nvbandwidth_text(cases))), "--from",
                       "nvbandwidth", "--card", "h100-sxm")
    assert len(doc_json["links"]) == len(doc_text["links"]) == 12
    for a in doc_json["links"]:
        assert a["beta_Bps"]["value"] == pytest.approx(_link(doc_text, a["src"], a["dst"])["beta_Bps"]["value"],
                                                       rel=1e-3)
    # a write test copies from the row's device to the column's, whatever arrow its description prints
    assert _link(doc_json, 0, 1)["beta_Bps"]["value"] == pytest.approx(276.1e9)
    assert _link(doc_json, 1, 0)["beta_Bps"]["value"] == pytest.approx(277.0e9)
    read = {"device_to_device_memcpy_read_ce": ("memcpy CE GPU(row) -> GPU(column) bandwidth (GB/s)", rows)}
    doc_read = _import(tmp_path / "r", str(_write(tmp_path, "read.json", nvbandwidth_json([H100] * 4, read))),
                       "--from", "nvbandwidth")
    # a read test's row device reads from the column's: the column is the source
    assert _link(doc_read, 1, 0)["beta_Bps"]["value"] == pytest.approx(276.1e9)
    assert {l["verdict"] for l in doc_json["links"]} == {"nvlink"}


def test_nccl_tests_over_two_hosts_is_an_all_reduce_fit_over_its_sweep(tmp_path):
    path = _write(tmp_path, "ar.txt", nccl_text(H100, {"a": 8, "b": 8}, _sweep(120.0, 180.0), one_process=False))
    doc = _import(tmp_path, str(path), "--from", "nccl-tests", "--op", "all-reduce")
    (entry,) = doc["collectives"]
    assert (entry["op"], entry["nranks"], entry["hosts"], entry["ranks_per_host"]) == ("all-reduce", 16, 2, 8)
    assert entry["single_process"] is False and entry["graphs"] is False and entry["verified"] is True
    assert entry["busbw_factor"] == pytest.approx(2 * 15 / 16)
    assert len(entry["points"]) == 13 and entry["points"][0][0] == 8
    assert entry["alpha_s"]["value"] == pytest.approx(120e-6, rel=0.01)
    assert entry["beta_Bps"]["value"] == pytest.approx(180e9, rel=0.01)
    assert "mean time over 20 iterations" in entry["alpha_s"]["method"]


def test_one_host_in_one_process_gives_the_measured_step_its_all_reduce(tmp_path):
    path = _write(tmp_path, "ar.txt", nccl_text(H100, {"box": 8}, _sweep(30.0, 350.0), one_process=True, graph=1))
    doc = _import(tmp_path, str(path), "--from", "nccl-tests", "--op", "all-reduce")
    (entry,) = doc["collectives"]
    assert entry["single_process"] is True and entry["graphs"] is True and len(doc["devices"]) == 8
    plan = run_gpucal("plan", "--gpu", str(tmp_path / "imported.json"), "--model", "llama-3.1-70b", "--cards", "8",
                      "--strategy", "tp", "--batch", "8", "--step", "measured", "--json")
    assert plan.returncode == 0, plan.stderr
    sources = json.dumps(json.loads(plan.stdout)["sources"])
    assert "all-reduce" in sources and "tp_comm" not in json.loads(plan.stdout)["fallbacks"]


def test_nccl_tests_json_gives_what_its_text_gives(tmp_path):
    rows = _sweep(30.0, 350.0)
    text = _write(tmp_path, "ar.txt", nccl_text(H100, {"box": 8}, rows, one_process=True))
    data = _write(tmp_path, "ar.json", nccl_json(H100, {"box": 8}, rows, one_process=True))
    (a,) = _import(tmp_path / "t", str(text), "--from", "nccl-tests", "--op", "all-reduce")["collectives"]
    doc = _import(tmp_path / "j", str(data), "--from", "nccl-tests")  # the op from args[0]: all_reduce_perf
    (b,) = doc["collectives"]
    assert (b["op"], b["nranks"], b["single_process"], b["library"]) == ("all-reduce", 8, True, "NCCL 2.28.9")
    assert b["alpha_s"]["value"] == pytest.approx(a["alpha_s"]["value"], rel=1e-3)
    assert b["beta_Bps"]["value"] == pytest.approx(a["beta_Bps"]["value"], rel=1e-3)
    assert doc["devices"][0]["name"] == H100 and len(doc["devices"]) == 8
    done = run_gpucal("profiles", "import", str(data), "--from", "nccl-tests", "--op", "all-gather",
                      "-o", str(tmp_path / "x.json"))
    assert done.returncode == 2 and "--op" in done.stderr and "all-reduce" in done.stderr


def test_wrong_elements_unverify_the_entry_and_leave_those_sizes_out(tmp_path):
    rows = _sweep(30.0, 350.0)
    rows[-1] = (rows[-1][0], rows[-1][1], 7)
    path = _write(tmp_path, "ar.txt", nccl_text(H100, {"box": 2}, rows, one_process=True))
    (entry,) = _import(tmp_path, str(path), "--from", "nccl-tests", "--op", "all-reduce")["collectives"]
    assert entry["verified"] is False and "wrong elements" in entry["reason"] and len(entry["points"]) == 12


def test_links_and_collectives_of_one_machine_in_one_profile(tmp_path):
    p2p = _write(tmp_path, "p2p.txt", p2plat_text([RTX4090] * 2, False, **NO_P2P))
    ar = _write(tmp_path, "ar.txt", nccl_text(RTX4090, {"box": 2}, _sweep(40.0, 10.0), one_process=True))
    doc = _import(tmp_path, str(p2p), str(ar), "--from", "p2pbandwidthlatencytest", "--from", "nccl-tests",
                  "--op", "all-reduce")
    assert len(doc["links"]) == 2 and len(doc["collectives"]) == 1 and len(doc["devices"]) == 2
    assert [i["tool"] for i in doc["host"]["imported"]] == ["p2pBandwidthLatencyTest", "nccl-tests"]


def test_files_of_different_cards_or_two_copy_tools_are_refused(tmp_path):
    p2p = _write(tmp_path, "p2p.txt", p2plat_text([RTX4090] * 2, False, **NO_P2P))
    ar = _write(tmp_path, "ar.txt", nccl_text(H100, {"box": 2}, _sweep(40.0, 10.0), one_process=True))
    out = tmp_path / "x.json"
    done = run_gpucal("profiles", "import", str(p2p), str(ar), "--from", "p2pbandwidthlatencytest", "--from",
                      "nccl-tests", "--op", "all-reduce", "-o", str(out))
    assert done.returncode == 2 and "different cards" in done.stderr and not out.exists()
    done = run_gpucal("profiles", "import", str(p2p), str(p2p), "--from", "p2pbandwidthlatencytest", "-o", str(out))
    assert done.returncode == 2 and "both measure copies" in done.stderr
    b300 = _write(tmp_path, "b300.txt", p2plat_text(["NVIDIA B300 SXM6 AC"] * 2, False, **NO_P2P))
    done = run_gpucal("profiles", "import", str(b300), "--from", "p2pbandwidthlatencytest", "-o", str(out))
    assert done.returncode == 2 and "NVIDIA B300 SXM6 AC" in done.stderr and "--card" in done.stderr
    done = run_gpucal("profiles", "import", str(ar), "--from", "nccl-tests", "-o", str(out))
    assert done.returncode == 2 and "--op" in done.stderr and not out.exists()


def test_the_verdict_from_a_tools_figures():
    assert link_verdict(False, None, 20e9)[0] == "host-staged"
    assert link_verdict(None, None, 20e9)[0] == "host-staged"
    assert link_verdict(True, 12e9, 42e9)[0] == "p2p-slower-than-staged"
    assert link_verdict(True, 50e9, 20e9)[0] == "p2p-pcie"
    assert link_verdict(True, 300e9, 20e9)[0] == "nvlink"
    assert link_verdict(True, NVLINK_ABOVE_BPS, None)[0] == "p2p-pcie"


REAL = sorted(p for p in SHARED.rglob("*") if p.suffix in (".json", ".txt")) if SHARED.is_dir() else []
TOOL_OF = {"nvbandwidth": "nvbandwidth", "p2pBandwidthLatencyTest": "p2pbandwidthlatencytest",
           "nccl-tests": "nccl-tests"}


@pytest.mark.skipif(not REAL, reason=f"no real outputs at {SHARED} (GPUCAL_IMPORT_FIXTURES)")
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_outputs_parse_with_their_tool(path, tmp_path):
    tool = TOOL_OF[path.name.split("_")[0]]
    if "truncated" in path.name:  # its author cut the rank lines: how many ranks ran is unknown
        with pytest.raises(InputError, match="the number of ranks is unknown"):
            imports.read_run(str(path), tool, "all-reduce")
        return
    run = imports.read_run(str(path), tool, "all-reduce" if tool == "nccl-tests" else None)
    assert run.matrices or run.collectives, path.name


def test_a_waived_p2p_test_is_no_peer_access_and_an_absent_one_is_no_link(tmp_path):
    host = {"host_to_device_memcpy_ce": (H2D, [[25.0, 25.0]]), "device_to_host_memcpy_ce": (D2H, [[26.0, 26.0]])}
    waived = _import(tmp_path / "w", str(_write(tmp_path, "w.json", nvbandwidth_json(
        [RTX4090] * 2, {**host, "device_to_device_memcpy_write_ce": ("", None)}))), "--from", "nvbandwidth")
    assert {l["verdict"] for l in waived["links"]} == {"host-staged"}
    absent = _import(tmp_path / "a", str(_write(tmp_path, "a.json", nvbandwidth_json([RTX4090] * 2, host))),
                     "--from", "nvbandwidth")
    assert absent["links"] == [] and absent["plan_defaults"]["link"]
    assert any("ran no device-to-device copy test" in n for n in absent["notes"])
    # in text, a waived test prints its name and no matrix
    text = _write(tmp_path, "w.txt", nvbandwidth_text({**host, "device_to_device_memcpy_write_ce": ("", None)}))
    staged = _import(tmp_path / "t", str(text), "--from", "nvbandwidth", "--card", "rtx4090")
    assert {l["verdict"] for l in staged["links"]} == {"host-staged"}


def test_nvbandwidths_bidirectional_total_is_both_directions(tmp_path):
    one_way = [[None, 300.0], [300.0, None]]
    per_direction = [[None, 290.0], [290.0, None]]
    total = [[None, 580.0], [580.0, None]]
    new = {"device_to_device_memcpy_write_ce": (WRITE, one_way),
           "device_to_device_bidirectional_memcpy_write_ce": (
               "memcpy CE GPU(row) <-> GPU(column) Total bandwidth (GB/s)", per_direction + per_direction + total)}
    doc = _import(tmp_path / "n", str(_write(tmp_path, "n.json", nvbandwidth_json([H100] * 2, new))),
                  "--from", "nvbandwidth")
    assert _link(doc, 0, 1)["bidirectional"]["sum_Bps"] == pytest.approx(580e9)
    old = {"device_to_device_memcpy_write_ce": (WRITE, one_way),  # before 0.6: one matrix, per direction
           "device_to_device_bidirectional_memcpy_write_ce": (
               "memcpy CE GPU(row) <-> GPU(column) bandwidth (GB/s)", per_direction)}
    doc = _import(tmp_path / "o", str(_write(tmp_path, "o.json", nvbandwidth_json([H100] * 2, old, "v0.5"))),
                  "--from", "nvbandwidth")
    assert _link(doc, 0, 1)["bidirectional"]["sum_Bps"] == pytest.approx(580e9)


def test_the_nvlink_verdict_is_against_the_cards_own_pcie_link(tmp_path):
    box = _nvlink_box(2, p2p=50.0, off=20.0)  # 50 GB/s one way: past a 4090's PCIe Gen4 x16 (31.5 GB/s)
    doc = _import(tmp_path, str(_write(tmp_path, "p.txt", p2plat_text([RTX4090] * 2, True, **box))),
                  "--from", "p2pbandwidthlatencytest")
    link = _link(doc, 0, 1)
    assert link["verdict"] == "nvlink" and "PCIe Gen4 x16 (the card's datasheet)" in " ".join(link["reasons"])
    assert link_verdict(True, 50e9, 20e9, *pcie_limit(profiles.load_builtin("profile", "h100-sxm"), None))[0] == \
        "p2p-pcie"  # within a Gen5 x16 link: P2P over PCIe
    # the datasheet's PCIe link rides along, so the export to aiconfigurator finds it
    exported = run_gpucal("profiles", "export", str(tmp_path / "imported.json"), "--format", "aiconfigurator")
    assert exported.returncode == 0, exported.stderr
    assert doc["devices"][0]["host_link"]["pcie_generation"]["source"] == "datasheet"


def test_without_a_word_on_peer_access_the_same_rate_on_and_off_is_staging():
    assert link_verdict(None, 21.0e9, 22.0e9)[0] == "host-staged"
    assert link_verdict(True, 21.0e9, 22.0e9)[0] == "p2p-slower-than-staged"


@pytest.mark.parametrize("name, text, named", [
    ("matrix-number.json", '{"nvbandwidth": {"testcases": [{"name": "device_local_copy", "status": "Passed", '
                           '"bandwidth_description": "memcpy local GPU(column) bandwidth (GB/s)", "bandwidth_matrix": 5}]}}',
     "bandwidth_matrix"),
    ("list-null.json", '{"nvbandwidth": {"GPU Device list": null, "testcases": [{"name": "device_local_copy", '
                       '"status": "Passed", "bandwidth_description": "memcpy local GPU(column) bandwidth (GB/s)", '
                       '"bandwidth_matrix": [["760"]]}]}}', None),
    ("empty-rows.json", '{"nvbandwidth": {"testcases": [{"name": "device_to_device_bidirectional_memcpy_write_ce", '
                        '"status": "Passed", "bandwidth_description": "x (GB/s)", "bandwidth_matrix": [[],[],[]]}]}}',
     "empty-rows.json"),
    ("deep.json", "{" + '"a":[' * 100000, "deep.json"),
    ("inf.json", '{"nvbandwidth": {"testcases": [{"name": "device_local_copy", "status": "Passed", '
                 '"bandwidth_description": "memcpy local GPU(column) bandwidth (GB/s)", "bandwidth_matrix": '
                 '[["inf"]]}]}}', "inf"),
])
def test_a_broken_nvbandwidth_file_is_one_line(tmp_path, name, text, named):
    path = _write(tmp_path, name, text)
    done = run_gpucal("profiles", "import", str(path), "--from", "nvbandwidth", "--card", "h100-sxm",
                      "-o", str(tmp_path / "out.json"))
    if named is None:  # a null device list is no names: the card comes from --card
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert named in done.stderr and "Traceback" not in done.stderr and not (tmp_path / "out.json").exists()


def test_broken_or_mixed_nccl_tests_files_are_one_line(tmp_path):
    good = nccl_text(H100, {"box": 2}, _sweep(30.0, 100.0), one_process=True)
    cases = {
        "bogus.txt": (good.replace("      0  ", "  bogus  "), "no nccl-tests size row"),
        "huge.txt": (good.replace("     8             2", "10000000000000000000000  2"), "out of range"),
        "twice.txt": (good + good, "listed twice"),
        "cards.txt": (good.replace(f"device  1 [0x02] {H100}", "device  1 [0x02] NVIDIA A100-SXM4-80GB"),
                      "different cards"),
    }
    for name, (text, named) in cases.items():
        path = _write(tmp_path, name, text)
        done = run_gpucal("profiles", "import", str(path), "--from", "nccl-tests", "--op", "all-reduce",
                          "-o", str(tmp_path / "out.json"))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
        assert named in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)


def test_two_hosts_give_one_hosts_devices_and_dash_d_all_takes_the_first_type(tmp_path):
    doc = _import(tmp_path / "h", str(_write(tmp_path, "two.txt", nccl_text(H100, {"a": 8, "b": 8}, _sweep(
        120.0, 180.0), one_process=False))), "--from", "nccl-tests", "--op", "all-reduce")
    assert len(doc["devices"]) == 8
    text = nccl_text(H100, {"box": 2}, _sweep(30.0, 100.0), one_process=True)
    half = text.replace("     float     sum", "      half     sum")
    rows = [line for line in half.splitlines() if "half" in line]
    mixed = text.replace("# Out of bounds", "\n".join(r.replace("30.", "90.") for r in rows) + "\n# Out of bounds")
    (entry,) = _import(tmp_path / "d", str(_write(tmp_path, "all.txt", mixed)), "--from", "nccl-tests", "--op",
                       "all-reduce")["collectives"]
    assert entry["dtype"] == "float" and len(entry["points"]) == 13


def test_a_card_other_than_the_files_is_said(tmp_path):
    doc = _import(tmp_path, str(_write(tmp_path, "b.txt", p2plat_text(["NVIDIA B300 SXM6 AC"] * 2, True,
                                                                      **_nvlink_box(2)))),
                  "--from", "p2pbandwidthlatencytest", "--card", "h200-sxm")
    assert any("memory size and FLOP/s are those of NVIDIA H200, as --card gives" in n for n in doc["notes"])
    assert doc["devices"][0]["name"] == "NVIDIA B300 SXM6 AC"


REAL_FIGURES = {  # the figure each real output prints, as gpucal must read it (SOURCES.md names each file)
    "nvbandwidth_v0.10.0_json-verbose_7xB300-SXM6_dcgm.json":
        lambda run: run.local_dram_Bps.get(0, 0) == pytest.approx(2 * 3237.82e9) and run.p2p_Bps.get(0, 1) > 700e9,
    "nvbandwidth_v0.8_json_4xRTX5090_pcie.json":
        lambda run: run.h2d_Bps.get(1, 1) == pytest.approx(56.3762e9) and run.p2p_Bps is None and all(
            v is False for v in run.can_access.values()),
    "p2pBandwidthLatencyTest_7xB300-SXM6_nvswitch.txt":
        lambda run: run.p2p_Bps.get(0, 1) > 500e9 and all(run.can_access.values()),
    "nccl-tests_all_reduce_perf_16xH100-a3mega_2node_8B-8G.txt":
        lambda run: (run.collectives[0].nranks, run.collectives[0].hosts, len(run.devices)) == (16, 2, 8)
        and run.collectives[0].busbw_Bps[-1] == pytest.approx(338.82e9),
}


@pytest.mark.skipif(not REAL, reason=f"no real outputs at {SHARED} (GPUCAL_IMPORT_FIXTURES)")
@pytest.mark.parametrize("name", sorted(REAL_FIGURES))
def test_real_outputs_give_their_printed_figures(name):
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{name} is not at {SHARED}")
    tool = TOOL_OF[name.split("_")[0]]
    assert REAL_FIGURES[name](imports.read_run(str(path), tool, "all-reduce" if tool == "nccl-tests" else None))
