"""``mpiexec -n N gpucal calibrate --cluster``, end to end on this machine: simulated hosts joined by a
simulated network (the bytes really move over MPI), the gathered cluster profile, and plans from it.

The simulated figures must give back the machine's model: the network's alpha and beta those of the
link preset, the all-reduce's those of the ring over it, and a plan from the profile the plan from the
presets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import run_gpucal

from gpucal import profiles
from gpucal.profiles.queries import resolve_link

FAST = ("--no-kernel-check", "--budget", "0.05")


@pytest.fixture(scope="module")
def four_hosts(tmp_path_factory, mpiexec):
    """4 ranks, each a simulated host of one RTX 4090, joined by simulated 1 Gbit/s Ethernet."""
    folder = tmp_path_factory.mktemp("cluster4")
    proc = subprocess.run([mpiexec, "-n", "4", sys.executable, "-m", "gpucal", "calibrate", "--cluster", "--simulate",
                           "rtx4090:1", "--simulate-net", "eth1g+noise=0.01", "-o", "c4.json", "--json", *FAST],
                          capture_output=True, text=True, cwd=folder, timeout=300)
    return folder, proc


def test_four_simulated_hosts_give_back_the_network_and_the_ring(four_hosts):
    folder, proc = four_hosts
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["cluster"] is True and summary["ranks"] == 4 and summary["source"] == "simulated"
    doc = profiles.load(str(folder / "c4.json")).data
    assert doc["source"] == "simulated" and len(doc["devices"]) == 4
    assert [d["host"] for d in doc["devices"]] == [0, 1, 2, 3]
    assert [h["ranks"] for h in doc["cluster"]["hosts"]] == [[0], [1], [2], [3]]
    eth = resolve_link("eth1g").spec
    assert len(doc["network"]) == 6  # every pair of the 4 hosts' leaders
    for e in doc["network"]:
        assert not e["same_host"] and e["verified"] and e["beta_Bps"]["source"] == "simulated"
        assert e["alpha_s"]["value"] == pytest.approx(eth.alpha_s, rel=0.03)
        assert e["beta_Bps"]["value"] == pytest.approx(eth.beta_Bps, rel=0.03)
    ops = {e["op"]: e for e in doc["collectives"]}
    assert set(ops) == {"all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv"}
    ar = ops["all-reduce"]
    assert ar["nranks"] == 4 and ar["hosts"] == 4 and ar["verified"] and ar["busbw_factor"] == 1.5
    # the ring over the link: t = 2(N-1)·alpha + 2(N-1)/N·S/beta
    assert ar["alpha_s"]["value"] == pytest.approx(6 * eth.alpha_s, rel=0.03)
    assert ar["beta_Bps"]["value"] * ar["busbw_factor"] == pytest.approx(eth.beta_Bps, rel=0.03)


def test_the_plan_from_the_cluster_profile_is_the_plan_from_the_presets(four_hosts):
    folder, _ = four_hosts
    common = ("--model", "llama-2-70b", "--cards", "8", "--strategy", "pp", "--batch", "32", "--target-tps", "5",
              "--nic", "eth1g", "--json", "--step", "seed")  # the article's step on both (its terms: the same figures)
    proc = run_gpucal("plan", "--gpu", str(folder / "c4.json"), *common)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout)
    preset = json.loads(run_gpucal("plan", "--gpu", "rtx4090", "--cards-per-host", "1", "--net", "eth1g",
                                   *common).stdout)
    assert measured["inputs"]["cards_per_host"] == 1 and "network" in measured["inputs"]["net"]["name"]
    assert measured["inputs"]["net"]["source"] == "simulated"
    for key in ("token_latency_s", "pp_comm_time_s", "aggregate_tokens_per_s"):
        assert measured[key] == pytest.approx(preset[key], rel=0.02), key
    # the article's title question: the batch that still gives 5 tokens/s, and the NICs it needs
    assert measured["target"]["max_batch"] == pytest.approx(preset["target"]["max_batch"], abs=1)
    assert measured["target"]["nics"] == preset["target"]["nics"] == 1
    assert measured["target"]["required_beta_Bps"] == pytest.approx(preset["target"]["required_beta_Bps"], rel=0.03)
    # TP over the 4 hosts: the measured all-reduce replaces the seed model
    tp = json.loads(run_gpucal("plan", "--gpu", str(folder / "c4.json"), "--model", "llama-3.1-8b", "--cards", "4",
                               "--strategy", "tp", "--batch", "8", "--json", "--step", "seed").stdout)
    assert tp["inputs"]["comm_model"] == "measured"
    ring = json.loads(run_gpucal("plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--cards", "4",
                                 "--cards-per-host", "1", "--net", "eth1g", "--comm", "ring", "--strategy", "tp",
                                 "--batch", "8", "--json", "--step", "seed").stdout)
    assert tp["tp_comm_time_s"] == pytest.approx(ring["tp_comm_time_s"], rel=0.03)
    # the measured step across the hosts takes the same all-reduce, one more a step (the embedding's)
    step = json.loads(run_gpucal("plan", "--gpu", str(folder / "c4.json"), "--model", "llama-3.1-8b", "--cards", "4",
                                 "--strategy", "tp", "--batch", "8", "--json").stdout)
    assert step["step"] == "measured" and "all-reduce over 4 ranks" in step["sources"]["allreduce"]
    assert step["tp_exchange_time_s"] == pytest.approx(tp["tp_exchange_time_s"], rel=1e-9)
    assert step["tp_exchanges"] == tp["tp_exchanges"] + 1


def test_two_hosts_of_two_cards_with_the_kernel_check(run_mpi, tmp_path):
    proc = run_mpi(2, "calibrate", "--cluster", "--simulate", "rtx4090:2", "--simulate-net", "eth10g", "-o",
                   "c2.json", "--budget", "0.05")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "2 host(s)" in text and "network between hosts" in text and "simulated" in text
    assert "collectives over all 2 ranks" in text and "wrote c2.json" in text
    assert proc.stderr.count("gpucal calibrate --cluster: network between 2 host(s)") == 1  # rank 0 only
    doc = profiles.load(str(tmp_path / "c2.json")).data
    assert [(d["index"], d["host"], d["local_index"]) for d in doc["devices"]] == [(0, 0, 0), (1, 0, 1), (2, 1, 0),
                                                                                  (3, 1, 1)]
    assert sorted((link["src"], link["dst"]) for link in doc["links"]) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    for h in doc["cluster"]["hosts"]:
        assert h["host"]["simulator_check"]["ran"]
    # hybrid: TP inside each host over its measured link, PP across the hosts over the measured network
    plan = json.loads(run_gpucal("plan", "--gpu", str(tmp_path / "c2.json"), "--model", "llama-3.1-8b", "--cards", "4",
                                 "--strategy", "hybrid", "--tp", "2", "--batch", "4", "--json").stdout)
    assert plan["inputs"]["cards_per_host"] == 2 and plan["pp_network_hops"] == 2
    assert plan["inputs"]["comm_model"] == "seed"  # one rank per host: no all-reduce was measured inside a host
    assert "host-staged" in plan["inputs"]["link"]["name"]
    assert plan["inputs"]["net"]["beta_Bps"] == pytest.approx(resolve_link("eth10g").spec.beta_Bps, rel=0.03)


def test_refusals_name_the_flag_once(run_mpi, tmp_path):
    proc = run_mpi(2, "calibrate", "--cluster", "--simulate", "rtx4090:1", "-o", "x.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--simulate-net: required" in proc.stderr
    proc = run_mpi(1, "calibrate", "--cluster", "--simulate", "rtx4090:1", "--simulate-net", "eth1g")
    assert proc.returncode == 2 and "mpiexec -n N" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_gpucal("calibrate", "--simulate", "rtx4090:1", "--simulate-net", "eth1g")
    assert proc.returncode == 2 and "--simulate-net: only with --cluster" in proc.stderr
    (tmp_path / "keep.json").write_text("{}")
    proc = run_mpi(2, "calibrate", "--cluster", "--simulate", "rtx4090:1", "--simulate-net", "eth1g", "-o",
                   "keep.json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--force" in proc.stderr
    assert (tmp_path / "keep.json").read_text() == "{}"


def test_a_cluster_without_gpus_fails_once_naming_the_rank(run_mpi, tmp_path):
    proc = run_mpi(2, "calibrate", "--cluster", "-o", "real.json")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("error:") == 1 and "rank 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "real.json").exists()


def test_hosts_of_two_ranks_measure_their_own_allreduce_for_tp_inside(run_mpi, tmp_path):
    """2 simulated hosts of 2 cards and 2 ranks each: the all-reduce over all 4 ranks (bound by the
    network) and inside each host (over its cards' host staging); a hybrid plan takes the latter for TP
    and the network for its hops."""
    proc = run_mpi(4, "calibrate", "--cluster", "--simulate", "rtx4090:2", "--simulate-net", "eth10g+per-host=2",
                   "-o", "c22.json", "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    doc = profiles.load(str(tmp_path / "c22.json")).data
    assert [h["ranks"] for h in doc["cluster"]["hosts"]] == [[0, 1], [2, 3]]
    assert len(doc["network"]) == 1 and len(doc["devices"]) == 4
    world = [e for e in doc["collectives"] if "host" not in e]
    inside = [e for e in doc["collectives"] if "host" in e]
    assert {(e["nranks"], e["hosts"]) for e in world} == {(4, 2)}
    assert {(e["host"], e["nranks"], e["hosts"]) for e in inside} == {(0, 2, 1), (1, 2, 1)}
    eth = resolve_link("eth10g").spec
    ar = next(e for e in world if e["op"] == "all-reduce")
    assert ar["beta_Bps"]["value"] * ar["busbw_factor"] == pytest.approx(eth.beta_Bps, rel=0.03)
    local = next(e for e in inside if e["op"] == "all-reduce" and e["host"] == 0)
    assert local["beta_Bps"]["value"] > 10 * eth.beta_Bps  # host staging, not the network
    plan = json.loads(run_gpucal("plan", "--gpu", str(tmp_path / "c22.json"), "--model", "llama-3.1-8b", "--cards",
                                 "4", "--strategy", "hybrid", "--tp", "2", "--batch", "4", "--json").stdout)
    assert plan["inputs"]["comm_model"] == "measured" and "inside host" in plan["inputs"]["collective"]["name"]
    s_bytes = 4 * 4096 * 2
    slowest = min((e for e in inside if e["op"] == "all-reduce"), key=lambda e: e["beta_Bps"]["value"])
    assert plan["tp_exchange_time_s"] == pytest.approx(
        slowest["alpha_s"]["value"] + s_bytes / slowest["beta_Bps"]["value"], rel=1e-9)
    assert plan["pp_network_hops"] == 2
    proc = run_mpi(4, "calibrate", "--cluster", "--simulate", "rtx4090:1", "--simulate-net", "eth10g+per-host=2",
                   "-o", "bad.json")
    assert proc.returncode == 2 and "--simulate" in proc.stderr and proc.stderr.count("\n") == 1


def test_an_existing_default_file_is_refused_before_the_network_is_measured(run_mpi, tmp_path):
    args = ("calibrate", "--cluster", "--simulate", "rtx4090:1", "--simulate-net", "eth1g", *FAST)
    first = run_mpi(2, *args)
    assert first.returncode == 0, first.stderr
    (written,) = (tmp_path / "profiles").glob("*.json")
    assert "-cluster-2" in written.name and written.name.endswith("-simulated.json")
    before = written.read_text()
    again = run_mpi(2, *args)
    assert again.returncode == 2 and again.stderr.count("error:") == 1, again.stderr
    assert "exists; pass --force" in again.stderr and "rank 0" not in again.stderr
    assert "network between" not in again.stderr  # refused right after the hosts, before the network
    assert written.read_text() == before


def test_a_file_that_cannot_be_written_names_the_flag(run_mpi):
    proc = run_mpi(2, "calibrate", "--cluster", "--simulate", "rtx4090:1", "--simulate-net", "eth1g", "-o",
                   "/proc/gpucal-no/c.json", *FAST)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1, proc.stderr
    assert "-o: /proc/gpucal-no/c.json: cannot write it" in proc.stderr and "Traceback" not in proc.stderr
