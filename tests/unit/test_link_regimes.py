"""A measured link with regimes (``pieces``, from ``calibrate.fit.fit_pieces``): the planner costs each
transfer at the regime its size falls in, from a profile's links[] and network[] alike, and the solvers
scale every regime's bandwidth together."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import run_gpucal
from gpucal import profiles
from gpucal.profiles.queries import profile_link, profile_network
from gpucal.plan import LinkSpec, evaluate
from gpucal.plan.models import PRESETS
from gpucal.plan.spec import GpuSpec, LinkPiece

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json"
GPU = GpuSpec("card", memory_bandwidth_Bps=1e12, flops=330e12, memory_bytes=80e9)
MODEL = PRESETS["seed-70b"]  # h 8192, L 80: S = B·h·2 = 16 KiB at batch 1
# small messages: 20 µs, 10 GB/s; from 256 KiB: 35 µs, 25 GB/s
TWO = LinkSpec("two regimes", 20e-6, 25e9, (LinkPiece(0.0, 20e-6, 10e9), LinkPiece(262144.0, 35e-6, 25e9)))


def test_at_picks_each_sizes_regime():
    alpha, beta = TWO.at(np.array([1, 16384, 262143, 262144, 1e9]))
    assert alpha.tolist() == [20e-6, 20e-6, 20e-6, 35e-6, 35e-6]
    assert beta.tolist() == [10e9, 10e9, 10e9, 25e9, 25e9]
    plain = LinkSpec("plain", 30e-6, 32e9)
    assert [a.tolist() for a in plain.at(4096)] == [30e-6, 32e9]


@pytest.mark.parametrize("batch, alpha_s, beta_Bps", [(1, 20e-6, 10e9), (8, 20e-6, 10e9), (16, 35e-6, 25e9),
                                                       (330, 35e-6, 25e9)])
def test_tp_exchanges_cost_their_regime(batch, alpha_s, beta_Bps):
    s_bytes = batch * 8192 * 2
    step = evaluate(MODEL, GPU, batch=batch, tp=8, pp=1, link=TWO).row()
    assert step["transfer_bytes"] == s_bytes
    assert step["tp_exchange_time_s"] == pytest.approx(alpha_s + s_bytes / beta_Bps, rel=1e-12)
    assert step["tp_comm_time_s"] == pytest.approx(160 * (alpha_s + s_bytes / beta_Bps), rel=1e-12)


def test_pp_hops_over_the_network_cost_their_regime_in_a_sweep():
    net = LinkSpec("net", 50e-6, 125e6, (LinkPiece(0.0, 50e-6, 100e6), LinkPiece(65536.0, 80e-6, 125e6)))
    batches = np.array([1, 2, 4, 8])
    step = evaluate(MODEL, GPU, batch=batches, tp=1, pp=4, link=TWO, net=net, cards_per_host=1)
    s_bytes = batches * 8192 * 2
    per_hop = np.where(s_bytes < 65536, 50e-6 + s_bytes / 100e6, 80e-6 + s_bytes / 125e6)
    assert step.pp_comm_time_s == pytest.approx(4 * per_hop, rel=1e-12)


def test_with_beta_scales_every_regime():
    faster = TWO.with_beta(50e9)
    assert faster.beta_Bps == 50e9 and [p.beta_Bps for p in faster.pieces] == [20e9, 50e9]
    assert [p.alpha_s for p in faster.pieces] == [20e-6, 35e-6]
    ideal = TWO.with_beta(math.inf)
    assert all(math.isinf(p.beta_Bps) for p in ideal.pieces)


def test_pieces_must_run_up_in_size():
    with pytest.raises(ValueError, match="ordered"):
        LinkSpec("bad", 1e-6, 1e9, (LinkPiece(0.0, 1e-6, 1e9), LinkPiece(0.0, 2e-6, 2e9)))


def _pieces(*regimes):
    return [{"lo_bytes": lo, "hi_bytes": hi, "alpha_s": a, "beta_Bps": b, "r2": 1.0, "n": 4,
             "max_abs_residual_frac": 0.0} for lo, hi, a, b in regimes]


def _doc(data):
    return profiles.validate(data, "test-profile.json")


def test_a_profiles_link_with_regimes_reaches_the_planner():
    data = json.loads(FIXTURE.read_text())
    for link in data["links"]:
        link["pieces"] = _pieces((4, 131072, 20e-6, 12e9), (262144, 16 << 20, 31e-6, link["beta_Bps"]["value"]))
    choice = profile_link(_doc(data))
    beta = data["links"][0]["beta_Bps"]["value"]
    assert [(p.from_bytes, p.alpha_s, p.beta_Bps) for p in choice.spec.pieces] == [(0.0, 20e-6, 12e9),
                                                                                    (262144.0, 31e-6, beta)]
    step = evaluate(MODEL, GPU, batch=1, tp=2, pp=1, link=choice.spec).row()
    assert step["tp_exchange_time_s"] == pytest.approx(20e-6 + 16384 / 12e9, rel=1e-12)


def test_a_profile_without_regimes_plans_as_before():
    data = json.loads(FIXTURE.read_text())
    choice = profile_link(_doc(data))
    assert choice.spec.pieces == ()
    link = data["links"][0]
    assert (choice.spec.alpha_s, choice.spec.beta_Bps) == (link["alpha_s"]["value"], link["beta_Bps"]["value"])


def test_a_networks_regimes_reach_the_planner_and_the_nic_solver(tmp_path):
    data = json.loads(FIXTURE.read_text())
    q = {"source": "simulated", "method": "fit", "statistic": "fit", "n": 24}
    data["network"] = [{"src_rank": 0, "dst_rank": 2, "src_host": 0, "dst_host": 1, "same_host": False,
                        "alpha_s": dict(q, value=40e-6), "beta_Bps": dict(q, value=125e6),
                        "pieces": _pieces((8, 4096, 40e-6, 60e6), (8192, 64 << 20, 90e-6, 125e6))}]
    doc = _doc(copy.deepcopy(data))
    net = profile_network(doc).spec
    assert [p.from_bytes for p in net.pieces] == [0.0, 8192.0]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    out = run_gpucal("plan", "--gpu", str(path), "--model", "seed-70b", "--cards", "2", "--strategy", "pp",
                     "--batch", "1", "--cards-per-host", "1", "--target-tps", "2", "--ignore-memory", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    s_bytes = 8192 * 2  # batch 1: 16 KiB, in the second regime
    assert plan["inputs"]["net"]["pieces"][1] == {"from_bytes": 8192.0, "alpha_s": 90e-6, "beta_Bps": 125e6}
    assert plan["pp_comm_time_s"] == pytest.approx(2 * (90e-6 + s_bytes / 125e6), rel=1e-12)
    # the bandwidth a target needs: every regime scales with the NICs, so t = t_inf + 2·S/beta still holds
    t_inf = plan["token_latency_s"] - 2 * s_bytes / 125e6
    assert plan["target"]["required_beta_Bps"] == pytest.approx(2 * s_bytes / (1 / 2 - t_inf), rel=1e-9)
    text = run_gpucal("plan", "--gpu", str(path), "--model", "seed-70b", "--cards", "2", "--strategy", "pp",
                      "--batch", "1", "--cards-per-host", "1", "--ignore-memory")
    assert text.returncode == 0, text.stderr
    assert "regimes: from 0 B alpha 40 µs beta 60 MB/s, from 8 KiB alpha 90 µs beta 125 MB/s" in text.stdout


def test_a_ring_step_costs_the_regime_of_its_chunk_and_a_measured_all_reduce_that_of_s():
    """The ring moves S/N per step in 2(N-1) steps; at batch 16, S = 256 KiB (second regime) but each of the
    8 cards' steps moves 32 KiB (first regime)."""
    s_bytes, n = 16 * 8192 * 2, 8
    step = evaluate(MODEL, GPU, batch=16, tp=n, pp=1, link=TWO, comm="ring").row()
    chunk = s_bytes / n
    assert step["tp_exchange_time_s"] == pytest.approx(2 * (n - 1) * (20e-6 + chunk / 10e9), rel=1e-12)
    measured = LinkSpec("all-reduce", 30e-6, 40e9, (LinkPiece(0.0, 30e-6, 20e9), LinkPiece(131072.0, 50e-6, 40e9)))
    step = evaluate(MODEL, GPU, batch=16, tp=n, pp=1, link=TWO, comm="measured", collective=measured).row()
    assert step["tp_exchange_time_s"] == pytest.approx(50e-6 + s_bytes / 40e9, rel=1e-12)
