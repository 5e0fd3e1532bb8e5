"""``mpiexec -n N gpucal probe collectives``: waived without a GPU, and on virtual machines (the bytes move
over MPI and are checked; the times are priced by the ring model over the slowest link)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gpucal.kernels.virtual_machine import VirtualMachine
from gpucal.probes import collective_nccl as E
from gpucal.probes import collectives as C
from gpucal.profiles import schema as profile_schema
from gpucal.profiles.names import resolve_document
from gpucal.profiles.queries import resolve_link


def _staged(profile: str, count: int):
    doc = resolve_document(profile, "--backend", "profile")
    return VirtualMachine(doc.profile, doc.name, count).staged(0, 1, driver=False)


def _ok(proc):
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    _valid_entries(out["entries"])
    return out


def _valid_entries(entries):
    """Each entry as the profile schema's collectives[] item."""

    schema = profile_schema()
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/collective_entry", "$defs": schema["$defs"]})
    for e in entries:
        validator.validate(e)


def test_waived_without_a_gpu(run_mpi):
    if E.nccl_unavailable() is None:
        pytest.skip("CuPy, a CUDA device and NCCL are present here: the probe runs rather than waives")
    out = _ok(run_mpi(2, "probe", "collectives", "--hidden", "1024", "--budget", "0.05", "--json"))
    assert out["probe"] == "collectives" and out["world"]["size"] == 2
    assert out["waived"] and ("CUDA device" in out["waived"] or "CuPy" in out["waived"])
    assert {r["case"] for r in out["results"]} == set(C.OPS)
    assert all(r["status"] == "waived" and r["reason"] == out["waived"] for r in out["results"])
    assert out["entries"] == []  # nothing measured: no profile entry


def test_virtual_machine_all_ops(run_mpi):
    n = 4
    out = _ok(run_mpi(n, "probe", "collectives", "--backend", "virtual:rtx4090", "--json"))
    assert out["simulated"] is True and out["source"] == "simulated"
    assert out["library"] == "virtual ring (simulated)" and out["nccl_version"] is None
    assert out["results"] and all(r["status"] == "passed" and r["source"] == "simulated" for r in out["results"])
    assert all(r["check"]["ok"] for r in out["results"])
    assert [e["op"] for e in out["entries"]] == list(C.OPS)
    assert all(e["verified"] and e["nranks"] == n and e["hosts"] == 1 for e in out["entries"])
    assert all(e["alpha_s"]["source"] == "simulated" for e in out["entries"])
    staged = _staged("rtx4090", n)  # the RTX 4090 has no P2P: host staging is the link
    assert out["link"]["beta_Bps"] == pytest.approx(staged.beta_Bps)
    ar = next(e for e in out["entries"] if e["op"] == "all-reduce")
    assert ar["busbw_factor"] == pytest.approx(1.5)
    assert ar["points"][0][0] == 16384 and ar["points"][-1][0] == 16 * 2**20
    # beta is S/t (nccl-tests' algbw); times the bus factor it is the link's beta
    assert ar["beta_Bps"]["value"] * ar["busbw_factor"] == pytest.approx(staged.beta_Bps, rel=0.03)
    assert ar["alpha_s"]["value"] == pytest.approx(2 * (n - 1) * staged.alpha_s, rel=0.03)
    largest = ar["points"][-1][0]
    # the ring: 2(n-1) steps, each alpha plus a chunk of S/n bytes over beta
    ring_s = 2 * (n - 1) * staged.alpha_s + 2 * (n - 1) / n * largest / staged.beta_Bps
    expected = largest / ring_s * 2 * (n - 1) / n
    assert ar["busbw_Bps"][-1] == pytest.approx(expected, rel=1e-6)
    assert 0.85 * staged.beta_Bps < ar["busbw_Bps"][-1] < staged.beta_Bps
    ag = next(e for e in out["entries"] if e["op"] == "all-gather")
    assert all(s % (n * 4) == 0 for s, _ in ag["points"])


def test_simulated_net_between_hosts(run_mpi):
    args = ("probe", "collectives", "--backend", "virtual:h100-sxm", "--simulate-net", "ib400g", "--hidden", "1024",
            "--ops", "all-reduce,send-recv", "--budget", "0.05")
    out = _ok(run_mpi(4, *args, "--json"))
    assert len(out["world"]["hosts"]) == 4 and out["world"]["simulated_hosts"]
    assert all(e["hosts"] == 4 and e["ranks_per_host"] == 1 and e["verified"] for e in out["entries"])
    ib = 50e9  # ib400g: 400 Gbit/s
    for e in out["entries"]:
        assert e["beta_Bps"]["value"] * e["busbw_factor"] == pytest.approx(ib, rel=0.03)
    sr = next(e for e in out["entries"] if e["op"] == "send-recv")

    assert sr["alpha_s"]["value"] == pytest.approx(resolve_link("ib400g").spec.alpha_s, rel=0.03)
    text = run_mpi(4, *args)
    assert text.returncode == 0, text.stderr
    assert "simulated: " in text.stdout and "ib400g" in text.stdout
    assert text.stdout.count("gpucal probe collectives:") == 1  # rank 0 alone prints


def test_graphs_on_a_virtual_machine_are_waived(run_mpi):
    out = _ok(run_mpi(2, "probe", "collectives", "--backend", "virtual:rtx4090", "--ops", "send-recv", "--hidden",
                      "1024", "--graphs", "--json"))
    assert [e["graphs"] for e in out["entries"]] == [False]  # a waived series has no profile entry
    waived = [r for r in out["results"] if r["params"]["series"] == "coll-send-recv-graph"]
    assert len(waived) == 1 and waived[0]["status"] == "waived" and "GPU" in waived[0]["reason"]


def test_bad_ops_refused_once(run_mpi):
    proc = run_mpi(2, "probe", "collectives", "--ops", "all-reduce,allreduce")
    assert proc.returncode == 2
    assert proc.stderr.count("--ops") == 1 and "allreduce" in proc.stderr


def test_flags_that_do_not_apply(run_mpi):
    proc = run_mpi(2, "probe", "collectives", "--simulate-net", "ib400g")
    assert proc.returncode == 2 and proc.stderr.count("--simulate-net") == 1
    proc = run_mpi(2, "probe", "collectives", "--kernels", "copy")
    assert proc.returncode == 2 and "--kernels" in proc.stderr


def test_more_ranks_than_virtual_gpus(run_mpi):
    proc = run_mpi(3, "probe", "collectives", "--backend", "virtual:rtx4090:2", "--hidden", "1024")
    assert proc.returncode == 2 and "one rank per GPU" in proc.stderr
