"""The cluster profile (``calibrate/cluster.py``) and how the planner reads it: the network between hosts for
PP, the measured all-reduce for TP, the hosts' size for the layout, and the NICs a target needs."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import run_gpucal

from gpucal import profiles
from gpucal.calibrate.cluster import merge_cluster
from gpucal.errors import ProfileError
from gpucal.profiles.queries import cards_per_host, profile_link, profile_network

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
ETH_ALPHA_S, ETH_BETA_BPS = 60e-6, 125e6  # the synthetic network: 1 Gbit/s with 60 µs per message
AR_ALPHA_S, AR_BETA_BPS = 180e-6, 100e6  # the synthetic all-reduce over 4 ranks on 2 hosts


def _q(value, source="simulated"):
    return {"value": value, "source": source, "method": "fit t = alpha + n/beta", "statistic": "fit", "n": 24}


def _world(hosts=2, per_host=2):
    ranks = [{"rank": h * per_host + i, "hostname": f"node{h}", "host": h, "local_rank": i, "local_size": per_host}
             for h in range(hosts) for i in range(per_host)]
    return {"size": hosts * per_host, "hosts": [f"node{h}" for h in range(hosts)], "simulated_hosts": False,
            "library": "MPICH Version: 5.0.2", "mpi_version": "4.1", "ranks": ranks}


def _host(h):
    doc = json.loads(FIXTURE.read_text())
    doc["host"]["hostname"] = f"node{h}"
    doc["name"] = f"node{h}-2xrtx-4090-simulated"
    return doc


def _merge(host_docs, *args, **kwargs):
    """``merge_cluster`` of host profiles given as JSON (validated first, as a cluster run does)."""
    return merge_cluster([profiles.validate(doc, f"host{h}.json").profile for h, doc in enumerate(host_docs)],
                         *args, **kwargs)


def _network(beta_Bps=ETH_BETA_BPS, alpha_s=ETH_ALPHA_S):
    return [{"src_rank": 0, "dst_rank": 2, "src_host": 0, "dst_host": 1, "src_hostname": "node0",
             "dst_hostname": "node1", "same_host": False, "transport": "MPICH", "alpha_s": _q(alpha_s),
             "beta_Bps": _q(beta_Bps), "r2": 0.999, "points": [[8, 6e-5], [1 << 20, 8.4e-3]], "verified": True}]


def _allreduce(nranks=4, hosts=2):
    return {"op": "all-reduce", "nranks": nranks, "hosts": hosts, "ranks_per_host": nranks // hosts,
            "graphs": False, "library": "virtual ring (simulated)", "transport": None, "dtype": "float32",
            "alpha_s": _q(AR_ALPHA_S), "beta_Bps": _q(AR_BETA_BPS), "busbw_factor": 2 * (nranks - 1) / nranks,
            "r2": 0.999, "points": [[16384, 3.4e-4], [16777216, 0.168]], "algbw_Bps": [4.8e7, 1e8],
            "busbw_Bps": [7.2e7, 1.5e8], "verified": True, "reason": None}


def _cluster(network=None, collectives=None, hosts=2):
    return _merge([_host(h) for h in range(hosts)], _world(hosts), _network() if network is None else network,
                         [_allreduce()] if collectives is None else collectives, name="twohosts",
                         created="2026-11-28T00:00:00Z", version="0.0.0", command="gpucal calibrate --cluster")


def test_merge_numbers_devices_across_hosts_and_validates():
    doc = _cluster()
    profiles.validate(doc, "twohosts.json")
    assert [(d["index"], d["host"], d["local_index"]) for d in doc["devices"]] == [(0, 0, 0), (1, 0, 1), (2, 1, 0),
                                                                                  (3, 1, 1)]
    assert [(link["src"], link["dst"], link["host"]) for link in doc["links"]] == [(0, 1, 0), (1, 0, 0), (2, 3, 1),
                                                                                  (3, 2, 1)]
    assert {f["src"] for f in doc["fits"]} == {0, 1, 2, 3}
    assert [link["series"] for link in doc["links"]] == ["host-staged-dev0->dev1", "host-staged-dev1->dev0",
                                                         "host-staged-dev2->dev3", "host-staged-dev3->dev2"]
    assert len({f["series"] for f in doc["fits"]}) == len(doc["fits"])  # no two hosts' series share a name
    assert {k["device"] for k in doc["kernels"]} == {0, 1, 2, 3}
    assert [h["ranks"] for h in doc["cluster"]["hosts"]] == [[0, 1], [2, 3]]
    assert [h["devices"] for h in doc["cluster"]["hosts"]] == [[0, 1], [2, 3]]
    assert doc["source"] == "simulated" and doc["host"]["command"] == "gpucal calibrate --cluster"
    assert cards_per_host(doc) == 2


def test_anomalies_name_cluster_wide_devices():
    hosts = [_host(0), _host(1)]
    hosts[1]["host"]["anomalies"] = [{"kind": "downtrained", "device": 1, "text": "dev1: PCIe Gen3 x16 of Gen4"},
                                     {"kind": "p2p-corrupt", "src": 0, "dst": 1, "text": "dev0->dev1: bytes differ"}]
    doc = _merge(hosts, _world(), _network(), [], name="x", created="2026-11-28", version="0")
    a, b = [x for x in doc["host"]["anomalies"] if x["host"] == 1]
    assert (a["device"], a["text"]) == (3, "node1: dev3: PCIe Gen3 x16 of Gen4")
    assert (b["src"], b["dst"], b["text"]) == (2, 3, "node1: dev2->dev3: bytes differ")


def test_merge_never_calls_a_simulated_part_measured():
    hosts = [_host(0), _host(1)]
    for h in hosts:
        h["source"] = "measured"
    doc = _merge(hosts, _world(), _network(), [], name="x", created="2026-11-28", version="0")
    assert doc["source"] == "simulated"  # the network entries say simulated
    net = _network()
    for key in ("alpha_s", "beta_Bps"):
        net[0][key]["source"] = "measured"
    assert _merge(hosts, _world(), net, [], name="x", created="2026-11-28", version="0")["source"] == "measured"


def test_merge_refuses_no_hosts_and_notes_what_is_missing():
    with pytest.raises(ValueError):
        _merge([], _world(), [], [], name="x", created="2026-11-28", version="0")
    doc = _merge([_host(0)], _world(1), [], [], name="x", created="2026-11-28", version="0",
                        network_note="one host", collectives_note="CuPy is not installed")
    assert "network: one host" in doc["notes"] and "collectives: CuPy is not installed" in doc["notes"]
    profiles.validate(doc, "x.json")


@pytest.fixture
def cluster_file(tmp_path):
    path = tmp_path / "twohosts.json"
    path.write_text(json.dumps(_cluster()))
    return str(path)


def _plan(cluster_file, *args):
    proc = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--json", "--step", "seed",
                      *args)  # the article's step: its comm models (the measured step: test_measured_step.py)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_pp_across_hosts_uses_the_measured_network(cluster_file):
    plan = _plan(cluster_file, "--cards", "4", "--strategy", "pp", "--batch", "8")
    i = plan["inputs"]
    assert i["cards_per_host"] == 2  # the hosts' size, from the profile
    assert i["net"]["alpha_s"] == ETH_ALPHA_S and i["net"]["beta_Bps"] == ETH_BETA_BPS
    assert i["net"]["source"] == "simulated" and "host0<->host1" in i["net"]["name"]
    same = _plan(cluster_file, "--cards", "4", "--strategy", "pp", "--batch", "8", "--net",
                 f"alpha={ETH_ALPHA_S * 1e6}us,beta={ETH_BETA_BPS}")
    assert plan["token_latency_s"] == pytest.approx(same["token_latency_s"], rel=1e-12)
    assert plan["pp_network_hops"] == 2  # 2 hosts: into host 1, and back to host 0


def test_tp_over_the_measured_group_uses_the_measured_allreduce(cluster_file):
    plan = _plan(cluster_file, "--cards", "4", "--strategy", "tp", "--batch", "8")
    i = plan["inputs"]
    assert i["comm_model"] == "measured" and i["collective"]["alpha_s"] == AR_ALPHA_S
    nbytes = 8 * 8192 * 2
    assert plan["tp_exchange_time_s"] == pytest.approx(AR_ALPHA_S + nbytes / AR_BETA_BPS, rel=1e-12)
    assert plan["tp_comm_time_s"] == pytest.approx(160 * (AR_ALPHA_S + nbytes / AR_BETA_BPS), rel=1e-12)
    seed = _plan(cluster_file, "--cards", "4", "--strategy", "tp", "--batch", "8", "--comm", "seed")
    assert seed["inputs"]["comm_model"] == "seed" and seed["inputs"]["collective"] is None
    assert seed["tp_exchange_time_s"] == pytest.approx(ETH_ALPHA_S + nbytes / ETH_BETA_BPS, rel=1e-12)
    text = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--cards", "4", "--strategy", "tp",
                      "--batch", "8", "--step", "seed").stdout
    assert "measured all-reduce" in text and "all-reduce over 4 ranks" in text


def test_tp_over_a_group_not_measured_falls_back_or_refuses(cluster_file):
    plan = _plan(cluster_file, "--cards", "2", "--strategy", "tp", "--batch", "8")  # within one host
    assert plan["inputs"]["comm_model"] == "seed" and plan["inputs"]["collective"] is None
    proc = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--cards", "2", "--strategy", "tp",
                      "--batch", "8", "--comm", "measured")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--comm: measured" in proc.stderr and "4 ranks on 2 host(s)" in proc.stderr
    proc = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--strategy", "tp", "--sweep",
                      "cards=2:4", "--batch", "1", "--comm", "measured")
    assert proc.returncode == 2 and "--comm" in proc.stderr


def test_nics_needed_from_the_measured_network(cluster_file):
    """The article's title question, from a cluster profile: 8 hosts of one card in a pipeline at 5 tokens/s."""
    plan = _plan(cluster_file, "--cards", "8", "--cards-per-host", "1", "--strategy", "pp", "--batch", "32",
                 "--target-tps", "5", "--nic", "1Gbit/s")
    t = plan["target"]
    assert t["solved_link"] == "net" and t["nic_beta_Bps"] == 125e6
    # 8 hops of S = 32·8192·2 bytes on the measured alpha: t = 8·t_card + 8·(alpha + S/beta) <= 0.2 s
    s_bytes = 32 * 8192 * 2
    budget_s = 0.2 - 8 * plan["card_time_s"] - 8 * ETH_ALPHA_S
    assert t["required_beta_Bps"] == pytest.approx(8 * s_bytes / budget_s, rel=1e-9)
    assert t["nics"] == math.ceil(t["required_beta_Bps"] / 125e6)
    text = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--cards", "8", "--cards-per-host", "1",
                      "--strategy", "pp", "--batch", "32", "--target-tps", "5", "--nic", "1Gbit/s").stdout
    assert "NICs needed" in text and "net bandwidth needed" in text


def test_nics_scale_the_measured_allreduce_across_hosts(cluster_file):
    plan = _plan(cluster_file, "--cards", "4", "--strategy", "tp", "--batch", "8", "--target-tps", "10")
    t = plan["target"]
    assert plan["inputs"]["comm_model"] == "measured" and t["solved_link"] == "net"
    # with beta_net = x, the all-reduce's beta is AR_BETA·x/ETH_BETA: t = t_card + 160·(alpha + S·ETH/(AR·x))
    s_bytes = 8 * 8192 * 2
    budget_s = 1 / 10 - plan["card_time_s"] - 160 * AR_ALPHA_S
    expected = 160 * s_bytes * ETH_BETA_BPS / AR_BETA_BPS / budget_s
    assert t["required_beta_Bps"] == pytest.approx(expected, rel=1e-9)
    assert t["nics"] == math.ceil(expected / ETH_BETA_BPS)


def test_a_profile_without_a_network_or_one_host_keeps_the_old_defaults(tmp_path):
    doc = _merge([_host(0)], _world(1), [], [], name="onehost", created="2026-11-28", version="0")
    path = tmp_path / "onehost.json"
    path.write_text(json.dumps(doc))
    plan = _plan(str(path), "--cards", "2", "--strategy", "tp", "--batch", "1")
    assert plan["inputs"]["cards_per_host"] == 2 and plan["inputs"]["net"] is None
    same_host = copy.deepcopy(_network())
    same_host[0]["same_host"] = True
    doc = _cluster(network=same_host)
    path.write_text(json.dumps(doc))
    proc = run_gpucal("plan", "--gpu", str(path), "--model", "seed-70b", "--ignore-memory", "--cards", "4", "--strategy", "pp",
                      "--batch", "1")
    assert proc.returncode == 2 and "--net" in proc.stderr  # ranks on one host measure no network


def test_show_and_export_read_a_cluster_profile(cluster_file, tmp_path):
    text = run_gpucal("profiles", "show", cluster_file).stdout
    assert "network host0<->host1" in text and "alpha 60 µs, beta 125 MB/s" in text
    assert "all-reduce over 4 ranks" in text and "alpha 180 µs, beta 100 MB/s" in text
    proc = run_gpucal("profiles", "export", cluster_file, "--format", "aiconfigurator", "-o", str(tmp_path / "x"),
                      "--json")
    assert proc.returncode == 0, proc.stderr

    data = yaml.safe_load((tmp_path / "x" / "twohosts.yaml").read_text())
    assert data["node"]["num_gpus_per_node"] == 2 and data["node"]["inter_node_bw"] == ETH_BETA_BPS


def test_the_hosts_default_link_is_kept_where_they_agree():
    one_card = []
    for h in range(2):
        doc = _host(h)
        doc["devices"], doc["links"] = doc["devices"][:1], []
        doc["plan_defaults"] = {"link": "pcie4-x16"}
        one_card.append(doc)
    merged = _merge(one_card, _world(2, 1), _network(), [], name="x", created="2026-11-28", version="0")
    assert merged["plan_defaults"] == {"link": "pcie4-x16"}
    one_card[1]["plan_defaults"] = {"link": "pcie5-x16"}
    merged = _merge(one_card, _world(2, 1), _network(), [], name="x", created="2026-11-28", version="0")
    assert "plan_defaults" not in merged


def test_a_measured_allreduce_is_left_out_when_its_network_is_replaced(cluster_file):
    plan = _plan(cluster_file, "--cards", "4", "--strategy", "tp", "--batch", "8", "--net", "ib400g")
    assert plan["inputs"]["comm_model"] == "seed" and plan["inputs"]["collective"] is None
    proc = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--cards", "4",
                      "--strategy", "tp", "--batch", "8", "--net", "ib400g", "--comm", "measured")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--net replaces" in proc.stderr


def test_the_link_solver_scales_an_allreduce_measured_inside_a_host(tmp_path):
    inside = dict(_allreduce(nranks=2, hosts=1), host=0)
    path = tmp_path / "inside.json"
    path.write_text(json.dumps(_cluster(collectives=[inside])))
    plan = _plan(str(path), "--cards", "2", "--strategy", "tp", "--batch", "8", "--target-tps", "10")
    t = plan["target"]
    assert plan["inputs"]["comm_model"] == "measured" and t["solved_link"] == "link"
    link_beta = plan["inputs"]["link"]["beta_Bps"]
    # the all-reduce's beta scales with the link's: t = t_card + 160·(alpha + S·link_beta/(AR_BETA·x))
    s_bytes = 8 * 8192 * 2
    budget_s = 1 / 10 - plan["card_time_s"] - 160 * AR_ALPHA_S
    expected = 160 * s_bytes * link_beta / AR_BETA_BPS / budget_s
    assert t["required_beta_Bps"] == pytest.approx(expected, rel=1e-9)


def test_a_host_of_no_devices_is_refused_by_the_schema():
    """A cluster host with no devices would divide the planner's cards per host by zero."""
    doc = _cluster()
    doc["cluster"]["hosts"][0]["devices"] = []
    with pytest.raises(ProfileError, match=r"cluster\.hosts\[0\]\.devices"):
        profiles.validate(doc, "twohosts.json")


def test_the_planner_takes_the_slowest_link_and_the_slowest_network_pair():
    """A pipeline moves at the pace of its slowest hop: of several measured fits, the smallest beta (and of
    equal betas, the larger alpha)."""
    data = _cluster(network=[*_network(beta_Bps=2e9, alpha_s=1e-4), *_network(beta_Bps=1e9, alpha_s=1e-4),
                             *_network(beta_Bps=1e9, alpha_s=3e-4)])
    data["links"][1]["beta_Bps"]["value"] = 1e9
    doc = profiles.validate(data, "twohosts.json")
    link = profile_link(doc)
    assert link.spec.beta_Bps == 1e9 and "dev1->dev0" in link.spec.name and "the slowest of 4" in link.spec.name
    net = profile_network(doc)
    assert (net.spec.beta_Bps, net.spec.alpha_s) == (1e9, 3e-4) and "the slowest of 3" in net.spec.name


def test_the_measured_step_takes_the_clusters_allreduce_across_hosts_and_its_nics_scale_it(cluster_file):
    args = ("--cards", "4", "--strategy", "tp", "--batch", "8")
    proc = run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--json", *args,
                      "--target-tps", "10")
    plan = json.loads(proc.stdout)
    assert plan["step"] == "measured" and "all-reduce over 4 ranks" in plan["sources"]["allreduce"]
    s_bytes = 8 * 8192 * 2
    assert plan["tp_exchange_time_s"] == pytest.approx(AR_ALPHA_S + s_bytes / AR_BETA_BPS, rel=1e-12)
    n = 2 * 80 + 1  # two a layer and the embedding's
    assert plan["tp_exchanges"] == n
    # with beta_net = x the all-reduce's beta is AR_BETA·x/ETH_BETA; the rest of the step does not move
    rest = plan["token_latency_s"] - plan["tp_comm_time_s"]
    expected = n * s_bytes * ETH_BETA_BPS / AR_BETA_BPS / (1 / 10 - rest - n * AR_ALPHA_S)
    assert plan["target"]["required_beta_Bps"] == pytest.approx(expected, rel=1e-9)
    replaced = json.loads(run_gpucal("plan", "--gpu", cluster_file, "--model", "seed-70b", "--ignore-memory", "--json",
                                     *args, "--net", "eth10g").stdout)
    assert "allreduce" not in replaced["sources"]  # measured on the network --net replaces: not used
    assert any("--net" in f for f in replaced["fallbacks"]), replaced["fallbacks"]
