"""``gpucal calibrate --simulate`` end to end on virtual machines: the profile written and valid, its numbers
within 2 % of the machine's, its verdicts right, plans from it equal to plans from the machine, and nothing
lost or half-written when it is interrupted or pointed at an existing file."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
from pathlib import Path

import pytest
import yaml

from gpucal import profiles
from gpucal.cli import main
from gpucal.kernels.backend import select
from gpucal.kernels.virtual_machine import VirtualMachine, parse_spec
from gpucal.probes import links
from gpucal.profiles.names import resolve_document

TOL = 0.02  # the bound: a calibration gives back the machine's numbers within 2 %

# name: (--simulate spec, the verdicts every ordered pair must get, the exit code)
MACHINES = {
    "rtx4090": ("rtx4090:2+noise=0.02+seed=1", {"host-staged"}, 0),
    "h100": ("h100-sxm:4+noise=0.02+seed=2", {"nvlink"}, 0),
    "p2p-pcie": ("rtx4090:2+p2p=on+noise=0.02+seed=3", {"p2p-pcie"}, 0),
    "corrupt": ("rtx4090:2+p2p=corrupt", {"p2p-corrupt"}, 1),
    "slow": ("rtx3090:2+p2p=slow", {"p2p-slower-than-staged"}, 0),
    "one": ("rtx5090:1+noise=0.02", set(), 0),
}


def machine(spec: str) -> VirtualMachine:
    name, count, faults = parse_spec(f"virtual:{spec}")
    doc = resolve_document(name, "--simulate", "profile")
    return VirtualMachine(doc.profile, doc.name, count, faults)


def close(got, want, tol=TOL):
    return got == pytest.approx(want, rel=tol)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    cache = {}

    def get(key):
        if key not in cache:
            spec, _, _ = MACHINES[key]
            folder = tmp_path_factory.mktemp(key)
            path = folder / f"{key}.json"

            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                rc = main(["calibrate", "--simulate", spec, "-o", str(path), "--json"]
                          + ([] if key == "rtx4090" else ["--no-kernel-check"]))
            cache[key] = (rc, json.loads(out.getvalue()), profiles.load(path).data, path)
        return cache[key]
    return get


def plan_json(gpu: str, cards: int, *extra: str) -> dict:
    out = io.StringIO()
    argv = ["plan", "--gpu", gpu, "--model", "llama-3.1-8b", "--cards", str(cards), "--strategy",
            "tp" if cards > 1 else "pp", "--batch", "8", "--context", "1024", "--json", "--step", "seed", *extra]
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return json.loads(out.getvalue())


@pytest.mark.parametrize("key", MACHINES)
def test_the_profile_is_written_valid_and_simulated(calibrated, key):
    rc, summary, doc, path = calibrated(key)
    assert rc == MACHINES[key][2]
    assert summary["profile"] == str(path) and doc["source"] == "simulated"
    assert doc["name"] == key and len(doc["devices"]) == machine(MACHINES[key][0]).count
    sources = set()

    def walk(node):
        if isinstance(node, dict):
            if "source" in node and "value" in node:
                sources.add(node["source"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc)
    assert "measured" not in sources  # a simulated figure is never presented as a measurement
    assert "simulated" in sources


@pytest.mark.parametrize("key", MACHINES)
def test_memory_bandwidth_and_flops_are_the_machines(calibrated, key):
    _, _, doc, _ = calibrated(key)
    vm = machine(MACHINES[key][0])
    for d, dev in enumerate(doc["devices"]):
        assert close(dev["memory_bandwidth_Bps"]["value"], vm.devices[d].memory_Bps)
        assert dev["memory_bandwidth_Bps"]["n"] >= 3 and dev["memory_bandwidth_Bps"]["statistic"] == "median"
        assert {"fp16_fp32acc", "bf16_fp32acc"} <= set(dev["dense_flops"])
        for mode, q in dev["dense_flops"].items():
            assert close(q["value"], vm.devices[d].flops[mode]), mode
        assert close(dev["gemv_Bps"]["fp16"]["value"], vm.devices[d].memory_Bps)
        assert dev["memory_bytes"] == {"value": vm.devices[d].memory_bytes, "source": "reported",
                                       "note": "total device memory (virtual device)"}


@pytest.mark.parametrize("key", MACHINES)
def test_host_links_are_the_machines(calibrated, key):
    _, _, doc, _ = calibrated(key)
    vm = machine(MACHINES[key][0])
    for d, dev in enumerate(doc["devices"]):
        for path in ("h2d", "d2h"):
            model = getattr(vm.devices[d], path)
            link = dev["host_link"][path]
            assert close(link["beta_Bps"]["value"], model.beta_Bps), path
            assert close(link["alpha_s"]["value"], model.alpha_s), path  # the one-shot alpha, not the pipelined one
        assert dev["host_link"]["pcie_generation"]["value"] == vm.devices[d].pcie_generation


@pytest.mark.parametrize("key", MACHINES)
def test_links_and_verdicts_are_the_machines(calibrated, key):
    rc, summary, doc, _ = calibrated(key)
    spec, verdicts, _ = MACHINES[key]
    vm = machine(spec)
    n = vm.count
    assert len(doc["links"]) == n * (n - 1)
    assert {v["verdict"] for v in summary["verdicts"]} == verdicts
    for link in doc["links"]:
        s, d = link["src"], link["dst"]
        assert link["verdict"] in verdicts
        if link["verdict"] in ("nvlink", "p2p-pcie"):
            assert link["path"] == link["verdict"] and link["series"] == f"p2p-ce-dev{s}->dev{d}"
            model = vm.peer(s, d).model
        else:  # no P2P, or P2P that must not be used: the planner gets the staged path
            assert link["path"] == "host-staged"
            model = vm.staged(s, d, driver=link["series"].startswith("driver-staged"))
        assert close(link["beta_Bps"]["value"], model.beta_Bps)
        assert close(link["alpha_s"]["value"], model.alpha_s)
        assert len(link["points"]) >= 5
    if key == "corrupt":
        assert all(link["p2p"] == {"supported": True, "enabled": True, "verified": False} for link in doc["links"])
        assert any(a["kind"] == "p2p-corrupt" for a in summary["anomalies"])


@pytest.mark.parametrize("key", ["rtx4090", "h100", "p2p-pcie", "one"])
def test_plan_from_the_profile_is_the_plan_from_the_machine(calibrated, key):
    _, _, doc, path = calibrated(key)
    spec = MACHINES[key][0]
    vm = machine(spec)
    source = spec.split(":")[0]
    cards = max(vm.count, 1)
    if vm.count > 1:
        slowest = min(((s, d) for s in range(cards) for d in range(cards) if s != d),
                      key=lambda p: (vm.peer(*p).model or vm.staged(*p, driver=True)).beta_Bps)
        peer = vm.peer(*slowest).model
        model = peer if peer is not None else vm.staged(*slowest, driver=True)
        want = plan_json(source, cards, "--link", f"alpha={model.alpha_s}s,beta={model.beta_Bps}B/s")
    else:
        want = plan_json(source, cards)
    got = plan_json(str(path), cards)
    for key_ in ("token_latency_s", "tokens_per_s", "aggregate_tokens_per_s", "memory_time_s", "compute_time_s"):
        assert close(got[key_], want[key_]), key_
    assert got["inputs"]["gpu"]["profile_source"] == "simulated"


@pytest.mark.parametrize("key", ["rtx4090", "h100"])
def test_calibrating_the_calibrated_profile_gives_it_back(calibrated, key, tmp_path):
    """A virtual machine built from a calibrated profile P calibrates to P again, and plans the same."""
    _, _, doc, path = calibrated(key)
    again = tmp_path / "again.json"
    assert main(["calibrate", "--simulate", f"{path}:{len(doc['devices'])}", "-o", str(again), "--json",
                 "--no-kernel-check"]) == 0
    cards = len(doc["devices"])
    a, b = plan_json(str(path), cards), plan_json(str(again), cards)
    assert close(b["token_latency_s"], a["token_latency_s"])
    assert close(b["inputs"]["link"]["beta_Bps"], a["inputs"]["link"]["beta_Bps"])
    assert close(b["inputs"]["link"]["alpha_s"], a["inputs"]["link"]["alpha_s"])


def test_provenance(calibrated):
    _, _, doc, path = calibrated("rtx4090")
    host = doc["host"]
    assert host["command"].startswith("gpucal calibrate --simulate rtx4090:2") and str(path) in host["command"]
    assert host["backend"] == "virtual:rtx4090:2" and host["simulated"] is True and host["mode"] == "quick"
    assert host["started"] <= host["finished"] and host["duration_s"] >= 0
    assert {"gpucal", "numpy", "numba"} <= set(host["libraries"])
    assert [d["uuid"] for d in host["devices"]] == [d["uuid"] for d in doc["devices"]]
    assert host["topology"]["available"] is True
    assert host["simulator_check"]["ran"] and host["simulator_check"]["failed"] == []
    assert host["simulator_check"]["passed"] == len(host["simulator_check"]["cases"]) >= 5
    assert doc["notes"][0].startswith("simulated:")


def test_one_device_plans_across_cards_with_the_datasheet_link(calibrated):
    _, _, doc, path = calibrated("one")
    assert doc["links"] == [] and doc["plan_defaults"] == {"link": "pcie5-x16"}
    got = plan_json(str(path), 4)
    assert got["inputs"]["link"]["name"] == "pcie5-x16"


def test_a_downtrained_link_is_an_anomaly(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["calibrate", "--simulate", "rtx4090:2+downtrain=1:3:8", "-o", str(tmp_path / "p.json"), "--json",
                   "--no-kernel-check"])
    assert rc == 0
    found = json.loads(out.getvalue())["anomalies"]
    assert [a["device"] for a in found if a["kind"] == "downtrained"] == [1]
    doc = profiles.load(tmp_path / "p.json").data
    assert doc["devices"][1]["host_link"]["pcie_generation"]["value"] == 3
    assert all("downtrained" in link["flags"] for link in doc["links"])


def test_pinned_memory_on_the_other_socket_is_numa_remote(tmp_path, calibrated):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["calibrate", "--simulate", "h100-sxm:4+numa=remote", "-o", str(tmp_path / "p.json"), "--json",
                   "--no-kernel-check", "--budget", "0.01"])
    assert rc == 0
    found = [a for a in json.loads(out.getvalue())["anomalies"] if a["kind"] == "numa-remote"]
    assert [a["device"] for a in found] == [0, 1, 2, 3]  # devices on nodes 0, 0, 1, 1; their memory on 1, 1, 0, 0
    assert "NUMA node 1" in found[0]["text"] and "device's node 0" in found[0]["text"]
    assert "NUMA node 0" in found[3]["text"] and "device's node 1" in found[3]["text"]
    doc = profiles.load(tmp_path / "p.json").data
    assert [d["numa_node"] for d in doc["devices"]] == [0, 0, 1, 1]
    assert [a["kind"] for a in doc["host"]["anomalies"]].count("numa-remote") == 4
    _, summary, _, _ = calibrated("h100")  # the same machine, its memory local: no anomaly
    assert not [a for a in summary["anomalies"] if a["kind"] == "numa-remote"]


@pytest.mark.parametrize("exc, code, said", [(KeyboardInterrupt(), 130, "interrupted"),
                                             (RuntimeError("device lost"), 1, "RuntimeError: device lost")])
def test_an_interrupted_calibration_writes_nothing(tmp_path, monkeypatch, capsys, exc, code, said):
    def fail(*args, **kwargs):
        raise exc
    monkeypatch.setattr(links, "run_peer", fail)
    path = tmp_path / "out" / "p.json"
    assert main(["calibrate", "--simulate", "rtx4090:2", "-o", str(path), "--no-kernel-check"]) == code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("gpucal calibrate: error: step 'copies dev0<->dev1' failed")
    assert said in err and "measured before it: topology, memory bandwidth, dev0" in err
    assert "Traceback" not in err
    assert not path.exists() and (not path.parent.exists() or os.listdir(path.parent) == [])


def test_an_existing_file_is_kept_without_force(tmp_path, capsys):
    path = tmp_path / "p.json"
    path.write_text("old\n")
    assert main(["calibrate", "--simulate", "rtx4090:2", "-o", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gpucal calibrate: error: -o: {path}: exists; pass --force to overwrite it"
    assert path.read_text() == "old\n"
    assert main(["calibrate", "--simulate", "rtx4090:2", "-o", str(path), "--force", "--no-kernel-check"]) == 0
    assert profiles.load(path).profile.source == "simulated"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temporary file left behind


def test_the_default_output_is_profiles_host_gpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--simulate", "rtx4090:2", "--json", "--no-kernel-check"]) == 0
    written = list((tmp_path / "profiles").iterdir())
    assert [p.name for p in written] == [f"{socket.gethostname().lower()}-2xrtx-4090-simulated.json"]


@pytest.mark.parametrize("argv, flag", [
    (["--simulate", "nosuch:2"], "--simulate"),
    (["--simulate", "rtx4090:2+p2p=maybe"], "--simulate"),
    (["--simulate", "rtx4090:2", "--backend", "cupy"], "--simulate"),
    (["--simulate", "rtx4090:2", "--budget", "0"], "--budget"),
    (["--simulate", "rtx4090:2", "--name", "Bad Name"], "--name"),
    (["--backend", "simulator"], "--backend"),
])
def test_bad_input_is_one_line_naming_the_flag(argv, flag, capsys, tmp_path):
    assert main(["calibrate", "-o", str(tmp_path / "p.json"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith((f"gpucal calibrate: error: {flag}", f"gpucal calibrate: error: argument {flag}"))
    assert "\n" not in err
    assert not (tmp_path / "p.json").exists()


def test_an_output_that_is_a_folder_is_refused(tmp_path, capsys):
    assert main(["calibrate", "--simulate", "rtx4090:2", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_no_kernel_check_says_so(calibrated):
    _, _, doc, _ = calibrated("h100")
    assert doc["host"]["simulator_check"] == {"ran": False, "reason": "--no-kernel-check"}


def test_plots_are_written_with_the_profile(tmp_path):
    from matplotlib.image import imread

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["calibrate", "--simulate", "rtx4090:2", "-o", str(tmp_path / "p.json"), "--plots",
                   str(tmp_path / "plots"), "--json", "--no-kernel-check"])
    assert rc == 0
    plots = {p["name"]: p for p in json.loads(out.getvalue())["plots"]}
    assert set(plots) == {"bandwidth", "p2p", "roofline", "plan", "network", "decode-gemm", "allreduce"}
    # one machine: no cluster figure (its one-process all-reduce is allreduce.png's, not network.png's)
    assert plots.pop("network")["skipped"].endswith("has no network[] or collectives[]: gpucal calibrate --cluster "
                                                    "measures them")
    for name, p in plots.items():
        assert p["skipped"] is None, name
        data = (tmp_path / "plots" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        pixels = imread(tmp_path / "plots" / f"{name}.png")
        assert len({tuple(px) for px in pixels.reshape(-1, pixels.shape[-1])[::97]}) > 20, name


def test_the_calibrated_profile_exports_to_both_formats(calibrated):

    _, _, doc, path = calibrated("rtx4090")
    link = min(doc["links"], key=lambda item: item["beta_Bps"]["value"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["profiles", "export", str(path), "--format", "llm-analysis"]) == 0
    got = json.loads(out.getvalue())
    assert set(got) == {"name", "mem_per_GPU_in_GB", "hbm_bandwidth_in_GB_per_sec", "intra_node_bandwidth_in_GB_per_sec",
                        "intra_node_min_message_latency", "peak_fp16_TFLOPS", "peak_i8_TFLOPS", "peak_i4_TFLOPS",
                        "inter_node_bandwidth_in_GB_per_sec"}
    dev = doc["devices"][0]
    assert got["hbm_bandwidth_in_GB_per_sec"] == pytest.approx(dev["memory_bandwidth_Bps"]["value"] / 1e9)
    assert got["mem_per_GPU_in_GB"] == pytest.approx(dev["memory_bytes"]["value"] / 2 ** 30)
    assert got["intra_node_bandwidth_in_GB_per_sec"] == pytest.approx(link["beta_Bps"]["value"] / 1e9)
    assert got["intra_node_min_message_latency"] == pytest.approx(link["alpha_s"]["value"])
    assert got["peak_fp16_TFLOPS"] == pytest.approx(dev["dense_flops"]["fp16_fp32acc"]["value"] / 1e12)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["profiles", "export", str(path), "--format", "aiconfigurator"]) == 0
    system = yaml.safe_load(out.getvalue())
    assert system["node"]["num_gpus_per_node"] == 2
    assert system["node"]["intra_node_bw"] == pytest.approx(link["beta_Bps"]["value"])
    assert system["gpu"]["mem_bw"] * system["gpu"]["mem_bw_empirical_scaling_factor"] == pytest.approx(
        dev["memory_bandwidth_Bps"]["value"])


def test_llm_analysis_loads_the_calibrated_export(calibrated, tmp_path):
    config = pytest.importorskip("llm_analysis.config")
    _, _, doc, path = calibrated("h100")
    assert main(["profiles", "export", str(path), "--format", "llm-analysis", "-o", str(tmp_path)]) == 0
    loaded = config.read_configs(str(tmp_path), type="gpu")
    gpu = loaded["h100"]
    assert gpu.hbm_bandwidth_in_GB_per_sec == pytest.approx(doc["devices"][0]["memory_bandwidth_Bps"]["value"] / 1e9)


def test_full_mode_measures_every_mode_and_path(tmp_path):
    path = tmp_path / "full.json"
    assert main(["calibrate", "--simulate", "rtx4090:2", "--full", "-o", str(path), "--json", "--no-kernel-check"]) == 0
    doc = profiles.load(path).data
    assert doc["host"]["mode"] == "full"
    assert set(doc["devices"][0]["dense_flops"]) == set(select("virtual:rtx4090:2").gemm_modes())
    series = {f["series"] for f in doc["fits"]}
    assert {"h2d-ce-pageable-dev0", "h2d-sm-pinned-dev0", "host-staged-dev1->dev0"} <= series
    assert min(len(f["points"]) for f in doc["fits"] if f["engine"] == "ce") > 9  # sizes a factor 2 apart, not 8


def test_the_planner_takes_the_slowest_device_of_a_calibrated_profile(tmp_path):
    data = profiles.read(Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json")
    data["devices"][1]["memory_bandwidth_Bps"]["value"] = 0.8e12  # a card that lags
    data["devices"][0]["dense_flops"]["fp16_fp32acc"]["value"] = 1.5e14
    path = tmp_path / "lagging.json"
    profiles.save(data, path)
    got = plan_json(str(path), 2)["inputs"]["gpu"]
    assert got["memory_bandwidth_Bps"] == 0.8e12 and got["flops"] == 1.5e14
    assert got["sources"]["memory_bandwidth_Bps"].endswith("the slowest of 2 devices (devices[1])")
    assert got["sources"]["flops"].endswith("the slowest of 2 devices (devices[0])")
