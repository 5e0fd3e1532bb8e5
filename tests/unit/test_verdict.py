"""The P2P verdict per pair of devices, and the series fits it rests on."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from gpucal.calibrate.build import link_pieces
from gpucal.calibrate.fit import fit_pieces
from gpucal.calibrate.health import anomalies
from gpucal.calibrate.links import SeriesFit, find, oneshot_alpha, series_fits
from gpucal.calibrate.verdict import VERDICTS, PairVerdict, pair_verdict, pcie_load_of
from gpucal import profiles
from gpucal.probes.base import Result
from gpucal.probes.timing import Timing
from gpucal.probes.topology import GpuTopo, PairTopo, Topology
from gpucal.profiles.model import Profile, RateQuantity, TimeQuantity

SIZES = [4096, 1 << 20, 16 << 20, 256 << 20]
OK = {"read": "ok", "write": "ok", "nvlink": "not supported", "atomics": "not supported"}
NVLINK_OK = {"read": "ok", "write": "ok", "nvlink": "ok", "atomics": "ok"}


def exact_fit(alpha_s: float, beta_Bps: float):
    return fit_pieces(SIZES, [alpha_s + n / beta_Bps for n in SIZES])


def series(path: str, engine: str, beta_Bps: float | None, src: int = 0, dst: int = 1, verified: bool = True,
           failures: tuple[str, ...] = (), reason: str | None = None, peak_Bps: float | None = None) -> SeriesFit:
    fit = exact_fit(10e-6, beta_Bps) if beta_Bps else None
    name = f"{path}-{engine}-dev{src}->dev{dst}" if engine != "staged" else f"{path}-dev{src}->dev{dst}"
    return SeriesFit(name, path, engine, None, src, dst, "simulated", fit, reason, verified, failures,
                     len(SIZES), peak_Bps)


def gpu(index: int, gen: int = 4, gen_max: int = 4, width: int = 16, width_max: int = 16) -> GpuTopo:
    return GpuTopo(index, index, "GPU", f"00000000:{0x18 + 0x10 * index:02X}:00.0", 0, "0-31", gen, gen_max,
                   width, width_max)


def topology(p2p: dict | None = None, nvlinks: int = 0, via: str | None = None, devices=None,
             ancestor: str = "host-bridge") -> Topology:
    p2p = OK if p2p is None else p2p
    pairs = (PairTopo(0, 1, ancestor, nvlinks, via, dict(p2p)), PairTopo(1, 0, ancestor, nvlinks, via, dict(p2p)))
    return Topology(True, "test", "simulated", tuple(devices or (gpu(0), gpu(1))), pairs)


def staged_fits(beta_Bps: float = 20e9) -> list[SeriesFit]:
    return [series("driver-staged", "ce", 0.9 * beta_Bps), series("host-staged", "staged", beta_Bps)]


# --- verdict branches ---------------------------------------------------------------------------------


def test_no_peer_access_is_host_staged():
    v = pair_verdict(0, 1, False, topology(p2p={"read": "GPU not supported"}), staged_fits())
    assert v.verdict == "host-staged"
    assert v.flags == () and v.label == "host-staged"
    assert any("not possible" in r for r in v.reasons)
    assert any("through host memory" in r for r in v.reasons)
    assert v.evidence["runtime_can_access_peer"] is False


def test_no_peer_access_wins_over_a_bad_p2p_series():
    fits = staged_fits() + [series("p2p", "ce", 25e9, verified=False, failures=("c: bytes differ",))]
    assert pair_verdict(0, 1, False, topology(), fits).verdict == "host-staged"


def test_corrupt_p2p():
    bad = series("p2p", "ce", 25e9, verified=False, failures=("p2p-ce-1MiB: verification failed: at index 0",))
    v = pair_verdict(0, 1, True, topology(), staged_fits() + [bad])
    assert v.verdict == "p2p-corrupt"
    assert any("bytes differ on p2p-ce-dev0->dev1" in r and "at index 0" in r for r in v.reasons)
    assert "the staged copies of the same bytes were exact" in v.reasons
    assert v.evidence["paths"]["p2p-ce-dev0->dev1"]["verified"] is False


def test_corrupt_p2p_without_staged_evidence_does_not_claim_exact_staging():
    bad = series("p2p", "sm-read", 25e9, verified=False)
    v = pair_verdict(0, 1, True, topology(), [bad, series("p2p", "ce", 25e9)])
    assert v.verdict == "p2p-corrupt"
    assert "the staged copies of the same bytes were exact" not in v.reasons
    unverified_staged = series("host-staged", "staged", 20e9, verified=False)
    v = pair_verdict(0, 1, True, topology(), [bad, unverified_staged])
    assert v.verdict == "p2p-corrupt"
    assert "the staged copies of the same bytes were exact" not in v.reasons


def test_corrupt_beats_nvlink():
    bad = series("p2p", "ce", 300e9, verified=False)
    assert pair_verdict(0, 1, True, topology(NVLINK_OK, 18, "nvswitch"), [bad]).verdict == "p2p-corrupt"


def test_p2p_slower_than_staged():
    fits = staged_fits(20e9) + [series("p2p", "ce", 9e9)]
    v = pair_verdict(0, 1, True, topology(), fits)
    assert v.verdict == "p2p-slower-than-staged"
    assert any("slower than staging" in r and "9.0 GB/s" in r and "20.0 GB/s" in r for r in v.reasons)


def test_p2p_slower_than_the_best_staged_not_the_first():
    fits = [series("driver-staged", "ce", 5e9), series("host-staged", "staged", 20e9), series("p2p", "ce", 10e9)]
    assert pair_verdict(0, 1, True, topology(), fits).verdict == "p2p-slower-than-staged"


def test_unverified_staged_is_not_compared():
    fits = [series("host-staged", "staged", 20e9, verified=False), series("p2p", "ce", 10e9)]
    assert pair_verdict(0, 1, True, topology(), fits).verdict == "p2p-pcie"


def test_nvlink_from_nvlink_count():
    fits = staged_fits() + [series("p2p", "ce", 370e9)]
    v = pair_verdict(0, 1, True, topology(OK, 18, "direct"), fits)
    assert v.verdict == "nvlink"
    assert any("18 NVLinks (direct)" in r for r in v.reasons)
    assert v.evidence["nvlinks"] == 18 and v.evidence["nvlink_via"] == "direct"


def test_nvlink_from_nvml_p2p_status():
    fits = staged_fits() + [series("p2p", "ce", 370e9)]
    v = pair_verdict(0, 1, True, topology(NVLINK_OK, 0, None), fits)
    assert v.verdict == "nvlink"
    assert any("no NVLink" in r for r in v.reasons)


def test_p2p_over_pcie():
    fits = staged_fits(20e9) + [series("p2p", "ce", 25e9), series("p2p", "sm-read", 24e9)]
    v = pair_verdict(0, 1, True, topology(ancestor="pcie-switch"), fits)
    assert v.verdict == "p2p-pcie"
    assert v.label == "p2p-pcie"
    assert any("common ancestor pcie-switch" in r for r in v.reasons)
    assert any("P2P: p2p-ce-dev0->dev1 at 25.0 GB/s" in r for r in v.reasons)
    assert set(v.evidence["paths"]) == {f.series for f in fits}


def test_p2p_equal_to_staged_is_not_slower():
    fits = staged_fits(20e9) + [series("p2p", "ce", 20e9)]
    assert pair_verdict(0, 1, True, topology(), fits).verdict == "p2p-pcie"


def test_peak_rate_stands_in_for_a_failed_fit():
    fits = staged_fits(20e9) + [series("p2p", "ce", None, reason="fit failed", peak_Bps=8e9)]
    assert pair_verdict(0, 1, True, topology(), fits).verdict == "p2p-slower-than-staged"


@pytest.mark.parametrize("topo,expected", [(topology(), "p2p-pcie"), (topology(NVLINK_OK, 18, "nvswitch"), "nvlink")])
def test_capability_only_without_p2p_fit(topo, expected):
    v = pair_verdict(0, 1, True, topo, staged_fits())
    assert v.verdict == expected
    assert any("no measured bandwidth (not measured)" in r and "rests on the capabilities" in r for r in v.reasons)


def test_capability_only_gives_the_series_reason():
    fits = staged_fits() + [series("p2p", "ce", None, reason="need at least 3 points")]
    v = pair_verdict(0, 1, True, topology(), fits)
    assert v.verdict == "p2p-pcie"
    assert any("no measured bandwidth (need at least 3 points)" in r for r in v.reasons)


def test_unavailable_topology():
    t = Topology(False, "NVML not available (no driver)", "nvml")
    v = pair_verdict(0, 1, True, t, staged_fits() + [series("p2p", "ce", 25e9)])
    assert v.verdict == "p2p-pcie"
    assert "topology: NVML not available (no driver)" in v.reasons
    assert v.evidence["nvml_p2p"] is None and v.evidence["nvlinks"] is None
    assert v.flags == ()


def test_fits_of_other_pairs_are_ignored():
    fits = [series("p2p", "ce", 9e9, src=1, dst=0), series("host-staged", "staged", 20e9, src=1, dst=0),
            series("p2p", "ce", 25e9)]
    assert pair_verdict(0, 1, True, topology(), fits).verdict == "p2p-pcie"
    assert pair_verdict(1, 0, True, topology(), fits).verdict == "p2p-slower-than-staged"


# --- downtrained flag ---------------------------------------------------------------------------------


def test_idle_reading_below_max_does_not_flag():
    t = topology(devices=(gpu(0, gen=1), gpu(1, gen=2, width=8)))
    assert t.device(0).pcie_downtrained is True
    v = pair_verdict(0, 1, False, t, staged_fits())
    assert v.flags == ()
    assert v.label == "host-staged"


def test_under_load_reading_below_max_flags():
    fits = staged_fits() + [series("p2p", "ce", 25e9)]
    v = pair_verdict(0, 1, True, topology(), fits, pcie_load={1: (3, 8), 0: (4, 16)})
    assert v.verdict == "p2p-pcie"
    assert v.flags == ("downtrained",)
    assert v.label == "p2p-pcie+downtrained"
    assert any("device 1: PCIe Gen3 x8 under load, below its maximum Gen4 x16" in r for r in v.reasons)
    assert not any(r.startswith("device 0:") for r in v.reasons)


def test_under_load_width_alone_flags():
    v = pair_verdict(0, 1, False, topology(), staged_fits(), pcie_load={0: (4, 8)})
    assert v.label == "host-staged+downtrained"


def test_under_load_at_max_does_not_flag():
    v = pair_verdict(0, 1, False, topology(), staged_fits(), pcie_load={0: (4, 16), 1: (4, 16)})
    assert v.flags == ()


def test_under_load_of_another_device_does_not_flag():
    v = pair_verdict(0, 1, False, topology(), staged_fits(), pcie_load={2: (1, 1)})
    assert v.flags == ()


def test_under_load_without_known_maximum_does_not_flag():
    t = topology(devices=(GpuTopo(0, 0, None, None, None, None, None, None, None, None), gpu(1)))
    assert pair_verdict(0, 1, False, t, staged_fits(), pcie_load={0: (1, 1)}).flags == ()


def test_pcie_load_of_results():
    def r(path, src, dst, load):
        params = {"path": path, "src": src, "dst": dst}
        if load:
            params["pcie_under_load"] = {"generation": load[0], "width": load[1]}
        return result("c", params)

    loads = pcie_load_of([r("h2d", -1, 1, (3, 8)), r("d2h", 0, -1, (4, 16)), r("d2h", 2, -1, None)])
    assert loads == {1: (3, 8), 0: (4, 16)}


# --- to_dict ------------------------------------------------------------------------------------------


def test_to_dict_is_json():
    fits = staged_fits() + [series("p2p", "ce", 25e9), series("p2p", "sm-read", None, reason="no case passed")]
    v = pair_verdict(0, 1, True, topology(), fits, pcie_load={1: (3, 8)})
    out = json.loads(json.dumps(v.to_dict()))
    assert out["verdict"] == "p2p-pcie" and out["flags"] == ["downtrained"]
    assert isinstance(out["reasons"], list) and out["reasons"] == list(v.reasons)
    assert out["evidence"]["paths"]["p2p-sm-read-dev0->dev1"]["n"] == 0
    assert out["evidence"]["paths"]["p2p-ce-dev0->dev1"]["beta_Bps"] == pytest.approx(25e9)
    assert out["src"] == 0 and out["dst"] == 1


def test_verdict_names():
    assert set(VERDICTS) == {"nvlink", "p2p-pcie", "host-staged", "p2p-slower-than-staged", "p2p-corrupt"}
    assert PairVerdict(0, 1, "nvlink", ("downtrained", "x"), ()).label == "nvlink+downtrained+x"


# --- series_fits --------------------------------------------------------------------------------------


def timing(seconds: float) -> Timing:
    return Timing((seconds * 0.99, seconds, seconds * 1.01), 1, 3, "virtual", False, 0.01)


def result(case: str, params: dict, status: str = "passed", seconds: float | None = None, reason: str | None = None,
           metrics: dict | None = None) -> Result:
    return Result("links", case, status, "virtual:test:2", "simulated", "GPU", params=params,
                  timing=timing(seconds) if seconds is not None else None, metrics=metrics or {}, reason=reason)


def sweep(name: str, path: str, engine: str, alpha_s: float, beta_Bps: float, src: int = 0, dst: int = 1,
          sizes=SIZES, memory: str | None = None, failed: tuple[int, ...] = ()) -> list[Result]:
    out = []
    for n in sizes:
        params = {"series": name, "direction": "one-way", "path": path, "engine": engine, "memory": memory,
                  "src": src, "dst": dst, "bytes": n}
        t = alpha_s + n / beta_Bps
        if n in failed:
            out.append(result(f"{name}-{n}", params, "failed", reason="verification failed: at index 0"))
        else:
            out.append(result(f"{name}-{n}", params, seconds=t, metrics={"link_Bps": n / t}))
    return out


def test_series_fits_groups_and_fits_medians():
    results = (sweep("p2p-ce-dev0->dev1", "p2p", "ce", 10e-6, 25e9)
               + sweep("h2d-ce-pinned-dev0", "h2d", "ce", 8e-6, 24e9, src=-1, dst=0, memory="pinned"))
    fits = {f.series: f for f in series_fits(results)}
    assert set(fits) == {"p2p-ce-dev0->dev1", "h2d-ce-pinned-dev0"}
    p2p = fits["p2p-ce-dev0->dev1"]
    assert (p2p.path, p2p.engine, p2p.src, p2p.dst, p2p.source) == ("p2p", "ce", 0, 1, "simulated")
    assert p2p.fit.alpha_s == pytest.approx(10e-6, rel=1e-9)
    assert p2p.fit.beta_Bps == pytest.approx(25e9, rel=1e-9)
    assert p2p.beta_Bps == p2p.fit.beta_Bps
    assert p2p.verified and p2p.failures == () and p2p.reason is None and p2p.cases == 4
    assert p2p.peak_Bps == pytest.approx(max(n / (10e-6 + n / 25e9) for n in SIZES))
    h2d = fits["h2d-ce-pinned-dev0"]
    assert h2d.memory == "pinned" and h2d.fit.beta_Bps == pytest.approx(24e9, rel=1e-9)
    json.dumps([f.to_dict() for f in fits.values()])


def test_series_fits_ignores_other_results():
    both_ways = [result("bidir", {"series": "x", "direction": "bidirectional", "path": "p2p", "engine": "ce",
                                  "src": 0, "dst": 1, "bytes": 4096}, seconds=1e-5)]
    no_series = [result("plain", {"direction": "one-way", "bytes": 4096}, seconds=1e-5)]
    latency = [result("lat", {"series": "p2p-ce-dev0->dev1", "latency": "oneshot", "bytes": 4}, seconds=1e-5)]
    assert series_fits(both_ways + no_series + latency) == []


def test_failed_case_makes_series_unverified():
    results = sweep("p2p-ce-dev0->dev1", "p2p", "ce", 10e-6, 25e9, sizes=SIZES + [64 << 20], failed=(64 << 20,))
    (fit,) = series_fits(results)
    assert fit.verified is False
    assert fit.failures == (f"p2p-ce-dev0->dev1-{64 << 20}: verification failed: at index 0",)
    assert fit.fit is not None and fit.fit.n == 4
    assert fit.cases == 5


def test_error_case_is_a_failure_but_not_unverified():
    results = sweep("d2d-ce-dev0", "d2d", "ce", 5e-6, 400e9, src=0, dst=0)
    results.append(result("d2d-boom", dict(results[0].params, bytes=123), "error", reason="RuntimeError: boom"))
    (fit,) = series_fits(results)
    assert fit.verified is True
    assert fit.failures == ("d2d-boom: RuntimeError: boom",)


def test_fewer_than_three_passed_sizes_gives_no_fit():
    results = sweep("p2p-ce-dev0->dev1", "p2p", "ce", 10e-6, 25e9, failed=(SIZES[0], SIZES[1]))
    (fit,) = series_fits(results)
    assert fit.fit is None
    assert "no fit" in fit.reason and "size(s)" in fit.reason
    assert fit.verified is False
    assert fit.peak_Bps is not None and fit.beta_Bps == fit.peak_Bps


def test_no_case_passed():
    results = sweep("p2p-ce-dev0->dev1", "p2p", "ce", 10e-6, 25e9, failed=tuple(SIZES))
    (fit,) = series_fits(results)
    assert fit.fit is None and fit.reason == "no case passed"
    assert fit.peak_Bps is None and fit.beta_Bps is None


def test_find():
    fits = [series("p2p", "ce", 25e9), series("p2p", "sm-read", 24e9), series("p2p", "ce", 25e9, src=1, dst=0)]
    assert len(find(fits, "p2p", 0, 1)) == 2
    assert [f.engine for f in find(fits, "p2p", 0, 1, engine="sm-read")] == ["sm-read"]
    assert find(fits, "host-staged", 0, 1) == []


# --- oneshot_alpha ------------------------------------------------------------------------------------


def test_oneshot_alpha():
    beta = 25e9
    name = "p2p-ce-dev0->dev1"
    results = [result(f"lat-{n}", {"series": name, "latency": "oneshot", "bytes": n}, seconds=a + n / beta)
               for n, a in ((4, 11e-6), (64, 12e-6), (1024, 30e-6))]
    results.append(result("lat-other", {"series": "other", "latency": "oneshot", "bytes": 4}, seconds=1.0))
    results.append(result("lat-failed", {"series": name, "latency": "oneshot", "bytes": 4}, "failed"))
    results.append(result("b2b", {"series": name, "latency": "back-to-back", "bytes": 4}, seconds=1.0))
    assert oneshot_alpha(results, name, beta) == pytest.approx(12e-6, rel=1e-9)
    assert oneshot_alpha(results, "missing", beta) is None


def test_a_series_with_two_regimes_gives_the_link_each_regimes_alpha_and_beta():
    """Small copies at 10 GB/s, from 64 KiB at 25 GB/s with 6 µs more per copy: the fit finds both, and the
    link's regimes take the one-shot alpha (14 µs here) for the first and add the second's extra intercept."""
    sizes = [1 << k for k in range(2, 25)]
    name = "p2p-ce-dev0->dev1"
    results = []
    for n in sizes:
        t = (2e-6 + n / 10e9) if n < 65536 else (8e-6 + n / 25e9)
        results.append(result(f"{name}-{n}", {"series": name, "direction": "one-way", "path": "p2p", "engine": "ce",
                                              "memory": None, "src": 0, "dst": 1, "bytes": n}, seconds=t,
                              metrics={"link_Bps": n / t}))
    results += [result(f"lat-{n}", {"series": name, "latency": "oneshot", "bytes": n}, seconds=14e-6 + n / 10e9)
                for n in (4, 64, 1024)]
    (fit,) = series_fits(results)
    assert len(fit.fit.pieces) == 2 and fit.fit.breakpoints_bytes == (65536.0,)
    assert fit.beta_Bps == pytest.approx(25e9, rel=1e-9) and fit.first_beta_Bps == pytest.approx(10e9, rel=1e-9)
    alpha = oneshot_alpha(results, name, fit.first_beta_Bps)
    assert alpha == pytest.approx(14e-6, rel=1e-9)
    pieces = link_pieces(fit.fit, alpha)
    assert [(p["lo_bytes"], p["hi_bytes"]) for p in pieces] == [(4, 32768), (65536, 1 << 24)]
    assert [p["alpha_s"] for p in pieces] == pytest.approx([14e-6, 20e-6], rel=1e-9)
    assert [p["beta_Bps"] for p in pieces] == pytest.approx([10e9, 25e9], rel=1e-9)


def _cal_of(results, links=()):
    """A calibration of ``results`` and a full profile (the RTX 4090's datasheet device as dev0) with ``links``."""
    sheet = profiles.datasheet_for("NVIDIA GeForce RTX 4090").profile
    profile = Profile.model_validate({**sheet.to_json(), "devices": [{**sheet.devices[0].to_json(), "index": 0}],
                                      "links": list(links)})
    return SimpleNamespace(all_results=lambda: results, results={"peer": results}, topology=None, verdicts=[],
                           fits=series_fits(results), simulator_check=None), profile


def test_a_series_behind_the_profile_that_its_fit_describes_poorly_is_an_anomaly():
    name = "host-staged-dev0->dev1"
    sizes = [1 << k for k in range(2, 25)]
    times = [10e-6 + n / 20e9 for n in sizes]
    times[-3] *= 1.5  # one point 50 % off: no regime of >= 4 sizes can take it
    results = [result(f"{name}-{n}", {"series": name, "direction": "one-way", "path": "host-staged",
                                      "engine": "staged", "memory": None, "src": 0, "dst": 1, "bytes": n},
                      seconds=t, metrics={"link_Bps": n / t}) for n, t in zip(sizes, times)]
    cal, profile = _cal_of(results, [{"src": 0, "dst": 1, "series": name, "verdict": "host-staged",
                                      "path": "host-staged",
                                      "alpha_s": TimeQuantity.measured(1e-5, method="one-shot copies", n=3).to_json(),
                                      "beta_Bps": RateQuantity.measured(2e10, method="fit", statistic="fit",
                                                                        n=23).to_json()}])
    poor = [a for a in anomalies(cal, profile) if a["kind"] == "poor-fit"]
    assert len(poor) == 1 and poor[0]["text"].startswith(f"{name}: a measured point lies")
    assert cal.fits[0].fit.poor and cal.fits[0].to_dict()["fit"]["poor_fit"] is True
    # the same series not behind the profile's figures: no anomaly
    cal, profile = _cal_of(results)
    assert not [a for a in anomalies(cal, profile) if a["kind"] == "poor-fit"]


def test_noisy_sizes_are_counted_per_series():
    name = "p2p-ce-dev0->dev1"

    results = sweep(name, "p2p", "ce", 10e-6, 25e9)
    t = results[1].timing.median_s
    results[1] = replace(results[1], timing=Timing((0.9 * t, t, 1.1 * t), 1, 3, "test", True, 0.01))  # stopped noisy
    (fit,) = series_fits(results)
    assert fit.noisy_sizes == (SIZES[1],) and fit.to_dict()["noisy_sizes"] == [SIZES[1]]
