"""The network probe's pure parts, without MPI: sizes, policy, pairs, the entry and the host matrix, the
byte comparison, and the flag checks of ``gpucal probe net``."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from gpucal.calibrate.network import NetReport, entry_for, host_matrix
from gpucal.profiles.model import NetworkEntry, RateQuantity, TimeQuantity
from gpucal.commands.probe.net import _print_text, config_from_args
from gpucal.errors import InputError
from gpucal.kernels.comm import RankInfo, World
from gpucal.probes.base import Result
from gpucal.probes.net import NET_SIZES, compare_bytes, net_policy, pairs_for, size_label
from gpucal.probes.timing import Timing


class _Comm:
    def __init__(self, size: int):
        self.size = size

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return self.size


def _world(hosts: list[int], simulated: bool = False) -> World:
    ranks = [RankInfo(r, f"h{h}", h, hosts[:r].count(h), hosts.count(h)) for r, h in enumerate(hosts)]
    return World(_Comm(len(hosts)), ranks, simulated, "MPI test", "4.1")


def test_sizes_policy_and_labels():
    assert NET_SIZES[0] == 8 and NET_SIZES[-1] == 64 << 20 and len(NET_SIZES) == 24  # the sweep docs/network.md gives
    assert all(b == 2 * a for a, b in zip(NET_SIZES, NET_SIZES[1:]))
    assert net_policy(1.5).budget_s == 1.5
    assert [size_label(n) for n in (8, 1000, 1024, 3 << 20, 64 << 20, 1 << 30)] == \
        ["8 B", "1000 B", "1 KiB", "3 MiB", "64 MiB", "1 GiB"]


def test_pairs_all_and_leaders():
    w = _world([0, 0, 1, 1, 2])
    assert pairs_for(w, "all") == [(a, b) for a in range(5) for b in range(a + 1, 5)]
    assert pairs_for(w, "leaders") == [(0, 2), (0, 4), (2, 4)]
    assert pairs_for(_world([0, 0, 0, 0]), "leaders") == []
    with pytest.raises(InputError, match="pairs"):
        pairs_for(w, "some")


def _result(i: int, j: int, n: int, seconds: float | None, hosts=(0, 1), status: str = "passed") -> Result:
    params = {"src_rank": i, "dst_rank": j, "src_host": hosts[0], "dst_host": hosts[1], "same_host": hosts[0] == hosts[1],
              "bytes": n, "series": f"net-rank{i}-rank{j}"}
    timing = None if seconds is None else Timing((seconds * 0.99, seconds, seconds * 1.01), 1, 2, "test", False, 0.02)
    return Result("net", f"rank{i}<->rank{j} {size_label(n)}", status, "mpi", "measured", "a<->b", params=params,
                  timing=timing, metrics={"link_Bps": n / seconds} if seconds else {})


def _world_dict(hosts: list[int]) -> dict:
    return _world(hosts).to_dict()


def test_entry_fits_the_passed_sizes():
    alpha_s, beta_Bps = 20e-6, 5e9
    sizes = [8, 1024, 1 << 20, 8 << 20]
    results = [_result(0, 1, n, alpha_s + n / beta_Bps) for n in sizes]
    results.append(_result(0, 1, 64 << 20, None, status="failed"))
    e = entry_for(results, _world_dict([0, 1]), "MPI test", "measured")
    assert e["alpha_s"]["value"] == pytest.approx(alpha_s, rel=1e-9)
    assert e["beta_Bps"]["value"] == pytest.approx(beta_Bps, rel=1e-9)
    assert e["alpha_s"]["statistic"] == "fit" and e["alpha_s"]["n"] == 4 and e["alpha_s"]["source"] == "measured"
    assert "8 B - 64 MiB" in e["alpha_s"]["method"] and "half the round trip" in e["alpha_s"]["method"]
    assert e["beta_Bps"]["byte_convention"] == "n/t one way, t = half the round trip"
    lat = e["latency_s"]
    assert lat["value"] == pytest.approx(alpha_s + 8 / beta_Bps) and lat["statistic"] == "median" and lat["n"] == 3
    assert lat["p10"] < lat["value"] < lat["p90"]
    assert e["r2"] == pytest.approx(1.0) and e["reason"] is None and e["verified"] is False
    assert [p[0] for p in e["points"]] == sizes
    assert (e["src_host"], e["dst_host"], e["same_host"]) == (0, 1, False)
    assert (e["src_hostname"], e["dst_hostname"]) == ("h0", "h1")


def test_entry_without_a_fit_keeps_the_reason():
    results = [_result(0, 1, n, 1e-6) for n in (8, 16)]
    e = entry_for(results, _world_dict([0, 1]), "MPI test", "simulated", "the simulated link x")
    assert e["alpha_s"]["value"] is None and e["beta_Bps"]["value"] is None
    assert "at least 3" in e["reason"] and e["alpha_s"]["reason"] == e["reason"]
    assert "priced by the simulated link x" in e["beta_Bps"]["method"] and e["alpha_s"]["source"] == "simulated"
    assert e["r2"] is None and e["verified"] is True


def test_host_matrix_takes_the_slowest_pair_and_skips_same_host():
    def entry(a, b, beta):
        return {"src_host": a, "dst_host": b, "beta_Bps": {"value": beta}}

    def network_entry(a, b, beta):  # a profile's network[] entry, full and valid
        fit = {"method": "fit t = alpha + n/beta", "statistic": "fit", "n": 8}
        return NetworkEntry.model_validate({
            "src_rank": a, "dst_rank": b + 3, "src_host": a, "dst_host": b, "same_host": a == b, "transport": "MPI",
            "alpha_s": TimeQuantity.measured(2e-6, **fit).to_json(),
            "beta_Bps": (RateQuantity.measured(beta, **fit) if beta is not None else
                         RateQuantity.null("no fit", "measured", **fit)).to_json()})

    triples = [(0, 0, 9e9), (0, 1, 2e9), (0, 1, 1e9), (1, 2, None), (0, 2, 3e9)]
    m = host_matrix(3, [network_entry(*t) for t in triples])
    assert m == [[None, 1e9, 3e9], [1e9, None, None], [3e9, None, None]]
    # a report reads its entries as built, with the same rule
    report = NetReport([], [entry(*t) for t in triples], {"hosts": ["a", "b", "c"]}, "measured")
    assert report.matrix() == m
    report = NetReport([], [entry(0, 1, 2e9)], {"hosts": ["a", "b"]}, "measured")
    assert report.matrix() == [[None, 2e9], [2e9, None]]
    assert report.to_dict()["matrix_Bps"] == report.matrix() and not report.failed


def test_compare_names_the_first_differing_byte():
    data = np.arange(100, dtype=np.uint8)
    assert compare_bytes(data.copy(), data, "rank 1").ok
    got = data.copy()
    got[[7, 40]] ^= 0xFF
    c = compare_bytes(got, data, "rank 1")
    assert not c.ok and c.index == (7,) and c.got == float(got[7]) and c.expected == 7.0 and c.max_abs_err == 2.0


def _args(**over) -> argparse.Namespace:
    base = dict(name="net", list=False, backend="auto", device=0, dtype=None, sizes=None, batches=None, kernels=None,
                gemv_shape=None, pairs=None, budget=None, simulate_net=None, ops=None, hidden=None, graphs=False,
                json=False)
    base.update(over)
    return argparse.Namespace(**base)


def test_flags():
    c = config_from_args(_args(sizes="8B..1KiB", budget=0.1, simulate_net="eth1g+noise=0.01+seed=3"))
    assert c.sizes == tuple(1 << p for p in range(3, 11)) and c.budget_s == 0.1 and c.pairs == "all"
    assert c.simulate.name == "eth1g" and c.simulate.noise_frac == 0.01 and c.simulate.seed == 3
    assert config_from_args(_args()).sizes is None
    for over, flag in ((dict(backend="cupy"), "--backend"), (dict(device=1), "--device"), (dict(dtype=("fp16",)), "--dtype"),
                       (dict(batches=(1,)), "--batches"), (dict(kernels=("copy",)), "--kernels"),
                       (dict(gemv_shape="4x4"), "--gemv-shape"), (dict(pairs="0-1"), "--pairs"),
                       (dict(ops=("all-reduce",)), "--ops"), (dict(hidden=8), "--hidden"), (dict(graphs=True), "--graphs"),
                       (dict(sizes="8B,8B,16B"), "--sizes"), (dict(budget=0.0), "--budget"),
                       (dict(simulate_net="nope"), "--simulate-net")):
        with pytest.raises(InputError, match=flag):
            config_from_args(_args(**over))


def test_an_mpi_protocol_switch_gives_two_regimes_that_the_text_names_as_the_json_does(capsys):
    """Eager to 4 KiB, rendezvous from 8 KiB: the entry keeps both regimes, alpha of the small messages, beta
    of the large, and the text's line for the pair says so (and that one size stopped sampling noisy)."""
    sizes = [8 << k for k in range(22)]  # 8 B .. 16 MiB
    results = [_result(0, 1, n, 1.6e-6 + n / 8e9 if n < 8192 else 4e-6 + n / 14e9) for n in sizes]
    t = results[3].timing
    results[3] = Result(**{**results[3].__dict__, "timing": Timing(t.samples_s, 1, 2, "test", True, 0.02)})
    world = _world_dict([0, 1])
    e = entry_for(results, world, "MPI test", "measured")
    assert [(p["lo_bytes"], p["hi_bytes"]) for p in e["pieces"]] == [(8, 4096), (8192, 16 << 20)]
    assert e["alpha_s"]["value"] == pytest.approx(1.6e-6, rel=1e-6) and e["alpha_s"]["n"] == 10
    assert e["beta_Bps"]["value"] == pytest.approx(14e9, rel=1e-6) and e["beta_Bps"]["n"] == 12
    assert "2 regimes (from 8 KiB)" in e["beta_Bps"]["method"] and "mpi4py" in e["beta_Bps"]["method"]
    assert e["poor_fit"] is False
    _print_text(NetReport(results, [e], world, "measured"))
    out = capsys.readouterr().out
    assert "rank0<->rank1: 2 regimes (at 8 KiB); noisy 1/22 sizes" in out
    assert "mpi4py" in out
